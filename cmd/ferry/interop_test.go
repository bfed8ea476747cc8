//go:build interop

package main

import (
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/ferry-oci/ferry/internal/regtest"
)

// TestInterop runs testdata/interop/*.txtar against the Debian
// docker-registry (distribution v2), comparing ferry's answers with
// skopeo's where both can answer. Each script gets the same variables as
// TestScripts, with REG and AUTHREG pointing at distribution, and SERVE at
// an empty registry of ferry's own (what `ferry serve` runs).
func TestInterop(t *testing.T) {
	reg := regtest.Distribution(t, regtest.DistributionOptions{})
	authreg := regtest.Distribution(t, regtest.DistributionOptions{Users: map[string]string{"alice": "s3cret"}})
	vars := seed(t, reg, authreg, "alice", "s3cret")
	vars = append(vars, "SERVE="+regtest.Ferry(t, nil))
	testscript.Run(t, scriptParams("testdata/interop", vars))
}
