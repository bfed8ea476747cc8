//go:build interop

package main

import (
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
	"golang.org/x/crypto/bcrypt"

	"github.com/ferry-oci/ferry/internal/regtest"
)

// TestInteropServe runs testdata/interop-serve/*.txtar: each script starts
// `ferry serve` itself on the free ports PORT1..PORT3 and lets skopeo, crane
// and cosign push to and pull from it. REG is distribution v2, seeded as in
// TestInterop, as a source.
func TestInteropServe(t *testing.T) {
	reg := regtest.Distribution(t, regtest.DistributionOptions{})
	authreg := regtest.Distribution(t, regtest.DistributionOptions{Users: map[string]string{"alice": "s3cret"}})
	vars := seed(t, reg, authreg, "alice", "s3cret")
	p := scriptParams("testdata/interop-serve", vars)
	setup := p.Setup
	p.Setup = func(env *testscript.Env) error {
		if err := setup(env); err != nil {
			return err
		}
		for i := 1; i <= 3; i++ {
			port, err := freePort()
			if err != nil {
				return err
			}
			env.Setenv("PORT"+strconv.Itoa(i), port)
		}
		return nil
	}
	p.Cmds["waitfor"] = cmdWaitfor
	p.Cmds["htpasswd"] = cmdHtpasswd
	testscript.Run(t, p)
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	_, port, err := net.SplitHostPort(l.Addr().String())
	return port, err
}

// cmdWaitfor waits up to 20 seconds for host:port to accept connections.
func cmdWaitfor(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: waitfor host:port")
	}
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", args[0], time.Second); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	ts.Fatalf("%s did not accept connections within 20s", args[0])
}

// cmdHtpasswd writes an htpasswd file with one bcrypt user.
func cmdHtpasswd(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 3 {
		ts.Fatalf("usage: htpasswd file user password")
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(args[2]), bcrypt.MinCost)
	ts.Check(err)
	ts.Check(os.WriteFile(ts.MkAbs(args[0]), []byte(args[1]+":"+string(hash)+"\n"), 0o600))
}
