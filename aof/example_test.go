package aof_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"

	"github.com/cachecrypt/cachecrypt/aof"
	"github.com/cachecrypt/cachecrypt/dek"
	"github.com/cachecrypt/cachecrypt/kek"
)

func Example() {
	tmp, _ := os.MkdirTemp("", "aof-example")
	defer os.RemoveAll(tmp)
	mmk, err := kek.NewMMK("platform")
	if err != nil {
		log.Fatal(err)
	}
	keys, err := dek.Create(context.Background(), filepath.Join(tmp, "keyring"), "disk-1", mmk)
	if err != nil {
		log.Fatal(err)
	}
	defer keys.Close()

	dir := filepath.Join(tmp, "appendonlydir")
	l, err := aof.Open(dir, keys, aof.Options{Fsync: aof.Always})
	if err != nil {
		log.Fatal(err)
	}
	if err := l.Append([]byte("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n")); err != nil {
		log.Fatal(err)
	}
	if err := l.Close(); err != nil {
		log.Fatal(err)
	}

	// At the next start: recover (a torn tail a crash left is cut off and
	// reported by Recovered), then replay into the command loop.
	l, err = aof.Open(dir, keys, aof.Options{Fsync: aof.Always})
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	if rec, ok := l.Recovered(); ok {
		log.Printf("cut a torn write of %d bytes off %s at offset %d", rec.BytesCut, rec.Part, rec.Offset)
	}
	r, err := l.Replay()
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	b, _ := io.ReadAll(r)
	fmt.Printf("%q\n", b)
	// Output: "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n"
}

func ExampleLog_Rewrite() {
	tmp, _ := os.MkdirTemp("", "aof-example")
	defer os.RemoveAll(tmp)
	mmk, _ := kek.NewMMK("platform")
	keys, _ := dek.Create(context.Background(), filepath.Join(tmp, "keyring"), "disk-1", mmk)
	defer keys.Close()
	l, _ := aof.Open(filepath.Join(tmp, "aof"), keys, aof.Options{})
	defer l.Close()
	l.Append([]byte("*2\r\n$4\r\nINCR\r\n$1\r\nn\r\n"))
	l.Append([]byte("*2\r\n$4\r\nINCR\r\n$1\r\nn\r\n"))

	// Replace the two INCRs by the state they produced.
	err := l.Rewrite(aof.BaseAOF, func(w *aof.Rewrite) error {
		_, err := io.WriteString(w, "*3\r\n$3\r\nSET\r\n$1\r\nn\r\n$1\r\n2\r\n")
		return err
	})
	fmt.Println(err)
	r, _ := l.Replay()
	b, _ := io.ReadAll(r)
	fmt.Printf("%q\n", b)
	// Output:
	// <nil>
	// "*3\r\n$3\r\nSET\r\n$1\r\nn\r\n$1\r\n2\r\n"
}
