package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/cachecrypt/cachecrypt/aof"
	"github.com/cachecrypt/cachecrypt/dek"
	"github.com/cachecrypt/cachecrypt/kek/kektest"
)

// BenchmarkAOFAppend compares the encrypted log's public Append with the
// simplest possible plain AOF: one os.File.Write per record (what Redis
// does per event loop turn, without group commit), both with fsync policy
// "no". The fair encrypted-vs-plain comparison with identical batching is
// aof's own BenchmarkAppend (enc vs plain).
func BenchmarkAOFAppend(b *testing.B) {
	for _, size := range []int{64, 256, 4096} {
		rec := bytes.Repeat([]byte("z"), size)
		b.Run(fmt.Sprintf("%d/os.File", size), func(b *testing.B) {
			f, err := os.Create(filepath.Join(b.TempDir(), "appendonly.aof"))
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			b.SetBytes(int64(size))
			for b.Loop() {
				if _, err := f.Write(rec); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("%d/aof", size), func(b *testing.B) {
			keys, err := dek.Create(context.Background(), filepath.Join(b.TempDir(), "keyring"), "bench", kektest.New("bench"))
			if err != nil {
				b.Fatal(err)
			}
			defer keys.Close()
			l, err := aof.Open(b.TempDir(), keys, aof.Options{Fsync: aof.No})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				if err := l.Append(rec); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
