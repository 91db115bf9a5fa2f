package dek_test

import (
	"context"
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
