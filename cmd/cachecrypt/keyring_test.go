package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestHelpAndUsage(t *testing.T) {
	out := ok(t, nil, "--help")
	require.Contains(t, out, "Exit codes:")
	require.Contains(t, out, "mmk:PATH")
	for _, c := range [][]string{{"init"}, {"inspect"}, {"verify"}, {"decrypt"}, {"encrypt"}, {"aof"}, {"aof", "check"}, {"aof", "fix"}, {"export"}, {"import"}, {"status"}, {"keyring"}, {"keyring", "show"},
		{"keyring", "rotate"}, {"keyring", "rewrap"}, {"keyring", "retire"}} {
		out := ok(t, nil, append(c, "--help")...)
		require.Contains(t, out, "Usage:", c)
		if c[0] != "aof" || len(c) > 1 {
			require.Contains(t, out, "Exit codes:", c)
		}
	}
	r := fails(t, exitUsage, nil, "inspect")
	require.Contains(t, r.stderr, "accepts 1 arg")
	fails(t, exitUsage, nil, "no-such-command")
	r = fails(t, exitUsage, nil, "init", newInstance(t))
	require.Contains(t, r.stderr, "already an instance")
	fails(t, exitUsage, nil, "status", "--no-such-flag", "x")
	r = fails(t, exitUsage, nil, "keyring", "rewrap", t.TempDir())
	require.Contains(t, r.stderr, "--to KEK is required")
}

func TestStatusAndKeyringMMK(t *testing.T) {
	dir := newInstance(t)
	out := ok(t, nil, "status", dir)
	require.Contains(t, out, "RDB snapshots, AOF logs (persistence)")
	require.Contains(t, out, "MMK")
	require.Contains(t, out, "mmk/mmk/")

	var st statusJSONOut
	jsonOut(t, nil, &st, "status", dir)
	require.Len(t, st.Rows, 3)
	for _, r := range st.Rows {
		require.Equal(t, "MMK", r.Key)
		require.Equal(t, "mmk", r.KEKKind)
		require.EqualValues(t, 1, r.DEKVersion)
	}

	kr := filepath.Join(dir, "persistence", "keyring")
	out = ok(t, nil, "inspect", kr)
	require.Contains(t, out, "kind:")
	require.Contains(t, out, "keyring")
	require.Contains(t, out, "dek_active:")
	var insp map[string]any
	jsonOut(t, nil, &insp, "inspect", kr)
	require.Equal(t, "keyring", insp["kind"])
	require.Equal(t, "mmk", insp["kek_kind"])
	require.EqualValues(t, 2, insp["format_version"], "a new keyring is written in format 2")
	require.True(t, strings.HasPrefix(insp["disk_id"].(string), "persistence-"))

	out = ok(t, nil, "keyring", "show", "--open", dir)
	require.Equal(t, 2, strings.Count(out, "unwrap:"), out)
	require.NotContains(t, out, "FAILED")

	ok(t, nil, "keyring", "rotate", dir)
	jsonOut(t, nil, &st, "status", dir)
	for _, r := range st.Rows {
		require.EqualValues(t, 2, r.DEKVersion)
	}
	ok(t, nil, "keyring", "retire", kr, "1")
	jsonOut(t, nil, &insp, "inspect", kr)
	require.Equal(t, "2", insp["dek_versions"])
	r := fails(t, exitOther, nil, "keyring", "retire", kr, "2")
	require.Contains(t, r.stderr, "active")

	// Another platform key does not open the keyring: exit 3, with a hint.
	other := filepath.Join(t.TempDir(), "other.key")
	ok(t, nil, "keyring", "rewrap", "--to", "mmk:"+other, filepath.Join(dir, "os", "keyring"))
	r = fails(t, exitKey, nil, "keyring", "show", "--open", filepath.Join(dir, "os", "keyring"))
	require.Contains(t, r.stdout, "FAILED")
	ok(t, nil, "keyring", "show", "--open", "--kek", "mmk:"+other, filepath.Join(dir, "os", "keyring"))
	// A missing key file is never created when opening.
	r = fails(t, exitOther, nil, "keyring", "show", "--open", "--kek", "mmk:"+other+".typo", kr)
	require.Contains(t, r.stdout+r.stderr, "never created")
	_, err := os.Stat(other + ".typo")
	require.ErrorIs(t, err, os.ErrNotExist)
}

// A keyring whose MAC does not match is damaged (exit 2), not a key
// problem; a missing file is another error (exit 4) with its path.
func TestKeyringDamagedAndMissing(t *testing.T) {
	dir := newInstance(t)
	kr := filepath.Join(dir, "persistence", "keyring")
	b, err := os.ReadFile(kr)
	require.NoError(t, err)
	b[len(b)-1] ^= 0x01
	require.NoError(t, os.WriteFile(kr, b, 0o600))
	r := fails(t, exitDamaged, nil, "keyring", "show", "--open", kr)
	require.Contains(t, r.stdout, "FAILED")
	require.Contains(t, r.stderr, "what to do:")
	ok(t, nil, "inspect", kr) // the header is still readable

	missing := filepath.Join(dir, "no-such-file")
	r = fails(t, exitOther, nil, "inspect", missing)
	require.Contains(t, r.stderr, missing)
	r = fails(t, exitOther, nil, "--json", "inspect", missing)
	var failure struct {
		OK       bool   `json:"ok"`
		ExitCode int    `json:"exit_code"`
		Error    string `json:"error"`
	}
	require.NoError(t, jsonUnmarshal(r.stdout, &failure), r.stdout)
	require.Equal(t, exitOther, failure.ExitCode)
	require.Contains(t, failure.Error, missing)
	r = fails(t, exitUsage, nil, "status", t.TempDir())
	require.Contains(t, r.stderr, "not a cachecrypt instance directory")
}
