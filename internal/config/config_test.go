package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func write(t testing.TB, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoad(t *testing.T) {
	p := write(t, `
[registry."registry.internal:5000"]
ca_file = "/etc/ssl/ca.pem"
cert_file = "/etc/ferry/client.pem"
key_file = "/etc/ferry/client-key.pem"

[registry."lab:5000"]
insecure = true

[registry."relative:5000"]
ca_file = "certs/ca.pem"
username = "bot"
password_file = "secrets/bot"
`)
	f, err := Load(p, true)
	if err != nil {
		t.Fatal(err)
	}
	// Relative paths are the config file's, whatever the working directory.
	dir := filepath.Dir(p)
	if c := f.Registry["relative:5000"]; c.CAFile != filepath.Join(dir, "certs/ca.pem") || c.PasswordFile != filepath.Join(dir, "secrets/bot") {
		t.Errorf("relative:5000 = %+v, want paths under %s", c, dir)
	}
	if c := f.Registry["registry.internal:5000"]; c.CAFile != "/etc/ssl/ca.pem" || c.CertFile == "" || c.KeyFile == "" {
		t.Errorf("registry.internal:5000 = %+v", c)
	}
	if !f.Registry["lab:5000"].Insecure {
		t.Errorf("lab:5000 not insecure: %+v", f.Registry["lab:5000"])
	}
}

func TestLoadErrorsNameFileLineAndKey(t *testing.T) {
	for _, tc := range []struct {
		content string
		line    int
		key     string
	}{
		{"[registry.\"a:5000\"]\ninsecur = true\n", 2, `registry."a:5000".insecur`},
		{"# comment\n[registry.\"a:5000\"]\ninsecure = \"yes\"\n", 3, `registry."a:5000".insecure`},
		{"[registri.\"a\"]\nx = 1\n", 1, "registri"},
		{"[registry.\"a/b\"]\ninsecure = true\n", 1, `registry.a/b`},
		{"[registry\n", 2, ""}, // the parser notices at the end of the line
		// Credentials: a username needs exactly one password source.
		{"[registry.\"a\"]\nusername = \"u\"\n", 2, `registry.a.username`},
		{"[registry.\"a\"]\npassword_env = \"P\"\n", 2, `registry.a.password_env`},
		{"[registry.\"a\"]\npassword_file = \"p\"\n", 2, `registry.a.password_file`},
		{"[registry.\"a\"]\nusername = \"u\"\npassword_file = \"p\"\npassword_env = \"P\"\n", 4, `registry.a.password_env`},
		{"[registry.\"a\"]\nusername = \"u\"\npassword = \"p\"\n", 3, `registry.a.password`},
	} {
		p := write(t, tc.content)
		_, err := Load(p, true)
		var cerr *Error
		if !errors.As(err, &cerr) {
			t.Errorf("%q: err = %v, want a *config.Error", tc.content, err)
			continue
		}
		if cerr.File != p || cerr.Line != tc.line || (tc.key != "" && !strings.Contains(cerr.Key, strings.Trim(tc.key, "\"")) && cerr.Key != tc.key) {
			t.Errorf("%q: got file %q line %d key %q (%v); want line %d key %q", tc.content, cerr.File, cerr.Line, cerr.Key, err, tc.line, tc.key)
		}
		if !strings.HasPrefix(err.Error(), p+":") {
			t.Errorf("%q: message %q does not start with the file", tc.content, err)
		}
	}
}

func TestLoadMissing(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope.toml")
	if f, err := Load(missing, false); err != nil || len(f.Registry) != 0 {
		t.Errorf("optional missing file: %v, %v", f, err)
	}
	if _, err := Load(missing, true); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("required missing file: err = %v, want fs.ErrNotExist", err)
	}
}

// FuzzDecodeFile: any file content loads or fails with a *config.Error
// naming the file; it never panics.
func FuzzDecodeFile(f *testing.F) {
	for _, s := range []string{
		"[registry.\"a:5000\"]\ninsecure = true\n", "[registry.\"a\"]\nca_file = 1\n", "x = [\n", "[[registry]]\n",
		"[registry.\"a\"]\n[registry.\"a\"]\n", "\x00", "[registry.'a']\ninsecure = true\ninsecure = false\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, content string) {
		p := write(t, content)
		_, err := Load(p, true)
		if err == nil {
			return
		}
		var cerr *Error
		if !errors.As(err, &cerr) || cerr.File != p {
			t.Fatalf("%q: err = %v, want a *config.Error naming %s", content, err, p)
		}
	})
}
