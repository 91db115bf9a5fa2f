package bench

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cachecrypt/cachecrypt/aof"
	"github.com/cachecrypt/cachecrypt/dek"
	"github.com/cachecrypt/cachecrypt/kek/kektest"
)

// aofFrameOverhead is what the encrypted AOF adds to a record written
// alone in its frame: the 8-byte frame header (length, check) and the
// 16-byte GCM tag (FORMAT.md, "AOF").
const aofFrameOverhead = 8 + 16

// BenchmarkAOFAppend compares the encrypted log's public Append (fsync
// "no") with two baselines, one record per operation:
//
//   - impl=plain: one os.File.Write of the record, no framing: a plain AOF
//     that writes each command as it comes;
//   - impl=limit: the limit of an encrypted log that writes each record
//     alone: a raw AES-256-GCM seal of the record (with the frame's 44
//     bytes of associated data) plus one os.File.Write of the framed bytes.
//
// With clients=4, four goroutines append at once, as four connections of a
// server would; the encrypted log group-commits them (one frame and one
// write carry every append pending when the previous write ends), and the
// baseline is four goroutines each writing its records with one
// os.File.Write per record. (aof's own BenchmarkAppend reports how many
// appends one frame carried.)
func BenchmarkAOFAppend(b *testing.B) {
	for _, size := range []int{64, 256, 4096} {
		rec := bytes.Repeat([]byte("z"), size)
		b.Run(fmt.Sprintf("rec=%dB/impl=plain", size), func(b *testing.B) {
			f := createFile(b)
			b.SetBytes(int64(size))
			defer reportCPU(b)()
			for b.Loop() {
				if _, err := f.Write(rec); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("rec=%dB/impl=limit", size), func(b *testing.B) {
			f := createFile(b)
			g := newGCM()
			var nonce [12]byte
			ad := make([]byte, sha256.Size+12)
			frame := make([]byte, 0, size+aofFrameOverhead)
			b.SetBytes(int64(size))
			defer reportCPU(b)()
			var i uint64
			for b.Loop() {
				binary.BigEndian.PutUint64(nonce[4:], i)
				binary.BigEndian.PutUint64(ad[sha256.Size:], i)
				i++
				out := binary.BigEndian.AppendUint64(frame[:0], uint64(size+16))
				out = g.Seal(out, nonce[:], rec, ad)
				if _, err := f.Write(out); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("rec=%dB/impl=cachecrypt", size), func(b *testing.B) {
			l := openLog(b)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			defer reportCPU(b)()
			for b.Loop() {
				if err := l.Append(rec); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("rec=%dB/clients=4/impl=plain", size), func(b *testing.B) {
			f := createFile(b)
			b.SetBytes(int64(size))
			clients(b, 4, func() error {
				_, err := f.Write(rec)
				return err
			})
		})
		b.Run(fmt.Sprintf("rec=%dB/clients=4/impl=cachecrypt", size), func(b *testing.B) {
			l := openLog(b)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			clients(b, 4, func() error { return l.Append(rec) })
		})
	}
}

func createFile(b *testing.B) *os.File {
	f, err := os.Create(filepath.Join(b.TempDir(), "appendonly.aof"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	return f
}

func openLog(b *testing.B) *aof.Log {
	keys, err := dek.Create(context.Background(), filepath.Join(b.TempDir(), "keyring"), "bench", kektest.New("bench"))
	if err != nil {
		b.Fatal(err)
	}
	l, err := aof.Open(b.TempDir(), keys, aof.Options{Fsync: aof.No})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		l.Close()
		keys.Close()
	})
	return l
}

// clients runs b.N operations spread over n goroutines, and reports the
// process's CPU time per operation.
func clients(b *testing.B, n int, op func() error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := cpuNs()
	for range n {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				if err := op(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(cpuNs()-start)/float64(b.N), "cpu-ns/op")
}
