package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/cachecrypt/cachecrypt/internal/testenv"
	"github.com/stretchr/testify/require"
)

// redisAOF makes a real redis-server write a multi-part appendonlydir: an
// RDB-preamble base from a rewrite, then incremental commands. It returns
// the directory and the dataset's digest.
func redisAOF(t *testing.T) (dir, digest string) {
	t.Helper()
	srv := testenv.StartRedis(t, t.TempDir(), "appendonly yes", "appendfsync always")
	srv.MustDo(t, "DEBUG", "POPULATE", "5000", "key", "64")
	srv.MustDo(t, "BGREWRITEAOF")
	srv.WaitRewrite(t)
	for i := range 300 {
		srv.MustDo(t, "SET", fmt.Sprintf("incr:%d", i), strings.Repeat("v", i))
	}
	srv.MustDo(t, "INCRBY", "counter", "42")
	digest = srv.Digest(t)
	srv.Stop()
	return filepath.Join(srv.Dir, "appendonlydir"), digest
}

// readParts returns the non-manifest files of an appendonlydir.
func readParts(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".manifest") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		require.NoError(t, err)
		out[e.Name()] = b
	}
	return out
}

// partsOf lists the encrypted parts of dir, sorted: base first.
func partsOf(t *testing.T, dir string) (base, lastIncr string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var incr []string
	for _, e := range entries {
		switch {
		case strings.Contains(e.Name(), ".base."):
			base = filepath.Join(dir, e.Name())
		case strings.Contains(e.Name(), ".incr."):
			incr = append(incr, filepath.Join(dir, e.Name()))
		}
	}
	sort.Strings(incr)
	require.NotEmpty(t, incr)
	return base, incr[len(incr)-1]
}

// A real redis-server's appendonlydir is encrypted into an instance,
// inspected, checked, decrypted back part for part, and loads back into
// redis-server; a torn tail is found by verify and aof check and cut off by
// aof fix, while damage to the base is refused.
func TestAOF(t *testing.T) {
	plainDir, digest := redisAOF(t)
	inst := newInstance(t)
	enc := filepath.Join(inst, "persistence", "appendonlydir")
	ok(t, nil, "encrypt", plainDir, "-o", enc)

	var insp map[string]any
	jsonOut(t, nil, &insp, "inspect", filepath.Join(enc, "appendonly.aof.manifest"))
	require.Equal(t, "aof-manifest", insp["kind"])
	require.True(t, strings.HasPrefix(insp["disk_id"].(string), "persistence-"))
	require.Equal(t, "MMK", insp["key"])
	jsonOut(t, nil, &insp, "inspect", enc) // the directory: its manifest
	require.Equal(t, "aof-manifest", insp["kind"])
	require.Len(t, insp["parts"], 2)
	base, last := partsOf(t, enc)
	jsonOut(t, nil, &insp, "inspect", base)
	require.Equal(t, "aof-part", insp["kind"])
	require.Equal(t, "aof-base", insp["purpose"])
	require.EqualValues(t, 1, insp["dek_version"])

	out := ok(t, nil, "verify", inst)
	require.Contains(t, out, "OK       "+enc)
	out = ok(t, nil, "aof", "check", enc)
	require.Contains(t, out, "OK: the AOF is valid")

	dec := filepath.Join(t.TempDir(), "appendonlydir")
	ok(t, nil, "decrypt", enc, "-o", dec)
	want, got := readParts(t, plainDir), readParts(t, dec)
	require.Equal(t, len(want), len(got))
	for name, b := range want {
		require.True(t, bytes.Equal(b, got[name]), "part %s differs after the round trip", name)
	}
	require.Equal(t, digest, loadDigest(t, "", dec), "redis-server loads the decrypted appendonlydir")

	// A torn tail of the last incremental part.
	st, err := os.Stat(last)
	require.NoError(t, err)
	require.NoError(t, os.Truncate(last, st.Size()-5))
	r := fails(t, exitDamaged, nil, "verify", enc)
	require.Contains(t, r.stdout, "DAMAGED")
	require.Contains(t, r.stdout, filepath.Base(last))
	require.Contains(t, r.stdout, "aof fix")
	var rep struct {
		Results []verifyResult `json:"results"`
	}
	r = fails(t, exitDamaged, nil, "--json", "verify", enc)
	require.NoError(t, jsonUnmarshal(r.stdout, &rep))
	require.Equal(t, filepath.Base(last), rep.Results[0].Damaged)
	require.NotNil(t, rep.Results[0].Offset)
	require.Less(t, *rep.Results[0].Offset, st.Size()-5)
	fails(t, exitDamaged, nil, "aof", "check", enc)
	out = ok(t, nil, "aof", "fix", enc)
	require.Contains(t, out, "fixed: cut "+filepath.Base(last))
	ok(t, nil, "verify", enc)
	ok(t, nil, "aof", "check", enc)

	// Damage inside the base is not a torn tail: fix refuses, exit 2.
	b, err := os.ReadFile(base)
	require.NoError(t, err)
	b[len(b)/2] ^= 0x01
	require.NoError(t, os.WriteFile(base, b, 0o600))
	r = fails(t, exitDamaged, nil, "--json", "verify", enc)
	require.NoError(t, jsonUnmarshal(r.stdout, &rep))
	require.Equal(t, filepath.Base(base), rep.Results[0].Damaged, rep.Results[0].Error)
	require.NotNil(t, rep.Results[0].Offset)
	r = fails(t, exitDamaged, nil, "aof", "fix", enc)
	require.Contains(t, r.stdout, "DAMAGED")
	b[len(b)/2] ^= 0x01
	require.NoError(t, os.WriteFile(base, b, 0o600))
	ok(t, nil, "aof", "check", enc)

	// A part deleted from the middle of the log.
	require.NoError(t, os.Remove(last))
	fails(t, exitDamaged, nil, "verify", enc)
}
