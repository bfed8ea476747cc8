// Package regtest starts real container registries for tests and pushes
// random content to them.
//
// Three implementations are available: distribution's registry
// (Distribution, the Debian docker-registry package, run as a child
// process), go-containerregistry's in-memory registry (GGCR) and ferry's
// own (Ferry), both in this process. All listen on 127.0.0.1 only, can
// require HTTP basic auth, and are stopped when the test ends.
//
// Faults puts a proxy in front of any of them that injects resets, stalls,
// truncated bodies, 5xx bursts, 429s and latency into the requests its
// rules match, and counts them. Rekor is a small transparency log with
// Rekor's REST API, for signing with --tlog-upload. Tests that need distribution fail, never skip, when
// its binary is missing: scripts/install-test-deps.sh installs it.
//
// Helpers take a testing.TB and fail the test on any error, so a call is one
// line:
//
//	host := regtest.Distribution(t, regtest.DistributionOptions{Users: map[string]string{"alice": "s3cret"}})
//	digest := regtest.PushRandom(t, host+"/app:1.0", 2, 1024, "alice", "s3cret")
package regtest
