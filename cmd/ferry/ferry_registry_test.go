package main

import (
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/ferry-oci/ferry/internal/regtest"
)

// TestScriptsFerryRegistry runs the same scripts as TestScripts against
// ferry's own registry, the one ferry serve runs.
func TestScriptsFerryRegistry(t *testing.T) {
	reg := regtest.Ferry(t, nil)
	authreg := regtest.Ferry(t, map[string]string{"alice": "s3cret"})
	vars := seed(t, reg, authreg, "alice", "s3cret")
	testscript.Run(t, scriptParams("testdata/script", vars))
}
