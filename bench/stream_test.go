// Benchmarks of the cachecrypt stream format (internal/stream, reached
// through rdb's public API) against the raw AES-256-GCM ceilings and against
// peers: minio/sio (DARE 2.0) and Tink's streaming AEAD. Run each
// GOMAXPROCS in its own process:
//
//	GOMAXPROCS=1 go test -run x -bench . -count 5
//	GOMAXPROCS=2 go test -run x -bench . -count 5
//
// README.md holds the figures and how they compare.
package bench

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"runtime"
	"sync"
	"testing"

	"github.com/cachecrypt/cachecrypt/dek"
	"github.com/cachecrypt/cachecrypt/internal/stream"
	"github.com/minio/sio"
	"github.com/tink-crypto/tink-go/v2/keyset"
	"github.com/tink-crypto/tink-go/v2/streamingaead"
	"github.com/tink-crypto/tink-go/v2/tink"
)

const (
	streamSize = 64 << 20 // plaintext per benchmark op
	blockSize  = 64 << 10 // ceiling block
)

var (
	plaintext = func() []byte { b := make([]byte, streamSize); rand.Read(b); return b }()
	key       = func() []byte { b := make([]byte, 32); rand.Read(b); return b }()
)

// keys derives file keys from a raw DEK, as a dek.Keyring does.
type keys struct{}

func (keys) DiskID() string { return "bench-disk" }
func (keys) Active() uint32 { return 1 }
func (keys) FileKey(v uint32, purpose string, salt []byte) ([]byte, error) {
	return dek.DeriveFileKey(key, "bench-disk", v, purpose, salt)
}

func newGCM() cipher.AEAD {
	b, _ := aes.NewCipher(key)
	g, _ := cipher.NewGCM(b)
	return g
}

// ceiling seals or opens the 64 MiB as independent 64 KiB blocks split
// over n goroutines: raw crypto/cipher work and nothing else.
func ceiling(b *testing.B, n int, open bool) {
	g := newGCM()
	nblocks := streamSize / blockSize
	sealed := make([][]byte, nblocks)
	for i := range sealed {
		sealed[i] = g.Seal(nil, nonce(i), plaintext[i*blockSize:(i+1)*blockSize], nil)
	}
	dsts := make([][]byte, n)
	for i := range dsts {
		dsts[i] = make([]byte, 0, blockSize+16)
	}
	b.SetBytes(streamSize)
	b.ReportAllocs()
	defer reportCPU(b)()
	for b.Loop() {
		var wg sync.WaitGroup
		for w := range n {
			work := func() {
				for i := w; i < nblocks; i += n {
					if open {
						if _, err := g.Open(dsts[w][:0], nonce(i), sealed[i], nil); err != nil {
							panic(err)
						}
					} else {
						g.Seal(dsts[w][:0], nonce(i), plaintext[i*blockSize:(i+1)*blockSize], nil)
					}
				}
			}
			if n == 1 {
				work()
				continue
			}
			wg.Go(work)
		}
		wg.Wait()
	}
}

var nonces = func() [][]byte {
	ns := make([][]byte, streamSize/blockSize)
	for i := range ns {
		ns[i] = make([]byte, 12)
		binary.BigEndian.PutUint32(ns[i][8:], uint32(i))
	}
	return ns
}()

func nonce(i int) []byte { return nonces[i] }

type variant struct {
	name string
	seg  int
	comp stream.Compression
}

var variants = []variant{
	{"seg=16KiB", 16 << 10, stream.None},
	{"seg=64KiB", 64 << 10, stream.None},
	{"seg=1MiB", 1 << 20, stream.None},
	{"seg=64KiB/zstd", 64 << 10, stream.Zstd},
	{"seg=64KiB/s2", 64 << 10, stream.S2},
}

func sealCachecrypt(dst io.Writer, v variant) error {
	w, err := stream.NewWriter(dst, keys{}, "bench", stream.Options{SegmentSize: v.seg, Compression: v.comp})
	if err != nil {
		return err
	}
	if _, err := w.Write(plaintext); err != nil {
		return err
	}
	return w.Close()
}

func sioConfig() sio.Config {
	return sio.Config{Key: key, MinVersion: sio.Version20, MaxVersion: sio.Version20, CipherSuites: []byte{sio.AES_256_GCM}}
}

func tinkAEAD(b *testing.B, name string) tink.StreamingAEAD {
	t := streamingaead.AES256GCMHKDF1MBKeyTemplate()
	if name == "4KB" {
		t = streamingaead.AES256GCMHKDF4KBKeyTemplate()
	}
	h, err := keyset.NewHandle(t)
	if err != nil {
		b.Fatal(err)
	}
	a, err := streamingaead.New(h)
	if err != nil {
		b.Fatal(err)
	}
	return a
}

func BenchmarkStreamSeal(b *testing.B) {
	b.Run("goroutines=1/impl=rawgcm", func(b *testing.B) { ceiling(b, 1, false) })
	b.Run("impl=rawgcm", func(b *testing.B) { ceiling(b, runtime.GOMAXPROCS(0), false) })
	for _, v := range variants {
		b.Run(v.name+"/impl=cachecrypt", func(b *testing.B) {
			b.SetBytes(streamSize)
			b.ReportAllocs()
			defer reportCPU(b)()
			for b.Loop() {
				if err := sealCachecrypt(io.Discard, v); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("seg=64KiB/impl=sio", func(b *testing.B) {
		b.SetBytes(streamSize)
		b.ReportAllocs()
		for b.Loop() {
			w, err := sio.EncryptWriter(io.Discard, sioConfig())
			if err != nil {
				b.Fatal(err)
			}
			w.Write(plaintext)
			if err := w.Close(); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, t := range []string{"1MB", "4KB"} {
		b.Run(map[string]string{"1MB": "seg=1MiB", "4KB": "seg=4KiB"}[t]+"/impl=tink", func(b *testing.B) {
			a := tinkAEAD(b, t)
			b.SetBytes(streamSize)
			b.ReportAllocs()
			for b.Loop() {
				w, err := a.NewEncryptingWriter(io.Discard, nil)
				if err != nil {
					b.Fatal(err)
				}
				w.Write(plaintext)
				if err := w.Close(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkStreamOpen(b *testing.B) {
	b.Run("goroutines=1/impl=rawgcm", func(b *testing.B) { ceiling(b, 1, true) })
	b.Run("impl=rawgcm", func(b *testing.B) { ceiling(b, runtime.GOMAXPROCS(0), true) })
	for _, v := range variants {
		b.Run(v.name+"/impl=cachecrypt", func(b *testing.B) {
			var ct bytes.Buffer
			if err := sealCachecrypt(&ct, v); err != nil {
				b.Fatal(err)
			}
			src := bytes.NewReader(ct.Bytes())
			b.SetBytes(streamSize)
			b.ReportAllocs()
			defer reportCPU(b)()
			for b.Loop() {
				r, err := stream.NewReader(src, int64(ct.Len()), keys{}, "bench")
				if err != nil {
					b.Fatal(err)
				}
				if n, err := r.WriteTo(io.Discard); err != nil || n != streamSize {
					b.Fatal(n, err)
				}
			}
		})
	}
	b.Run("seg=64KiB/impl=sio", func(b *testing.B) {
		var ct bytes.Buffer
		w, _ := sio.EncryptWriter(&ct, sioConfig())
		w.Write(plaintext)
		w.Close()
		b.SetBytes(streamSize)
		b.ReportAllocs()
		for b.Loop() {
			r, err := sio.DecryptReader(bytes.NewReader(ct.Bytes()), sioConfig())
			if err != nil {
				b.Fatal(err)
			}
			if n, err := io.Copy(io.Discard, r); err != nil || n != streamSize {
				b.Fatal(n, err)
			}
		}
	})
	for _, t := range []string{"1MB", "4KB"} {
		b.Run(map[string]string{"1MB": "seg=1MiB", "4KB": "seg=4KiB"}[t]+"/impl=tink", func(b *testing.B) {
			a := tinkAEAD(b, t)
			var ct bytes.Buffer
			w, _ := a.NewEncryptingWriter(&ct, nil)
			w.Write(plaintext)
			w.Close()
			b.SetBytes(streamSize)
			b.ReportAllocs()
			for b.Loop() {
				r, err := a.NewDecryptingReader(bytes.NewReader(ct.Bytes()), nil)
				if err != nil {
					b.Fatal(err)
				}
				if n, err := io.Copy(io.Discard, r); err != nil || n != streamSize {
					b.Fatal(n, err)
				}
			}
		})
	}
}

var _ = fmt.Sprint

// reportCPU starts counting the process's CPU time (user+sys, all threads)
// and returns the function that reports it as cpu-ns/op once the loop is
// done: beside ns/op it shows what a parallel engine costs in cores, which
// wall time hides (a goroutine that spins is fast on the clock and
// expensive on the bill). Call it as defer reportCPU(b)() just before
// b.Loop.
func reportCPU(b *testing.B) func() {
	start := cpuNs()
	return func() {
		if b.N > 0 {
			b.ReportMetric(float64(cpuNs()-start)/float64(b.N), "cpu-ns/op")
		}
	}
}
