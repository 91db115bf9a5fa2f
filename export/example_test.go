package export_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/cachecrypt/cachecrypt/export"
	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/cachecrypt/cachecrypt/osdisk"
)

// Export a snapshot through the encrypted OS disk to a file. In a cache
// instance the source is the decrypting reader of the encrypted persistence
// RDB; here it is a small RDB written by redis-server.
func ExampleExport() {
	root, _ := os.MkdirTemp("", "export-example")
	defer os.RemoveAll(root)
	ctx := context.Background()
	mmk, err := kek.LoadMMK(filepath.Join(root, "platform.keyset"))
	if err != nil {
		log.Fatal(err)
	}
	scratch, err := osdisk.OpenOrCreate(ctx, filepath.Join(root, "os"), "os-disk", mmk)
	if err != nil {
		log.Fatal(err)
	}
	defer scratch.Close()

	opts := &export.Options{Progress: func(p export.Progress) {
		if p.Done == p.Total {
			fmt.Printf("%s: %d bytes\n", p.Phase, p.Done)
		}
	}}
	info, err := export.Export(ctx, scratch, export.FromFile("testdata/small.rdb"),
		export.ToFile(filepath.Join(root, "backup.rdb")), opts)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("sha256 %x…, crc64 %016x\n", info.SHA256[:4], info.CRC64)
	// Output:
	// staging: 155 bytes
	// sending: 155 bytes
	// sha256 9a6feb60…, crc64 d7e19b6cccfa6509
}

// Import refuses anything that is not an intact RDB. A source that does
// not even start like one never reaches the destination; one that fails its
// CRC-64 makes the destination abort before it commits.
func ExampleImport() {
	root, _ := os.MkdirTemp("", "import-example")
	defer os.RemoveAll(root)
	ctx := context.Background()
	mmk, err := kek.NewMMK("platform")
	if err != nil {
		log.Fatal(err)
	}
	scratch, err := osdisk.Create(ctx, filepath.Join(root, "os"), "os-disk", mmk)
	if err != nil {
		log.Fatal(err)
	}
	defer scratch.Close()

	var restored bytes.Buffer
	_, err = export.Import(ctx, scratch, export.FromReader(bytes.NewReader([]byte("*1\r\n$4\r\nPING\r\n"))), export.ToWriter(&restored), nil)
	fmt.Println(err)
	fmt.Println(restored.Len(), "bytes reached the destination")
	// Output:
	// export.Import: source is not a valid RDB: it starts with "*1\r\n$4\r\nP", not "REDIS" and a 4-digit version; give the path of an RDB snapshot (dump.rdb): rdb: not a Redis RDB file
	// 0 bytes reached the destination
}

// A sealed export: the file holds only ciphertext under a fresh export key
// that a backup KEK wraps, and importing it needs that KEK and nothing of
// the instance that wrote it. Another KEK is refused before anything is
// written.
func ExampleUnseal() {
	root, _ := os.MkdirTemp("", "sealed-example")
	defer os.RemoveAll(root)
	ctx := context.Background()
	platform, _ := kek.NewMMK("platform")
	backup, _ := kek.NewMMK("backup") // in production, say, a Key Vault key kept for backups
	scratch, err := osdisk.Create(ctx, filepath.Join(root, "os"), "os-disk", platform)
	if err != nil {
		log.Fatal(err)
	}
	defer scratch.Close()

	sealed := filepath.Join(root, "backup.ccsealed")
	_, err = export.Export(ctx, scratch, export.FromFile("testdata/small.rdb"), export.ToFile(sealed), &export.Options{Seal: backup})
	if err != nil {
		log.Fatal(err)
	}
	b, _ := os.ReadFile(sealed)
	fmt.Printf("%q…\n", b[:len(export.SealedMagic)])

	other, _ := kek.NewMMK("other")
	var restored bytes.Buffer
	_, err = export.Import(ctx, scratch, export.Unseal(export.FromFile(sealed), other), export.ToWriter(&restored), nil)
	fmt.Println(errors.Is(err, kek.ErrKeyMismatch), restored.Len())
	info, err := export.Import(ctx, scratch, export.Unseal(export.FromFile(sealed), backup), export.ToWriter(&restored), nil)
	fmt.Println(err, info.Size)
	// Output:
	// "CCSEALED"…
	// true 0
	// <nil> 155
}
