package export

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"flag"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cachecrypt/cachecrypt/internal/stream"
	"github.com/cachecrypt/cachecrypt/kek"
)

var update = flag.Bool("update", false, "regenerate testdata/sealed-export-v1 (never for a committed format version)")

// SealedVector is testdata/sealed-export-v1/vector.json.
type SealedVector struct {
	Comment     string `json:"comment"`
	MMKKeyset   string `json:"mmk_keyset_file"`
	MMKName     string `json:"mmk_name"`
	DEKHex      string `json:"export_dek_hex"`
	SegmentSize int    `json:"segment_size"`
	Plaintext   string `json:"plaintext_file"`
	Sealed      string `json:"sealed_file"`
}

const sealedVectorDir = "../testdata/sealed-export-v1"

// TestSealedVectorHeader parses the committed vector's header, checks that
// it re-serialises to the same bytes and names the vector's MMK; with
// -update it first writes a new vector (only for a new format version).
// vectors_test.go decodes the whole vector independently.
func TestSealedVectorHeader(t *testing.T) {
	if *update {
		generateSealedVector(t)
	}
	b, err := os.ReadFile(filepath.Join(sealedVectorDir, "export.ccsealed"))
	require.NoError(t, err)
	h, env, hdr, err := parseSealedHeader(b)
	require.NoError(t, err)
	require.Equal(t, b[:env+hdr], h.marshal())
	require.Equal(t, kek.KindMMK, h.wrapped.Kind)
	require.Contains(t, h.wrapped.KeyID, "cachecrypt-test-vector")
	require.Equal(t, 64, h.stream.SegmentSize)
}

func generateSealedVector(t *testing.T) {
	ctx := context.Background()
	v := SealedVector{
		Comment:   "A v1 sealed export of plaintext.rdb (a redis-server RDB) in segments of 64 bytes, its export DEK wrapped by the MMK of ../keyring-v1 (TEST ONLY keys). export_dek_hex is the unwrapped export DEK.",
		MMKKeyset: "../keyring-v1/mmk.keyset", MMKName: "cachecrypt-test-vector",
		SegmentSize: 64, Plaintext: "plaintext.rdb", Sealed: "export.ccsealed",
	}
	keyset, err := os.ReadFile(filepath.Join(sealedVectorDir, v.MMKKeyset))
	require.NoError(t, err)
	mmk, err := kek.ParseMMK(v.MMKName, keyset)
	require.NoError(t, err)
	pt, err := os.ReadFile("testdata/small.rdb")
	require.NoError(t, err)
	z, err := newSealer(ctx, mmk, v.SegmentSize)
	require.NoError(t, err)
	var out bytes.Buffer
	r := bytes.NewReader(pt)
	_, err = io.Copy(&out, readerFunc(func(p []byte) (int, error) { return z.read(p, r.Read) }))
	require.NoError(t, err)
	h, _, _, err := parseSealedHeader(out.Bytes())
	require.NoError(t, err)
	d, err := mmk.Unwrap(ctx, h.wrapped)
	require.NoError(t, err)
	v.DEKHex = hex.EncodeToString(d)
	require.NoError(t, os.MkdirAll(sealedVectorDir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(sealedVectorDir, v.Plaintext), pt, 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(sealedVectorDir, v.Sealed), out.Bytes(), 0o644))
	j, err := json.MarshalIndent(v, "", "  ")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(sealedVectorDir, "vector.json"), append(j, '\n'), 0o644))
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// FuzzSealedHeader: whatever parses re-serialises to the bytes it was
// parsed from, so the envelope has one encoding, and nothing panics.
func FuzzSealedHeader(f *testing.F) {
	vec, err := os.ReadFile(filepath.Join(sealedVectorDir, "export.ccsealed"))
	require.NoError(f, err)
	f.Add(vec)
	f.Add(vec[:60])
	h := sealedHeader{
		wrapped: kek.Wrapped{Descriptor: kek.Descriptor{Kind: "k", KeyID: "i"}, Ciphertext: []byte{1}},
		stream:  stream.Header{Purpose: sealedPurpose, DiskID: sealedDiskID, DEKVersion: sealedDEKVer, SegmentSize: 16},
	}
	f.Add(h.marshal())
	f.Add([]byte(SealedMagic))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, env, hdr, err := parseSealedHeader(b)
		if err != nil {
			return
		}
		got := h.marshal()
		if !bytes.Equal(got, b[:env+hdr]) {
			t.Fatalf("parse then marshal changed the header:\n in  %x\n out %x", b[:env+hdr], got)
		}
		if len(h.envelope()) != env {
			t.Fatalf("envelope length %d, parsed %d", len(h.envelope()), env)
		}
	})
}
