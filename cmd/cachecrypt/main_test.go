package main

import (
	"github.com/cachecrypt/cachecrypt/internal/testenv"

	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// bin is the cachecrypt binary built once by TestMain.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "cachecrypt-cli-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "cachecrypt")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.Exit(1)
	}
	code := testenv.RunWithPlatformStore(m)
	os.RemoveAll(dir)
	os.Exit(code)
}

// result is one run of the binary.
type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// cli runs the binary with args and extra environment variables.
func cli(t testing.TB, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		r.code = exit.ExitCode()
	case err != nil:
		t.Fatalf("run cachecrypt %v: %v", args, err)
	}
	return r
}

// ok runs the binary and requires exit code 0.
func ok(t testing.TB, env []string, args ...string) string {
	t.Helper()
	r := cli(t, env, args...)
	require.Equal(t, 0, r.code, "cachecrypt %v\n%s", args, r)
	return r.stdout
}

// fails runs the binary and requires exit code code.
func fails(t testing.TB, code int, env []string, args ...string) result {
	t.Helper()
	r := cli(t, env, args...)
	require.Equal(t, code, r.code, "cachecrypt %v\n%s", args, r)
	return r
}

// jsonOut runs the binary with --json and decodes its output into v.
func jsonOut(t testing.TB, env []string, v any, args ...string) {
	t.Helper()
	out := ok(t, env, append([]string{"--json"}, args...)...)
	require.NoError(t, json.Unmarshal([]byte(out), v), out)
}

// newInstance creates an MMK instance directory with 'cachecrypt init'.
func newInstance(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	out := ok(t, nil, "init", dir)
	require.Contains(t, out, "persistence disk")
	return dir
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }
