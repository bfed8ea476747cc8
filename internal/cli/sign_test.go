package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-oci/ferry/internal/signing"
)

// run calls Main in dir with no terminal and returns the exit code and
// both streams.
func runFerry(t *testing.T, dir string, args ...string) (int, string, string) {
	t.Helper()
	t.Chdir(dir)
	t.Setenv("XDG_CONFIG_HOME", dir)
	var out, errOut bytes.Buffer
	code := Main(context.Background(), args, IOStreams{In: new(bytes.Buffer), Out: &out, Err: &errOut})
	return code, out.String(), errOut.String()
}

// unsetenv removes key for the test, restoring it after.
func unsetenv(t *testing.T, key string) {
	t.Helper()
	t.Setenv(key, "") // registers the restore
	os.Unsetenv(key)
}

func TestKeyGenerate(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(passwordEnv, "pw")
	code, out, errOut := runFerry(t, dir, "key", "generate", "--output-prefix", "release", "-o", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, `"privateKey": "release.key"`) {
		t.Errorf("stdout %q", out)
	}
	for name, mode := range map[string]os.FileMode{"release.key": 0o600, "release.pub": 0o644} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s has mode %v, want %v", name, fi.Mode().Perm(), mode)
		}
	}
	pem, _ := os.ReadFile(filepath.Join(dir, "release.key"))
	if _, err := signing.LoadSigner("release.key", pem, func() ([]byte, error) { return []byte("pw"), nil }); err != nil {
		t.Errorf("the generated key does not open with its password: %v", err)
	}

	// Existing keys are kept unless --force.
	before, _ := os.ReadFile(filepath.Join(dir, "release.key"))
	code, _, errOut = runFerry(t, dir, "key", "generate", "--output-prefix", "release")
	if code != ExitFailure || !strings.Contains(errOut, "release.key exists") {
		t.Errorf("overwrite without --force: exit %d: %s", code, errOut)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, "release.key")); !bytes.Equal(before, after) {
		t.Error("the existing key changed")
	}

	// No password anywhere and no terminal: a usage error that says how.
	unsetenv(t, passwordEnv)
	code, _, errOut = runFerry(t, dir, "key", "generate", "--output-prefix", "other")
	if code != ExitUsage || !strings.Contains(errOut, "set COSIGN_PASSWORD, or run ferry on a terminal") {
		t.Errorf("no password: exit %d: %s", code, errOut)
	}
	if _, err := os.Stat(filepath.Join(dir, "other.key")); err == nil {
		t.Error("a key was written without a password")
	}
	code, _, errOut = runFerry(t, dir, "sign", "--key", "release.key", "oci:"+dir+":x")
	if code != ExitUsage || !strings.Contains(errOut, "the private key release.key needs a password") {
		t.Errorf("sign without a password: exit %d: %s", code, errOut)
	}
}

func TestParseAnnotations(t *testing.T) {
	got, err := parseAnnotations([]string{"a=1", "b=x=y", "c=", "a=1"})
	if err != nil || len(got) != 3 || got["a"] != "1" || got["b"] != "x=y" || got["c"] != "" {
		t.Errorf("got %v, %v", got, err)
	}
	for _, bad := range [][]string{{"novalue"}, {"=v"}, {"a=1", "a=2"}} {
		if _, err := parseAnnotations(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
