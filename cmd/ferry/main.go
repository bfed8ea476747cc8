// Command ferry copies, mirrors, signs and serves container images.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/ferry-oci/ferry/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], cli.StdStreams())
	stop()
	os.Exit(code)
}
