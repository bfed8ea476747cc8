package main

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-oci/ferry/internal/regtest"
)

// ferry runs the ferry command (the test binary, which testscript.Main
// put on PATH) in dir.
func ferry(dir string, args ...string) *exec.Cmd {
	cmd := exec.Command("ferry", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "HOME="+dir, "DOCKER_CONFIG="+dir+"/.docker", "XDG_CONFIG_HOME="+dir+"/.config", "GORACE=atexit_sleep_ms=0")
	return cmd
}

// runFerry runs cmd to its end and returns what it printed and its exit
// code; stderr is logged when the code is not 0, or with -v.
func runFerry(t *testing.T, cmd *exec.Cmd) (stdout, stderr string, code int) {
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
	return out.String(), errOut.String(), code
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
	if _, _, code := runFerry(t, ferry(dir, args...)); code != 0 {
		t.Fatalf("bundle create: exit %d", code)
	}
	return filepath.Join(dir, "b.tar"), digests
}

// importedTags reads every image of digests at host in full, as
// site/NAME:v1, and returns how many are there; one tagged with another
// digest fails the test.
func importedTags(t *testing.T, host string, digests map[string]string) int {
	t.Helper()
	n := 0
	for name, d := range digests {
		if got, ok := registryContent(t, host, "site/"+name)["v1"]; ok {
			n++
			if got != d {
				t.Errorf("site/%s:v1 is %s, want %s", name, got, d)
			}
		}
	}
	return n
}

// checkImported checks that every image of digests is at host, complete.
func checkImported(t *testing.T, host string, digests map[string]string) {
	t.Helper()
	if n := importedTags(t, host, digests); n != len(digests) {
		t.Errorf("%d of the %d images are imported", n, len(digests))
	}
}

// A failing image does not stop the others: exit 3, the rest imported,
// and the receipt written for what is there.
func TestBundleImportPartial(t *testing.T) {
	dir := t.TempDir()
	_, digests := bundleOf(t, dir, 3)
	up := regtest.GGCR(t, nil)
	dst := regtest.Faults(t, up)
	dst.Inject(regtest.Rule{Method: http.MethodPut, Path: `^/v2/site/img1/manifests/`, Fault: regtest.Status(http.StatusInternalServerError)})
	_, _, code := runFerry(t, ferry(dir, "bundle", "import", "--progress", "none", "b.tar", "--to", dst.Host()+"/site"))
	if code != 3 {
		t.Fatalf("exit %d, want 3", code)
	}
	for name, d := range digests {
		want := d
		if name == "img1" {
			want = ""
		}
		if got := manifestDigest(t, up, "site/"+name, "v1"); got != want {
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
