package cachecrypt_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"

	"github.com/cachecrypt/cachecrypt"
	"github.com/cachecrypt/cachecrypt/kek/kektest"
)

// An instance needs no setup: it opens under the platform-managed key, and
// switches to a customer-managed key online. (A test KEK stands in for a
// Key Vault or PKCS#11 key here.)
func Example() {
	dir, _ := os.MkdirTemp("", "cachecrypt-example-")
	defer os.RemoveAll(dir)
	ctx := context.Background()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	inst, err := cachecrypt.Open(ctx, dir, cachecrypt.Config{Logger: quiet, ProbeInterval: -1})
	if err != nil {
		log.Fatal(err)
	}
	defer inst.Close()
	err = inst.SaveSnapshot(func(w io.Writer) error {
		_, err := io.WriteString(w, "REDIS0011...")
		return err
	})
	if err != nil {
		log.Fatal(err)
	}

	if err := inst.SetEncryption(ctx, cachecrypt.CustomerManaged(kektest.New("cmk"))); err != nil {
		log.Fatal(err)
	}
	for _, row := range inst.Status() {
		fmt.Printf("%-38s %s %s\n", row.Data, row.Key, row.KEK.KeyID)
	}
	snap, _ := inst.OpenSnapshot()
	defer snap.Close()
	b, _ := io.ReadAll(snap)
	fmt.Println(string(b))
	// Output:
	// RDB snapshots, AOF logs (persistence)  CMK test/cmk/v1
	// RDB files waiting to be exported       CMK test/cmk/v1
	// temporary files of an export           CMK test/cmk/v1
	// REDIS0011...
}
