package valuecrypt_test

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/cachecrypt/cachecrypt/valuecrypt"
	"github.com/stretchr/testify/require"
)

// The committed test vector (testdata/): a throwaway MMK (mmk.tink, a Tink
// keyset in clear: test only), a keyset it wraps (keyset.bin) with two keys,
// and values sealed under key 1 and key 2. Later versions of the package
// must still open them. Regenerate only for a new format version, with
// VALUECRYPT_WRITE_VECTORS=1.
const (
	vectorContext = "vector-context"
	vectorKey     = "vector:key"
	vectorField   = "vector-field"
	vectorPlain   = "cachecrypt valuecrypt test vector, format 1"
)

func TestWriteVectors(t *testing.T) {
	if os.Getenv("VALUECRYPT_WRITE_VECTORS") != "1" {
		t.Skip("set VALUECRYPT_WRITE_VECTORS=1 to regenerate the committed test vector")
	}
	m, err := kek.NewMMK("vector")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile("testdata/mmk.tink", m.Keyset(), 0o600))
	os.Remove("testdata/keyset.bin")
	ks, err := valuecrypt.Create(ctx, valuecrypt.FileStore("testdata/keyset.bin"), m)
	require.NoError(t, err)
	c := valuecrypt.NewCipher(ks, valuecrypt.Config{Context: vectorContext})
	v1, err := c.Seal(vectorKey, []byte(vectorPlain))
	require.NoError(t, err)
	_, err = ks.Rotate(ctx)
	require.NoError(t, err)
	v2, err := c.SealField(vectorKey, vectorField, []byte(vectorPlain))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile("testdata/value-key1.bin", v1, 0o644))
	require.NoError(t, os.WriteFile("testdata/field-key2.bin", v2, 0o644))
}

func readVector(t *testing.T, name string) []byte {
	b, err := os.ReadFile(filepath.Join("testdata", name))
	require.NoError(t, err)
	return b
}

// TestVectorOpens opens the committed vector through the package.
func TestVectorOpens(t *testing.T) {
	m, err := kek.ParseMMK("vector", readVector(t, "mmk.tink"))
	require.NoError(t, err)
	ks, err := valuecrypt.Open(ctx, valuecrypt.FileStore("testdata/keyset.bin"), m)
	require.NoError(t, err)
	defer ks.Close()
	primary, all := ks.KeyIDs()
	require.EqualValues(t, 2, primary)
	require.Equal(t, []uint32{1, 2}, all)
	c := valuecrypt.NewCipher(ks, valuecrypt.Config{Context: vectorContext})
	pt, err := c.Open(ctx, vectorKey, readVector(t, "value-key1.bin"))
	require.NoError(t, err)
	require.Equal(t, vectorPlain, string(pt))
	pt, err = c.OpenField(ctx, vectorKey, vectorField, readVector(t, "field-key2.bin"))
	require.NoError(t, err)
	require.Equal(t, vectorPlain, string(pt))
}

// TestVectorIndependentDecoder decodes the committed vector with only the
// format description in format.go and crypto/cipher: the keyset envelope,
// its body, and both values.
func TestVectorIndependentDecoder(t *testing.T) {
	m, err := kek.ParseMMK("vector", readVector(t, "mmk.tink"))
	require.NoError(t, err)
	ks := readVector(t, "keyset.bin")
	require.Equal(t, "CVKS\x01", string(ks[:5]))
	p := 13 // magic, version, generation
	var desc [3]string
	for i := range desc {
		n := int(binary.BigEndian.Uint16(ks[p:]))
		desc[i], p = string(ks[p+2:p+2+n]), p+2+n
	}
	n := int(binary.BigEndian.Uint32(ks[p:]))
	wrapped := ks[p+4 : p+4+n]
	p += 4 + n
	sk, err := m.Unwrap(ctx, kek.Wrapped{Descriptor: kek.Descriptor{Kind: kek.Kind(desc[0]), KeyID: desc[1], Algorithm: desc[2]}, Ciphertext: wrapped})
	require.NoError(t, err)
	body, err := gcmOf(t, sk).Open(nil, ks[p:p+12], ks[p+12:], ks[:p])
	require.NoError(t, err)
	require.EqualValues(t, 2, binary.BigEndian.Uint32(body), "primary")
	count := int(binary.BigEndian.Uint32(body[4+64:]))
	require.Equal(t, 2, count)
	keys := map[uint32][]byte{}
	for i := range count {
		e := body[8+64+36*i:]
		keys[binary.BigEndian.Uint32(e)] = e[4:36]
	}

	ad := func(header []byte, kind byte, field string) []byte {
		a := append([]byte("cachecrypt/valuecrypt/v1\x00"), byte(len(vectorContext)))
		a = append(a, vectorContext...)
		a = append(a, header...)
		a = append(a, kind, byte(len(vectorKey)))
		a = append(a, vectorKey...)
		a = append(a, byte(len(field)))
		return append(a, field...)
	}
	for _, v := range []struct {
		file  string
		kind  byte
		field string
		key   uint32
	}{{"value-key1.bin", 's', "", 1}, {"field-key2.bin", 'h', vectorField, 2}} {
		val := readVector(t, v.file)
		require.Equal(t, byte(0xC1), val[0])
		require.Equal(t, v.key, binary.BigEndian.Uint32(val[1:]))
		pt, err := gcmOf(t, keys[v.key]).Open(nil, val[5:17], val[17:], ad(val[:5], v.kind, v.field))
		require.NoError(t, err, v.file)
		require.Equal(t, vectorPlain, string(pt))
	}
}

func gcmOf(t *testing.T, key []byte) cipher.AEAD {
	block, err := aes.NewCipher(key)
	require.NoError(t, err)
	g, err := cipher.NewGCM(block)
	require.NoError(t, err)
	return g
}
