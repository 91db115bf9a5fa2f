package stream_test

import (
	"bytes"
	"crypto/rand"
	"io"
	"testing"
	"testing/iotest"

	"github.com/cachecrypt/cachecrypt/internal/stream"
	"github.com/stretchr/testify/require"
)

func sealForTest(t *testing.T, keys stream.Keys, pt []byte, seg int) []byte {
	t.Helper()
	var b bytes.Buffer
	w, err := stream.NewWriter(&b, keys, "seq", stream.Options{SegmentSize: seg})
	require.NoError(t, err)
	_, err = w.Write(pt)
	require.NoError(t, err)
	require.NoError(t, w.Close())
	return b.Bytes()
}

// TestSequentialReader reads streams of every shape front to back, one byte
// at a time and in bulk, and checks each damage gives its error.
func TestSequentialReader(t *testing.T) {
	const seg = 64
	keys := rawKeys{dek: bytes.Repeat([]byte{7}, 32), diskID: "d", version: 1}
	for _, size := range []int{0, 1, seg - 1, seg, seg + 1, 3 * seg, 3*seg + 5} {
		pt := make([]byte, size)
		rand.Read(pt)
		ct := sealForTest(t, keys, pt, seg)
		for _, src := range []io.Reader{bytes.NewReader(ct), iotest.OneByteReader(bytes.NewReader(ct))} {
			r, err := stream.NewSequentialReader(src, keys, "seq")
			require.NoError(t, err)
			got, err := io.ReadAll(r)
			require.NoError(t, err, "size %d", size)
			require.Equal(t, pt, got, "size %d", size)
		}
	}

	pt := make([]byte, 3*seg)
	rand.Read(pt)
	ct := sealForTest(t, keys, pt, seg)
	hlen := len(ct) - int(stream.EncryptedSize(int64(len(pt)), seg))
	read := func(b []byte) error {
		r, err := stream.NewSequentialReader(bytes.NewReader(b), keys, "seq")
		if err != nil {
			return err
		}
		_, err = io.ReadAll(r)
		return err
	}
	require.ErrorIs(t, read(ct[:hlen+2*(seg+16)]), stream.ErrTruncated, "cut at a segment boundary")
	require.ErrorIs(t, read(ct[:hlen]), stream.ErrTruncated, "header only")
	require.ErrorIs(t, read(ct[:len(ct)-3]), stream.ErrAuthentication, "cut inside the last segment")
	require.ErrorIs(t, read(append(bytes.Clone(ct), 0)), stream.ErrAuthentication, "a byte appended")
	flipped := bytes.Clone(ct)
	flipped[hlen+seg+20] ^= 1
	require.ErrorIs(t, read(flipped), stream.ErrAuthentication, "a flipped bit")
	other := rawKeys{dek: bytes.Repeat([]byte{8}, 32), diskID: "d", version: 1}
	r, err := stream.NewSequentialReader(bytes.NewReader(ct), other, "seq")
	require.NoError(t, err)
	_, err = io.ReadAll(r)
	require.ErrorIs(t, err, stream.ErrAuthentication, "another key")
	_, err = stream.NewSequentialReader(bytes.NewReader(ct), keys, "rdb")
	require.ErrorIs(t, err, stream.ErrFormat, "another purpose")
}
