package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/cachecrypt/cachecrypt/internal/testenv"
	"github.com/stretchr/testify/require"
)

// A snapshot is exported to a file and to an Azurite blob, byte-identical
// to redis-server's RDB, then imported from each into another instance;
// a tampered snapshot exports nothing and exits 2.
func TestExportImport(t *testing.T) {
	plain, digest := redisRDB(t)
	want, err := os.ReadFile(plain)
	require.NoError(t, err)
	src := newInstance(t)
	ok(t, nil, "encrypt", plain, "-o", filepath.Join(src, "persistence", "dump.rdb"))

	// To a file and back.
	file := filepath.Join(t.TempDir(), "export.rdb")
	var rec map[string]any
	jsonOut(t, nil, &rec, "export", src, "--to", file)
	require.EqualValues(t, len(want), rec["bytes"])
	got, err := os.ReadFile(file)
	require.NoError(t, err)
	require.True(t, bytes.Equal(want, got), "exported RDB differs from redis-server's")
	stdout := ok(t, nil, "export", src, "--to", "-")
	require.True(t, bytes.Equal(want, []byte(stdout)), "export to stdout")
	dst := newInstance(t)
	ok(t, nil, "import", file, "--to", dst)
	ok(t, nil, "verify", dst)
	dec := filepath.Join(t.TempDir(), "dump.rdb")
	ok(t, nil, "decrypt", filepath.Join(dst, "persistence", "dump.rdb"), "-o", dec)
	got, _ = os.ReadFile(dec)
	require.True(t, bytes.Equal(want, got))
	require.Equal(t, digest, loadDigest(t, dec, ""))
	entries, _ := os.ReadDir(filepath.Join(src, "os", "tmp"))
	require.Empty(t, entries, "no staging file left on the OS disk")

	// To an Azurite blob and back.
	az := testenv.StartAzurite(t)
	cred, err := azblob.NewSharedKeyCredential(az.Account, az.Key)
	require.NoError(t, err)
	svc, err := azblob.NewClientWithSharedKeyCredential(az.Endpoint, cred, nil)
	require.NoError(t, err)
	_, err = svc.CreateContainer(context.Background(), "backups", nil)
	require.NoError(t, err)
	url := az.Endpoint + "backups/cache-1/dump.rdb"
	env := []string{envStorageKey + "=" + az.Key}
	ok(t, env, "export", src, "--to", url)
	dst2 := newInstance(t)
	ok(t, env, "import", url, "--to", dst2)
	ok(t, nil, "decrypt", filepath.Join(dst2, "persistence", "dump.rdb"), "-o", dec)
	got, _ = os.ReadFile(dec)
	require.True(t, bytes.Equal(want, got), "RDB imported from the blob differs")

	// Without credentials, or with a SAS token in argv: a usage error.
	r := fails(t, exitUsage, nil, "export", src, "--to", url)
	require.Contains(t, r.stderr, envStorageKey)
	r = fails(t, exitUsage, env, "export", src, "--to", url+"?sv=2024&sig=SECRET")
	require.NotContains(t, r.stderr, "SECRET")

	// A tampered snapshot: nothing is exported, exit 2.
	snap := filepath.Join(src, "persistence", "dump.rdb")
	b, _ := os.ReadFile(snap)
	b[len(b)/3] ^= 1
	require.NoError(t, os.WriteFile(snap, b, 0o600))
	fresh := filepath.Join(t.TempDir(), "never.rdb")
	fails(t, exitDamaged, nil, "export", src, "--to", fresh)
	_, err = os.Stat(fresh)
	require.ErrorIs(t, err, os.ErrNotExist)

	// A file that is not an RDB is not imported.
	junk := filepath.Join(t.TempDir(), "junk")
	require.NoError(t, os.WriteFile(junk, []byte("hello"), 0o600))
	fails(t, exitDamaged, nil, "import", junk, "--to", dst)
	ok(t, nil, "verify", dst)
}
