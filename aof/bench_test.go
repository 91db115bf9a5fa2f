package aof

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"fmt"
	"io"
	"os"
	"testing"
)

// Append throughput, encrypted vs plain. The plain baseline is the same
// log (same group commit, framing, write and fsync code) minus sealing,
// so the ratio is the cost of encryption alone. Run with GOMAXPROCS=1 and
// GOMAXPROCS=2 in separate processes.
func BenchmarkAppend(b *testing.B) {
	for _, pol := range []Policy{No, EverySec, Always} {
		for _, size := range []int{64, 256, 4096} {
			for _, mode := range []string{"plain", "enc"} {
				b.Run(fmt.Sprintf("%s/%d/%s", pol, size, mode), func(b *testing.B) {
					benchAppend(b, pol, size, mode == "plain")
				})
			}
		}
	}
}

func benchAppend(b *testing.B, pol Policy, size int, plain bool) {
	keys, dir := newKeys(b), b.TempDir()
	l, err := open(dir, keys, Options{Fsync: pol}, plain)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	rec := bytes.Repeat([]byte("x"), size)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.SetParallelism(4) // several clients: appends group-commit
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := l.Append(rec); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	l.mu.Lock()
	b.ReportMetric(float64(b.N)/float64(l.cur.frames), "appends/frame")
	l.mu.Unlock()
}

// Replay: decrypting a log written with 4 KiB appends (4 KiB frames) and
// a base (1 MiB frames), vs the same log unsealed.
func BenchmarkReplay(b *testing.B) {
	for _, size := range []int{4096, baseChunk, 1 << 20} {
		for _, mode := range []string{"plain", "enc"} {
			b.Run(fmt.Sprintf("frame=%d/%s", size, mode), func(b *testing.B) {
				benchReplay(b, size, mode == "plain")
			})
		}
	}
}

func benchReplay(b *testing.B, size int, plain bool) {
	keys, dir := newKeys(b), b.TempDir()
	l, err := open(dir, keys, Options{Fsync: No}, plain)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	rec := bytes.Repeat([]byte("y"), size)
	const total = 64 << 20
	for range total / size {
		l.Append(rec)
	}
	b.SetBytes(total)
	b.ReportAllocs()
	for b.Loop() {
		r, err := l.Replay()
		if err != nil {
			b.Fatal(err)
		}
		n, err := r.WriteTo(io.Discard)
		if err != nil || n != total {
			b.Fatal(n, err)
		}
		r.Close()
	}
}

// The limits: raw AES-256-GCM open, and reading the file from the page
// cache.
func BenchmarkBaselineGCMOpen(b *testing.B) {
	for _, size := range []int{4096, baseChunk, 1 << 20} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			blk, _ := aes.NewCipher(make([]byte, 32))
			g, _ := cipher.NewGCM(blk)
			nonce := make([]byte, 12)
			ct := g.Seal(nil, nonce, make([]byte, size), nil)
			buf := make([]byte, len(ct))
			b.SetBytes(int64(size))
			for b.Loop() {
				copy(buf, ct)
				if _, err := g.Open(buf[:0], nonce, buf, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkBaselineFileRead(b *testing.B) {
	p := b.TempDir() + "/f"
	const total = 64 << 20
	os.WriteFile(p, make([]byte, total), 0o600)
	buf := make([]byte, 256<<10)
	b.SetBytes(total)
	for b.Loop() {
		f, _ := os.Open(p)
		for {
			if _, err := f.Read(buf); err != nil {
				break
			}
		}
		f.Close()
	}
}

// BenchmarkSealFrame is the CPU cost encryption adds to one group commit:
// framing and sealing a batch, without I/O (the plain variant frames only).
func BenchmarkSealFrame(b *testing.B) {
	for _, size := range []int{64, 256, 4096} {
		for _, mode := range []string{"plain", "enc"} {
			b.Run(fmt.Sprintf("%d/%s", size, mode), func(b *testing.B) {
				h := &header{Kind: kindIncr, DEK: 1, Seq: 1, Generation: 1, DiskID: "bench"}
				s, err := newSealer(newKeys(b), h, mode == "plain")
				if err != nil {
					b.Fatal(err)
				}
				p := make([]byte, size)
				out := make([]byte, 0, size+64)
				b.SetBytes(int64(size))
				b.ReportAllocs()
				var i uint64
				for b.Loop() {
					out = s.appendFrame(out[:0], i, p)
					i++
				}
			})
		}
	}
}
