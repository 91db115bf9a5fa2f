package nvme_test

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/cachecrypt/cachecrypt/nvme"
)

// Benchmarks of 4 KiB pages. Compare 1 and 2 cores in separate processes:
//
//	GOMAXPROCS=1 go test ./nvme -run '^$' -bench . -benchmem
//	GOMAXPROCS=2 go test ./nvme -run '^$' -bench . -benchmem
//
// Baselines in the same run: raw crypto/cipher AES-256-GCM on a 4 KiB buffer
// (the limit of the store's crypto), raw GCM plus one write or read of the
// sealed page on the same device (the least any authenticated page store can
// do), and plain unencrypted page I/O. The x/crypto/xts (dm-crypt style)
// baseline lives in the bench module, bench/nvme_test.go.

const benchPages = 1024

func benchGCM(b *testing.B) cipher.AEAD {
	key := make([]byte, 32)
	rand.Read(key)
	block, _ := aes.NewCipher(key)
	g, _ := cipher.NewGCM(block)
	return g
}

// Devices: "hot" is 8 pages that stay in the CPU cache (the store's cost
// with I/O reduced to a cached copy), "mem" cycles through 4 MiB of memory,
// "file" is a file in the page cache.
type benchDev struct {
	name  string
	pages int64
	open  func(b *testing.B) (nvme.Device, int64)
}

var benchDevs = []benchDev{
	{"hot", 8, func(b *testing.B) (nvme.Device, int64) {
		n := int64(11 * 4112)
		return make(memDev, n), n
	}},
	{"mem", benchPages, func(b *testing.B) (nvme.Device, int64) {
		n := int64(4112 * (benchPages + 10))
		return make(memDev, n), n
	}},
	{"file", benchPages, func(b *testing.B) (nvme.Device, int64) {
		f, err := os.Create(filepath.Join(b.TempDir(), "flash.img"))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { f.Close() })
		n := int64(4112 * (benchPages + 10))
		if err := f.Truncate(n); err != nil {
			b.Fatal(err)
		}
		return f, n
	}},
}

func BenchmarkPage(b *testing.B) {
	b.Run("gcm-seal", func(b *testing.B) {
		g := benchGCM(b)
		src, dst := make([]byte, 4096), make([]byte, 0, 4096+16)
		nonce := make([]byte, 12)
		b.SetBytes(4096)
		for b.Loop() {
			g.Seal(dst, nonce, src, nonce)
		}
	})
	b.Run("gcm-open", func(b *testing.B) {
		g := benchGCM(b)
		nonce := make([]byte, 12)
		ct := g.Seal(nil, nonce, make([]byte, 4096), nonce)
		dst := make([]byte, 0, 4096)
		b.SetBytes(4096)
		for b.Loop() {
			if _, err := g.Open(dst, nonce, ct, nonce); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, d := range benchDevs {
		b.Run("plain-write/"+d.name, func(b *testing.B) {
			dev, _ := d.open(b)
			p := make([]byte, 4096)
			b.SetBytes(4096)
			i := int64(0)
			for b.Loop() {
				dev.WriteAt(p, 8192+i%d.pages*4096)
				i++
			}
		})
		b.Run("plain-read/"+d.name, func(b *testing.B) {
			dev, _ := d.open(b)
			p := make([]byte, 4096)
			b.SetBytes(4096)
			i := int64(0)
			for b.Loop() {
				dev.ReadAt(p, 8192+i%d.pages*4096)
				i++
			}
		})
		b.Run("gcm-write/"+d.name, func(b *testing.B) {
			dev, _ := d.open(b)
			g := benchGCM(b)
			p, buf, nonce := make([]byte, 4096), make([]byte, 0, 4096+16), make([]byte, 12)
			b.SetBytes(4096)
			i := int64(0)
			for b.Loop() {
				dev.WriteAt(g.Seal(buf, nonce, p, nonce), 8192+i%d.pages*4112)
				i++
			}
		})
		b.Run("gcm-read/"+d.name, func(b *testing.B) {
			dev, _ := d.open(b)
			g := benchGCM(b)
			p, nonce := make([]byte, 0, 4096), make([]byte, 12)
			buf := g.Seal(nil, nonce, p[:4096], nonce)
			for i := range d.pages {
				dev.WriteAt(buf, 8192+i*4112)
			}
			b.SetBytes(4096)
			i := int64(0)
			for b.Loop() {
				dev.ReadAt(buf, 8192+i%d.pages*4112)
				if _, err := g.Open(p, nonce, buf, nonce); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
		b.Run("store-write/"+d.name, func(b *testing.B) {
			s := benchStore(b, d)
			p := make([]byte, 4096)
			b.SetBytes(4096)
			i := int64(0)
			for b.Loop() {
				if err := s.WritePage(i%d.pages, p); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
		b.Run("store-read/"+d.name, func(b *testing.B) {
			s := benchStore(b, d)
			p := make([]byte, 4096)
			fill(b, s)
			b.SetBytes(4096)
			i := int64(0)
			for b.Loop() {
				if err := s.ReadPage(i%d.pages, p); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

// BenchmarkPageParallel runs the same operations from GOMAXPROCS goroutines.
func BenchmarkPageParallel(b *testing.B) {
	b.Run("gcm-seal", func(b *testing.B) {
		g := benchGCM(b)
		b.SetBytes(4096)
		b.RunParallel(func(pb *testing.PB) {
			src, dst := make([]byte, 4096), make([]byte, 0, 4096+16)
			nonce := make([]byte, 12)
			for pb.Next() {
				g.Seal(dst, nonce, src, nonce)
			}
		})
	})
	b.Run("gcm-open", func(b *testing.B) {
		g := benchGCM(b)
		nonce := make([]byte, 12)
		ct := g.Seal(nil, nonce, make([]byte, 4096), nonce)
		b.SetBytes(4096)
		b.RunParallel(func(pb *testing.PB) {
			dst := make([]byte, 0, 4096)
			for pb.Next() {
				if _, err := g.Open(dst, nonce, ct, nonce); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	for _, d := range benchDevs {
		b.Run("store-write/"+d.name, func(b *testing.B) {
			s := benchStore(b, d)
			var next atomic.Int64
			b.SetBytes(4096)
			b.RunParallel(func(pb *testing.PB) {
				p := make([]byte, 4096)
				for pb.Next() {
					if err := s.WritePage(next.Add(1)%d.pages, p); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
		b.Run("store-read/"+d.name, func(b *testing.B) {
			s := benchStore(b, d)
			fill(b, s)
			var next atomic.Int64
			b.SetBytes(4096)
			b.RunParallel(func(pb *testing.PB) {
				p := make([]byte, 4096)
				for pb.Next() {
					if err := s.ReadPage(next.Add(1)%d.pages, p); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

func benchStore(b *testing.B, d benchDev) *nvme.Store {
	dev, size := d.open(b)
	s, err := nvme.OpenDevice(dev, size, &nvme.Options{Pages: d.pages})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

func fill(b *testing.B, s *nvme.Store) {
	p := make([]byte, 4096)
	for i := range s.Pages() {
		if err := s.WritePage(i, p); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSpill puts and gets values of several sizes in a spill store on a
// file.
func BenchmarkSpill(b *testing.B) {
	for _, n := range []int{100, 1000, 4096, 16384, 100000} {
		setup := func(b *testing.B) (*nvme.Spill, []byte) {
			s, err := nvme.Open(filepath.Join(b.TempDir(), "flash.img"), &nvme.Options{Pages: 4096})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.Close() })
			v := make([]byte, n)
			rand.Read(v)
			return nvme.NewSpill(s), v
		}
		keys := make([]string, 64)
		for i := range keys {
			keys[i] = fmt.Sprint("key:", i)
		}
		b.Run(fmt.Sprintf("put/%d", n), func(b *testing.B) {
			sp, v := setup(b)
			b.SetBytes(int64(n))
			i := 0
			for b.Loop() {
				if err := sp.Put(keys[i%len(keys)], v); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
		b.Run(fmt.Sprintf("get/%d", n), func(b *testing.B) {
			sp, v := setup(b)
			for _, k := range keys {
				if err := sp.Put(k, v); err != nil {
					b.Fatal(err)
				}
			}
			b.SetBytes(int64(n))
			i := 0
			for b.Loop() {
				if _, err := sp.Get(keys[i%len(keys)]); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}
