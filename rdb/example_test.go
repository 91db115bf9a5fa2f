package rdb_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc64"
	"log"
	"os"
	"path/filepath"

	"github.com/cachecrypt/cachecrypt/dek"
	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/cachecrypt/cachecrypt/rdb"
)

// snapshot returns a tiny valid RDB file (an empty dataset).
func snapshot() []byte {
	b := append([]byte("REDIS0011"), 0xFF)
	tab := crc64.MakeTable(0x95ac9329ac4bc9b5)
	return binary.LittleEndian.AppendUint64(b, ^crc64.Update(^uint64(0), tab, b))
}

// Write an encrypted snapshot atomically, then read it back.
func Example() {
	dir, _ := os.MkdirTemp("", "rdb-example")
	defer os.RemoveAll(dir)
	ctx := context.Background()

	mmk, err := kek.NewMMK("platform") // the default, platform-managed key
	if err != nil {
		log.Fatal(err)
	}
	keys, err := dek.Create(ctx, filepath.Join(dir, "keyring"), "persistence-disk", mmk)
	if err != nil {
		log.Fatal(err)
	}
	defer keys.Close()

	path := filepath.Join(dir, "dump.rdb.enc")
	w, err := rdb.Create(path, keys, rdb.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close() // aborts unless committed
	if _, err := w.Write(snapshot()); err != nil {
		log.Fatal(err)
	}
	if err := w.Commit(); err != nil { // fsync, rename, fsync dir
		log.Fatal(err)
	}

	r, err := rdb.Open(path, keys)
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	info, err := rdb.CheckPlain(r)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("RDB version", info.Version, "size", r.Size())
	// Output: RDB version 11 size 18
}

// Check a plaintext RDB before importing it; a damaged one is refused.
func ExampleCheckPlain() {
	b := snapshot()
	_, err := rdb.CheckPlain(bytes.NewReader(b))
	fmt.Println(err)
	b[9] ^= 1 // damage the end-of-file opcode
	_, err = rdb.CheckPlain(bytes.NewReader(b))
	fmt.Println(err != nil)
	// Output:
	// <nil>
	// true
}

// Encrypt an existing dump and decrypt it to a writer.
func ExampleEncrypt() {
	dir, _ := os.MkdirTemp("", "rdb-example")
	defer os.RemoveAll(dir)
	mmk, _ := kek.NewMMK("platform")
	keys, err := dek.Create(context.Background(), filepath.Join(dir, "keyring"), "disk", mmk)
	if err != nil {
		log.Fatal(err)
	}
	defer keys.Close()
	enc := filepath.Join(dir, "dump.rdb.enc")
	if _, err := rdb.Encrypt(enc, bytes.NewReader(snapshot()), keys); err != nil {
		log.Fatal(err)
	}
	if err := rdb.Verify(enc, keys); err != nil {
		log.Fatal(err)
	}
	var plain bytes.Buffer
	n, err := rdb.Decrypt(&plain, enc, keys)
	fmt.Println(n, err, bytes.Equal(plain.Bytes(), snapshot()))
	// Output: 18 <nil> true
}
