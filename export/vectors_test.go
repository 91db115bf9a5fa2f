package export_test

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cachecrypt/cachecrypt/export"
	"github.com/cachecrypt/cachecrypt/kek"
)

// sealedVector mirrors testdata/sealed-export-v1/vector.json.
type sealedVector struct {
	MMKKeyset   string `json:"mmk_keyset_file"`
	MMKName     string `json:"mmk_name"`
	DEKHex      string `json:"export_dek_hex"`
	SegmentSize int    `json:"segment_size"`
	Plaintext   string `json:"plaintext_file"`
	Sealed      string `json:"sealed_file"`
}

// TestSealedVector opens the committed sealed export twice: through
// Unseal, and with a decoder written from FORMAT.md ("Sealed export")
// alone, which shares no code with the package beyond the MMK's Unwrap.
func TestSealedVector(t *testing.T) {
	dir := "../testdata/sealed-export-v1"
	var v sealedVector
	b, err := os.ReadFile(filepath.Join(dir, "vector.json"))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &v))
	keyset, err := os.ReadFile(filepath.Join(dir, v.MMKKeyset))
	require.NoError(t, err)
	mmk, err := kek.ParseMMK(v.MMKName, keyset)
	require.NoError(t, err)
	pt, err := os.ReadFile(filepath.Join(dir, v.Plaintext))
	require.NoError(t, err)
	sealed, err := os.ReadFile(filepath.Join(dir, v.Sealed))
	require.NoError(t, err)

	got, dek, err := unsealByHand(context.Background(), sealed, mmk)
	require.NoError(t, err)
	require.Equal(t, v.DEKHex, hex.EncodeToString(dek))
	require.Equal(t, pt, got)
	require.Greater(t, len(pt), 2*v.SegmentSize, "the vector must span more than 2 segments")

	rc, meta, err := export.Unseal(export.FromReader(bytes.NewReader(sealed)), mmk).Open(context.Background())
	require.NoError(t, err)
	defer rc.Close()
	got, err = io.ReadAll(rc)
	require.NoError(t, err)
	require.Equal(t, pt, got)
	require.Equal(t, int64(len(pt)), meta.Size, "the plain size follows from the sealed size")
}

// unsealByHand decodes a sealed export as FORMAT.md specifies it: the
// envelope, one Unwrap, the file key by HKDF-SHA256, then the stream's
// segments with AES-256-GCM, nonce = 7 zero bytes || u32 index || last
// flag, and the stream header as associated data.
func unsealByHand(ctx context.Context, b []byte, u kek.Unwrapper) (plain, dek []byte, err error) {
	p := 0
	take := func(n int) []byte {
		if err != nil || len(b)-p < n {
			err = errors.New("short")
			return nil
		}
		p += n
		return b[p-n : p]
	}
	str8 := func() []byte {
		l := take(1)
		if l == nil {
			return nil
		}
		return take(int(l[0]))
	}
	str16 := func() []byte {
		l := take(2)
		if l == nil {
			return nil
		}
		return take(int(binary.BigEndian.Uint16(l)))
	}
	if string(take(8)) != "CCSEALED" || !bytes.Equal(take(1), []byte{1}) {
		return nil, nil, errors.New("bad magic or version")
	}
	kind, keyID, alg, wrapped := str8(), str16(), str8(), str16()
	if err != nil {
		return nil, nil, err
	}
	dek, err = u.Unwrap(ctx, kek.Wrapped{Descriptor: kek.Descriptor{Kind: kek.Kind(kind), KeyID: string(keyID), Algorithm: string(alg)}, Ciphertext: wrapped})
	if err != nil {
		return nil, nil, err
	}
	hdrStart := p
	if string(take(4)) != "CCST" || !bytes.Equal(take(1), []byte{1}) {
		return nil, nil, errors.New("bad stream magic or version")
	}
	purpose, diskID := str8(), str8()
	ver, seg, comp, salt := take(4), take(4), take(1), take(32)
	if err != nil {
		return nil, nil, err
	}
	if string(purpose) != "export/sealed" || string(diskID) != "export" || binary.BigEndian.Uint32(ver) != 1 || comp[0] != 0 {
		return nil, nil, fmt.Errorf("stream header %q %q %x %x", purpose, diskID, ver, comp)
	}
	ad := b[hdrStart:p]
	info := append([]byte("cachecrypt file key v1\x00export/sealed\x00export\x00"), 0, 0, 0, 1)
	key, err := hkdf.Key(sha256.New, dek, salt, string(info), 32)
	if err != nil {
		return nil, nil, err
	}
	block, _ := aes.NewCipher(key)
	gcm, _ := cipher.NewGCM(block)
	s := int(binary.BigEndian.Uint32(seg)) + 16
	body := b[p:]
	for i := 0; len(body) > 0; i++ {
		n := min(s, len(body))
		nonce := make([]byte, 12)
		binary.BigEndian.PutUint32(nonce[7:], uint32(i))
		if n == len(body) {
			nonce[11] = 1
		}
		pt, err := gcm.Open(nil, nonce, body[:n], ad)
		if err != nil {
			return nil, nil, fmt.Errorf("segment %d: %w", i, err)
		}
		plain = append(plain, pt...)
		body = body[n:]
	}
	return plain, dek, nil
}
