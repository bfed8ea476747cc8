package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// bundleGroup is what one bundle holds: several images, or the one 2 GiB
// image of the full run.
type bundleGroup struct {
	Name    string // "images", "2 GiB"
	Sources []source
}

func (g bundleGroup) bytes() int64 {
	var n int64
	for _, s := range g.Sources {
		n += s.Bytes
	}
	return n
}

// measureSeq runs the tool once per args, one after another, and adds up
// what they cost (sumSamples): a peer that takes one image per run.
func (e *env) measureSeq(ctx context.Context, t *tool, argsList [][]string, logPrefix string) (sample, error) {
	var ss []sample
	for j, args := range argsList {
		s, err := t.measureArgs(ctx, args, fmt.Sprintf("%s-%d.log", logPrefix, j), e.o.timeout)
		if err != nil {
			return sample{}, err
		}
		ss = append(ss, s)
	}
	return sumSamples(ss), nil
}

// bundleSuite writes the bench images into a bundle and imports it into
// the second registry with ferry, skopeo (oci-archive, one image per run)
// and crane (an OCI layout per image), then compares ferry serve --bundle
// with ferry serve --root holding the same images.
func (e *env) bundleSuite(ctx context.Context) (*suiteReport, error) {
	var groups []bundleGroup
	g := bundleGroup{Name: "images"}
	for _, n := range []string{"big", "small", "index"} {
		s, err := e.source(ctx, n)
		if err != nil {
			return nil, err
		}
		g.Sources = append(g.Sources, s)
	}
	groups = append(groups, g)
	if !e.o.quick {
		s, err := e.source(ctx, "huge")
		if err != nil {
			return nil, err
		}
		groups = append(groups, bundleGroup{Name: "2 GiB", Sources: []source{s}})
	}
	dir, err := e.suiteDir("bundle")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)

	rep := &suiteReport{
		Name: "bundle", Tools: []string{"ferry", "skopeo", "crane"}, Title: "ferry bundle against skopeo and crane; ferry serve --bundle",
		CPU: "CPU", RSS: "max RSS", Ratio: "÷ ferry (serve: ÷ --root)",
	}
	for _, g := range groups {
		var d []string
		for _, s := range g.Sources {
			d = append(d, fmt.Sprintf("%s (%s)", s.Name, s.Describe()))
		}
		rep.About = append(rep.About, fmt.Sprintf("%s: %s; %s of blobs", g.Name, strings.Join(d, ", "), formatBytes(g.bytes())))
	}
	rep.About = append(rep.About,
		"create: ferry `bundle create -o FILE REF...` (one run); skopeo `copy --all docker://REF oci-archive:FILE` and crane `pull --format oci REF DIR`, one run per image, added up; each ends with its output on disk: ferry fsyncs its files before it exits, and the peers' files are fsynced after their runs, in their time (wall only)",
		"import: ferry `bundle import FILE --to DST/PREFIX`; skopeo `copy --all oci-archive:FILE docker://DST/...` and crane `push DIR DST/...` of what each created, one run per image, added up",
		"serve: `crane pull --format oci` of each image from `ferry serve --bundle FILE` and from `ferry serve --root DIR` holding the same images (`ferry bundle import FILE --to oci:DIR`); CPU and max RSS: the server's")

	names := []string{"ferry", "skopeo", "crane"}
	tools := map[string]*tool{}
	for _, n := range names {
		tools[n] = e.tool(ctx, n)
	}
	type key struct{ group, op, tool string }
	rows := map[key]*row{}
	for _, g := range groups {
		for _, op := range []string{"create", "import"} {
			c := op + " " + g.Name
			for _, n := range names {
				rows[key{g.Name, op, n}] = rep.add(c, n, n == "ferry", tools[n].Missing)
			}
		}
	}

	var kept string // the images bundle of ferry's last run, for serving
	for _, g := range groups {
		for i := 1; i <= e.o.n; i++ {
			for _, n := range names {
				t := tools[n]
				cr, im := rows[key{g.Name, "create", n}], rows[key{g.Name, "import", n}]
				if t.Missing != "" || cr.Err != "" {
					continue
				}
				// Repository names are lower case: "2 GiB" is "2gib".
				label := strings.ToLower(strings.ReplaceAll(g.Name, " ", ""))
				out := filepath.Join(dir, fmt.Sprintf("%s-%s-%d", n, label, i))
				prefix := fmt.Sprintf("bundle/%s-%s-%d", n, label, i)
				var create, imp [][]string
				var outs []string
				switch n {
				case "ferry":
					outs = []string{out + ".tar"}
					c := []string{"bundle", "create", "-o", outs[0]}
					for _, s := range g.Sources {
						c = append(c, e.src.Host()+"/"+s.Repo+":v1")
					}
					create = [][]string{c}
					imp = [][]string{{"bundle", "import", outs[0], "--to", e.dst.Host() + "/" + prefix}}
				case "skopeo":
					for _, s := range g.Sources {
						f := out + "-" + s.Name + ".tar"
						outs = append(outs, f)
						create = append(create, []string{"--insecure-policy", "copy", "--all", "--src-tls-verify=false",
							"docker://" + e.src.Host() + "/" + s.Repo + ":v1", "oci-archive:" + f})
						imp = append(imp, []string{"--insecure-policy", "copy", "--all", "--dest-tls-verify=false",
							"oci-archive:" + f, "docker://" + e.dst.Host() + "/" + prefix + "/" + s.Repo + ":v1"})
					}
				case "crane":
					for _, s := range g.Sources {
						d := out + "-" + s.Name
						outs = append(outs, d)
						create = append(create, []string{"pull", "--insecure", "--format", "oci", e.src.Host() + "/" + s.Repo + ":v1", d})
						imp = append(imp, []string{"push", "--insecure", d, e.dst.Host() + "/" + prefix + "/" + s.Repo + ":v1"})
					}
				}
				settle()
				smp, err := e.measureSeq(ctx, t, create, strings.TrimSuffix(e.logPath("bundle-create", label, n, i), ".log"))
				if err == nil && n != "ferry" {
					// ferry fsyncs its bundle before it exits; the peers
					// leave theirs in the page cache. Their time is to
					// the same end: the output on disk.
					var d time.Duration
					d, err = fsyncAll(outs)
					smp.Wall += d
				}
				if err == nil {
					err = checkOutputs(outs, g)
				}
				if e.record(ctx, cr, i, smp, err) {
					settle()
					smp, err = e.measureSeq(ctx, t, imp, strings.TrimSuffix(e.logPath("bundle-import", label, n, i), ".log"))
					for _, s := range g.Sources {
						repo := prefix + "/" + s.Repo
						if err == nil {
							err = check(ctx, e.dst, repo, s)
						}
						if derr := e.dst.Drop(repo); derr != nil && err == nil {
							err = derr
						}
					}
					e.record(ctx, im, i, smp, err)
				}
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				for _, o := range outs {
					if n == "ferry" && g.Name == "images" && i == e.o.n && cr.Err == "" {
						if kept != "" {
							os.Remove(kept)
						}
						kept = o
						continue
					}
					os.RemoveAll(o)
					os.Remove(o + ".sha256")
					os.Remove(o + ".receipt.json")
				}
			}
		}
	}

	for _, g := range groups {
		for _, op := range []string{"create", "import"} {
			for _, peer := range names[1:] {
				rep.Targets = append(rep.Targets, compareTarget(fmt.Sprintf("%s %s: ferry faster than %s", op, g.Name, peer),
					rows[key{g.Name, op, "ferry"}], rows[key{g.Name, op, peer}], func(f, p time.Duration) bool { return f < p }))
			}
		}
	}
	rssGroup := groups[len(groups)-1]
	what := "ferry peak RSS under 64 MiB for the 2 GiB bundle (create and import)"
	if e.o.quick {
		what = "ferry peak RSS under 64 MiB (the target is for a 2 GiB bundle; -quick bundles the small images)"
	}
	var peak int64
	measured := true
	for _, op := range []string{"create", "import"} {
		r := rows[key{rssGroup.Name, op, "ferry"}]
		if !r.ok() {
			measured = false
			what += ": pending (ferry " + op + " " + whyNot(r) + ")"
			break
		}
		peak = max(peak, r.peakRSS())
	}
	if measured {
		rep.Targets = append(rep.Targets, fmt.Sprintf("%s: %s (ferry's highest: %s)", what, verdict(peak > 0 && peak < 64*mib), formatBytes(peak)))
	} else {
		rep.Targets = append(rep.Targets, what)
	}

	return rep, e.serveBundle(ctx, rep, kept, groups[0])
}

// record adds a run's sample to r, or its failure; true when it counted.
func (e *env) record(ctx context.Context, r *row, i int, smp sample, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	if err != nil {
		r.fail(err)
		e.logf("%s, %s %d/%d: failed: %v", r.Case, r.Tool, i, e.o.n, err)
		return false
	}
	r.Samples = append(r.Samples, smp)
	e.timed(r.Case+", "+r.Tool, i, smp)
	return true
}

// fsyncAll fsyncs every file under the paths, and the directories, and
// returns how long it took.
func fsyncAll(paths []string) (time.Duration, error) {
	start := time.Now()
	for _, p := range paths {
		err := filepath.Walk(p, func(path string, _ os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			f, err := os.Open(path)
			if err != nil {
				return err
			}
			defer f.Close()
			return f.Sync()
		})
		if err != nil {
			return 0, fmt.Errorf("fsync of the output: %w", err)
		}
	}
	return time.Since(start), nil
}

// checkOutputs makes sure what a create wrote holds at least the images'
// bytes: a file's size, or a layout's blobs.
func checkOutputs(outs []string, g bundleGroup) error {
	var got int64
	for _, o := range outs {
		fi, err := os.Stat(o)
		if err != nil {
			return fmt.Errorf("checking the output: %w", err)
		}
		if fi.IsDir() {
			if err := checkLayout(o, 0); err != nil {
				return err
			}
			got += layoutBytes(o)
		} else {
			got += fi.Size()
		}
	}
	if want := g.bytes(); got < want {
		return fmt.Errorf("the output holds %d bytes, the images %d", got, want)
	}
	return nil
}

// layoutBytes is the size of a layout's blobs; 0 when unreadable.
func layoutBytes(dir string) int64 {
	var n int64
	_ = filepath.Walk(filepath.Join(dir, "blobs"), func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return nil
	})
	return n
}

// serveBundle pulls each image of g with crane from ferry serve --bundle
// FILE and from ferry serve --root holding the same images.
func (e *env) serveBundle(ctx context.Context, rep *suiteReport, file string, g bundleGroup) error {
	ferry, crane := e.tool(ctx, "ferry"), e.tool(ctx, "crane")
	missing := ferry.Missing
	switch {
	case missing == "" && crane.Missing != "":
		missing = "crane " + crane.Missing
	case missing == "" && file == "":
		missing = "no bundle: create failed"
	}
	kinds := []string{"ferry serve --root", "ferry serve --bundle"}
	rows := map[string]map[string]*row{}
	for _, s := range g.Sources {
		rows[s.Name] = map[string]*row{}
		for _, k := range kinds {
			rows[s.Name][k] = rep.add("serve: pull "+s.Name, k, k == kinds[0], missing)
		}
	}
	total := func(k string) (time.Duration, bool) {
		var t time.Duration
		for _, s := range g.Sources {
			r := rows[s.Name][k]
			if !r.ok() {
				return 0, false
			}
			t += r.median().Wall
		}
		return t, true
	}
	defer func() {
		what := "serve: pulls from ferry serve --bundle as fast as from ferry serve --root (all images, summed)"
		b, okb := total(kinds[1])
		r, okr := total(kinds[0])
		switch {
		case missing != "":
			rep.Targets = append(rep.Targets, what+": pending ("+missing+")")
		case !okb || !okr:
			rep.Targets = append(rep.Targets, what+": pending (a pull failed)")
		default:
			rep.Targets = append(rep.Targets, fmt.Sprintf("%s: %s (--bundle %s, --root %s)", what, verdict(b <= r),
				formatSeconds(b), formatSeconds(r)))
		}
	}()
	if missing != "" {
		return nil
	}
	store := filepath.Join(e.work, "bundle-store")
	defer os.RemoveAll(store)
	if _, err := ferry.measureArgs(ctx, []string{"bundle", "import", file, "--to", "oci:" + store, "--no-receipt"},
		e.logPath("bundle-store"), e.o.timeout); err != nil {
		return fmt.Errorf("importing the bundle into a root: %w", err)
	}
	args := map[string][]string{kinds[0]: {"--root", store}, kinds[1]: {"--bundle", file}}
	for i := 1; i <= e.o.n; i++ {
		for _, k := range kinds {
			srv, err := startFerryServe(ctx, ferry.Path, args[k], e.logPath("bundle-serve", k, i))
			if err != nil {
				for _, s := range g.Sources {
					rows[s.Name][k].fail(err)
				}
				continue
			}
			for _, s := range g.Sources {
				settle() // the last pull's output is on disk, not slowing this one
				e.step(rows[s.Name][k], srv, i, func() (time.Duration, error) {
					smp, err := e.pull(ctx, crane, srv.Host+"/"+s.Repo+":v1", filepath.Join(e.work, "bundle-pull"),
						e.logPath("bundle-pull", s.Name, k, i), s.Bytes)
					return smp.Wall, err
				})
			}
			srv.Stop()
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
	}
	return nil
}
