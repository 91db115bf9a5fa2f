// Command quickstart shows cachecrypt with no setup at all: it opens a cache
// instance under the platform-managed key (MMK, created on first use),
// writes an encrypted RDB snapshot to the persistence disk, reads it back,
// prints which data is encrypted under which key, and shows that the bytes
// on disk hold no plaintext.
//
//	go run ./examples/quickstart
package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"io/fs"
	"log"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/cachecrypt/cachecrypt"
	"github.com/cachecrypt/cachecrypt/rdb"
)

const secret = "the-launch-code-is-0000"

func main() {
	dir, err := os.MkdirTemp("", "cachecrypt-quickstart-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := run(os.Stdout, dir); err != nil {
		log.Fatal(err)
	}
}

func run(out io.Writer, dir string) error {
	ctx := context.Background()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	inst, err := cachecrypt.Open(ctx, dir, cachecrypt.Config{Logger: quiet}) // MMK: zero setup
	if err != nil {
		return err
	}
	defer inst.Close()
	fmt.Fprintf(out, "instance opened in %s under the platform-managed key\n\n", dir)

	keys, err := inst.Keyring(cachecrypt.DiskPersistence)
	if err != nil {
		return err
	}
	snapshot := filepath.Join(inst.DiskDir(cachecrypt.DiskPersistence), "dump.rdb")
	plain := tinyRDB("greeting", secret)
	if _, err := rdb.Encrypt(snapshot, bytes.NewReader(plain), keys); err != nil {
		return err
	}
	fmt.Fprintf(out, "wrote an encrypted snapshot: %s (%d plaintext bytes)\n", snapshot, len(plain))

	var back bytes.Buffer
	if _, err := rdb.Decrypt(&back, snapshot, keys); err != nil {
		return err
	}
	info, err := rdb.CheckPlain(bytes.NewReader(back.Bytes()))
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "read it back: %d bytes, RDB version %d, CRC-64 ok, identical: %v\n\n",
		back.Len(), info.Version, bytes.Equal(back.Bytes(), plain))

	if err := cachecrypt.WriteStatus(out, inst.Status()); err != nil {
		return err
	}
	files, hits, err := scan(dir, []byte(secret))
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\nscanned %d files on disk for %q: %d occurrences\n", files, secret, hits)
	if hits != 0 {
		return fmt.Errorf("plaintext found on disk")
	}
	return nil
}

// tinyRDB builds a valid RDB (version 11) holding one string key.
func tinyRDB(key, value string) []byte {
	b := []byte("REDIS0011")
	b = append(b, 0xFE, 0x00) // SELECTDB 0
	b = append(b, 0x00)       // type: string
	b = append(b, byte(len(key)))
	b = append(b, key...)
	b = append(b, byte(len(value)))
	b = append(b, value...)
	b = append(b, 0xFF) // EOF
	return binary.LittleEndian.AppendUint64(b, rdb.CRC64(0, b))
}

// scan counts the files under dir and the occurrences of needle in them.
func scan(dir string, needle []byte) (files, hits int, err error) {
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		files++
		hits += bytes.Count(b, needle)
		return err
	})
	return files, hits, err
}
