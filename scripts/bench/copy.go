package main

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
)

// copySuite copies each case with each tool between the two registries,
// directly and through the delaying proxies, and prints its report; it
// returns the report's markdown.
func (e *env) copySuite(ctx context.Context, command string) (string, error) {
	o := e.o
	src, dst := e.src, e.dst
	hosts := map[string][2]string{"direct": {src.Host(), dst.Host()}}
	allHosts := []string{src.Host(), dst.Host()}
	if slices.Contains(o.paths, "delayed") {
		sp, err := startProxy(src.Host(), o.delay, o.window)
		if err != nil {
			return "", err
		}
		defer sp.Close()
		dp, err := startProxy(dst.Host(), o.delay, o.window)
		if err != nil {
			return "", err
		}
		defer dp.Close()
		hosts["delayed"] = [2]string{sp.Host(), dp.Host()}
		allHosts = append(allHosts, sp.Host(), dp.Host())
	}

	var sources []source
	for _, c := range cases(o.quick) {
		if !slices.Contains(o.cases, c.Name) {
			continue
		}
		s, err := e.source(ctx, c.Name)
		if err != nil {
			return "", err
		}
		sources = append(sources, s)
	}

	tools := findTools(ctx, o.tools, toolSetup{
		ferry: o.ferry, ferryFlags: o.ferryFlags, home: filepath.Join(e.work, "home"),
		hosts: allHosts,
	})
	for _, t := range tools {
		if t.Missing != "" {
			e.logf("%s: %s", t.Name, t.Missing)
		} else {
			e.logf("%s %s (%s)", t.Name, t.Version, t.Path)
		}
		if _, ok := e.tools[t.Name]; !ok {
			e.tools[t.Name] = t
		}
	}
	logDir := e.logDir

	rep := &report{opts: o, tools: tools, sources: sources, machine: describeMachine()}
	rep.rssFloor = rssFloor(ctx, e.work, logDir)
	for _, s := range sources {
		for _, path := range o.paths {
			h := hosts[path]
			rows := map[string]*row{}
			for _, t := range tools {
				r := &row{Case: s.Name, Path: path, Tool: t.Name, Missing: t.Missing}
				rows[t.Name] = r
				rep.results = append(rep.results, r)
			}
			// Runs go round the tools, so that drift on the machine is
			// spread over all of them.
			for i := 1; i <= o.n; i++ {
				for _, t := range tools {
					r := rows[t.Name]
					if r.Missing != "" || r.Err != "" {
						continue
					}
					repo := fmt.Sprintf("dst/%s-%s-%s-%d", s.Name, t.Name, path, i)
					logPath := filepath.Join(logDir, fmt.Sprintf("%s-%s-%s-%d.log", s.Name, path, t.Name, i))
					settle() // the last run's writes are on disk, not slowing this one
					smp, err := t.measure(ctx, h[0]+"/"+s.Repo+":v1", h[1]+"/"+repo+":v1", logPath, o.timeout)
					if err == nil {
						err = check(ctx, dst, repo, s)
					}
					if derr := dst.Drop(repo); derr != nil && err == nil {
						err = derr
					}
					if ctx.Err() != nil {
						return "", ctx.Err()
					}
					if err != nil {
						r.Err = err.Error()
						e.logf("%-5s %-7s %-6s %d/%d: failed: %v (log: %s)", s.Name, path, t.Name, i, o.n, err, logPath)
						continue
					}
					r.Samples = append(r.Samples, smp)
					e.logf("%-5s %-7s %-6s %d/%d: wall %s, cpu %s, max RSS %s", s.Name, path, t.Name, i, o.n,
						formatSeconds(smp.Wall), formatSeconds(smp.CPU), formatBytes(smp.MaxRSS))
				}
			}
		}
	}

	rep.command = command
	fmt.Fprint(e.stdout, rep.text())
	return rep.markdown(), nil
}

// timed logs one measured run the way the copy suite does.
func (e *env) timed(label string, i int, smp sample) {
	e.logf("%s %d/%d: wall %s, cpu %s, max RSS %s", label, i, e.o.n,
		formatSeconds(smp.Wall), formatSeconds(smp.CPU), formatBytes(smp.MaxRSS))
}
