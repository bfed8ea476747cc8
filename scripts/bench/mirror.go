package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// tagSet is a repository of many small images that share most layers,
// as a project's release tags do.
type tagSet struct {
	Tags int
	Base []int64 // layers every tag has
	Own  int64   // one layer of each tag's own
}

func mirrorCase(quick bool) tagSet {
	if quick {
		return tagSet{Tags: 10, Base: repeat(3, 256*kib), Own: 64 * kib}
	}
	return tagSet{Tags: 50, Base: repeat(3, 1*mib), Own: 256 * kib}
}

func (t tagSet) Describe() string {
	return fmt.Sprintf("%d tags, each %d × %s layers all share + one %s layer of its own",
		t.Tags, len(t.Base), formatBytes(t.Base[0]), formatBytes(t.Own))
}

// tagName is the i-th tag, 1.0.0 to 1.0.N-1.
func tagName(i int) string { return fmt.Sprintf("1.0.%d", i) }

// generateTags pushes the set to host/repo and returns each tag's digest.
func generateTags(ctx context.Context, t tagSet, dir, host, repo string) (map[string]string, error) {
	work, err := os.MkdirTemp(dir, "gen-mirror-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	var base []v1.Layer
	for i, size := range t.Base {
		l, err := makeLayer(work, fmt.Sprintf("mirror-base-%d", i), size)
		if err != nil {
			return nil, err
		}
		base = append(base, l)
	}
	digests := map[string]string{}
	for i := 0; i < t.Tags; i++ {
		own, err := makeLayer(work, fmt.Sprintf("mirror-own-%d", i), t.Own)
		if err != nil {
			return nil, err
		}
		img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
		if img, err = mutate.AppendLayers(img, append(base[:len(base):len(base)], own)...); err != nil {
			return nil, err
		}
		cf, err := img.ConfigFile()
		if err != nil {
			return nil, err
		}
		cf = cf.DeepCopy()
		cf.OS, cf.Architecture = "linux", "amd64"
		cf.Config.Labels = map[string]string{"org.opencontainers.image.version": tagName(i)}
		if img, err = mutate.ConfigFile(img, cf); err != nil {
			return nil, err
		}
		ref, err := name.ParseReference(host+"/"+repo+":"+tagName(i), name.Insecure)
		if err != nil {
			return nil, err
		}
		if err := remote.Write(ref, img, remote.WithContext(ctx), remote.WithJobs(4)); err != nil {
			return nil, fmt.Errorf("pushing %s: %w", ref, err)
		}
		d, err := img.Digest()
		if err != nil {
			return nil, err
		}
		digests[tagName(i)] = d.String()
		os.Remove(own.path)
	}
	return digests, nil
}

// ferryMirrorConfig is a mirror config (docs/mirror-config.md) of one
// entry, with ferry's defaults otherwise: referrers on, unless referrers
// is false.
func ferryMirrorConfig(from, to string, referrers bool) string {
	defaults := ""
	if !referrers {
		defaults = "[defaults]\nreferrers = false\n"
	}
	return fmt.Sprintf("# ferry bench: mirror suite\n%s[[sync]]\nfrom = %q\nto = %q\n", defaults, from, to)
}

// ferryReferrers is the mirror suite's second ferry row: ferry's defaults,
// which copy referrers, where the "ferry" row does the work the others do.
const ferryReferrers = "ferry, referrers on"

// regsyncConfig is a regsync configuration of one repository, with TLS
// off for the given registries.
func regsyncConfig(hosts []string, from, to string) string {
	var b strings.Builder
	b.WriteString("version: 1\ncreds:\n")
	for _, h := range hosts {
		fmt.Fprintf(&b, "  - registry: %q\n    tls: disabled\n", h)
	}
	fmt.Fprintf(&b, "sync:\n  - source: %q\n    target: %q\n    type: repository\n", from, to)
	return b.String()
}

// mirrorSuite mirrors a repository of many tags with ferry mirror, skopeo
// sync and regsync: a first sync into an empty repository, then a rerun in
// which nothing changed, counting the requests the rerun makes at the
// source.
func (e *env) mirrorSuite(ctx context.Context) (*suiteReport, error) {
	set := mirrorCase(e.o.quick)
	const srcRepo = "bench/mirror"
	start := time.Now()
	digests, err := generateTags(ctx, set, e.work, e.src.Host(), srcRepo)
	if err != nil {
		return nil, err
	}
	e.logf("generated %s: %s (%.1fs)", srcRepo, set.Describe(), time.Since(start).Seconds())
	cp, err := startCountingProxy(e.src.Host())
	if err != nil {
		return nil, err
	}
	defer cp.Close()
	// Each path: the source (always through the counting proxy) and the
	// target, straight or through the delaying proxies.
	type endpoints struct{ label, repoSuffix, src, dst string }
	var paths []endpoints
	for _, p := range e.o.paths {
		switch p {
		case "direct":
			paths = append(paths, endpoints{"", "", cp.Host(), e.dst.Host()})
		case "delayed":
			sp, err := startProxy(cp.Host(), e.o.delay, e.o.window)
			if err != nil {
				return nil, err
			}
			defer sp.Close()
			dp, err := startProxy(e.dst.Host(), e.o.delay, e.o.window)
			if err != nil {
				return nil, err
			}
			defer dp.Close()
			paths = append(paths, endpoints{fmt.Sprintf(", %v RTT", 2*e.o.delay), "-rtt", sp.Host(), dp.Host()})
		}
	}
	dir, err := e.suiteDir("mirror")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)

	rep := &suiteReport{
		Name: "mirror", Tools: []string{"ferry", "skopeo", "regsync"}, Title: "ferry mirror against skopeo sync and regsync",
		CPU: "CPU", RSS: "max RSS", Ratio: "÷ ferry",
		About: []string{
			"source: " + srcRepo + ", " + set.Describe() + "; every tool mirrors all its tags into an empty repository of the second registry",
			"first sync: into the empty repository; no-change rerun: the same command again, nothing to copy",
			"ferry: `ferry mirror -c FILE`, one [[sync]] entry with `referrers = false`: neither skopeo sync nor regsync (by default) copies referrers, so this is the same work; " +
				"skopeo: `skopeo sync --src docker --dest docker`; regsync: `regsync once -c FILE`, type repository",
			"ferry, referrers on: ferry's defaults, which also carry each image's signatures and referrers, asking the source's referrers API once per image (on this registry, go-containerregistry's, each query reads every manifest of the repository)",
		},
	}
	names := []string{"ferry", ferryReferrers, "skopeo", "regsync"}
	rows := map[string]map[string]*row{}
	tools := map[string]*tool{}
	for _, n := range names {
		if n == ferryReferrers {
			tools[n] = e.tool(ctx, "ferry")
		} else {
			tools[n] = e.tool(ctx, n)
		}
	}
	for _, p := range paths {
		for _, c := range []string{"first sync" + p.label, "no-change rerun" + p.label} {
			rows[c] = map[string]*row{}
			for _, n := range names {
				rows[c][n] = rep.add(c, n, n == "ferry", tools[n].Missing)
			}
		}
	}
	counts := map[string]requestCounts{}
	served := map[string][]sample{} // the harness's CPU during each direct rerun
	for i := 1; i <= e.o.n; i++ {
		for _, p := range paths {
			cases := []string{"first sync" + p.label, "no-change rerun" + p.label}
			for _, n := range names {
				t := tools[n]
				if t.Missing != "" {
					continue
				}
				slug := n
				if n == ferryReferrers {
					slug = "ferry-referrers"
				}
				prefix := fmt.Sprintf("mirror/%s-%d%s", slug, i, p.repoSuffix)
				dstRepo := prefix + "/mirror"
				from, to := p.src+"/"+srcRepo, p.dst+"/"+dstRepo
				var args []string
				switch n {
				case "ferry", ferryReferrers:
					cfg := filepath.Join(dir, strings.ReplaceAll(prefix, "/", "-")+".toml")
					if err := os.WriteFile(cfg, []byte(ferryMirrorConfig(from, to, n == ferryReferrers)), 0o644); err != nil {
						return nil, err
					}
					args = []string{"mirror", "-c", cfg}
				case "skopeo":
					// skopeo sync puts the source's last name component under
					// the destination: DST/PREFIX/mirror.
					args = []string{"--insecure-policy", "sync", "--src", "docker", "--dest", "docker",
						"--src-tls-verify=false", "--dest-tls-verify=false", from, p.dst + "/" + prefix}
				case "regsync":
					cfg := filepath.Join(dir, fmt.Sprintf("regsync-%d.yml", i))
					if err := os.WriteFile(cfg, []byte(regsyncConfig([]string{p.src, p.dst}, from, to)), 0o644); err != nil {
						return nil, err
					}
					args = []string{"once", "-c", cfg}
				}
				for ci, c := range cases {
					r := rows[c][n]
					if r.Err != "" || (ci > 0 && rows[cases[0]][n].Err != "") {
						continue
					}
					cp.Reset()
					// Each run starts with the last one's writes on disk and
					// the harness's garbage collected, so that neither its
					// writeback nor the registries' collection lands in it.
					settle()
					runtime.GC()
					cpu0, cpuKnown := selfCPU()
					smp, err := t.measureArgs(ctx, args, e.logPath("mirror", c, n, i), e.o.timeout)
					cpu1, _ := selfCPU()
					if err == nil {
						err = checkTags(ctx, e.dst.Host(), dstRepo, digests)
					}
					if ctx.Err() != nil {
						return nil, ctx.Err()
					}
					if err != nil {
						r.fail(err)
						e.logf("%s, %s %d/%d: failed: %v", c, n, i, e.o.n, err)
						continue
					}
					r.Samples = append(r.Samples, smp)
					e.timed(c+", "+n, i, smp)
					if ci > 0 && p.label == "" {
						counts[n] = cp.Counts()
						e.logf("%s, %s: at the source: %s", c, n, counts[n])
						if cpuKnown {
							served[n] = append(served[n], sample{CPU: cpu1 - cpu0})
						}
					}
				}
				if err := e.dst.Drop(dstRepo); err != nil {
					return nil, err
				}
			}
		}
	}
	for _, n := range names {
		if c, ok := counts[n]; ok {
			rep.Facts = append(rep.Facts, fmt.Sprintf("%s, no-change rerun, requests at the source: %s", n, c))
		}
	}
	var cpus []string
	for _, n := range names {
		if len(served[n]) > 0 {
			cpus = append(cpus, n+" "+formatSeconds(medianSample(served[n]).CPU))
		}
	}
	if len(cpus) > 0 {
		rep.Facts = append(rep.Facts, "CPU of the harness (its registries and proxies) during each no-change rerun, on the same two cores as the tool: "+strings.Join(cpus, "; "))
	}
	for _, p := range paths {
		first, rerun := "first sync"+p.label, "no-change rerun"+p.label
		f, s := rows[first]["ferry"], rows[first]["skopeo"]
		rep.Targets = append(rep.Targets, compareTarget(first+": ferry faster than skopeo", f, s,
			func(f, p time.Duration) bool { return f < p }))
		for _, n := range []string{"ferry", ferryReferrers} {
			f, s := rows[rerun][n], rows[rerun]["skopeo"]
			what := rerun + ": " + n + " under 1 s"
			if f.ok() {
				w := f.median().Wall
				rep.Targets = append(rep.Targets, fmt.Sprintf("%s: %s (%s)", what, verdict(w < time.Second), formatSeconds(w)))
			} else {
				rep.Targets = append(rep.Targets, what+": pending (ferry "+whyNot(f)+")")
			}
			rep.Targets = append(rep.Targets, compareTarget(rerun+": "+n+" under a fifth of skopeo's time", f, s,
				func(f, p time.Duration) bool { return 5*f < p }))
		}
	}
	return rep, nil
}

// checkTags makes sure repo at host has every tag with its digest.
func checkTags(ctx context.Context, host, repo string, digests map[string]string) error {
	for tag, want := range digests {
		if err := checkDigest(ctx, host, repo, tag, want); err != nil {
			return err
		}
	}
	return nil
}
