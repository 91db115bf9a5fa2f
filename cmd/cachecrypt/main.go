// Command cachecrypt is the operator's tool for cachecrypt's encrypted files:
// it inspects and verifies them, decrypts and encrypts them, checks and fixes
// encrypted AOF logs, moves snapshots in and out (export, import), and shows,
// rotates and rewraps keyrings, the online switch between the platform key
// (MMK) and a customer-managed key (CMK).
//
// Exit codes:
//
//	0  success
//	1  usage error (bad flags or arguments)
//	2  damaged data: authentication failed, truncated, malformed
//	3  key unavailable: KEK revoked, unreachable, wrong key, retired DEK version
//	4  any other error (I/O, permissions, ...)
//
// Run "cachecrypt --help" or "cachecrypt COMMAND --help" for each command.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	// The first Ctrl-C cancels the work (partial outputs are removed); a
	// second one kills the process.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() { <-ctx.Done(); stop() }()
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one command line and returns its exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	app := &app{stdout: stdout, stderr: stderr}
	root := app.rootCommand()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	code := exitCode(err)
	var silent *silentError
	if errors.As(err, &silent) {
		return code
	}
	fmt.Fprintf(stderr, "cachecrypt: %v\n", err)
	h := hint(err)
	if h != "" {
		fmt.Fprintf(stderr, "  what to do: %s\n", h)
	}
	if app.json {
		// Scripts get the failure on stdout too, as JSON.
		app.printJSON(map[string]any{"ok": false, "exit_code": code, "error": err.Error(), "what_to_do": h})
	}
	return code
}
