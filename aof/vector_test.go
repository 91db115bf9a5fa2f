package aof

import (
	"bytes"
	"encoding/hex"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/cachecrypt/cachecrypt/dek"
	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite the committed test vector in testdata/v1")

// rawKeys derives file keys from raw DEKs, as FORMAT.md specifies, so the
// committed vector is checked against the spec and not only the keyring.
type rawKeys struct {
	disk string
	deks map[uint32][]byte
}

func (k rawKeys) DiskID() string { return k.disk }
func (k rawKeys) Active() uint32 { return uint32(len(k.deks)) }
func (k rawKeys) FileKey(v uint32, purpose string, salt []byte) ([]byte, error) {
	d, ok := k.deks[v]
	if !ok {
		return nil, dek.ErrUnknownVersion
	}
	return dek.DeriveFileKey(d, k.disk, v, purpose, salt)
}

func vectorKeys(t *testing.T) rawKeys {
	b, err := os.ReadFile("testdata/v1/deks.hex")
	require.NoError(t, err)
	lines := bytes.Fields(b)
	k := rawKeys{disk: "vector-disk", deks: map[uint32][]byte{}}
	for i, l := range lines {
		d, err := hex.DecodeString(string(l))
		require.NoError(t, err)
		k.deks[uint32(i+1)] = d
	}
	return k
}

// TestVector opens the committed v1 directory (written by an earlier build)
// and checks every byte of its replay. Later versions must keep passing it.
func TestVector(t *testing.T) {
	dir := "testdata/v1/appendonlydir"
	if *update {
		os.RemoveAll("testdata/v1")
		require.NoError(t, os.MkdirAll(dir, 0o755))
		deks := "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n" +
			"202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f\n"
		require.NoError(t, os.WriteFile("testdata/v1/deks.hex", []byte(deks), 0o644))
		keys := vectorKeys(t)
		delete(keys.deks, 2) // first parts under DEK 1
		l, err := Open(dir, keys, Options{})
		require.NoError(t, err)
		require.NoError(t, l.Rewrite(BaseRDB, func(w *Rewrite) error {
			_, err := w.Write([]byte("REDIS0011-fake-rdb-preamble"))
			return err
		}))
		require.NoError(t, l.Append([]byte("*2\r\n$6\r\nSELECT\r\n$1\r\n0\r\n")))
		require.NoError(t, l.Close())
		keys = vectorKeys(t) // DEK 2 active: the next incremental part uses it
		l, err = Open(dir, keys, Options{})
		require.NoError(t, err)
		require.NoError(t, l.Append([]byte("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n")))
		require.NoError(t, l.Append([]byte("*2\r\n$4\r\nINCR\r\n$1\r\nn\r\n")))
		require.NoError(t, l.Close())
		got := replayAll(t, dir, keys, Options{})
		require.NoError(t, os.WriteFile("testdata/v1/plaintext", got, 0o644))
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			os.Chmod(filepath.Join(dir, e.Name()), 0o644)
		}
	}
	keys := vectorKeys(t)
	want, err := os.ReadFile("testdata/v1/plaintext")
	require.NoError(t, err)
	// Read-only checks: the committed files must not change.
	rep, err := Check(dir, keys, Options{})
	require.NoError(t, err)
	require.Equal(t, []uint32{1, 1, 2}, []uint32{rep.Parts[0].DEK, rep.Parts[1].DEK, rep.Parts[2].DEK})
	require.Equal(t, want, replayAll(t, dir, keys, Options{}))
	require.Equal(t, "REDIS0011-fake-rdb-preamble*2\r\n$6\r\nSELECT\r\n$1\r\n0\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n*2\r\n$4\r\nINCR\r\n$1\r\nn\r\n", string(want))
	// A copy opens for appending.
	cp := t.TempDir()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		b, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		os.WriteFile(filepath.Join(cp, e.Name()), b, 0o600)
	}
	l, err := Open(cp, keys, Options{})
	require.NoError(t, err)
	require.NoError(t, l.Close())
}
