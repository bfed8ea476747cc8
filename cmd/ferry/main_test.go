package main

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/rogpeppe/go-internal/testscript"

	"github.com/ferry-oci/ferry/internal/regtest"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"ferry": func() { os.Exit(run()) },
	})
}

// TestScripts runs testdata/script/*.txtar against go-containerregistry's
// registry. Each script gets:
//
//	REG             an open registry with app:v1, multi:v1 (two platforms) and versions:*
//	AUTHREG         a registry that wants user alice, password s3cret, with app:v1
//	APP_DIGEST, MULTI_DIGEST, VERSIONS_DIGEST, AUTH_APP_DIGEST
//	SIGNED_DIGEST   signed:v1, with a cosign-style signature tag (SIG_DIGEST)
//	                and an OCI 1.1 referrer (SBOM_DIGEST)
//
// The registries are shared by all scripts: a script that writes uses a
// repository no other script reads.
func TestScripts(t *testing.T) {
	reg := regtest.GGCR(t, nil)
	authreg := regtest.GGCR(t, map[string]string{"alice": "s3cret"})
	vars := seed(t, reg, authreg, "alice", "s3cret")
	testscript.Run(t, scriptParams("testdata/script", vars))
}

// scriptParams are the settings every script suite shares; vars are
// extra KEY=VALUE environment entries.
func scriptParams(dir string, vars []string) testscript.Params {
	return testscript.Params{
		Dir: "../../" + dir,
		Setup: func(env *testscript.Env) error {
			env.Setenv("HOME", env.WorkDir)
			env.Setenv("DOCKER_CONFIG", env.WorkDir+"/.docker")
			env.Setenv("XDG_CONFIG_HOME", env.WorkDir+"/.config")
			// A race-enabled binary sleeps a second at exit by default;
			// scripts run it hundreds of times.
			env.Setenv("GORACE", strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
			env.Vars = append(env.Vars, vars...)
			return setupRekor(env)
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"exitcode": cmdExitcode,
			"sha256":   cmdSHA256,
			"expand":   cmdExpand,
			"rekor":    cmdRekor,
		},
		RequireExplicitExec: true,
	}
}

// setupRekor gives a script a transparency log of its own:
//
//	REKOR      its URL, for ferry sign --tlog-upload --rekor-url
//	REKOR_PUB  the file of its public key, for ferry verify --rekor-key
//	           and cosign's SIGSTORE_REKOR_PUBLIC_KEY
func setupRekor(env *testscript.Env) error {
	log, err := regtest.NewRekor()
	if err != nil {
		return err
	}
	env.Defer(log.Close)
	dir, err := os.MkdirTemp("", "rekor")
	if err != nil {
		return err
	}
	env.Defer(func() { os.RemoveAll(dir) })
	pub := filepath.Join(dir, "rekor.pub")
	if err := os.WriteFile(pub, log.PublicKey, 0o644); err != nil {
		return err
	}
	env.Setenv("REKOR", log.URL)
	env.Setenv("REKOR_PUB", pub)
	env.Values[rekorKey{}] = log
	return nil
}

// rekorKey is the key of the script's log in testscript's Values.
type rekorKey struct{}

// cmdRekor checks how many requests the script's transparency log has
// received, or how many entries it holds:
//
//	rekor requests 0
//	rekor entries 2
func cmdRekor(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: rekor requests|entries N")
	}
	log := ts.Value(rekorKey{}).(*regtest.RekorLog)
	want, err := strconv.Atoi(args[1])
	if err != nil {
		ts.Fatalf("rekor: %v", err)
	}
	var got int
	switch args[0] {
	case "requests":
		got = log.Requests()
	case "entries":
		got = log.Entries()
	default:
		ts.Fatalf("usage: rekor requests|entries N")
	}
	if got != want {
		ts.Fatalf("the transparency log has %d %s, want %d", got, args[0], want)
	}
}

// seed pushes the images the scripts expect and returns their variables.
func seed(t *testing.T, reg, authreg, user, pass string) []string {
	vd := regtest.PushImage(t, reg+"/versions:latest", regtest.Image{Layers: 1}, "", "")
	for _, tag := range []string{"1.0.0", "1.1.0", "1.2.0-rc1", "2.0.0", "sha256-" + strings.Repeat("a", 64) + ".sig"} {
		if err := retag(reg+"/versions@"+vd, tag); err != nil {
			t.Fatalf("tagging %s: %v", tag, err)
		}
	}
	signed := regtest.PushImage(t, reg+"/signed:v1", regtest.Image{Layers: 1}, "", "")
	return []string{
		"SIGNED_DIGEST=" + signed,
		"SIG_DIGEST=" + regtest.PushSignature(t, reg+"/signed", signed, "", ""),
		"SBOM_DIGEST=" + regtest.PushReferrer(t, reg+"/signed", signed, "application/vnd.example.sbom", "", ""),
		"REG=" + reg,
		"AUTHREG=" + authreg,
		"APP_DIGEST=" + regtest.PushImage(t, reg+"/app:v1", regtest.Image{Layers: 2, Labels: map[string]string{"org.example.team": "ferry"}}, "", ""),
		"MULTI_DIGEST=" + regtest.PushRandomIndex(t, reg+"/multi:v1", []string{"linux/amd64", "linux/arm64/v8"}, "", ""),
		"VERSIONS_DIGEST=" + vd,
		"AUTH_APP_DIGEST=" + regtest.PushImage(t, authreg+"/app:v1", regtest.Image{Layers: 1}, user, pass),
	}
}

func retag(src, tag string) error {
	ref, err := name.NewDigest(src)
	if err != nil {
		return err
	}
	desc, err := remote.Get(ref)
	if err != nil {
		return err
	}
	return remote.Tag(ref.Context().Tag(tag), desc)
}

// cmdExitcode runs a program and checks its exit code:
//
//	exitcode 2 ferry inspect
func cmdExitcode(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: exitcode CODE program [args...]")
	}
	want, err := strconv.Atoi(args[0])
	if err != nil {
		ts.Fatalf("exitcode: %v", err)
	}
	err = ts.Exec(args[1], args[2:]...)
	got := 0
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		got = exit.ExitCode()
	case err != nil:
		ts.Fatalf("exitcode: %v", err)
	}
	if got != want {
		ts.Fatalf("exit code %d, want %d", got, want)
	}
}

// cmdSHA256 checks that a file (or stdout/stderr) hashes to a digest:
//
//	sha256 stdout sha256:...
func cmdSHA256(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: sha256 file|stdout|stderr digest")
	}
	data := ts.ReadFile(args[0])
	got := fmt.Sprintf("sha256:%x", sha256.Sum256([]byte(data)))
	if (got == args[1]) == neg {
		ts.Fatalf("%s hashes to %s, want %s%s", args[0], got, map[bool]string{true: "not "}[neg], args[1])
	}
}

// cmdExpand writes a file with $VAR and ${VAR} replaced by the script's
// environment, for configs that name the test registries:
//
//	expand mirror.toml.in mirror.toml
func cmdExpand(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: expand src dst")
	}
	out := os.Expand(ts.ReadFile(args[0]), ts.Getenv)
	if err := os.WriteFile(ts.MkAbs(args[1]), []byte(out), 0o644); err != nil {
		ts.Fatalf("expand: %v", err)
	}
}
