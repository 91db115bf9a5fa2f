package main

import (
	"bytes"
	"context"
	"testing"

	"github.com/cachecrypt/cachecrypt"
	"github.com/cachecrypt/cachecrypt/aof"
)

// BenchmarkSinkAppend is the AOF write path alone: one batch of four SET
// commands (64-byte values) per Append, everysec, encrypted against
// plaintext. Run 1 and 2 cores in separate processes:
//
//	GOMAXPROCS=1 go test -run XXX -bench SinkAppend ./examples/server
func BenchmarkSinkAppend(b *testing.B) {
	batch := bytes.Repeat(setRecord([]byte("key:000000012345"), bytes.Repeat([]byte("x"), 64), 0), 4)
	b.Run("plaintext", func(b *testing.B) {
		s, r, err := openPlain(b.TempDir(), aof.EverySec)
		if err != nil {
			b.Fatal(err)
		}
		r.Close()
		defer s.Close()
		benchSink(b, s, batch)
	})
	b.Run("encrypted", func(b *testing.B) {
		inst, err := cachecrypt.Open(context.Background(), b.TempDir(), cachecrypt.Config{Logger: quiet})
		if err != nil {
			b.Fatal(err)
		}
		defer inst.Close()
		s, r, err := openEncrypted(inst, aof.EverySec)
		if err != nil {
			b.Fatal(err)
		}
		r.Close()
		defer s.Close()
		benchSink(b, s, batch)
	})
}

func benchSink(b *testing.B, s sink, batch []byte) {
	b.SetBytes(int64(len(batch)))
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Append(batch); err != nil {
			b.Fatal(err)
		}
	}
}
