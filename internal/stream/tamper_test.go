package stream_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"runtime"
	"testing"

	"github.com/cachecrypt/cachecrypt/dek"
	"github.com/cachecrypt/cachecrypt/internal/stream"
	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/cachecrypt/cachecrypt/kek/kektest"
	"github.com/stretchr/testify/require"
)

// TestTamper is the one table of every damage the stream format must
// detect. Each case names the exact sentinel and, when the header and final
// segment still authenticate, the first segment that must fail; the test
// then checks that no byte of that segment or later is ever returned.
func TestTamper(t *testing.T) {
	const seg = 256
	ctx := context.Background()
	kekA := kektest.New("a")
	keysA, pathA := newKeyring(t, "disk-a", kekA)
	keysB, _ := newKeyring(t, "disk-b", kektest.New("b"))
	pt := randBytes(5*seg+100, 42) // segments 0..4 full, 5 partial (final)
	opts := stream.Options{SegmentSize: seg}
	f1 := encrypt(t, keysA, pt, opts)
	f2 := encrypt(t, keysA, pt, opts) // same plaintext, other salt
	g := encrypt(t, keysB, pt, opts)  // another disk
	hl := open(t, keysA, f1).Header().Len()
	ghl := open(t, keysB, g).Header().Len()
	ss := seg + stream.TagSize
	segAt := func(f []byte, h, i int) (int, int) { return h + i*ss, h + (i+1)*ss }

	flip := func(off int) func() []byte {
		return func() []byte { b := bytes.Clone(f1); b[off] ^= 0x01; return b }
	}
	splice := func(dst, src []byte, dstOff, srcOff, n int) []byte {
		b := bytes.Clone(dst)
		copy(b[dstOff:dstOff+n], src[srcOff:srcOff+n])
		return b
	}
	s1, e1 := segAt(f1, hl, 1)
	s2, _ := segAt(f1, hl, 2)

	// Keyrings that must not open f1.
	retired := func() (stream.Keys, error) {
		k, path := newKeyring(t, "disk-a", kektest.New("r"))
		_ = path
		if _, err := k.RotateDEK(); err != nil {
			return nil, err
		}
		if _, err := k.RotateDEK(); err != nil {
			return nil, err
		}
		if err := k.Retire(1); err != nil {
			return nil, err
		}
		return k, nil
	}
	wrongKEK := func() (stream.Keys, error) {
		k, err := dek.Open(ctx, pathA, kektest.New("other"))
		if err != nil {
			return nil, err
		}
		return k, nil
	}

	cases := []struct {
		name     string
		file     func() []byte
		keys     func() (stream.Keys, error) // nil: keysA
		want     error
		firstBad int // -1: NewReader (or key opening) must fail
	}{
		{"header magic bit", flip(0), nil, stream.ErrFormat, -1},
		{"header version bit", flip(4), nil, stream.ErrVersion, -1},
		{"header purpose bit", flip(6), nil, stream.ErrFormat, -1},
		{"header disk id bit", flip(6 + len(purpose) + 1), nil, stream.ErrAuthentication, -1},
		{"header DEK version bit", flip(hl - stream.SaltSize - 9 + 3), nil, dek.ErrUnknownVersion, -1},
		{"header segment size bit", flip(hl - stream.SaltSize - 5 + 3), nil, stream.ErrAuthentication, -1},
		{"header compression byte", flip(hl - stream.SaltSize - 1), nil, stream.ErrAuthentication, -1},
		{"header salt bit", flip(hl - 1), nil, stream.ErrAuthentication, -1},
		{"body bit, segment 0", flip(hl + 3), nil, stream.ErrAuthentication, 0},
		{"body bit, segment 2", flip(s2 + 100), nil, stream.ErrAuthentication, 2},
		{"tag bit, segment 1", flip(e1 - 1), nil, stream.ErrAuthentication, 1},
		{"body bit, final segment", flip(len(f1) - 30), nil, stream.ErrAuthentication, -1},
		{"tag bit, final segment", flip(len(f1) - 1), nil, stream.ErrAuthentication, -1},
		{"truncated to nothing", func() []byte { return nil }, nil, stream.ErrTruncated, -1},
		{"truncated in header", func() []byte { return f1[:hl-3] }, nil, stream.ErrTruncated, -1},
		{"truncated after header", func() []byte { return f1[:hl] }, nil, stream.ErrTruncated, -1},
		{"truncated at boundary after segment 4", func() []byte { return f1[:hl+5*ss] }, nil, stream.ErrTruncated, -1},
		{"truncated at boundary after segment 1", func() []byte { return f1[:hl+2*ss] }, nil, stream.ErrTruncated, -1},
		{"truncated inside segment 3", func() []byte { return f1[:hl+3*ss+100] }, nil, stream.ErrAuthentication, -1},
		{"truncated inside final tag", func() []byte { return f1[:len(f1)-5] }, nil, stream.ErrAuthentication, -1},
		{"one byte appended", func() []byte { return append(bytes.Clone(f1), 0) }, nil, stream.ErrAuthentication, -1},
		{"a segment appended", func() []byte { return append(bytes.Clone(f1), f1[s1:e1]...) }, nil, stream.ErrAuthentication, -1},
		{"segments 1 and 2 swapped", func() []byte {
			b := splice(f1, f1, s1, s2, ss)
			return splice(b, f1, s2, s1, ss)
		}, nil, stream.ErrAuthentication, 1},
		{"segment 2 from another file", func() []byte { return splice(f1, f2, s2, s2, ss) }, nil, stream.ErrAuthentication, 2},
		{"segment 2 from another disk", func() []byte { return splice(f1, g, s2, ghl+2*ss, ss) }, nil, stream.ErrAuthentication, 2},
		{"header from another file", func() []byte { return splice(f1, f2, 0, 0, hl) }, nil, stream.ErrAuthentication, -1},
		{"header from another disk", func() []byte { return append(bytes.Clone(g[:ghl]), f1[hl:]...) }, nil, stream.ErrAuthentication, -1},
		{"whole file from another disk", func() []byte { return g }, nil, stream.ErrAuthentication, -1},
		{"read as another purpose", func() []byte {
			var buf bytes.Buffer
			w, _ := stream.NewWriter(&buf, keysA, "other", opts)
			w.Write(pt)
			w.Close()
			return buf.Bytes()
		}, nil, stream.ErrFormat, -1},
		{"DEK version retired", func() []byte { return f1 }, retired, dek.ErrUnknownVersion, -1},
		{"keyring under another KEK", func() []byte { return f1 }, wrongKEK, kek.ErrKeyMismatch, -1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			file := tc.file()
			var keys stream.Keys = keysA
			if tc.keys != nil {
				k, err := tc.keys()
				if err != nil {
					require.ErrorIs(t, err, tc.want)
					require.Equal(t, -1, tc.firstBad)
					return
				}
				keys = k
			}
			r, err := stream.NewReader(bytes.NewReader(file), int64(len(file)), keys, purpose)
			if tc.firstBad < 0 {
				require.ErrorIs(t, err, tc.want)
				require.Nil(t, r)
				return
			}
			require.NoError(t, err)
			require.ErrorIs(t, r.Verify(), tc.want)
			good := tc.firstBad * seg

			// ReadAt of everything: only the segments before the bad one.
			p := bytes.Repeat([]byte{0xEE}, len(pt))
			n, err := r.ReadAt(p, 0)
			require.ErrorIs(t, err, tc.want)
			require.Equal(t, good, n)
			require.Equal(t, pt[:good], p[:n])
			requireNoPlaintext(t, p[n:])

			// Sequential reads stop at the bad segment too.
			got, err := io.ReadAll(r)
			require.ErrorIs(t, err, tc.want)
			require.True(t, bytes.Equal(pt[:good], got))

			// A read inside the bad segment returns nothing.
			q := bytes.Repeat([]byte{0xEE}, 10)
			n, err = r.ReadAt(q, int64(good+5))
			require.ErrorIs(t, err, tc.want)
			require.Zero(t, n)
			requireNoPlaintext(t, q)

			var out bytes.Buffer
			_, err = r.Seek(0, io.SeekStart)
			require.NoError(t, err)
			_, err = r.WriteTo(&out)
			require.ErrorIs(t, err, tc.want)
			require.True(t, bytes.Equal(pt[:good], out.Bytes()))
		})
	}
}

// requireNoPlaintext checks that b holds only the fill byte or zeros.
func requireNoPlaintext(t *testing.T, b []byte) {
	t.Helper()
	for i, c := range b {
		if c != 0xEE && c != 0 {
			t.Fatalf("byte %d of the unauthenticated region is %#x: plaintext leaked", i, c)
		}
	}
}

var _ = errors.Is

// TestWriteToPipelined reads streams of many batches with WriteTo, whose
// batches are pipelined when there is more than one core: a clean stream
// round trips, and a segment damaged in a later batch stops the output
// exactly before it, whatever batch it falls in, with ErrAuthentication.
func TestWriteToPipelined(t *testing.T) {
	if runtime.GOMAXPROCS(0) < 2 {
		prev := runtime.GOMAXPROCS(2) // the pipeline needs two cores' worth of Ps
		t.Cleanup(func() { runtime.GOMAXPROCS(prev) })
	}
	keys, _ := newKeyring(t, "disk-a", kektest.New("a"))
	const seg = 16 // 1024 segments per goroutine per batch: many batches
	pt := randBytes(seg*9000+7, 9)
	var buf bytes.Buffer
	w, err := stream.NewWriter(&buf, keys, purpose, stream.Options{SegmentSize: seg})
	require.NoError(t, err)
	_, err = w.Write(pt)
	require.NoError(t, err)
	require.NoError(t, w.Close())
	ct := buf.Bytes()
	hdr := w.Header().Len()

	var out bytes.Buffer
	n, err := open(t, keys, ct).WriteTo(&out)
	require.NoError(t, err)
	require.Equal(t, int64(len(pt)), n)
	require.True(t, bytes.Equal(pt, out.Bytes()))

	for _, bad := range []int{0, 1023, 2048, 4095, 5000, 8998} {
		damaged := bytes.Clone(ct)
		damaged[hdr+bad*(seg+stream.TagSize)+3] ^= 1
		out.Reset()
		r := open(t, keys, damaged)
		_, err := r.Seek(5, io.SeekStart) // a partial first segment, then whole ones
		require.NoError(t, err)
		n, err := r.WriteTo(&out)
		require.ErrorIs(t, err, stream.ErrAuthentication, "segment %d", bad)
		require.Equal(t, int64(max(0, bad*seg-5)), n, "segment %d", bad)
		require.True(t, bytes.Equal(pt[5:5+n], out.Bytes()), "segment %d", bad)
	}
}
