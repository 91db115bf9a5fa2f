package stream_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"github.com/cachecrypt/cachecrypt/dek"
	"github.com/cachecrypt/cachecrypt/internal/stream"
	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/cachecrypt/cachecrypt/kek/kektest"
	"github.com/stretchr/testify/require"
)

const purpose = "test"

func newKeyring(t testing.TB, diskID string, w *kektest.KEK) (*dek.Keyring, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "keyring")
	k, err := dek.Create(context.Background(), path, diskID, w)
	require.NoError(t, err)
	t.Cleanup(func() { k.Close() })
	return k, path
}

func randBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, 1))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func encrypt(t testing.TB, keys stream.Keys, pt []byte, opts stream.Options) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := stream.NewWriter(&buf, keys, purpose, opts)
	require.NoError(t, err)
	_, err = w.Write(pt)
	require.NoError(t, err)
	require.NoError(t, w.Close())
	return buf.Bytes()
}

func open(t testing.TB, keys stream.Keys, ct []byte) *stream.Reader {
	t.Helper()
	r, err := stream.NewReader(bytes.NewReader(ct), int64(len(ct)), keys, purpose)
	require.NoError(t, err)
	return r
}

// writeModes feed the plaintext to a Writer in different ways, each taking
// a different path through its buffering.
var writeModes = map[string]func(w *stream.Writer, pt []byte) error{
	"one-write": func(w *stream.Writer, pt []byte) error { _, err := w.Write(pt); return err },
	"odd-chunks": func(w *stream.Writer, pt []byte) error {
		for i, c := 0, 1; i < len(pt); c = c*3 + 7 {
			n := min(c, len(pt)-i)
			if _, err := w.Write(pt[i : i+n]); err != nil {
				return err
			}
			i += n
		}
		return nil
	},
	"read-from": func(w *stream.Writer, pt []byte) error {
		_, err := w.ReadFrom(bytes.NewReader(pt))
		return err
	},
	"read-from-then-write": func(w *stream.Writer, pt []byte) error {
		h := len(pt) / 3
		if _, err := w.ReadFrom(io.LimitReader(bytes.NewReader(pt[:h]), int64(h))); err != nil {
			return err
		}
		_, err := w.Write(pt[h:])
		return err
	},
}

func TestRoundTrip(t *testing.T) {
	keys, _ := newKeyring(t, "disk-a", kektest.New("a"))
	for _, seg := range []int{16, 100, 4096} {
		for _, conc := range []int{1, 2, 3} {
			sizes := []int{0, 1, seg - 1, seg, seg + 1, 2 * seg, 7 * seg, 7*seg + 3, 50*seg + 1, 200 * seg}
			for _, size := range sizes {
				pt := randBytes(size, uint64(size))
				for mode, write := range writeModes {
					name := fmt.Sprintf("seg=%d/conc=%d/size=%d/%s", seg, conc, size, mode)
					opts := stream.Options{SegmentSize: seg, Concurrency: conc}
					var buf bytes.Buffer
					w, err := stream.NewWriter(&buf, keys, purpose, opts)
					require.NoError(t, err, name)
					require.NoError(t, write(w, pt), name)
					require.NoError(t, w.Close(), name)
					require.ErrorIs(t, w.Close(), stream.ErrClosed)
					ct := buf.Bytes()
					r := open(t, keys, ct)
					require.Equal(t, int64(len(ct)), int64(r.Header().Len())+stream.EncryptedSize(int64(size), seg), name)
					require.Equal(t, int64(size), r.Size(), name)
					require.NoError(t, r.Verify(), name)
					got, err := io.ReadAll(r)
					require.NoError(t, err, name)
					require.True(t, bytes.Equal(pt, got), name)
					_, err = r.Seek(0, io.SeekStart)
					require.NoError(t, err)
					var out bytes.Buffer
					n, err := r.WriteTo(&out)
					require.NoError(t, err, name)
					require.Equal(t, int64(size), n)
					require.True(t, bytes.Equal(pt, out.Bytes()), name)
				}
			}
		}
	}
}

func TestRandomAccess(t *testing.T) {
	keys, _ := newKeyring(t, "disk-a", kektest.New("a"))
	for _, seg := range []int{16, 1000, 65536} {
		size := 37*seg + 11
		pt := randBytes(size, 7)
		ct := encrypt(t, keys, pt, stream.Options{SegmentSize: seg})
		r := open(t, keys, ct)
		rng := rand.New(rand.NewPCG(uint64(seg), 2))
		for iter := range 300 {
			off := rng.Int64N(int64(size) + 10)
			n := rng.IntN(5 * seg)
			if rng.IntN(4) == 0 { // aligned, whole segments
				off = int64(rng.IntN(37)) * int64(seg)
				n = (1 + rng.IntN(8)) * seg
			}
			p := make([]byte, n)
			got, err := r.ReadAt(p, off)
			end := min(off+int64(n), int64(size))
			if off >= int64(size) {
				require.Equal(t, 0, got)
				require.ErrorIs(t, err, io.EOF)
				continue
			}
			require.Equal(t, int(end-off), got)
			if end-off < int64(n) {
				require.ErrorIs(t, err, io.EOF)
			} else {
				require.NoError(t, err)
			}
			require.Equal(t, pt[off:end], p[:got])

			pos, err := r.Seek(off, io.SeekStart)
			require.NoError(t, err)
			require.Equal(t, off, pos)
			q := make([]byte, n)
			m, _ := io.ReadFull(r, q)
			require.Equal(t, pt[off:end], q[:m])

			if iter%10 != 0 {
				continue
			}
			_, err = r.Seek(off, io.SeekStart)
			require.NoError(t, err)
			var rest bytes.Buffer
			wn, err := r.WriteTo(&rest)
			require.NoError(t, err)
			require.Equal(t, int64(size)-off, wn)
			require.True(t, bytes.Equal(pt[off:], rest.Bytes()))
		}
		pos, err := r.Seek(-5, io.SeekEnd)
		require.NoError(t, err)
		require.Equal(t, int64(size-5), pos)
		rest, err := io.ReadAll(r)
		require.NoError(t, err)
		require.Equal(t, pt[size-5:], rest)
		_, err = r.Seek(-1, io.SeekStart)
		require.Error(t, err)
	}
}

func TestCompression(t *testing.T) {
	keys, _ := newKeyring(t, "disk-a", kektest.New("a"))
	pt := bytes.Repeat([]byte("cachecrypt compresses this redundant text. "), 20000)
	pt = append(pt, randBytes(100000, 3)...)
	for _, c := range []stream.Compression{stream.Zstd, stream.S2} {
		for mode, write := range writeModes {
			var buf bytes.Buffer
			w, err := stream.NewWriter(&buf, keys, purpose, stream.Options{SegmentSize: 4096, Compression: c})
			require.NoError(t, err)
			require.NoError(t, write(w, pt))
			require.NoError(t, w.Close())
			require.Less(t, buf.Len(), len(pt)/2, "%s %s", c, mode)
			r := open(t, keys, buf.Bytes())
			require.Equal(t, c, r.Header().Compression)
			require.Equal(t, int64(-1), r.Size())
			require.NoError(t, r.Verify())
			got, err := io.ReadAll(r)
			require.NoError(t, err)
			require.True(t, bytes.Equal(pt, got), "%s %s", c, mode)
			_, err = r.ReadAt(make([]byte, 10), 0)
			require.ErrorIs(t, err, stream.ErrSequential)
			_, err = r.Seek(0, io.SeekStart)
			require.ErrorIs(t, err, stream.ErrSequential)
		}
	}
}

func TestOptionsAndHeader(t *testing.T) {
	keys, _ := newKeyring(t, "disk-a", kektest.New("a"))
	_, err := stream.NewWriter(io.Discard, keys, purpose, stream.Options{SegmentSize: 8})
	require.ErrorContains(t, err, "segment size 8 out of range")
	_, err = stream.NewWriter(io.Discard, keys, "", stream.Options{})
	require.ErrorIs(t, err, stream.ErrFormat)
	ct := encrypt(t, keys, []byte("hello"), stream.Options{})
	r := open(t, keys, ct)
	h := r.Header()
	require.Equal(t, purpose, h.Purpose)
	require.Equal(t, "disk-a", h.DiskID)
	require.Equal(t, uint32(1), h.DEKVersion)
	require.Equal(t, stream.DefaultSegmentSize, h.SegmentSize)
	require.Equal(t, ct[:h.Len()], h.Marshal())
	require.Equal(t, int64(h.Len())+5+16, int64(len(ct)))
	require.NotContains(t, string(ct), "hello")
}

// TestRotation: files written under an older DEK version keep opening
// after RotateDEK; new files use the new version.
func TestRotation(t *testing.T) {
	keys, _ := newKeyring(t, "disk-a", kektest.New("a"))
	old := encrypt(t, keys, []byte("before"), stream.Options{})
	v, err := keys.RotateDEK()
	require.NoError(t, err)
	nw := encrypt(t, keys, []byte("after"), stream.Options{})
	require.Equal(t, uint32(1), open(t, keys, old).Header().DEKVersion)
	require.Equal(t, v, open(t, keys, nw).Header().DEKVersion)
	got, err := io.ReadAll(open(t, keys, old))
	require.NoError(t, err)
	require.Equal(t, "before", string(got))
}

// TestNoAllocsPerSegment: sealing and opening allocate nothing per segment
// once the Writer and Reader exist.
func TestNoAllocsPerSegment(t *testing.T) {
	keys, _ := newKeyring(t, "disk-a", kektest.New("a"))
	const seg = 4096
	pt := randBytes(64*seg, 1)
	for _, conc := range []int{1, 2} {
		w, err := stream.NewWriter(io.Discard, keys, purpose, stream.Options{SegmentSize: seg, Concurrency: conc})
		require.NoError(t, err)
		chunk := randBytes(3*seg+5, 2)
		src := bytes.NewReader(pt)
		allocs := testing.AllocsPerRun(20, func() {
			w.Write(pt)
			w.Write(chunk)
			src.Reset(pt)
			w.ReadFrom(src)
		})
		require.Zero(t, allocs, "Writer, concurrency %d", conc)
	}
	ct := encrypt(t, keys, pt, stream.Options{SegmentSize: seg})
	r := open(t, keys, ct)
	p := make([]byte, 40*seg)
	q := make([]byte, 100)
	allocs := testing.AllocsPerRun(20, func() {
		r.ReadAt(p, seg)
		r.ReadAt(q, 3*seg+7)
	})
	require.Zero(t, allocs, "Reader")
}

// TestWrongKeys: a stream opens only with the keyring of its disk.
func TestWrongKeys(t *testing.T) {
	a, _ := newKeyring(t, "disk-a", kektest.New("a"))
	b, _ := newKeyring(t, "disk-a", kektest.New("b")) // same disk id, other keyring
	ct := encrypt(t, a, []byte("secret"), stream.Options{})
	_, err := stream.NewReader(bytes.NewReader(ct), int64(len(ct)), b, purpose)
	require.ErrorIs(t, err, stream.ErrAuthentication)
}

var _ = kek.ErrKeyMismatch
var _ = errors.Is

// TestLargeWrites writes plaintexts in pieces large enough to be sealed
// straight from the caller's buffer and, with s2, compressed in place by
// parallel block encoders, mixed with small pieces that are buffered, at
// several concurrencies and segment sizes (one larger than the direct-seal
// threshold), and reads them back.
func TestLargeWrites(t *testing.T) {
	keys, _ := newKeyring(t, "disk-a", kektest.New("a"))
	pt := append(randBytes(3<<20+777, 5), bytes.Repeat([]byte("squeeze me "), 400000)...)
	pieces := []int{100, 5 << 20, 3, 1 << 20, 70000, 2<<20 + 1}
	for _, c := range []stream.Compression{stream.None, stream.S2} {
		for _, conc := range []int{1, 2, 3, 8} {
			for _, seg := range []int{4096, 64 << 10, 3 << 20} {
				var buf bytes.Buffer
				w, err := stream.NewWriter(&buf, keys, purpose, stream.Options{SegmentSize: seg, Compression: c, Concurrency: conc})
				require.NoError(t, err)
				rest := pt
				for i := 0; len(rest) > 0; i++ {
					n := min(pieces[i%len(pieces)], len(rest))
					m, err := w.Write(rest[:n])
					require.NoError(t, err)
					require.Equal(t, n, m)
					rest = rest[n:]
				}
				require.NoError(t, w.Close())
				got, err := io.ReadAll(open(t, keys, buf.Bytes()))
				require.NoError(t, err)
				require.True(t, bytes.Equal(pt, got), "%s conc=%d seg=%d", c, conc, seg)
			}
		}
	}
}

// TestConcurrentStreams runs several Writers and Readers at once: they
// share the process's pool of helper goroutines, so jobs of one stream
// queue behind another's and helpers arrive late to batches that are
// over. Every stream must still round trip (run it with -race).
func TestConcurrentStreams(t *testing.T) {
	if runtime.GOMAXPROCS(0) < 2 {
		prev := runtime.GOMAXPROCS(2)
		t.Cleanup(func() { runtime.GOMAXPROCS(prev) })
	}
	keys, _ := newKeyring(t, "disk-a", kektest.New("a"))
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Go(func() {
			pt := randBytes(700000+i*4099, uint64(100+i))
			var buf bytes.Buffer
			w, err := stream.NewWriter(&buf, keys, purpose, stream.Options{SegmentSize: 4096, Concurrency: 2 + i%3})
			if err == nil {
				_, err = w.Write(pt)
			}
			if err == nil {
				err = w.Close()
			}
			if err != nil {
				errs <- err
				return
			}
			r, err := stream.NewReader(bytes.NewReader(buf.Bytes()), int64(buf.Len()), keys, purpose)
			if err != nil {
				errs <- err
				return
			}
			var out bytes.Buffer
			if _, err := r.WriteTo(&out); err != nil || !bytes.Equal(pt, out.Bytes()) {
				errs <- fmt.Errorf("stream %d: WriteTo: %v, equal %v", i, err, bytes.Equal(pt, out.Bytes()))
				return
			}
			got := make([]byte, len(pt)-10)
			if _, err := r.ReadAt(got, 10); err != nil || !bytes.Equal(pt[10:], got) {
				errs <- fmt.Errorf("stream %d: ReadAt: %v", i, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
