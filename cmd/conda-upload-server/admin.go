package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/conda-upload-server/conda-upload-server/internal/admincli"
)

// admin runs the operator's admin API client: 2 for a wrong command line,
// 1 for a call that failed.
func admin(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	err := admincli.Run(ctx, args, stdin, stdout, stderr)
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "conda-upload-server: admin: %v\n", err)
	var e *admincli.Error
	if errors.As(err, &e) && e.Usage {
		fmt.Fprint(stderr, "\n", admincli.Usage)
		return 2
	}
	return 1
}
