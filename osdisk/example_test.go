package osdisk_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"

	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/cachecrypt/cachecrypt/osdisk"
)

// A temporary file is written, read back with random access, and removed on
// Close. Only ciphertext ever reaches the disk.
func Example() {
	root, _ := os.MkdirTemp("", "osdisk-example")
	defer os.RemoveAll(root)
	mmk, err := kek.LoadMMK(filepath.Join(root, "platform.keyset"))
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	disk, err := osdisk.OpenOrCreate(ctx, filepath.Join(root, "os"), "os-disk", mmk)
	if err != nil {
		log.Fatal(err)
	}
	defer disk.Close()

	f, err := disk.CreateTemp("scratch")
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	io.WriteString(f, "hello, encrypted scratch")

	buf := make([]byte, 9)
	if _, err := f.ReadAt(buf, 7); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s, %d bytes\n", buf, f.Size())
	// Output: encrypted, 24 bytes
}
