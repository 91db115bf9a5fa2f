package valuecrypt_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/cachecrypt/cachecrypt/valuecrypt"
)

// A keyset in a file, wrapped by the platform-managed key; values bound to
// their key name.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "valuecrypt-example-")
	defer os.RemoveAll(dir)
	mmk, err := kek.LoadMMK(filepath.Join(dir, "platform.key"))
	if err != nil {
		log.Fatal(err)
	}
	ks, err := valuecrypt.Create(ctx, valuecrypt.FileStore(filepath.Join(dir, "keyset")), mmk)
	if err != nil {
		log.Fatal(err)
	}
	defer ks.Close()
	c := valuecrypt.NewCipher(ks, valuecrypt.Config{Context: "tenant-7"})

	sealed, _ := c.Seal("session:42", []byte("alice"))
	fmt.Println("stored bytes:", len(sealed), "=", len("alice"), "+", valuecrypt.Overhead)
	plain, _ := c.Open(ctx, "session:42", sealed)
	fmt.Println("opened:", string(plain))
	_, err = c.Open(ctx, "session:43", sealed)
	fmt.Println("under another key name:", errors.Is(err, valuecrypt.ErrAuthentication))
	// Output:
	// stored bytes: 38 = 5 + 33
	// opened: alice
	// under another key name: true
}

// Rotation: new values use the new key, old ones still open, and Stale
// tells which values a re-encryption would rewrite.
func ExampleKeyset_Rotate() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "valuecrypt-example-")
	defer os.RemoveAll(dir)
	mmk, _ := kek.NewMMK("example")
	ks, err := valuecrypt.Create(ctx, valuecrypt.FileStore(filepath.Join(dir, "keyset")), mmk)
	if err != nil {
		log.Fatal(err)
	}
	defer ks.Close()
	c := valuecrypt.NewCipher(ks, valuecrypt.Config{})
	old, _ := c.Seal("k", []byte("v1"))
	id, _ := ks.Rotate(ctx)
	plain, _ := c.Open(ctx, "k", old)
	fmt.Println("new primary:", id, "old value:", string(plain), "stale:", c.Stale(old))
	// Output: new primary: 2 old value: v1 stale: true
}

// Deterministic name encryption: the same name always maps to the same
// stored name, so it can still be looked up.
func ExampleCipher_EncryptName() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "valuecrypt-example-")
	defer os.RemoveAll(dir)
	mmk, _ := kek.NewMMK("example")
	ks, _ := valuecrypt.Create(ctx, valuecrypt.FileStore(filepath.Join(dir, "keyset")), mmk)
	defer ks.Close()
	c := valuecrypt.NewCipher(ks, valuecrypt.Config{})
	a, _ := c.EncryptName("user:alice")
	b, _ := c.EncryptName("user:alice")
	name, _ := c.DecryptName(a)
	fmt.Println(a == b, name)
	// Output: true user:alice
}

// Keeping under the AES-GCM limit: rotate once this process has sealed a
// threshold of values under the primary key (2^31 by default; 3 here).
func ExampleKeyset_SetRotateAfter() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "valuecrypt-example-")
	defer os.RemoveAll(dir)
	mmk, _ := kek.NewMMK("example")
	ks, _ := valuecrypt.Create(ctx, valuecrypt.FileStore(filepath.Join(dir, "keyset")), mmk)
	defer ks.Close()
	due := make(chan uint32, 1)
	// The function must not block the Seal that calls it: hand the
	// rotation to another goroutine.
	ks.SetRotateAfter(3, func(id uint32, seals uint64) { due <- id })
	c := valuecrypt.NewCipher(ks, valuecrypt.Config{})
	for range 3 {
		c.Seal("k", []byte("v"))
	}
	id := <-due
	fmt.Println("key", id, "sealed", ks.Seals(id), "values; rotation due:", ks.RotationDue())
	next, _ := ks.Rotate(ctx)
	fmt.Println("new primary:", next, "rotation due:", ks.RotationDue())
	// Output:
	// key 1 sealed 3 values; rotation due: true
	// new primary: 2 rotation due: false
}
