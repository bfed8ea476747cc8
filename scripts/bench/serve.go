package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// serverKind is a registry the serve suite measures.
type serverKind struct {
	Name    string
	Missing string
	start   func(ctx context.Context, root, logPath string) (*server, error)
}

// servers are ferry serve --root ROOT and docker-registry with
// filesystem storage under ROOT.
func (e *env) servers(ctx context.Context) []serverKind {
	ferry := e.tool(ctx, "ferry")
	kinds := []serverKind{{Name: "ferry serve", Missing: ferry.Missing,
		start: func(ctx context.Context, root, logPath string) (*server, error) {
			return startFerryServe(ctx, ferry.Path, []string{"--root", root}, logPath)
		}}}
	path, missing := e.dockerRegistry(ctx)
	kinds = append(kinds, serverKind{Name: "docker-registry", Missing: missing,
		start: func(ctx context.Context, root, logPath string) (*server, error) {
			return startDockerRegistry(ctx, path, root, logPath)
		}})
	return kinds
}

// dockerRegistry finds docker-registry the first time it is asked for;
// missing says why it cannot run.
func (e *env) dockerRegistry(ctx context.Context) (path, missing string) {
	t, ok := e.tools["docker-registry"]
	if !ok {
		path, version, missing := dockerRegistry(ctx)
		t = &tool{Name: "docker-registry", Path: path, Version: version, Missing: missing}
		e.tools[t.Name] = t
		if missing != "" {
			e.logf("docker-registry: %s", missing)
		} else {
			e.logf("docker-registry %s (%s)", version, path)
		}
	}
	return t.Path, t.Missing
}

// step measures one client step against srv: the wall time is the
// client's, CPU and peak RSS are the server's (unknown when srv is nil:
// the harness's own registry).
func (e *env) step(r *row, srv *server, i int, run func() (time.Duration, error)) {
	if r.Err != "" {
		return
	}
	var m usageMark
	if srv != nil {
		m = srv.Mark()
	}
	wall, err := run()
	cpu, peak := time.Duration(-1), int64(-1)
	if srv != nil {
		cpu, peak = m.since()
	}
	if err != nil {
		r.fail(err)
		e.logf("%s, %s %d/%d: failed: %v", r.Case, r.Tool, i, e.o.n, err)
		return
	}
	smp := sample{Wall: wall, CPU: cpu, MaxRSS: peak}
	r.Samples = append(r.Samples, smp)
	e.timed(r.Case+", "+r.Tool, i, smp)
}

// serveSuite: crane pushes the big image to, and pulls it from, ferry
// serve and docker-registry, then 20 cranes pull the index image at once.
// Each run starts each server afresh on an empty root, so that no push
// finds blobs already there.
func (e *env) serveSuite(ctx context.Context) (*suiteReport, error) {
	big, err := e.source(ctx, "big")
	if err != nil {
		return nil, err
	}
	idx, err := e.source(ctx, "index")
	if err != nil {
		return nil, err
	}
	crane := e.tool(ctx, "crane")
	rep := &suiteReport{
		Name: "serve", Tools: []string{"ferry", "crane", "docker-registry"}, Title: "ferry serve against docker-registry, with crane as the client",
		CPU: "server CPU", RSS: "server max RSS", Ratio: "÷ ferry",
		About: []string{
			fmt.Sprintf("push big: `crane push` of an OCI layout of big (%s, %s) into an empty server", big.Describe(), formatBytes(big.Bytes)),
			"pull big: `crane pull --format oci` of it into an empty directory",
			fmt.Sprintf("%d × pull index: %d cranes pulling index (%s, %s) at once, each into its own directory; wall until the last ends",
				clients, clients, idx.Describe(), formatBytes(idx.Bytes)),
			"wall: crane's; CPU and max RSS: the server's, from /proc, during the step",
		},
	}
	dir, err := e.suiteDir("serve")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	caseNames := []string{"push big", "pull big", fmt.Sprintf("%d × pull index", clients)}
	kinds := e.servers(ctx)
	rows := map[string]map[string]*row{}
	for _, c := range caseNames {
		rows[c] = map[string]*row{}
		for _, k := range kinds {
			missing := k.Missing
			if missing == "" && crane.Missing != "" {
				missing = "crane " + crane.Missing
			}
			rows[c][k.Name] = rep.add(c, k.Name, k.Name == "ferry serve", missing)
		}
	}
	idle, after := map[string]int64{}, map[string]int64{}

	layouts := map[string]string{}
	if crane.Missing == "" {
		for _, s := range []source{big, idx} {
			l := filepath.Join(dir, "layout-"+s.Name)
			_, err := crane.measureArgs(ctx, []string{"pull", "--insecure", "--format", "oci", e.src.Host() + "/" + s.Repo + ":v1", l},
				e.logPath("serve-layout", s.Name), e.o.timeout)
			if err != nil {
				return nil, fmt.Errorf("making an OCI layout of %s: %w", s.Name, err)
			}
			layouts[s.Name] = l
		}
	}

	for i := 1; i <= e.o.n; i++ {
		for _, k := range kinds {
			if rows[caseNames[0]][k.Name].Missing != "" {
				continue
			}
			root := filepath.Join(dir, fmt.Sprintf("%s-%d", k.Name, i))
			srv, err := k.start(ctx, root, e.logPath("serve", k.Name, i))
			if err != nil {
				for _, c := range caseNames {
					rows[c][k.Name].fail(err)
				}
				e.logf("%s: %v", k.Name, err)
				continue
			}
			sleep(ctx, time.Second)
			idle[k.Name] = max(idle[k.Name], srv.RSS())
			ref := func(s source) string { return srv.Host + "/" + s.Repo + ":v1" }
			push := func(s source) (time.Duration, error) {
				smp, err := crane.measureArgs(ctx, []string{"push", "--insecure", layouts[s.Name], ref(s)},
					e.logPath("serve-push", s.Name, k.Name, i), e.o.timeout)
				if err == nil {
					err = checkDigest(ctx, srv.Host, s.Repo, "v1", s.Digest.String())
				}
				return smp.Wall, err
			}
			e.step(rows[caseNames[0]][k.Name], srv, i, func() (time.Duration, error) { return push(big) })
			if _, err := push(idx); err != nil {
				rows[caseNames[2]][k.Name].fail(fmt.Errorf("pushing index: %w", err))
			}
			e.step(rows[caseNames[1]][k.Name], srv, i, func() (time.Duration, error) {
				smp, err := e.pull(ctx, crane, ref(big), filepath.Join(dir, "pull"), e.logPath("serve-pull", big.Name, k.Name, i), big.Bytes)
				return smp.Wall, err
			})
			e.step(rows[caseNames[2]][k.Name], srv, i, func() (time.Duration, error) {
				return e.pulls(ctx, crane, ref(idx), filepath.Join(dir, "pulls"), e.logPath("serve-pulls", idx.Name, k.Name, i), idx.Bytes)
			})
			sleep(ctx, time.Second)
			after[k.Name] = max(after[k.Name], srv.RSS())
			srv.Stop()
			os.RemoveAll(root)
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
		}
	}

	rss := func(k string) string {
		if idle[k] == 0 {
			return k + " not measured"
		}
		return fmt.Sprintf("%s %s, after the pulls %s", k, formatBytes(idle[k]), formatBytes(after[k]))
	}
	rep.Facts = append(rep.Facts, fmt.Sprintf("resident set (VmRSS) 1 s after start, empty root, highest of the runs: %s; %s",
		rss("ferry serve"), rss("docker-registry")))
	for _, c := range caseNames {
		rep.Targets = append(rep.Targets, compareTarget(c+": ferry serve at least as fast as docker-registry",
			rows[c]["ferry serve"], rows[c]["docker-registry"], noSlower))
	}
	what := "ferry serve idle RSS under 20 MiB"
	switch f := idle["ferry serve"]; {
	case f == 0:
		rep.Targets = append(rep.Targets, what+": pending (not measured)")
	default:
		rep.Targets = append(rep.Targets, fmt.Sprintf("%s: %s (%s; docker-registry %s)", what, verdict(f < 20*mib),
			formatBytes(f), formatBytes(idle["docker-registry"])))
	}
	return rep, nil
}

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
