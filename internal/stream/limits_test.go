package stream

import (
	"bytes"
	"crypto/sha256"
	"io"
	"testing"

	"github.com/stretchr/testify/require"
)

type testKeys struct{}

func (testKeys) DiskID() string { return "disk" }
func (testKeys) Active() uint32 { return 1 }
func (testKeys) FileKey(v uint32, purpose string, salt []byte) ([]byte, error) {
	k := sha256.Sum256(append([]byte(purpose), salt...))
	return k[:], nil
}

// TestSegmentLimit: the writer refuses a segment index beyond 2^32-1
// instead of wrapping the nonce counter.
func TestSegmentLimit(t *testing.T) {
	w, err := NewWriter(io.Discard, testKeys{}, "t", Options{SegmentSize: 16, Concurrency: 1})
	require.NoError(t, err)
	w.seg.index = MaxSegments - 2
	_, err = w.Write(make([]byte, 16*2)) // seals one, holds one back
	require.NoError(t, err)
	require.NoError(t, w.Close()) // the last allowed segment, index 2^32-1
	w, _ = NewWriter(io.Discard, testKeys{}, "t", Options{SegmentSize: 16, Concurrency: 1})
	w.seg.index = MaxSegments - 1
	_, err = w.Write(make([]byte, 16*3000))
	require.ErrorContains(t, err, "exceeds 4294967296 segments")
}

// sparse is a ReaderAt of a huge file: a header, then zeros.
type sparse struct{ hdr []byte }

func (s sparse) ReadAt(p []byte, off int64) (int, error) {
	clear(p)
	if off < int64(len(s.hdr)) {
		copy(p, s.hdr[off:])
	}
	return len(p), nil
}

func TestReaderRefusesTooManySegments(t *testing.T) {
	var buf bytes.Buffer
	w, _ := NewWriter(&buf, testKeys{}, "t", Options{SegmentSize: 16})
	w.Close()
	h, n, err := ParseHeader(buf.Bytes())
	require.NoError(t, err)
	size := int64(n) + (MaxSegments+1)*(16+TagSize)
	_, err = NewReader(sparse{h.Marshal()}, size, testKeys{}, "t")
	require.ErrorIs(t, err, ErrFormat)
	_, err = NewReader(sparse{h.Marshal()}, -1, testKeys{}, "t")
	require.Error(t, err)
}
