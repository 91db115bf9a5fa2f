package rdb

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/cachecrypt/cachecrypt/dek"
	"github.com/cachecrypt/cachecrypt/internal/atomicfile"
	"github.com/cachecrypt/cachecrypt/kek/kektest"
	"github.com/stretchr/testify/require"
)

func newKeyring(t testing.TB, diskID string) *dek.Keyring {
	t.Helper()
	k, err := dek.Create(context.Background(), filepath.Join(t.TempDir(), "keyring"), diskID, kektest.New(diskID))
	require.NoError(t, err)
	t.Cleanup(func() { k.Close() })
	return k
}

// fakeRDB builds a structurally valid RDB: header, opaque body, EOF opcode
// and the Redis CRC-64 trailer.
func fakeRDB(body []byte, version int) []byte {
	b := []byte("REDIS")
	b = append(b, []byte{byte('0' + version/1000), byte('0' + version/100%10), byte('0' + version/10%10), byte('0' + version%10)}...)
	b = append(b, body...)
	b = append(b, 0xFF)
	if version >= 5 {
		b = binary.LittleEndian.AppendUint64(b, redisCRC(0, b))
	}
	return b
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(uint64(n), 9))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestCRC64MatchesRedis(t *testing.T) {
	// The check value from Redis' src/crc64.c self-test.
	require.Equal(t, uint64(0xe9c6d914c4b8d9ca), redisCRC(0, []byte("123456789")))
	// Incremental computation equals one pass.
	p := randBytes(10000)
	require.Equal(t, redisCRC(0, p), redisCRC(redisCRC(0, p[:3333]), p[3333:]))
}

func TestCheckPlain(t *testing.T) {
	good := fakeRDB(randBytes(300000), 11)
	in, err := CheckPlain(bytes.NewReader(good))
	require.NoError(t, err)
	require.Equal(t, 11, in.Version)
	require.Equal(t, int64(len(good)), in.Size)
	require.Equal(t, binary.LittleEndian.Uint64(good[len(good)-8:]), in.Checksum)

	noCRC := bytes.Clone(good)
	clear(noCRC[len(noCRC)-8:])
	noCRC[100] ^= 1
	in, err = CheckPlain(bytes.NewReader(noCRC))
	require.NoError(t, err, "a zero trailer means checksums are disabled")
	require.Zero(t, in.Checksum)

	old := fakeRDB([]byte("body"), 4)
	in, err = CheckPlain(bytes.NewReader(old))
	require.NoError(t, err)
	require.Equal(t, 4, in.Version)

	for _, tc := range []struct {
		name string
		b    []byte
		want error
	}{
		{"flipped body byte", flipAt(good, 5000), ErrChecksum},
		{"flipped trailer byte", flipAt(good, len(good)-1), ErrChecksum},
		{"flipped EOF opcode", flipAt(good, len(good)-9), ErrNotRDB},
		{"truncated", good[:len(good)-100], ErrNotRDB},
		{"empty", nil, ErrNotRDB},
		{"bad magic", flipAt(good, 0), ErrNotRDB},
		{"bad version digits", append([]byte("REDIS00x1"), good[9:]...), ErrNotRDB},
	} {
		_, err := CheckPlain(bytes.NewReader(tc.b))
		require.ErrorIs(t, err, tc.want, tc.name)
	}
}

func flipAt(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 0x20
	return c
}

func TestCreateOpen(t *testing.T) {
	keys := newKeyring(t, "disk-1")
	dir := t.TempDir()
	path := filepath.Join(dir, "dump.rdb.enc")
	pt := fakeRDB(randBytes(1<<20+123), 11)
	for _, opts := range []Options{{}, {SegmentSize: 4096, Concurrency: 1}, {Compression: Zstd}, {Compression: S2}} {
		w, err := Create(path, keys, opts)
		require.NoError(t, err)
		_, err = w.Write(pt[:1000])
		require.NoError(t, err)
		_, err = w.ReadFrom(bytes.NewReader(pt[1000:]))
		require.NoError(t, err)
		require.Equal(t, int64(len(pt)), w.Size())
		require.NoError(t, w.Commit())
		require.NoError(t, w.Close(), "Close after Commit is a no-op")
		require.NoError(t, Verify(path, keys))

		r, err := Open(path, keys)
		require.NoError(t, err)
		if opts.Compression == None {
			require.Equal(t, int64(len(pt)), r.Size())
			p := make([]byte, 777)
			_, err = r.ReadAt(p, 5000)
			require.NoError(t, err)
			require.Equal(t, pt[5000:5777], p)
		}
		got, err := io.ReadAll(r)
		require.NoError(t, err)
		require.True(t, bytes.Equal(pt, got))
		in, err := CheckPlain(bytes.NewReader(got))
		require.NoError(t, err)
		require.Equal(t, 11, in.Version)
		require.NoError(t, r.Close())
	}
	onDisk, err := os.ReadFile(path)
	require.NoError(t, err)
	require.False(t, bytes.Contains(onDisk, pt[100:164]), "plaintext on disk")
	ents, _ := os.ReadDir(dir)
	require.Len(t, ents, 1, "no temporary files left")
}

func TestEncryptDecrypt(t *testing.T) {
	keys := newKeyring(t, "disk-1")
	path := filepath.Join(t.TempDir(), "snap")
	pt := fakeRDB(randBytes(200000), 10)
	n, err := Encrypt(path, bytes.NewReader(pt), keys)
	require.NoError(t, err)
	require.Equal(t, int64(len(pt)), n)
	var out bytes.Buffer
	n, err = Decrypt(&out, path, keys)
	require.NoError(t, err)
	require.Equal(t, int64(len(pt)), n)
	require.Equal(t, pt, out.Bytes())

	// Another disk's keyring cannot open it; a damaged file fails Verify.
	_, err = Decrypt(io.Discard, path, newKeyring(t, "disk-2"))
	require.ErrorIs(t, err, ErrAuthentication)
	b, _ := os.ReadFile(path)
	b[len(b)/2] ^= 1
	require.NoError(t, os.WriteFile(path, b, 0o600))
	require.ErrorIs(t, Verify(path, keys), ErrAuthentication)
	out.Reset()
	_, err = Decrypt(&out, path, keys)
	require.ErrorIs(t, err, ErrAuthentication)
	require.Less(t, out.Len(), len(pt)/2+1, "plaintext of the damaged segment returned")
	require.Equal(t, pt[:out.Len()], out.Bytes())
}

// TestAbort: an uncommitted snapshot never appears, and the old one stays.
func TestAbort(t *testing.T) {
	keys := newKeyring(t, "disk-1")
	dir := t.TempDir()
	path := filepath.Join(dir, "dump.rdb.enc")
	old := fakeRDB([]byte("old"), 11)
	_, err := Encrypt(path, bytes.NewReader(old), keys)
	require.NoError(t, err)
	w, err := Create(path, keys, Options{})
	require.NoError(t, err)
	w.Write(fakeRDB(randBytes(100000), 11))
	require.NoError(t, w.Close()) // without Commit: aborts
	require.ErrorIs(t, w.Commit(), ErrClosed)
	_, err = w.Write([]byte("x"))
	require.ErrorIs(t, err, ErrClosed)
	var out bytes.Buffer
	_, err = Decrypt(&out, path, keys)
	require.NoError(t, err)
	require.Equal(t, old, out.Bytes())
	ents, _ := os.ReadDir(dir)
	require.Len(t, ents, 1)
}

// TestCommitFaults fails every filesystem step of a snapshot write in turn:
// the target holds the old snapshot or the new one, complete, never a mix,
// and no temporary file is left.
func TestCommitFaults(t *testing.T) {
	keys := newKeyring(t, "disk-1")
	dir := t.TempDir()
	path := filepath.Join(dir, "dump.rdb.enc")
	old := fakeRDB([]byte("old snapshot"), 11)
	nw := fakeRDB(randBytes(3<<20), 11)
	write := func(fsys atomicfile.FS) error {
		w, err := Create(path, keys, Options{FS: fsys})
		if err != nil {
			return err
		}
		defer w.Close()
		if _, err := w.ReadFrom(bytes.NewReader(nw)); err != nil {
			return err
		}
		return w.Commit()
	}
	counter := &atomicfile.FaultFS{Inner: atomicfile.OS}
	require.NoError(t, write(counter))
	steps := counter.Steps()
	require.Greater(t, steps, 5)
	for step := 1; step <= steps; step++ {
		_, err := Encrypt(path, bytes.NewReader(old), keys)
		require.NoError(t, err)
		err = write(&atomicfile.FaultFS{Inner: atomicfile.OS, FailAt: step})
		var out bytes.Buffer
		_, derr := Decrypt(&out, path, keys)
		require.NoError(t, derr, "step %d", step)
		switch {
		case err == nil:
			t.Fatalf("step %d: injected fault not reported", step)
		case bytes.Equal(out.Bytes(), nw):
			// Only the final directory fsync may fail after the rename.
			require.ErrorContains(t, err, "fsync directory", "step %d", step)
		default:
			require.ErrorIs(t, err, atomicfile.ErrInjected, "step %d", step)
			require.Equal(t, old, out.Bytes(), "step %d", step)
		}
		n, _ := atomicfile.RemoveTemps(dir)
		require.Zero(t, n, "step %d left a temporary file", step)
	}
}

var _ = errors.Is
