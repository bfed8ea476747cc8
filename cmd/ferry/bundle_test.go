package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"

	"github.com/ferry-oci/ferry/internal/regtest"
)

// slowRegistry is go-containerregistry's registry behind a handler that
// can delay the request that completes each blob upload, count the
// uploads completed, and refuse manifests for one repository.
type slowRegistry struct {
	host     string
	delay    atomic.Int64 // nanoseconds before each blob upload completes
	uploads  atomic.Int64
	failRepo atomic.Value // string: manifest PUTs under /v2/<it>/ get 500
}

func newSlowRegistry(t *testing.T) *slowRegistry {
	t.Helper()
	s := &slowRegistry{}
	s.failRepo.Store("")
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)), registry.WithReferrersSupport(true))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if f := s.failRepo.Load().(string); f != "" && r.Method == http.MethodPut && strings.HasPrefix(r.URL.Path, "/v2/"+f+"/manifests/") {
			http.Error(w, `{"errors":[{"code":"UNKNOWN","message":"injected"}]}`, http.StatusInternalServerError)
			return
		}
		done := strings.Contains(r.URL.Path, "/blobs/uploads") && r.URL.Query().Get("digest") != ""
		if done {
			select {
			case <-time.After(time.Duration(s.delay.Load())):
			case <-r.Context().Done():
				return
			}
		}
		reg.ServeHTTP(w, r)
		if done {
			s.uploads.Add(1)
		}
	}))
	t.Cleanup(srv.Close)
	s.host = strings.TrimPrefix(srv.URL, "http://")
	return s
}

// ferry runs the ferry command (the test binary, which testscript.Main
// put on PATH) in dir.
func ferry(dir string, args ...string) *exec.Cmd {
	cmd := exec.Command("ferry", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "HOME="+dir, "DOCKER_CONFIG="+dir+"/.docker", "XDG_CONFIG_HOME="+dir+"/.config", "GORACE=atexit_sleep_ms=0")
	return cmd
}

func runFerry(t *testing.T, cmd *exec.Cmd) (stdout string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		code = exit.ExitCode()
	case err != nil:
		t.Fatalf("%v: %v", cmd.Args, err)
	}
	if testing.Verbose() || code != 0 {
		t.Logf("%v: exit %d\n%s", cmd.Args, code, errOut.String())
	}
	return out.String(), code
}

// bundleOf pushes n images of three 64 KiB layers and bundles them.
func bundleOf(t *testing.T, dir string, n int) (path string, digests map[string]string) {
	t.Helper()
	src := regtest.GGCR(t, nil)
	digests = map[string]string{}
	args := []string{"bundle", "create", "--progress", "none", "-o", "b.tar"}
	for i := range n {
		name := fmt.Sprintf("img%d", i)
		digests[name] = regtest.PushRandom(t, src+"/"+name+":v1", 3, 64<<10, "", "")
		args = append(args, src+"/"+name+":v1")
	}
	if _, code := runFerry(t, ferry(dir, args...)); code != 0 {
		t.Fatalf("bundle create: exit %d", code)
	}
	return filepath.Join(dir, "b.tar"), digests
}

// ROBUSTNESS row 22: an import killed with SIGKILL midway leaves nothing
// half-written visible, and a rerun finishes the job, skipping what the
// killed run pushed.
func TestBundleImportKilled(t *testing.T) {
	dir := t.TempDir()
	_, digests := bundleOf(t, dir, 4)
	dst := newSlowRegistry(t)
	dst.delay.Store(int64(150 * time.Millisecond))

	cmd := ferry(dir, "bundle", "import", "--progress", "none", "--jobs", "2", "--images", "1", "b.tar", "--to", dst.host+"/site")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for dst.uploads.Load() < 3 {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatal("no upload completed")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	killedAt := dst.uploads.Load()
	if killedAt >= 4*4 {
		t.Fatalf("the import finished (%d uploads) before it was killed", killedAt)
	}

	// Nothing half-written is visible: a tag there points at a complete
	// image; at least one image is not there yet.
	missing := 0
	for name, d := range digests {
		got := manifestDigest(t, dst.host, "site/"+name, "v1")
		switch got {
		case "":
			missing++
		case d:
			for _, b := range imageBlobs(t, dst.host, "site/"+name, d) {
				if !blobExists(t, dst.host, "site/"+name, b) {
					t.Errorf("site/%s:v1 is tagged, but its blob %s is missing", name, b)
				}
			}
		default:
			t.Errorf("site/%s:v1 is %s, want %s", name, got, d)
		}
	}
	if missing == 0 {
		t.Fatal("every image was there after the kill")
	}

	// The rerun completes, skipping what was pushed.
	dst.delay.Store(0)
	out, code := runFerry(t, ferry(dir, "bundle", "import", "--progress", "none", "-o", "json", "b.tar", "--to", dst.host+"/site"))
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
	if skipped < 3 {
		t.Errorf("the rerun skipped %d blobs; the killed run had pushed %d", skipped, killedAt)
	}
	for name, d := range digests {
		if got := manifestDigest(t, dst.host, "site/"+name, "v1"); got != d {
			t.Errorf("after the rerun site/%s:v1 is %q, want %s", name, got, d)
		}
	}
}

// A failing image does not stop the others: exit 3, the rest imported,
// and the receipt written for what is there.
func TestBundleImportPartial(t *testing.T) {
	dir := t.TempDir()
	_, digests := bundleOf(t, dir, 3)
	dst := newSlowRegistry(t)
	dst.failRepo.Store("site/img1")
	_, code := runFerry(t, ferry(dir, "bundle", "import", "--progress", "none", "b.tar", "--to", dst.host+"/site"))
	if code != 3 {
		t.Fatalf("exit %d, want 3", code)
	}
	for name, d := range digests {
		want := d
		if name == "img1" {
			want = ""
		}
		if got := manifestDigest(t, dst.host, "site/"+name, "v1"); got != want {
			t.Errorf("site/%s:v1 is %q, want %q", name, got, want)
		}
	}
	data, err := os.ReadFile(filepath.Join(dir, "b.tar.receipt.json"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), "site/img1:v1") || !strings.Contains(string(data), "site/img0:v1") {
		t.Errorf("receipt images:\n%s", data)
	}
}

func manifestDigest(t *testing.T, host, repo, ref string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodHead, "http://"+host+"/v2/"+repo+"/manifests/"+ref, nil)
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.index.v1+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return ""
	}
	return resp.Header.Get("Docker-Content-Digest")
}

func imageBlobs(t *testing.T, host, repo, d string) []string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+host+"/v2/"+repo+"/manifests/"+d, nil)
	req.Header.Set("Accept", "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m struct {
		Config struct{ Digest string }
		Layers []struct{ Digest string }
	}
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatal(err)
	}
	out := []string{m.Config.Digest}
	for _, l := range m.Layers {
		out = append(out, l.Digest)
	}
	return out
}

func blobExists(t *testing.T, host, repo, d string) bool {
	t.Helper()
	resp, err := http.Head("http://" + host + "/v2/" + repo + "/blobs/" + d)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
