package aof

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"flag"
	"hash/crc32"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/cachecrypt/cachecrypt/dek"
	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite the committed test vector in testdata/aof-v1")

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
	b, err := os.ReadFile("../testdata/aof-v1/deks.hex")
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
	dir := "../testdata/aof-v1/appendonlydir"
	if *update {
		os.RemoveAll("../testdata/aof-v1")
		require.NoError(t, os.MkdirAll(dir, 0o755))
		deks := "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n" +
			"202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f\n"
		require.NoError(t, os.WriteFile("../testdata/aof-v1/deks.hex", []byte(deks), 0o644))
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
		require.NoError(t, os.WriteFile("../testdata/aof-v1/plaintext", got, 0o644))
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			os.Chmod(filepath.Join(dir, e.Name()), 0o644)
		}
	}
	keys := vectorKeys(t)
	want, err := os.ReadFile("../testdata/aof-v1/plaintext")
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

// TestVectorIndependentDecoder decodes the committed directory from
// FORMAT.md alone, with crypto/aes, crypto/hmac and dek.DeriveFileKey and
// none of this package's parsing code: code and spec cannot drift apart.
func TestVectorIndependentDecoder(t *testing.T) {
	keys := vectorKeys(t)
	dir := "../testdata/aof-v1/appendonlydir"
	man, err := os.ReadFile(filepath.Join(dir, "appendonly.aof.manifest"))
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSuffix(string(man), "\n"), "\n")
	require.Equal(t, "cachecrypt-aof-manifest 1", lines[0])

	// MAC: HMAC-SHA256 over everything before the mac line, keyed with the
	// file key of purpose aof-manifest, the mac-key version and salt.
	mk := strings.Fields(lines[3])
	ver, _ := strconv.Atoi(mk[1])
	salt, _ := hex.DecodeString(mk[2])
	key, err := dek.DeriveFileKey(keys.deks[uint32(ver)], "vector-disk", uint32(ver), "aof-manifest", salt)
	require.NoError(t, err)
	body := man[:bytes.LastIndex(man, []byte("mac "))]
	h := hmac.New(sha256.New, key)
	h.Write(body)
	require.Equal(t, "mac "+hex.EncodeToString(h.Sum(nil)), lines[len(lines)-1])

	var replay []byte
	for _, line := range lines[4 : len(lines)-1] {
		f := strings.Fields(line)
		if f[5] == "h" {
			continue
		}
		purpose := map[string]string{"b": "aof-base", "i": "aof-incr"}[f[5]]
		replay = append(replay, decodePart(t, filepath.Join(dir, f[1]), keys, purpose)...)
	}
	want, err := os.ReadFile("../testdata/aof-v1/plaintext")
	require.NoError(t, err)
	require.Equal(t, want, replay)
}

func decodePart(t *testing.T, path string, keys rawKeys, purpose string) []byte {
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, "CCAOF\r\n\x1a", string(b[:8]))
	require.Equal(t, byte(1), b[8])
	ver := binary.BigEndian.Uint32(b[10:14])
	salt := b[14:46]
	idLen := int(b[62])
	hdr := b[:63+idLen]
	require.Equal(t, "vector-disk", string(hdr[63:]))
	key, err := dek.DeriveFileKey(keys.deks[ver], "vector-disk", ver, purpose, salt)
	require.NoError(t, err)
	blk, _ := aes.NewCipher(key)
	gcm, _ := cipher.NewGCM(blk)
	digest := sha256.Sum256(hdr)
	var out []byte
	rest := b[len(hdr):]
	for index := uint64(0); len(rest) > 0; index++ {
		n := binary.BigEndian.Uint32(rest)
		var chk [12]byte
		binary.BigEndian.PutUint64(chk[:], index)
		binary.BigEndian.PutUint32(chk[8:], n)
		require.Equal(t, crc32.Checksum(chk[:], crc32.MakeTable(crc32.Castagnoli)), binary.BigEndian.Uint32(rest[4:]))
		nonce := make([]byte, 12)
		binary.BigEndian.PutUint64(nonce[4:], index)
		ad := append(digest[:], chk[:]...)
		p, err := gcm.Open(nil, nonce, rest[8:8+n], ad)
		require.NoError(t, err, "%s frame %d", path, index)
		out = append(out, p...)
		rest = rest[8+n:]
	}
	return out
}
