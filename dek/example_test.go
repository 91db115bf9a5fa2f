package dek_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/cachecrypt/cachecrypt/dek"
	"github.com/cachecrypt/cachecrypt/kek/kektest"
)

// A keyring holds a disk's DEK versions; files derive their own keys from
// it. Rotation needs no KEK call; a rewrap moves the keyring to another KEK.
func Example() {
	dir, _ := os.MkdirTemp("", "dek-example-")
	defer os.RemoveAll(dir)
	ctx := context.Background()
	platform, customer := kektest.New("platform"), kektest.New("customer")

	keys, err := dek.Create(ctx, filepath.Join(dir, "keyring"), "disk-1", platform)
	if err != nil {
		log.Fatal(err)
	}
	defer keys.Close()
	salt := make([]byte, 32) // random, from the file's header, in real use
	before, _ := keys.FileKey(1, "rdb", salt)

	v, _ := keys.RotateDEK()
	_ = keys.Rewrap(ctx, customer)
	after, _ := keys.FileKey(1, "rdb", salt)
	fmt.Println("active DEK version:", v)
	fmt.Println("wrapped by:", keys.Descriptor().KeyID)
	fmt.Println("old files still decrypt:", string(before) == string(after))
	fmt.Println("KEK calls: platform", platform.Calls(), "customer", customer.Calls())
	// Output:
	// active DEK version: 2
	// wrapped by: test/customer/v1
	// old files still decrypt: true
	// KEK calls: platform 1 customer 1
}

// Generation and Digest identify the keyring file last committed. Recorded
// somewhere the data disk cannot reach, they tell the current keyring from
// an older copy put back in its place.
func ExampleKeyring_Generation() {
	dir, _ := os.MkdirTemp("", "dek-example-")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "keyring")
	keys, err := dek.Create(context.Background(), path, "disk-1", kektest.New("platform"))
	if err != nil {
		log.Fatal(err)
	}
	defer keys.Close()
	fmt.Println("after Create:", keys.Generation())
	_, _ = keys.RotateDEK()
	fmt.Println("after RotateDEK:", keys.Generation())
	onDisk, _ := os.ReadFile(path)
	fmt.Println("digest is the file's SHA-256:", keys.Digest() == sha256.Sum256(onDisk))
	// Output:
	// after Create: 1
	// after RotateDEK: 2
	// digest is the file's SHA-256: true
}
