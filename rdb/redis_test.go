package rdb

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/cachecrypt/cachecrypt/dek"
	"github.com/cachecrypt/cachecrypt/internal/testenv"
	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/stretchr/testify/require"
)

// TestRealRedis round-trips a snapshot written by a real redis-server:
// encrypt the dump, decrypt it, compare bytes, and load the decrypted file
// into a fresh redis-server, whose DEBUG DIGEST must equal the original's.
func TestRealRedis(t *testing.T) {
	ctx := context.Background()
	src := testenv.StartRedis(t, filepath.Join(t.TempDir(), "src"))
	keys := 100000
	if testenv.Short() {
		keys = 10000
	}
	src.MustDo(t, "DEBUG", "POPULATE", itoa(keys), "key", "64")
	src.MustDo(t, "HSET", "h", "field", "value", "other", "x")
	src.MustDo(t, "RPUSH", "list", "a", "b", "c")
	src.MustDo(t, "SADD", "set", "m1", "m2")
	src.MustDo(t, "ZADD", "zset", "1", "one", "2.5", "two")
	digest := src.Digest(t)
	dump, err := os.ReadFile(src.Save(t))
	require.NoError(t, err)

	info, err := CheckPlain(bytes.NewReader(dump))
	require.NoError(t, err)
	require.GreaterOrEqual(t, info.Version, 9)
	require.NotZero(t, info.Checksum, "redis-server writes a CRC-64 by default")
	bad := bytes.Clone(dump)
	bad[len(bad)/2] ^= 0x01
	_, err = CheckPlain(bytes.NewReader(bad))
	require.ErrorIs(t, err, ErrChecksum)

	mmk, err := kek.NewMMK("test-platform")
	require.NoError(t, err)
	kr, err := dek.Create(ctx, filepath.Join(t.TempDir(), "keyring"), "persistence-disk", mmk)
	require.NoError(t, err)
	defer kr.Close()
	enc := filepath.Join(t.TempDir(), "dump.rdb.enc")
	_, err = Encrypt(enc, bytes.NewReader(dump), kr)
	require.NoError(t, err)
	onDisk, err := os.ReadFile(enc)
	require.NoError(t, err)
	require.False(t, bytes.Contains(onDisk, []byte("key:1")), "plaintext key names on disk")
	require.NoError(t, Verify(enc, kr))

	dstDir := filepath.Join(t.TempDir(), "dst")
	require.NoError(t, os.MkdirAll(dstDir, 0o755))
	f, err := os.Create(filepath.Join(dstDir, "dump.rdb"))
	require.NoError(t, err)
	_, err = Decrypt(f, enc, kr)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	plain, err := os.ReadFile(filepath.Join(dstDir, "dump.rdb"))
	require.NoError(t, err)
	require.True(t, bytes.Equal(dump, plain), "decrypted snapshot differs from redis' dump")

	dst := testenv.StartRedis(t, dstDir)
	require.Equal(t, int64(keys+4), dst.MustDo(t, "DBSIZE"))
	require.Equal(t, digest, dst.Digest(t))
}

func itoa(n int) string { return strconv.Itoa(n) }
