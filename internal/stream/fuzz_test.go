package stream_test

import (
	"bytes"
	"io"
	"testing"

	"github.com/cachecrypt/cachecrypt/internal/stream"
)

func FuzzParseHeader(f *testing.F) {
	keys := fuzzKeys()
	for _, c := range []stream.Compression{stream.None, stream.Zstd} {
		var buf bytes.Buffer
		w, err := stream.NewWriter(&buf, keys, purpose, stream.Options{SegmentSize: 16, Compression: c})
		if err != nil {
			f.Fatal(err)
		}
		w.Close()
		f.Add(buf.Bytes())
	}
	f.Add([]byte("CCST\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, n, err := stream.ParseHeader(b)
		if err != nil {
			return
		}
		if n != h.Len() || !bytes.Equal(h.Marshal(), b[:n]) {
			t.Fatalf("Marshal(ParseHeader(b)) != b[:%d]", n)
		}
	})
}

// fuzzMaster is the plaintext every seed stream holds a prefix of: any
// plaintext a fuzzed stream yields must be the master's bytes at the same
// offset, because no segment can authenticate under another index or salt.
var fuzzMaster = randBytes(200, 99)

func fuzzKeys() stream.Keys {
	return rawKeys{dek: bytes.Repeat([]byte{7}, 32), diskID: "fuzz-disk", version: 1}
}

func FuzzReader(f *testing.F) {
	keys := fuzzKeys()
	for _, n := range []int{0, 5, 16, 40, 200} {
		var buf bytes.Buffer
		w, _ := stream.NewWriter(&buf, keys, purpose, stream.Options{SegmentSize: 16})
		w.Write(fuzzMaster[:n])
		w.Close()
		f.Add(buf.Bytes(), int64(3))
	}
	f.Fuzz(func(t *testing.T, file []byte, off int64) {
		r, err := stream.NewReader(bytes.NewReader(file), int64(len(file)), keys, purpose)
		if err != nil {
			return
		}
		if r.Size() > int64(len(fuzzMaster)) {
			t.Fatalf("authenticated size %d beyond any seed", r.Size())
		}
		got, _ := io.ReadAll(r)
		if !bytes.Equal(got, fuzzMaster[:len(got)]) {
			t.Fatal("Read returned bytes that are not authenticated plaintext")
		}
		if off < 0 {
			off = -off
		}
		off %= int64(len(fuzzMaster)) + 1
		p := make([]byte, 37)
		n, _ := r.ReadAt(p, off)
		if !bytes.Equal(p[:n], fuzzMaster[off:off+int64(n)]) {
			t.Fatal("ReadAt returned bytes that are not authenticated plaintext")
		}
		if r.Verify() == nil && int64(len(got)) != r.Size() {
			t.Fatal("Verify passed but Read stopped early")
		}
	})
}
