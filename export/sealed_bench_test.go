package export_test

import (
	"bytes"
	"context"
	"io"
	"testing"

	"github.com/cachecrypt/cachecrypt/export"
	"github.com/cachecrypt/cachecrypt/kek"
)

// BenchmarkExportSealed compares a sealed export with the plain one (the
// baseline, same run, same RDB from redis-server) to io.Discard: the cost of
// sealing is one more AES-GCM pass over the RDB and one Wrap.
func BenchmarkExportSealed(b *testing.B) {
	plain := redisRDB(b)
	scratch := newScratch(b)
	mmk, err := kek.NewMMK("bench")
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		seal kek.Wrapper
	}{{"plain", nil}, {"sealed", mmk}} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(plain)))
			for b.Loop() {
				_, err := export.Export(context.Background(), scratch, export.FromReader(bytes.NewReader(plain)), export.ToWriter(io.Discard), &export.Options{Seal: bc.seal})
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
