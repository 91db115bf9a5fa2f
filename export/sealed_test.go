package export_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cachecrypt/cachecrypt/export"
	"github.com/cachecrypt/cachecrypt/internal/stream"
	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/cachecrypt/cachecrypt/kek/kektest"
)

// sizeDest records what Stream.Size announced before reading and the bytes
// read.
type sizeDest struct {
	announced int64
	sealed    bool
	got       bytes.Buffer
}

func (d *sizeDest) Put(ctx context.Context, s *export.Stream) error {
	d.announced, d.sealed = s.Size(), s.Sealed()
	return export.ToWriter(&d.got).Put(ctx, s)
}

// sealedExport exports plain sealed under k and returns the sealed bytes.
func sealedExport(t *testing.T, plain []byte, k kek.Wrapper) []byte {
	t.Helper()
	scratch := newScratch(t)
	d := &sizeDest{}
	in, err := export.Export(context.Background(), scratch, export.FromReader(bytes.NewReader(plain)), d, &export.Options{Seal: k})
	require.NoError(t, err)
	require.True(t, d.sealed)
	require.Equal(t, int64(d.got.Len()), d.announced, "Stream.Size of a sealed export")
	require.Equal(t, sha256.Sum256(plain), in.SHA256, "Info describes the plain RDB")
	requireNoStaging(t, scratch)
	return d.got.Bytes()
}

func TestSealedRoundTrip(t *testing.T) {
	plain := redisRDB(t)
	require.Greater(t, len(plain), 3*stream.DefaultSegmentSize)
	k := kektest.New("backup")
	sealed := sealedExport(t, plain, k)
	require.Equal(t, int64(1), k.Wraps(), "one Wrap per export")
	require.True(t, bytes.HasPrefix(sealed, []byte(export.SealedMagic)))
	for off := 0; off+32 <= len(plain); off += len(plain) / 16 {
		require.False(t, bytes.Contains(sealed, plain[off:off+32]), "plaintext at offset %d in the sealed export", off)
	}

	file := filepath.Join(t.TempDir(), "export.ccsealed")
	require.NoError(t, os.WriteFile(file, sealed, 0o600))
	scratch := newScratch(t)
	out := filepath.Join(t.TempDir(), "dump.rdb")
	in, err := export.Import(context.Background(), scratch, export.Unseal(export.FromFile(file), k), export.ToFile(out), nil)
	require.NoError(t, err)
	require.Equal(t, int64(1), k.Unwraps(), "one Unwrap per import")
	require.Equal(t, sha256.Sum256(plain), in.SHA256)
	got, err := os.ReadFile(out)
	require.NoError(t, err)
	require.True(t, bytes.Equal(plain, got), "unsealed RDB differs")
	requireNoStaging(t, scratch)

	// Two exports of the same RDB share nothing: fresh DEK and salt.
	again := sealedExport(t, plain, k)
	require.Equal(t, len(sealed), len(again))
	require.False(t, bytes.Equal(sealed[len(sealed)-64:], again[len(again)-64:]))
}

// TestSealedRefusals: every import that must fail fails with its error and
// writes nothing, and nothing is left on the scratch disk.
func TestSealedRefusals(t *testing.T) {
	plain := redisRDB(t)
	k := kektest.New("backup")
	mmk, err := kek.NewMMK("platform")
	require.NoError(t, err)
	sealed := sealedExport(t, plain, k)
	sealedMMK := sealedExport(t, plain, mmk)
	hdr := bytes.Index(sealed, []byte("CCST"))
	require.Positive(t, hdr)
	otherMMK, err := kek.NewMMK("platform") // same name, another key
	require.NoError(t, err)

	edit := func(b []byte, f func([]byte) []byte) []byte { return f(bytes.Clone(b)) }
	cases := []struct {
		name string
		data []byte
		k    kek.Unwrapper
		want error
		msg  string
	}{
		{"wrong KEK", sealed, kektest.New("other"), kek.ErrKeyMismatch, "sealed by"},
		{"another MMK of the same name", sealedMMK, otherMMK, kek.ErrKeyMismatch, "import it with that key"}, // an MMK is known by its keyset
		{"wrapped DEK damaged", edit(sealedMMK, func(b []byte) []byte {
			b[bytes.Index(b, []byte("CCST"))-3] ^= 1
			return b
		}), mmk, kek.ErrUnwrap, "unwrap the export key"},
		{"bit flipped in the body", edit(sealed, func(b []byte) []byte { b[len(b)/2] ^= 4; return b }), k, export.ErrAuthentication, "segment"},
		{"stream header edited", edit(sealed, func(b []byte) []byte { b[len(b)-len(plain)-200] ^= 1; return b }), k, export.ErrAuthentication, "segment"},
		{"cut at a segment boundary", sealed[:hdr+streamHeaderLen(t, sealed[hdr:])+2*(stream.DefaultSegmentSize+stream.TagSize)], k, export.ErrTruncated, "final segment"},
		{"cut inside a segment", sealed[:len(sealed)-100], k, export.ErrAuthentication, "segment"},
		{"envelope cut", sealed[:20], k, export.ErrTruncated, "envelope"},
		{"a plain RDB", plain, k, export.ErrFormat, "not a sealed export"},
		{"unknown version", edit(sealed, func(b []byte) []byte { b[8] = 9; return b }), k, export.ErrVersion, "version 9"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			scratch := newScratch(t)
			out := filepath.Join(t.TempDir(), "dump.rdb")
			_, err := export.Import(context.Background(), scratch, export.Unseal(export.FromReader(bytes.NewReader(tc.data)), tc.k), export.ToFile(out), nil)
			require.ErrorIs(t, err, tc.want)
			require.ErrorContains(t, err, tc.msg)
			require.NoFileExists(t, out)
			requireNoStaging(t, scratch)
		})
	}

	// A sealed export imported as a plain RDB: refused, with the way out.
	_, err = export.Import(context.Background(), newScratch(t), export.FromReader(bytes.NewReader(sealed)), export.ToFile(filepath.Join(t.TempDir(), "x")), nil)
	require.ErrorIs(t, err, export.ErrNotRDB)
	require.ErrorContains(t, err, "sealed export")
	// Seal is for Export only.
	_, err = export.Import(context.Background(), newScratch(t), export.FromReader(bytes.NewReader(plain)), export.ToFile(filepath.Join(t.TempDir(), "y")), &export.Options{Seal: k})
	require.ErrorContains(t, err, "Export only")
}

// TestSealedWrapFailureStagesNothing: a KEK that cannot wrap stops the
// export before the source is opened.
func TestSealedWrapFailureStagesNothing(t *testing.T) {
	k := kektest.New("down")
	k.FailWith(kek.ErrUnavailable)
	scratch := newScratch(t)
	out := filepath.Join(t.TempDir(), "x")
	_, err := export.Export(context.Background(), scratch, export.FromReader(bytes.NewReader([]byte("REDIS0011"))), export.ToFile(out), &export.Options{Seal: k})
	require.ErrorIs(t, err, kek.ErrUnavailable)
	require.NoFileExists(t, out)
	requireNoStaging(t, scratch)
}

func streamHeaderLen(t *testing.T, b []byte) int {
	_, n, err := stream.ParseHeader(b)
	require.NoError(t, err)
	return n
}
