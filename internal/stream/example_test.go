package stream_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"

	"github.com/cachecrypt/cachecrypt/dek"
	"github.com/cachecrypt/cachecrypt/internal/stream"
	"github.com/cachecrypt/cachecrypt/kek"
)

// Encrypt a stream, then read part of it back at random.
func Example() {
	dir, _ := os.MkdirTemp("", "stream-example")
	defer os.RemoveAll(dir)
	mmk, _ := kek.NewMMK("platform")
	keys, err := dek.Create(context.Background(), filepath.Join(dir, "keyring"), "disk-1", mmk)
	if err != nil {
		log.Fatal(err)
	}
	defer keys.Close()

	var file bytes.Buffer
	w, err := stream.NewWriter(&file, keys, "export", stream.Options{SegmentSize: 1024})
	if err != nil {
		log.Fatal(err)
	}
	w.Write(bytes.Repeat([]byte("0123456789"), 1000))
	if err := w.Close(); err != nil {
		log.Fatal(err)
	}

	r, err := stream.NewReader(bytes.NewReader(file.Bytes()), int64(file.Len()), keys, "export")
	if err != nil {
		log.Fatal(err)
	}
	p := make([]byte, 5)
	r.ReadAt(p, 5003) // decrypts only segment 4
	fmt.Println(r.Size(), string(p))
	r.Seek(-4, io.SeekEnd)
	tail, _ := io.ReadAll(r)
	fmt.Println(string(tail))
	// Output:
	// 10000 34567
	// 6789
}
