package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// cacheSuite measures ferry serve --upstream in front of docker-registry:
// crane pulling straight from the upstream, through a cache that lacks
// the image, through the cache again, and from a plain ferry serve --root
// holding the image; then 20 cranes pulling an image the cache lacks, at
// once, while a counting proxy checks that each blob is fetched once.
func (e *env) cacheSuite(ctx context.Context) (*suiteReport, error) {
	ferry, crane := e.tool(ctx, "ferry"), e.tool(ctx, "crane")
	dir, err := e.suiteDir("cache")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)

	// The upstream: docker-registry, or the harness's own registry.
	var up *server
	var upHost, upName string
	if path, missing := e.dockerRegistry(ctx); missing == "" {
		srv, err := startDockerRegistry(ctx, path, filepath.Join(dir, "upstream"), e.logPath("cache-upstream"))
		if err != nil {
			return nil, err
		}
		defer srv.Stop()
		up, upHost, upName = srv, srv.Host, "docker-registry "+e.tools["docker-registry"].Version
	} else {
		reg, err := startRegistry(filepath.Join(dir, "upstream"), nil)
		if err != nil {
			return nil, err
		}
		defer reg.Close()
		upHost, upName = reg.Host(), "the harness's registry (docker-registry "+missing+")"
	}
	type image struct {
		source
		blobs []string
	}
	var imgs []image
	for _, n := range []string{"cache", "burst"} {
		c, _ := findCase(n, e.o.quick)
		start := time.Now()
		s, err := generate(ctx, c, dir, upHost)
		if err != nil {
			return nil, err
		}
		blobs, total, err := imageBlobs(ctx, upHost, s.Repo, "v1")
		if err != nil {
			return nil, err
		}
		s.Bytes = total
		e.logf("generated %s in the upstream: %s, %s of blobs (%.1fs)", n, c.Describe(), formatBytes(total), time.Since(start).Seconds())
		imgs = append(imgs, image{s, blobs})
	}
	img, burst := imgs[0], imgs[1]
	cp, err := startCountingProxy(upHost)
	if err != nil {
		return nil, err
	}
	defer cp.Close()
	// The upstream far away, as it is in use: a delaying proxy in front
	// of the counting one, for direct pulls and for the cache's fetches.
	far, err := startProxy(cp.Host(), e.o.delay, e.o.window)
	if err != nil {
		return nil, err
	}
	defer far.Close()

	pullCase, burstCase := "pull "+img.Name, fmt.Sprintf("%d × pull %s", clients, burst.Name)
	farCase := fmt.Sprintf("pull %s, upstream %v RTT away", img.Name, 2*e.o.delay)
	rep := &suiteReport{
		Name: "cache", Tools: []string{"ferry", "crane", "docker-registry"}, Title: "ferry serve --upstream, a pull-through cache, with crane as the client",
		CPU: "server CPU", RSS: "server max RSS", Ratio: "÷ direct",
		About: []string{
			fmt.Sprintf("upstream: %s, behind a counting proxy that every pull goes through", upName),
			fmt.Sprintf("%s: %s, %s; %s: %s, %s", img.Name, img.Describe(), formatBytes(img.Bytes), burst.Name, burst.Describe(), formatBytes(burst.Bytes)),
			"direct: `crane pull --format oci` from the upstream; first pull: from `ferry serve --root EMPTY --upstream http://UPSTREAM`; " +
				"cached pull: the same again; serve --root: from `ferry serve --root` of the root the cache filled",
			fmt.Sprintf("%s: the same two pulls with the upstream behind a proxy that adds %v of round trip (the cache is near crane, the upstream far from both)", farCase, 2*e.o.delay),
			fmt.Sprintf("%s: %d cranes at once, from the upstream, then from a cache that lacks the image", burstCase, clients),
			"wall: crane's; CPU and max RSS: the server's (the upstream's for direct), from /proc",
		},
	}
	missing := ferry.Missing
	if crane.Missing != "" {
		missing = "crane " + crane.Missing
	}
	direct := rep.add(pullCase, "direct", true, crane.Missing)
	first := rep.add(pullCase, "ferry cache, first pull", false, missing)
	cached := rep.add(pullCase, "ferry cache, cached pull", false, missing)
	plain := rep.add(pullCase, "ferry serve --root", false, missing)
	directFar := rep.add(farCase, "direct", true, crane.Missing)
	firstFar := rep.add(farCase, "ferry cache, first pull", false, missing)
	burstDirect := rep.add(burstCase, "direct", true, crane.Missing)
	burstCache := rep.add(burstCase, "ferry cache, first pulls", false, missing)
	var once []string // problems with one fetch per blob
	onceRuns := 0
	checkOnce := func(what string, blobs []string) {
		c := cp.Counts()
		e.logf("%s: at the upstream: %s", what, c)
		onceRuns++
		if p := c.OncePerBlob(blobs); p != "" {
			once = append(once, what+": "+p)
		}
	}
	var cachedFetches []string

	pull := func(host string, s image, label string, i int) (time.Duration, error) {
		smp, err := e.pull(ctx, crane, host+"/"+s.Repo+":v1", filepath.Join(dir, "pull"), e.logPath("cache", label, i), s.Bytes)
		return smp.Wall, err
	}
	startCache := func(root, upstream, label string, i int) (*server, error) {
		args := []string{"--root", root}
		if upstream != "" {
			args = append(args, "--upstream", "http://"+upstream)
		}
		return startFerryServe(ctx, ferry.Path, args, e.logPath("cache-serve", label, i))
	}
	for i := 1; i <= e.o.n && crane.Missing == ""; i++ {
		e.step(direct, up, i, func() (time.Duration, error) { return pull(cp.Host(), img, "direct", i) })
		e.step(burstDirect, up, i, func() (time.Duration, error) {
			return e.pulls(ctx, crane, cp.Host()+"/"+burst.Repo+":v1", filepath.Join(dir, "pulls"), e.logPath("cache-burst-direct", i), burst.Bytes)
		})
		if missing != "" {
			continue
		}
		root := filepath.Join(dir, fmt.Sprintf("root-%d", i))
		if srv, err := startCache(root, cp.Host(), "cache", i); err != nil {
			first.fail(err)
		} else {
			cp.Reset()
			e.step(first, srv, i, func() (time.Duration, error) { return pull(srv.Host, img, "first", i) })
			if first.Err == "" {
				checkOnce(fmt.Sprintf("first pull, run %d", i), img.blobs)
			}
			cp.Reset()
			e.step(cached, srv, i, func() (time.Duration, error) { return pull(srv.Host, img, "cached", i) })
			if c := cp.Counts(); len(c.BlobGets) > 0 {
				cachedFetches = append(cachedFetches, fmt.Sprintf("run %d: %s", i, c))
			}
			srv.Stop()
		}
		if srv, err := startCache(root, "", "plain", i); err != nil {
			plain.fail(err)
		} else {
			e.step(plain, srv, i, func() (time.Duration, error) { return pull(srv.Host, img, "plain", i) })
			srv.Stop()
		}
		os.RemoveAll(root)

		e.step(directFar, up, i, func() (time.Duration, error) { return pull(far.Host(), img, "direct-far", i) })
		root = filepath.Join(dir, fmt.Sprintf("far-%d", i))
		if srv, err := startCache(root, far.Host(), "far", i); err != nil {
			firstFar.fail(err)
		} else {
			e.step(firstFar, srv, i, func() (time.Duration, error) { return pull(srv.Host, img, "first-far", i) })
			srv.Stop()
		}
		os.RemoveAll(root)

		root = filepath.Join(dir, fmt.Sprintf("burst-%d", i))
		if srv, err := startCache(root, cp.Host(), "burst", i); err != nil {
			burstCache.fail(err)
		} else {
			cp.Reset()
			e.step(burstCache, srv, i, func() (time.Duration, error) {
				return e.pulls(ctx, crane, srv.Host+"/"+burst.Repo+":v1", filepath.Join(dir, "pulls"), e.logPath("cache-burst", i), burst.Bytes)
			})
			if burstCache.Err == "" {
				checkOnce(fmt.Sprintf("%d clients, run %d", clients, i), burst.blobs)
			}
			srv.Stop()
		}
		os.RemoveAll(root)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}

	if len(cachedFetches) > 0 {
		rep.Facts = append(rep.Facts, "cached pulls fetched blobs from the upstream: "+strings.Join(cachedFetches, "; "))
	} else if cached.ok() {
		rep.Facts = append(rep.Facts, "cached pulls fetched no blob from the upstream")
	}
	within12 := func(f, p time.Duration) bool { return f*5 <= p*6 }
	rep.Targets = append(rep.Targets,
		compareTarget("first pull through the cache at most 1.2× the direct pull", first, direct, within12),
		compareTarget(fmt.Sprintf("the same, upstream %v RTT away", 2*e.o.delay), firstFar, directFar, within12),
		compareTarget("cached pull no slower than ferry serve --root", cached, plain, noSlower))
	what := "exactly one upstream transfer per blob (first pulls and 20 clients at once)"
	switch {
	case onceRuns == 0:
		rep.Targets = append(rep.Targets, what+": pending (ferry "+whyNot(burstCache)+")")
	case len(once) > 0:
		rep.Targets = append(rep.Targets, what+": MISSED ("+strings.Join(once, "; ")+")")
	default:
		rep.Targets = append(rep.Targets, fmt.Sprintf("%s: met (%d pulls checked: each of %s's %d and %s's %d blobs fetched once)",
			what, onceRuns, img.Name, len(img.blobs), burst.Name, len(burst.blobs)))
	}
	return rep, nil
}
