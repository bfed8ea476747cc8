package cli

import (
	"context"
	"errors"
	"fmt"

	"github.com/ferry-oci/ferry/internal/config"
	"github.com/ferry-oci/ferry/internal/transfer"
)

// Exit codes, documented in `ferry --help`.
const (
	ExitOK           = 0   // success
	ExitFailure      = 1   // the operation failed
	ExitUsage        = 2   // usage or configuration error
	ExitPartial      = 3   // some items failed, the rest succeeded
	ExitVerification = 4   // verification failed
	ExitInterrupted  = 130 // interrupted
)

const exitStatusHelp = `EXIT STATUS
  0    success
  1    the operation failed
  2    usage or configuration error (bad flag, bad reference, bad TOML)
  3    partial failure: some items of a mirror, bundle or gc failed, the rest succeeded
  4    verification failed: no valid signature, digest mismatch, corrupt bundle
  130  interrupted`

// UsageError is a mistake in how ferry was called.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

func usageErrorf(format string, args ...any) error {
	return &UsageError{Err: fmt.Errorf(format, args...)}
}

// PartialError reports that some items of a batch failed.
type PartialError struct {
	Failed, Total int
	What          string // what the items are: "tags", "images"; default "items"
}

func (e *PartialError) Error() string {
	what := e.What
	if what == "" {
		what = "items"
	}
	return fmt.Sprintf("%d of %d %s failed", e.Failed, e.Total, what)
}

// ExitCode is the one place an error becomes an exit code. ctx is the
// command's context: its cancellation means the user interrupted ferry.
func ExitCode(ctx context.Context, err error) int {
	var usage *UsageError
	var cfg *config.Error
	var partial *PartialError
	switch {
	case err == nil:
		return ExitOK
	case ctx.Err() != nil && errors.Is(err, context.Canceled):
		return ExitInterrupted
	case errors.As(err, &usage), errors.As(err, &cfg), errors.Is(err, transfer.ErrInvalidReference):
		return ExitUsage
	case errors.As(err, &partial):
		return ExitPartial
	case errors.Is(err, transfer.ErrVerification):
		return ExitVerification
	}
	return ExitFailure
}
