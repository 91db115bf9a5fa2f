package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/cachecrypt/cachecrypt/internal/testenv"
	"github.com/cachecrypt/cachecrypt/kek"
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

	// Under an encryption scope (Azurite accepts it and ignores it; the
	// headers are asserted in export/blob's tests).
	scoped := az.Endpoint + "backups/cache-1/scoped.rdb"
	var srec map[string]any
	jsonOut(t, env, &srec, "export", src, "--to", scoped, "--encryption-scope", "cache-exports")
	require.Contains(t, srec["readable-by"], "encryption scope cache-exports")
	ok(t, env, "import", scoped, "--to", dst2)

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

// A sealed export: to a file under a backup KEK, refused as a plain RDB,
// refused with another KEK (exit 3, nothing written), imported with the
// right one into another instance (DEBUG DIGEST equal); by default under
// the instance's own KEK. Scope and key flags are checked before any work.
func TestExportSealed(t *testing.T) {
	plain, digest := redisRDB(t)
	want, err := os.ReadFile(plain)
	require.NoError(t, err)
	src := newInstance(t)
	ok(t, nil, "encrypt", plain, "-o", filepath.Join(src, "persistence", "dump.rdb"))
	keys := t.TempDir()
	backup, other := filepath.Join(keys, "backup.key"), filepath.Join(keys, "other.key")
	for _, p := range []string{backup, other} {
		_, err := kek.LoadMMK(p) // creates the key file
		require.NoError(t, err)
	}

	sealed := filepath.Join(t.TempDir(), "dump.ccsealed")
	var rec map[string]any
	jsonOut(t, nil, &rec, "export", src, "--to", sealed, "--sealed", "--kek", "mmk:"+backup)
	require.Equal(t, "holders of the sealing KEK", rec["readable-by"])
	b, err := os.ReadFile(sealed)
	require.NoError(t, err)
	require.True(t, bytes.HasPrefix(b, []byte("CCSEALED")))
	require.False(t, bytes.Contains(b, want[len(want)/2:len(want)/2+64]), "plaintext in the sealed export")

	dst := newInstance(t)
	snap := filepath.Join(dst, "persistence", "dump.rdb")
	r := fails(t, exitDamaged, nil, "import", sealed, "--to", dst)
	require.Contains(t, r.stderr, "--sealed")
	r = fails(t, exitKey, nil, "import", sealed, "--to", dst, "--sealed", "--kek", "mmk:"+other)
	require.Contains(t, r.stderr, "sealed by")
	require.Contains(t, r.stderr, "pass that key with --kek")
	require.NoFileExists(t, snap)
	ok(t, nil, "import", sealed, "--to", dst, "--sealed", "--kek", "mmk:"+backup)
	dec := filepath.Join(t.TempDir(), "dump.rdb")
	ok(t, nil, "decrypt", snap, "-o", dec)
	got, err := os.ReadFile(dec)
	require.NoError(t, err)
	require.True(t, bytes.Equal(want, got), "unsealed RDB differs")
	require.Equal(t, digest, loadDigest(t, dec, ""))

	// Without --kek: the instance's own KEK seals, and only it unseals.
	own := filepath.Join(t.TempDir(), "own.ccsealed")
	ok(t, nil, "export", src, "--to", own, "--sealed")
	fails(t, exitKey, nil, "import", own, "--to", newInstance(t), "--sealed")
	ok(t, nil, "import", own, "--to", src, "--sealed")

	// Flags that do not fit: usage errors before any work.
	x := filepath.Join(t.TempDir(), "x.rdb")
	fails(t, exitUsage, nil, "export", src, "--to", x, "--kek", "mmk:"+backup)
	fails(t, exitUsage, nil, "export", src, "--to", x, "--encryption-scope", "s")
	keyFile := filepath.Join(t.TempDir(), "cpk")
	require.NoError(t, os.WriteFile(keyFile, bytes.Repeat([]byte{0x5a}, 32), 0o600))
	fails(t, exitUsage, nil, "export", src, "--to", x, "--cpk-file", keyFile)
	url := "http://127.0.0.1:9/devstoreaccount1/c/b.rdb"
	r = fails(t, exitUsage, []string{envCPK + "=c2hvcnQ="}, "export", src, "--to", url)
	require.Contains(t, r.stderr, envCPK)
	require.NotContains(t, r.stderr, "c2hvcnQ=")
	fails(t, exitUsage, nil, "export", src, "--to", url, "--cpk-file", keyFile, "--encryption-scope", "s")
	require.NoFileExists(t, x)
}
