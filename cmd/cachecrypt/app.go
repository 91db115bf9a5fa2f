package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/cachecrypt/cachecrypt/dek"
	"github.com/spf13/cobra"
)

// app holds the global flags and outputs of one run.
type app struct {
	stdout, stderr io.Writer

	json     bool   // --json
	kekURI   string // --kek
	clientID string // --client-id
	keyring  string // --keyring
	quiet    bool   // --quiet: no progress bars

	keks kekOpener
	// failed keeps the keyrings that did not open, so that a command
	// touching many files reports the cause once.
	failed map[string]error
}

// seenError is a keyring failure already reported in full.
type seenError struct {
	path string
	err  error
}

func (e *seenError) Error() string {
	return fmt.Sprintf("keyring %s did not open (see the first failure)", e.path)
}
func (e *seenError) Unwrap() error { return e.err }

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "cachecrypt",
		Short: "Inspect, verify, decrypt and rekey cachecrypt's encrypted cache files",
		Long: `cachecrypt is the operator's tool for the encrypted persistence of a
Redis-compatible cache: RDB snapshots, AOF logs, keyrings and exports.

Files are found by their magic bytes, so every command takes keyring files,
encrypted RDB snapshots (streams), encrypted AOF directories and their parts.
A data file's keyring is found next to it (the "keyring" file of its disk
directory, or of a parent) unless --keyring names it; the keyring's KEK is
the instance's platform key (in the platform key store, outside the
instance directory: see "Platform key" in README) or the Key Vault key it
records, unless --kek names one.

` + kekHelp + `

` + exitCodesHelp,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPostRun: func(*cobra.Command, []string) {
			a.keks.close()
		},
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &usageError{fmt.Errorf("%w (see '%s --help')", err, c.CommandPath())}
	})
	pf := root.PersistentFlags()
	pf.BoolVar(&a.json, "json", false, "print results as JSON, for scripts")
	pf.StringVar(&a.kekURI, "kek", os.Getenv(envKEK), "key-encryption key URI that opens the keyring (default $"+envKEK+", else found from the keyring, see above)")
	pf.StringVar(&a.clientID, "client-id", "", "client ID or resource ID of the user-assigned managed identity for Key Vault keys (default $"+envClientID+")")
	pf.StringVar(&a.keyring, "keyring", "", "keyring file of the data's disk (default: found next to the data)")
	pf.BoolVarP(&a.quiet, "quiet", "q", false, "no progress bars (they are also off when stderr is not a terminal)")
	a.keks.clientID = "" // set in PersistentPreRun, after parsing
	root.PersistentPreRun = func(*cobra.Command, []string) { a.keks.clientID = a.clientID }

	root.AddCommand(a.initCommand(), a.inspectCommand(), a.verifyCommand(), a.statusCommand(), a.keyringCommand())
	a.addDataCommands(root)
	for _, c := range allCommands(root) {
		if c != root && c.Long != "" {
			c.Long += "\n\n" + exitCodesHelp
		}
	}
	return root
}

// allCommands returns c and every command below it.
func allCommands(c *cobra.Command) []*cobra.Command {
	out := []*cobra.Command{c}
	for _, sub := range c.Commands() {
		out = append(out, allCommands(sub)...)
	}
	return out
}

// args wraps a cobra positional-argument check so that its failure is a
// usage error.
func args(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(c *cobra.Command, a []string) error {
		if err := check(c, a); err != nil {
			return &usageError{fmt.Errorf("%s: %w (see '%s --help')", c.CommandPath(), err, c.CommandPath())}
		}
		return nil
	}
}

// printJSON writes v as indented JSON.
func (a *app) printJSON(v any) error {
	enc := json.NewEncoder(a.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// findKeyring returns the keyring of the data at path: --keyring, or the
// nearest "keyring" file in path's directory or its parents whose disk id
// is diskID (any disk id when diskID is "").
func (a *app) findKeyring(path, diskID string) (string, error) {
	if a.keyring != "" {
		return a.keyring, nil
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	dir := abs
	if st, err := os.Stat(abs); err != nil || !st.IsDir() {
		dir = filepath.Dir(abs)
	}
	for range 5 {
		cand := filepath.Join(dir, "keyring")
		if info, err := dek.ReadInfo(cand); err == nil && (diskID == "" || info.DiskID == diskID) {
			return cand, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}
	if diskID != "" {
		return "", usagef("no keyring of disk %q found next to %s or in its parent directories: pass it with --keyring", diskID, path)
	}
	return "", usagef("no keyring found next to %s or in its parent directories: pass it with --keyring", path)
}

// openKeyring finds and unwraps the keyring of the data at path.
func (a *app) openKeyring(ctx context.Context, path, diskID string) (*dek.Keyring, error) {
	kp, err := a.findKeyring(path, diskID)
	if err != nil {
		return nil, err
	}
	return a.openKeyringFile(ctx, kp)
}

// openKeyringFile unwraps the keyring file at kp with --kek or the KEK it
// records.
func (a *app) openKeyringFile(ctx context.Context, kp string) (*dek.Keyring, error) {
	if err, ok := a.failed[kp]; ok {
		return nil, &seenError{kp, err}
	}
	kr, err := a.unwrapKeyring(ctx, kp)
	if err != nil {
		if a.failed == nil {
			a.failed = map[string]error{}
		}
		a.failed[kp] = err
	}
	return kr, err
}

func (a *app) unwrapKeyring(ctx context.Context, kp string) (*dek.Keyring, error) {
	u, err := a.keks.unwrapperFor(ctx, a.kekURI, kp)
	if err != nil {
		return nil, err
	}
	kr, err := dek.Open(ctx, kp, u)
	if err != nil {
		return nil, fmt.Errorf("open keyring %s: %w", kp, err)
	}
	return kr, nil
}

// discardLogger drops the library's event log; commands print their own
// results.
func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
