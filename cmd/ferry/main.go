// Command ferry copies, mirrors, signs and serves container images.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/ferry-oci/ferry/internal/cli"
)

func main() { os.Exit(run()) }

// run is ferry as a process: SIGINT and SIGTERM cancel the command's
// context, and the result is the exit code.
func run() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return cli.Main(ctx, os.Args[1:], cli.StdStreams())
}
