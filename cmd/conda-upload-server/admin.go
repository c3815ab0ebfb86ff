package main

import (
	"context"
	"errors"
	"flag"

	"github.com/conda-upload-server/conda-upload-server/internal/admincli"
)

// admin runs the operator's admin API client: 2 for a wrong command line,
// 1 for a call that failed.
func admin(ctx context.Context, args []string, s stdio) int {
	fs := flag.NewFlagSet("admin", flag.ContinueOnError)
	var o admincli.Options
	o.Register(fs)
	if code, done := parseFlags(fs, args, "admin", admincli.Usage(), s.out, s.err); done {
		return code
	}
	err := admincli.Run(ctx, o, fs.Args(), s.in, s.out)
	if err == nil {
		return exitOK
	}
	var hints []string
	var e *admincli.Error
	if errors.As(err, &e) && e.Hint != "" {
		hints = append(hints, e.Hint)
	}
	if e != nil && e.Usage {
		return usageError(s.err, "admin", err, hints...)
	}
	return errorWithHint(s.err, exitFailure, err, hints...)
}
