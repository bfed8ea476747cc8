package main

import (
	"os"
	"testing"
)

// TestMain lets the test binary act as the spawn helper, as the harness's
// own binary does, so that measure can be tested.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == spawnArg {
		os.Exit(spawnMain(os.Args[2:]))
	}
	os.Exit(m.Run())
}
