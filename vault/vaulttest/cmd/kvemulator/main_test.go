package main

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cachecrypt/cachecrypt/internal/testenv"
	"github.com/stretchr/testify/require"
)

// TestMain lets the test binary serve as the command itself (with
// KVEMULATOR_MAIN=1), so that the JavaScript test runs the real command,
// signals included, without building it first.
func TestMain(m *testing.M) {
	if os.Getenv("KVEMULATOR_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

const jsInstall = "install it with: apt-get install -y nodejs npm && npm ci --prefix vault/vaulttest/cmd/kvemulator/testdata/jsclient"

const (
	cacheClientID = "3f6c0a52-8d1e-4b7a-9c2d-0e1f2a3b4c5d"
	adminClientID = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
)

// The official JavaScript client (@azure/keyvault-keys with
// @azure/identity's ManagedIdentityCredential, pinned in
// testdata/jsclient/package-lock.json) against the command: get a key, wrap
// and unwrap with RSA-OAEP and RSA-OAEP-256, follow a rotation, be refused
// a disabled key. Then SIGTERM stops the command cleanly.
func TestJavaScriptClient(t *testing.T) {
	node := testenv.LookPath(t, "node", jsInstall)
	js, err := filepath.Abs("testdata/jsclient")
	require.NoError(t, err)
	if _, err := os.Stat(filepath.Join(js, "node_modules", "@azure", "keyvault-keys", "package.json")); err != nil {
		testenv.Missing(t, "@azure/keyvault-keys (testdata/jsclient/node_modules)", jsInstall)
	}

	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.json")
	require.NoError(t, os.WriteFile(cfg, []byte(`{"keys": [{"name": "cmk", "type": "RSA", "size": 3072}],
		"identities": [{"name": "cache", "clientId": "`+cacheClientID+`"}]}`), 0o600))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute) // a bound on a hung child, not a timing assertion
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-dir", dir, "-config", cfg, "-admin", "admin="+adminClientID)
	cmd.Env = append(os.Environ(), "KVEMULATOR_MAIN=1")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	sc := bufio.NewScanner(out)
	require.True(t, sc.Scan(), "the command printed nothing")
	require.Equal(t, "ready", sc.Text())

	envFile, err := os.ReadFile(filepath.Join(dir, "env"))
	require.NoError(t, err)
	vars := strings.Fields(string(envFile))
	for _, name := range []string{"KEYVAULT_URL=", "KEYVAULT_KEY_CMK=", "IDENTITY_ENDPOINT=", "IDENTITY_HEADER=", "NODE_EXTRA_CA_CERTS="} {
		require.True(t, strings.Contains(string(envFile), "\n"+name) || strings.HasPrefix(string(envFile), name), "env file lacks %s:\n%s", name, envFile)
	}

	run := exec.CommandContext(ctx, node, filepath.Join(js, "test.mjs"))
	run.Dir = js
	run.Env = append(append(os.Environ(), vars...), "CACHE_CLIENT_ID="+cacheClientID, "ADMIN_CLIENT_ID="+adminClientID)
	got, err := run.CombinedOutput()
	require.NoError(t, err, "JavaScript client test failed:\n%s", got)
	for _, step := range []string{"get key", "wrap and unwrap RSA-OAEP\n", "wrap and unwrap RSA-OAEP-256", "rotated key followed", "disabled key refused"} {
		require.Contains(t, string(got), "ok "+step)
	}

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	require.NoError(t, cmd.Wait(), "SIGTERM stops the command with status 0")
}

func TestParseRefuses(t *testing.T) {
	for args, want := range map[string]string{
		"":                            "-dir is required",
		"-dir d -identity cache":      "want NAME=CLIENT_ID",
		"-dir d -key cmk:RSA:big":     "not a number",
		"-dir d -config /nonexistent": "no such file",
	} {
		_, _, err := parse(strings.Fields(args))
		require.ErrorContains(t, err, want, args)
	}
	cfg, dir, err := parse([]string{"-dir", "d", "-key", "a", "-key", "b:RSA-HSM:4096", "-identity", "c=1", "-admin", "x=2"})
	require.NoError(t, err)
	require.Equal(t, "d", dir)
	require.Equal(t, []keySpec{{Name: "a"}, {Name: "b", Type: "RSA-HSM", Size: 4096}}, cfg.Keys)
	require.Len(t, cfg.Identities, 2)
	require.Nil(t, cfg.Identities[0].Permissions)
	require.NotEmpty(t, cfg.Identities[1].Permissions)
}
