package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-oci/ferry/internal/regtest"
)

// Ctrl-C (ROBUSTNESS row 16): SIGINT in the middle of a long command stops
// it with exit status 130 and "ferry: interrupted", and leaves the
// destination as valid as before: tags unchanged and complete, a layout
// that passes the full integrity check, no bundle file. The time each
// command takes to stop is logged; the 10-second bound is a guard against
// a hang, not a requirement.

// stopBound is how long a command may take to exit after SIGINT before
// the test gives up on it.
const stopBound = 10 * time.Second

// interrupt starts cmd, sends it SIGINT once ready holds, logs how long it
// took to exit after the signal, and returns its exit code and stderr. A
// command that ends before ready holds, or runs on stopBound after the
// signal, fails the test.
func interrupt(t *testing.T, cmd *exec.Cmd, ready func() bool) (code int, stderr string) {
	t.Helper()
	var errOut bytes.Buffer
	cmd.Stderr = &errOut
	done := start(t, cmd)
	if !waitFor(t, cmd.Process, done, ready) {
		t.Fatalf("%v ended (exit %d) before it could be interrupted:\n%s", cmd.Args, cmd.ProcessState.ExitCode(), errOut.String())
	}
	sent := time.Now()
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	var took time.Duration
	select {
	case <-done:
		took = time.Since(sent)
	case <-time.After(stopBound):
		cmd.Process.Kill()
		<-done
		t.Fatalf("%v still running %s after SIGINT", cmd.Args, stopBound)
	}
	t.Logf("ferry %s stopped %s after SIGINT, exit %d", subcommand(cmd.Args), took.Round(time.Millisecond), cmd.ProcessState.ExitCode())
	return cmd.ProcessState.ExitCode(), errOut.String()
}

// subcommand is the command path in args: "copy", "bundle import".
func subcommand(args []string) string {
	var path []string
	for _, a := range args[1:] {
		if strings.HasPrefix(a, "-") {
			break
		}
		path = append(path, a)
	}
	return strings.Join(path, " ")
}

// checkInterrupted checks the exit status and message of an interrupted
// command.
func checkInterrupted(t *testing.T, code int, stderr string) {
	t.Helper()
	if code != 130 || !strings.Contains(stderr, "ferry: interrupted") {
		t.Errorf("exit %d, want 130 and \"ferry: interrupted\":\n%s", code, stderr)
	}
}

// stallBlobs holds every blob GET at src after 64 KiB of its body, for far
// longer than a test runs: a copy from it is mid-transfer until stopped.
func stallBlobs(src *regtest.FaultProxy) *regtest.Hits {
	return src.Inject(regtest.Rule{Method: "GET", Path: `/blobs/`, Fault: regtest.StallAfter(64<<10, time.Minute)})
}

// TestInterruptCopy: SIGINT to ferry copy mid-blob, into a registry and
// into a layout that already hold an older image under the tag.
func TestInterruptCopy(t *testing.T) {
	for _, toOCI := range []bool{false, true} {
		t.Run(map[bool]string{false: "to registry", true: "to oci"}[toOCI], func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			up := regtest.GGCR(t, nil)
			src := regtest.Faults(t, up)
			old := pushImage(t, up, "old", 256<<10)
			pushImage(t, up, "app", 1536<<10)

			dstUp := regtest.GGCR(t, nil)
			dstRef := dstUp + "/app:v1"
			content := func() map[string]string { return registryContent(t, dstUp, "app") }
			if toOCI {
				layout := filepath.Join(dir, "layout")
				dstRef = "oci:" + layout + ":v1"
				content = func() map[string]string { return layoutContent(t, layout) }
			}
			if _, _, code := runFerry(t, ferry(dir, "copy", "--progress", "none", up+"/old:v1", dstRef)); code != 0 {
				t.Fatalf("copying the old image: exit %d", code)
			}

			gets := stallBlobs(src)
			code, stderr := interrupt(t, ferry(dir, "copy", "--progress", "none", src.Host()+"/app:v1", dstRef), func() bool { return gets.Injected() > 0 })
			checkInterrupted(t, code, stderr)
			if got := content(); got["v1"] != old.digest {
				t.Errorf("after the interrupted copy the destination has %v, want v1 still at %s", got, old.digest)
			}
		})
	}
}

// TestInterruptMirror: SIGINT to ferry mirror mid-blob leaves every
// target tag complete, and a rerun mirrors the rest.
func TestInterruptMirror(t *testing.T) {
	dir := t.TempDir()
	up, dstUp := regtest.GGCR(t, nil), regtest.GGCR(t, nil)
	src := regtest.Faults(t, up)
	want := pushTeams(t, up)
	layout := filepath.Join(dir, "layout")
	writeMirrorConfig(t, dir, src.Host()+"/team/a", dstUp+"/mirror/a", src.Host()+"/team/b", "oci:"+layout)
	// One image at a time: the first image's blobs pass, the second's stall.
	gets := src.Inject(regtest.Rule{Method: "GET", Path: `/blobs/`, Skip: 3, Fault: regtest.StallAfter(64<<10, time.Minute)})
	args := []string{"mirror", "--progress", "none", "--images", "1", "--jobs", "1", "-c", "mirror.toml"}
	code, stderr := interrupt(t, ferry(dir, args...), func() bool { return gets.Injected() > 0 })
	checkInterrupted(t, code, stderr)
	a, l := registryContent(t, dstUp, "mirror/a"), layoutContent(t, layout)
	for tag, d := range a {
		if d != want["team/a:"+tag] {
			t.Errorf("after the interrupt mirror/a:%s is %s, want %s", tag, d, want["team/a:"+tag])
		}
	}
	if d, ok := l["v1"]; ok && d != want["team/b:v1"] {
		t.Errorf("after the interrupt the layout's v1 is %s, want %s", d, want["team/b:v1"])
	}
	t.Logf("tagged when interrupted: mirror/a %d, layout %d", len(a), len(l))

	src.Clear()
	if _, _, code := runFerry(t, ferry(dir, args...)); code != 0 {
		t.Fatalf("rerun: exit %d", code)
	}
	a, l = registryContent(t, dstUp, "mirror/a"), layoutContent(t, layout)
	if a["v1"] != want["team/a:v1"] || a["v2"] != want["team/a:v2"] || l["v1"] != want["team/b:v1"] {
		t.Errorf("after the rerun mirror/a %v and layout %v, want %v", a, l, want)
	}
}

// TestInterruptBundleCreate: SIGINT to ferry bundle create mid-blob
// leaves no bundle file.
func TestInterruptBundleCreate(t *testing.T) {
	dir := t.TempDir()
	up := regtest.GGCR(t, nil)
	src := regtest.Faults(t, up)
	args := []string{"bundle", "create", "--progress", "none", "-o", "b.tar", "--split", "64K"}
	for i := range 3 {
		ref := fmt.Sprintf("img%d:v1", i)
		regtest.PushRandom(t, up+"/"+ref, 2, 256<<10, "", "")
		args = append(args, src.Host()+"/"+ref)
	}
	gets := src.Inject(regtest.Rule{Method: "GET", Path: `/blobs/`, Skip: 3, Fault: regtest.StallAfter(64<<10, time.Minute)})
	code, stderr := interrupt(t, ferry(dir, args...), func() bool { return gets.Injected() > 0 })
	checkInterrupted(t, code, stderr)
	if left := filesIn(t, dir); len(left) > 0 {
		t.Errorf("the interrupted bundle left %v", left)
	}
}

// filesIn lists the files in dir, less the hidden ones (the HOME and
// config directories ferry is run with).
func filesIn(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), ".") {
			names = append(names, e.Name())
		}
	}
	return names
}

// TestInterruptBundleImport: SIGINT to ferry bundle import while an
// upload is held leaves every imported tag complete, and a rerun imports
// the rest.
func TestInterruptBundleImport(t *testing.T) {
	dir := t.TempDir()
	_, digests := bundleOf(t, dir, 3)
	up := regtest.GGCR(t, nil)
	dst := regtest.Faults(t, up)
	commits := dst.Inject(regtest.Rule{Path: `/blobs/uploads/`, Query: `digest=`, Skip: 5, Fault: regtest.Latency(time.Minute)})
	args := []string{"bundle", "import", "--progress", "none", "--jobs", "2", "--images", "1", "b.tar", "--to", dst.Host() + "/site"}
	code, stderr := interrupt(t, ferry(dir, args...), func() bool { return commits.Injected() > 0 })
	checkInterrupted(t, code, stderr)
	if importedTags(t, up, digests) == len(digests) {
		t.Errorf("every image was imported before the interrupt")
	}
	dst.Clear()
	if _, _, code := runFerry(t, ferry(dir, args...)); code != 0 {
		t.Fatalf("rerun: exit %d", code)
	}
	checkImported(t, up, digests)
}

// slowUpload starts a blob upload to host whose body is sent as the
// caller writes it, and returns the writer and a channel with the status
// of the final PUT (or 0 if it failed).
func slowUpload(t *testing.T, host string, body []byte) (*io.PipeWriter, <-chan int) {
	t.Helper()
	resp, err := http.Post("http://"+host+"/v2/app/blobs/uploads/", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := resp.Location()
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("starting an upload: %s, %v", resp.Status, err)
	}
	q := loc.Query()
	q.Set("digest", sha256Digest(body))
	loc.RawQuery = q.Encode()
	pr, pw := io.Pipe()
	req, err := http.NewRequest(http.MethodPut, loc.String(), pr)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = int64(len(body))
	status := make(chan int, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			status <- 0
			return
		}
		resp.Body.Close()
		status <- resp.StatusCode
	}()
	return pw, status
}

// receiving reports whether ferry serve is writing an upload's body in
// the layout at root: a temp file there has data.
func receiving(t *testing.T, root string) bool {
	t.Helper()
	for _, name := range tempFiles(t, root) {
		if fi, err := os.Stat(filepath.Join(root, ".ferry", "tmp", name)); err == nil && fi.Size() > 0 {
			return true
		}
	}
	return false
}

// refused reports whether host no longer accepts connections.
func refused(host string) bool {
	c, err := net.DialTimeout("tcp", host, time.Second)
	if err != nil {
		return true
	}
	c.Close()
	return false
}

// TestInterruptServe: SIGINT stops ferry serve gracefully. Idle, it exits 0
// at once. With an upload in flight it refuses new connections, lets the
// upload finish, and exits 0 with the blob stored; an upload that does not
// finish within --shutdown-timeout is cut, ferry says so and exits 1, and
// nothing of it is stored.
func TestInterruptServe(t *testing.T) {
	body := bytes.Repeat([]byte("ferry serve drains uploads\n"), 20000)
	blobFile := func(root string) string {
		return filepath.Join(root, "blobs", "sha256", strings.TrimPrefix(sha256Digest(body), "sha256:"))
	}
	for _, c := range []struct {
		name     string
		upload   bool // an upload is in flight at the signal
		finish   bool // and its body is sent in full after it
		code     int
		msg      string
		uploaded int // the upload's status
	}{
		{name: "idle", code: 0, msg: "ferry serve: stopped"},
		{name: "upload finishing", upload: true, finish: true, code: 0, msg: "ferry serve: stopped", uploaded: http.StatusCreated},
		{name: "upload past the shutdown timeout", upload: true, code: 1, msg: "requests still running after 1s"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			root := filepath.Join(dir, "root")
			srv := startServe(t, dir, root, "--shutdown-timeout", "1s")
			var pw *io.PipeWriter
			var status <-chan int
			if c.upload {
				pw, status = slowUpload(t, srv.host, body)
				if _, err := pw.Write(body[:64<<10]); err != nil {
					t.Fatal(err)
				}
				// The signal must find the upload in the handler, not
				// still on its way there.
				if !waitFor(t, srv.cmd.Process, srv.done, func() bool { return receiving(t, root) }) {
					t.Fatal("ferry serve exited before the upload reached it")
				}
			}
			sent := time.Now()
			if err := srv.cmd.Process.Signal(os.Interrupt); err != nil {
				t.Fatal(err)
			}
			if c.upload {
				deadline := time.Now().Add(stopBound)
				for !refused(srv.host) && time.Now().Before(deadline) {
					time.Sleep(5 * time.Millisecond)
				}
				if !refused(srv.host) {
					t.Errorf("ferry serve still accepts connections after SIGINT")
				}
				if c.finish {
					if _, err := pw.Write(body[64<<10:]); err != nil {
						t.Errorf("sending the rest of the upload: %v", err)
					}
					pw.Close()
				}
			}
			select {
			case <-srv.done:
			case <-time.After(stopBound):
				t.Fatalf("ferry serve still running %s after SIGINT", stopBound)
			}
			took := time.Since(sent)
			if pw != nil {
				pw.CloseWithError(syscall.ECONNABORTED)
				if got := <-status; got != c.uploaded {
					t.Errorf("the upload got %d, want %d", got, c.uploaded)
				}
			}
			code := srv.cmd.ProcessState.ExitCode()
			t.Logf("ferry serve (%s) stopped %s after SIGINT, exit %d", c.name, took.Round(time.Millisecond), code)
			if code != c.code || !strings.Contains(srv.stderr.String(), c.msg) {
				t.Errorf("exit %d, want %d and %q:\n%s", code, c.code, c.msg, srv.stderr.String())
			}
			layoutContent(t, root)
			_, err := os.Stat(blobFile(root))
			if stored := err == nil; stored != (c.uploaded == http.StatusCreated) {
				t.Errorf("blob stored: %v, want %v", stored, c.uploaded == http.StatusCreated)
			}
		})
	}
}
