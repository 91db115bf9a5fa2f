package stream_test

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cachecrypt/cachecrypt/dek"
	"github.com/cachecrypt/cachecrypt/internal/stream"
	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "regenerate the test vectors under testdata/ (never for committed formats)")

// rawKeys implements stream.Keys from a raw DEK with dek.DeriveFileKey, the
// derivation FORMAT.md specifies, without any keyring.
type rawKeys struct {
	dek     []byte
	diskID  string
	version uint32
}

func (k rawKeys) DiskID() string { return k.diskID }
func (k rawKeys) Active() uint32 { return k.version }
func (k rawKeys) FileKey(v uint32, purpose string, salt []byte) ([]byte, error) {
	if v != k.version {
		return nil, fmt.Errorf("version %d: %w", v, dek.ErrUnknownVersion)
	}
	return dek.DeriveFileKey(k.dek, k.diskID, v, purpose, salt)
}

const vectorDir = "../../testdata"

// streamVector is testdata/stream-v1/vector.json.
type streamVector struct {
	Comment     string `json:"comment"`
	DEKHex      string `json:"dek_hex"`
	DiskID      string `json:"disk_id"`
	DEKVersion  uint32 `json:"dek_version"`
	Purpose     string `json:"purpose"`
	SegmentSize int    `json:"segment_size"`
	Plaintext   string `json:"plaintext_file"`
	Ciphertext  string `json:"ciphertext_file"`
}

// keyringVector is testdata/keyring-v1/vector.json.
type keyringVector struct {
	Comment    string `json:"comment"`
	Keyring    string `json:"keyring_file"`
	MMKKeyset  string `json:"mmk_keyset_file"`
	MMKName    string `json:"mmk_name"`
	DiskID     string `json:"disk_id"`
	DEKVersion uint32 `json:"dek_version"`
	DEKHex     string `json:"dek_hex"`
}

// TestVectors opens the committed vectors: the stream from its raw DEK, the
// keyring with its MMK, and the stream again through that keyring. Run with
// -update only to create vectors for a new format version.
func TestVectors(t *testing.T) {
	if *update {
		generateVectors(t)
	}
	ctx := context.Background()
	sdir := filepath.Join(vectorDir, "stream-v1")
	kdir := filepath.Join(vectorDir, "keyring-v1")
	var sv streamVector
	var kv keyringVector
	readJSON(t, filepath.Join(sdir, "vector.json"), &sv)
	readJSON(t, filepath.Join(kdir, "vector.json"), &kv)
	raw, err := hex.DecodeString(sv.DEKHex)
	require.NoError(t, err)
	pt := readFile(t, filepath.Join(sdir, sv.Plaintext))
	ct := readFile(t, filepath.Join(sdir, sv.Ciphertext))

	check := func(keys stream.Keys) {
		r, err := stream.NewReader(bytes.NewReader(ct), int64(len(ct)), keys, sv.Purpose)
		require.NoError(t, err)
		h := r.Header()
		require.Equal(t, sv.DiskID, h.DiskID)
		require.Equal(t, sv.DEKVersion, h.DEKVersion)
		require.Equal(t, sv.SegmentSize, h.SegmentSize)
		require.Greater(t, r.Size(), int64(2*sv.SegmentSize), "the vector must span more than 2 segments")
		require.NoError(t, r.Verify())
		got, err := io.ReadAll(r)
		require.NoError(t, err)
		require.Equal(t, pt, got)
	}
	check(rawKeys{dek: raw, diskID: sv.DiskID, version: sv.DEKVersion})
	byHand, err := decryptByHand(ct, raw, sv.Purpose)
	require.NoError(t, err)
	require.Equal(t, pt, byHand)

	// The keyring vector: its DEK, extracted by an independent reading of
	// FORMAT.md, is the expected one, and dek.Open agrees.
	mmk, err := kek.ParseMMK(kv.MMKName, readFile(t, filepath.Join(kdir, kv.MMKKeyset)))
	require.NoError(t, err)
	krFile := readFile(t, filepath.Join(kdir, kv.Keyring))
	d, err := keyringDEK(ctx, krFile, mmk, kv.DEKVersion)
	require.NoError(t, err)
	require.Equal(t, kv.DEKHex, hex.EncodeToString(d))
	require.Equal(t, sv.DEKHex, kv.DEKHex, "the stream vector is encrypted under the keyring vector's DEK")

	// dek.Open needs a writable path (it may update the file later): copy.
	path := filepath.Join(t.TempDir(), "keyring")
	require.NoError(t, os.WriteFile(path, krFile, 0o600))
	kr, err := dek.Open(ctx, path, mmk)
	require.NoError(t, err)
	defer kr.Close()
	require.Equal(t, kv.DiskID, kr.DiskID())
	check(kr)
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	require.NoError(t, json.Unmarshal(readFile(t, path), v))
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return b
}

// keyringDEK reads a keyring file as FORMAT.md ("Keyring") specifies,
// independently of package dek: it unwraps the keyring key, checks the MAC
// and opens the DEK of version v.
func keyringDEK(ctx context.Context, b []byte, u kek.Unwrapper, v uint32) ([]byte, error) {
	if len(b) < 32 {
		return nil, errors.New("short keyring")
	}
	body, mac := b[:len(b)-32], b[len(b)-32:]
	p := body
	take := func(n int) []byte { x := p[:n]; p = p[n:]; return x }
	u8 := func() int { return int(take(1)[0]) }
	u16 := func() int { return int(binary.BigEndian.Uint16(take(2))) }
	if string(take(8)) != "CCKEYRNG" || u16() != 1 {
		return nil, errors.New("not a v1 keyring")
	}
	diskID := string(take(u8()))
	take(8) // generation
	var w kek.Wrapped
	w.Kind = kek.Kind(take(u8()))
	w.KeyID = string(take(u16()))
	w.Algorithm = string(take(u8()))
	w.Ciphertext = take(u16())
	take(4) // active
	n := u16()
	krk, err := u.Unwrap(ctx, w)
	if err != nil {
		return nil, err
	}
	sealKey, _ := hkdf.Key(sha256.New, krk, nil, "cachecrypt keyring seal v1\x00"+diskID, 32)
	macKey, _ := hkdf.Key(sha256.New, krk, nil, "cachecrypt keyring mac v1\x00"+diskID, 32)
	m := hmac.New(sha256.New, macKey)
	m.Write(body)
	if !hmac.Equal(m.Sum(nil), mac) {
		return nil, errors.New("keyring MAC mismatch")
	}
	for range n {
		ver := binary.BigEndian.Uint32(take(4))
		take(8) // created
		sealed := take(48)
		if ver != v {
			continue
		}
		blk, _ := aes.NewCipher(sealKey)
		g, _ := cipher.NewGCM(blk)
		nonce := make([]byte, 12)
		binary.BigEndian.PutUint32(nonce[8:], ver)
		ad := binary.BigEndian.AppendUint32([]byte("cachecrypt dek v1\x00"+diskID+"\x00"), ver)
		return g.Open(nil, nonce, sealed, ad)
	}
	return nil, fmt.Errorf("no DEK version %d", v)
}

// decryptByHand decrypts an uncompressed v1 stream as FORMAT.md ("Stream")
// specifies, independently of the package: it pins the format.
func decryptByHand(b, rawDEK []byte, purpose string) ([]byte, error) {
	p := 4 + 1
	if string(b[:4]) != "CCST" || b[4] != 1 {
		return nil, errors.New("not a v1 stream")
	}
	purp := string(b[p+1 : p+1+int(b[p])])
	p += 1 + int(b[p])
	disk := string(b[p+1 : p+1+int(b[p])])
	p += 1 + int(b[p])
	version := binary.BigEndian.Uint32(b[p:])
	seg := int(binary.BigEndian.Uint32(b[p+4:]))
	if b[p+8] != 0 || purp != purpose {
		return nil, errors.New("unexpected compression or purpose")
	}
	salt := b[p+9 : p+9+32]
	hdr := b[:p+9+32]
	info := binary.BigEndian.AppendUint32([]byte("cachecrypt file key v1\x00"+purp+"\x00"+disk+"\x00"), version)
	key, err := hkdf.Key(sha256.New, rawDEK, salt, string(info), 32)
	if err != nil {
		return nil, err
	}
	blk, _ := aes.NewCipher(key)
	g, _ := cipher.NewGCM(blk)
	var out []byte
	body := b[len(hdr):]
	for i := 0; ; i++ {
		n := min(len(body), seg+16)
		last := len(body) == n
		nonce := make([]byte, 12)
		binary.BigEndian.PutUint32(nonce[7:], uint32(i))
		if last {
			nonce[11] = 1
		}
		out, err = g.Open(out, nonce, body[:n], hdr)
		if err != nil {
			return nil, fmt.Errorf("segment %d: %w", i, err)
		}
		body = body[n:]
		if last {
			return out, nil
		}
	}
}

// generateVectors writes new vectors. The committed ones must never change:
// a new format version gets a new directory.
func generateVectors(t *testing.T) {
	ctx := context.Background()
	sdir := filepath.Join(vectorDir, "stream-v1")
	kdir := filepath.Join(vectorDir, "keyring-v1")
	require.NoError(t, os.MkdirAll(sdir, 0o755))
	require.NoError(t, os.MkdirAll(kdir, 0o755))

	const mmkName = "cachecrypt-test-vector"
	mmk, err := kek.NewMMK(mmkName)
	require.NoError(t, err)
	kv := keyringVector{
		Comment: "A v1 keyring for disk vector-disk, wrapped by the MMK keyset mmk.keyset (binary Tink keyset, TEST ONLY). dek_hex is DEK version 1.",
		Keyring: "keyring", MMKKeyset: "mmk.keyset", MMKName: mmkName, DiskID: "vector-disk", DEKVersion: 1,
	}
	path := filepath.Join(kdir, kv.Keyring)
	os.Remove(path)
	kr, err := dek.Create(ctx, path, kv.DiskID, mmk)
	require.NoError(t, err)
	defer kr.Close()
	require.NoError(t, os.WriteFile(filepath.Join(kdir, kv.MMKKeyset), mmk.Keyset(), 0o600))
	d, err := keyringDEK(ctx, readFile(t, path), mmk, 1)
	require.NoError(t, err)
	kv.DEKHex = hex.EncodeToString(d)
	writeJSON(t, filepath.Join(kdir, "vector.json"), kv)

	sv := streamVector{
		Comment: "A v1 stream (no compression) of plaintext.txt, encrypted under the raw DEK dek_hex (TEST ONLY), the DEK of ../keyring-v1.",
		DEKHex:  kv.DEKHex, DiskID: kv.DiskID, DEKVersion: 1, Purpose: "vector", SegmentSize: 64,
		Plaintext: "plaintext.txt", Ciphertext: "stream.ccs",
	}
	pt := []byte(strings.Repeat("cachecrypt stream format v1 test vector. ", 5)[:200])
	var buf bytes.Buffer
	w, err := stream.NewWriter(&buf, rawKeys{dek: d, diskID: sv.DiskID, version: 1}, sv.Purpose, stream.Options{SegmentSize: sv.SegmentSize})
	require.NoError(t, err)
	_, err = w.Write(pt)
	require.NoError(t, err)
	require.NoError(t, w.Close())
	require.NoError(t, os.WriteFile(filepath.Join(sdir, sv.Plaintext), pt, 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(sdir, sv.Ciphertext), buf.Bytes(), 0o644))
	writeJSON(t, filepath.Join(sdir, "vector.json"), sv)
}

func writeJSON(t *testing.T, path string, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, append(b, '\n'), 0o644))
}
