package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/ferry-oci/ferry/internal/regtest"
)

// Kill tests (ROBUSTNESS rows 22 and 30): ferry is killed with SIGKILL at
// random points of its work. What it leaves is checked in full, then a
// rerun or restart must finish the job. The points come from a seeded
// generator whose seed is logged: set FERRY_KILL_SEED to replay a run.

// killRand returns the generator for a test's kill points.
func killRand(t *testing.T) *rand.Rand {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("FERRY_KILL_SEED"); s != "" {
		if _, err := fmt.Sscan(s, &seed); err != nil {
			t.Fatalf("FERRY_KILL_SEED=%q: %v", s, err)
		}
	}
	t.Logf("kill points from seed %d (FERRY_KILL_SEED=%d replays them)", seed, seed)
	return rand.New(rand.NewPCG(seed, seed))
}

// start starts cmd and returns a channel closed when it has exited.
func start(t *testing.T, cmd *exec.Cmd) <-chan struct{} {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	return done
}

// waitFor polls ready until it holds, and reports false if the process
// exits first (done is closed when it has). 30 seconds without either
// kills the process and fails the test.
func waitFor(t *testing.T, proc *os.Process, done <-chan struct{}, ready func() bool) bool {
	t.Helper()
	deadline := time.After(30 * time.Second)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !ready() {
		select {
		case <-done:
			return false
		case <-deadline:
			proc.Kill()
			<-done
			t.Fatal("the process was not at the point waited for after 30s")
		case <-tick.C:
		}
	}
	return true
}

// killWhen waits until ready holds and then for extra, and kills the
// process with SIGKILL; done is closed when it exits. It reports whether
// the process was still running when killed: one that ends first is not
// an error.
func killWhen(t *testing.T, proc *os.Process, done <-chan struct{}, ready func() bool, extra time.Duration) bool {
	t.Helper()
	if !waitFor(t, proc, done, ready) {
		return false
	}
	select {
	case <-done:
		return false
	case <-time.After(extra):
	}
	if err := proc.Signal(syscall.SIGKILL); err != nil {
		<-done
		return false
	}
	<-done
	return true
}

// tempFiles lists what is left in an OCI layout's temp directory.
func tempFiles(t *testing.T, layout string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(layout, ".ferry", "tmp"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// ROBUSTNESS row 22: an import killed with SIGKILL at a random point
// leaves nothing half-written visible, and a rerun finishes the job,
// skipping what the killed run pushed.
func TestBundleImportKilled(t *testing.T) {
	dir := t.TempDir()
	_, digests := bundleOf(t, dir, 4)
	rnd := killRand(t)
	killed := 0
	for i := range 3 {
		// Each blob upload's commit is held a little, so the kill lands
		// between them.
		up := regtest.GGCR(t, nil)
		dst := regtest.Faults(t, up)
		commits := dst.Inject(regtest.Rule{Path: `/blobs/uploads/`, Query: `digest=`, Fault: regtest.Latency(100 * time.Millisecond)})
		at, extra := rnd.IntN(12), time.Duration(rnd.IntN(100))*time.Millisecond

		cmd := ferry(dir, "bundle", "import", "--progress", "none", "--jobs", "2", "--images", "1", "b.tar", "--to", dst.Host()+"/site")
		done := start(t, cmd)
		if !killWhen(t, cmd.Process, done, func() bool { return commits.Answered() >= at }, extra) {
			t.Logf("import %d finished before the kill after %d commits and %s", i, at, extra)
			continue
		}
		killed++
		pushed := commits.Answered()
		t.Logf("import %d killed after %d blob commits", i, pushed)

		// A tag there points at a complete image.
		importedTags(t, up, digests)

		// The rerun completes, skipping what was pushed.
		dst.Clear()
		out, _, code := runFerry(t, ferry(dir, "bundle", "import", "--progress", "none", "-o", "json", "b.tar", "--to", dst.Host()+"/site"))
		if code != 0 {
			t.Fatalf("rerun: exit %d", code)
		}
		var res struct {
			Images []struct {
				BlobsSkipped int `json:"blobsSkipped"`
			} `json:"images"`
		}
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		skipped := 0
		for _, im := range res.Images {
			skipped += im.BlobsSkipped
		}
		if skipped < pushed {
			t.Errorf("the rerun skipped %d blobs; the killed run had pushed %d", skipped, pushed)
		}
		checkImported(t, up, digests)
	}
	if killed == 0 {
		t.Fatal("no import was killed midway")
	}
}

// ROBUSTNESS row 30, and row 22's "nothing half-written", for a layout:
// ferry copy into oci:DIR killed with SIGKILL at random points leaves a
// layout that passes the full integrity check, with the tag absent or
// complete; the rerun completes it and the killed run's temp files are
// gone.
func TestCopyToLayoutKilled(t *testing.T) {
	up := regtest.GGCR(t, nil)
	src := regtest.Faults(t, up)
	want := regtest.PushRandom(t, up+"/app:v1", 8, 256<<10, "", "")
	regtest.PushSignature(t, up+"/app", want, "", "")
	gets := src.Inject(regtest.Rule{Method: "GET", Path: `/blobs/`, Fault: regtest.Latency(40 * time.Millisecond)})
	rnd := killRand(t)
	killed := 0
	for i := range 5 {
		dir := t.TempDir()
		layout := filepath.Join(dir, "layout")
		before := gets.Seen()
		at, extra := before+rnd.IntN(10), time.Duration(rnd.IntN(60))*time.Millisecond
		cmd := ferry(dir, "copy", "--progress", "none", "--jobs", "2", src.Host()+"/app:v1", "oci:"+layout+":v1")
		done := start(t, cmd)
		if !killWhen(t, cmd.Process, done, func() bool { return gets.Seen() >= at }, extra) {
			t.Logf("copy %d finished before the kill after %d blob GETs and %s", i, at-before, extra)
			continue
		}
		killed++
		t.Logf("copy %d killed after %d blob GETs and %s; %d temp files left", i, gets.Seen()-before, extra, len(tempFiles(t, layout)))
		if got, ok := layoutContent(t, layout)["v1"]; ok && got != want {
			t.Errorf("after the kill v1 is %s, want %s", got, want)
		}
		if _, _, code := runFerry(t, ferry(dir, "copy", "--progress", "none", src.Host()+"/app:v1", "oci:"+layout+":v1")); code != 0 {
			t.Fatalf("rerun: exit %d", code)
		}
		if got := layoutContent(t, layout)["v1"]; got != want {
			t.Errorf("after the rerun v1 is %q, want %s", got, want)
		}
		if left := tempFiles(t, layout); len(left) > 0 {
			t.Errorf("temp files left after the rerun: %v", left)
		}
	}
	if killed == 0 {
		t.Fatal("no copy was killed midway")
	}
}

// serveProcess is a running ferry serve.
type serveProcess struct {
	cmd    *exec.Cmd
	host   string
	done   chan struct{} // closed when it has exited
	err    error         // its exit, once done is closed
	stderr bytes.Buffer  // what it wrote, once done is closed
}

// servingLine is what ferry serve prints once it accepts requests.
var servingLine = regexp.MustCompile(`^serving http://(\S+) `)

// startServe runs ferry serve on root on a free port of 127.0.0.1 and
// returns once it accepts requests. It is killed in t.Cleanup if still
// running, and what it wrote to stderr is logged if the test failed.
func startServe(t *testing.T, dir, root string, args ...string) *serveProcess {
	t.Helper()
	cmd := ferry(dir, append([]string{"serve", "--root", root, "--addr", "127.0.0.1:0", "--log-level", "none"}, args...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	s := &serveProcess{cmd: cmd, done: make(chan struct{})}
	cmd.Stderr = &s.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	go func() {
		s.err = cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-s.done
		if t.Failed() && s.stderr.Len() > 0 {
			t.Logf("ferry serve --root %s wrote:\n%s", root, s.stderr.String())
		}
	})
	m := servingLine.FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("ferry serve printed %q (%v), want a serving line", line, err)
	}
	s.host = m[1]
	return s
}

// randomImage is an image made in the test, and its digest.
type randomImage struct {
	v1.Image
	digest string
}

func newRandomImage(t *testing.T, layers int, size int64) randomImage {
	t.Helper()
	img, err := random.Image(size, int64(layers))
	if err != nil {
		t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return randomImage{img, d.String()}
}

// pushAll pushes each image to host as REPO:v1, in parallel, and returns
// the errors; it never fails the test.
func pushAll(ctx context.Context, host string, images map[string]randomImage) map[string]error {
	var mu sync.Mutex
	errs := map[string]error{}
	var wg sync.WaitGroup
	for repo, img := range images {
		wg.Go(func() {
			ref, err := name.ParseReference(host + "/" + repo + ":v1")
			if err == nil {
				err = remote.Write(ref, img, remote.WithContext(ctx), remote.WithJobs(2))
			}
			mu.Lock()
			errs[repo] = err
			mu.Unlock()
		})
	}
	wg.Wait()
	return errs
}

// ROBUSTNESS row 30: ferry serve killed with SIGKILL while clients push
// leaves a root that passes the full integrity check, with no tag on
// incomplete content; restarted on the same root it cleans the killed
// run's temp files, and pushing the same images again succeeds.
func TestServeKilledDuringPushes(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	rnd := killRand(t)
	images := map[string]randomImage{}
	killed := 0
	for i := range 3 {
		batch := map[string]randomImage{}
		for j := range 4 {
			repo := fmt.Sprintf("r%d/app%d", i, j)
			batch[repo] = newRandomImage(t, 3, 256<<10)
			images[repo] = batch[repo]
		}
		srv := startServe(t, dir, root)
		if left := tempFiles(t, root); len(left) > 0 {
			t.Errorf("serve %d started with temp files left: %v", i, left)
		}
		// Each blob upload's commit is held a little, so the kill lands
		// among them.
		p := regtest.Faults(t, srv.host)
		commits := p.Inject(regtest.Rule{Method: "PUT", Path: `/blobs/uploads/`, Fault: regtest.Latency(30 * time.Millisecond)})
		at, extra := 1+rnd.IntN(12), time.Duration(rnd.IntN(40))*time.Millisecond

		ctx, cancel := context.WithCancel(t.Context())
		var pushesDone atomic.Bool
		pushed := make(chan map[string]error, 1)
		go func() {
			pushed <- pushAll(ctx, p.Host(), batch)
			pushesDone.Store(true)
		}()
		if killWhen(t, srv.cmd.Process, srv.done, func() bool { return commits.Answered() >= at || pushesDone.Load() }, extra) && !pushesDone.Load() {
			killed++
		}
		cancel()
		t.Logf("serve %d killed after %d blob commits and %s; %d temp files left; push errors: %v", i, commits.Answered(), extra, len(tempFiles(t, root)), <-pushed)

		for tag, d := range layoutContent(t, root) {
			repo, _, _ := strings.Cut(tag, ":")
			if img, ok := images[repo]; !ok || d != img.digest {
				t.Errorf("after the kill %s is %s, not the image pushed", tag, d)
			}
		}
	}
	if killed == 0 {
		t.Fatal("no serve was killed during pushes")
	}

	// Restarted, the registry takes every image again.
	srv := startServe(t, dir, root)
	if left := tempFiles(t, root); len(left) > 0 {
		t.Errorf("serve started with temp files left: %v", left)
	}
	for repo, err := range pushAll(t.Context(), srv.host, images) {
		if err != nil {
			t.Errorf("pushing %s again: %v", repo, err)
		}
	}
	for repo, img := range images {
		if got := registryContent(t, srv.host, repo)["v1"]; got != img.digest {
			t.Errorf("%s:v1 is %q, want %s", repo, got, img.digest)
		}
	}
	if err := srv.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-srv.done
	if srv.err != nil {
		t.Errorf("ferry serve stopped with %v, want exit 0", srv.err)
	}
	layoutContent(t, root)
	t.Logf("serve killed %d times during pushes", killed)
}
