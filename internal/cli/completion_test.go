package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
)

// TestCompletionsCommitted fails when the scripts in completions/ are not
// what `ferry completion` prints now: run `make completions` and commit.
func TestCompletionsCommitted(t *testing.T) {
	files := map[string]string{
		"bash":       "ferry.bash",
		"zsh":        "_ferry",
		"fish":       "ferry.fish",
		"powershell": "ferry.ps1",
	}
	for shell, file := range files {
		t.Run(shell, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := Main(context.Background(), []string{"completion", shell}, IOStreams{In: new(bytes.Buffer), Out: &out, Err: &errOut})
			if code != 0 {
				t.Fatalf("ferry completion %s: exit %d: %s", shell, code, errOut.String())
			}
			path := filepath.Join("..", "..", "completions", file)
			committed, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v: run `make completions` and commit the result", err)
			}
			if !bytes.Equal(committed, out.Bytes()) {
				t.Errorf("%s differs from `ferry completion %s`: run `make completions` and commit the result", path, shell)
			}
		})
	}
}
