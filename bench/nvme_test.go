// Package bench compares cachecrypt's formats with their peers. It is a
// separate module, so the peers never enter the main go.mod.
package bench

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/cachecrypt/cachecrypt/nvme"
	"golang.org/x/crypto/xts"
)

// Benchmarks of one 4 KiB page of the nvme store beside its baselines, all in
// one run. Compare 1 and 2 cores in separate processes:
//
//	cd bench && GOMAXPROCS=1 go test -run '^$' -bench 'NVMe' -count 5
//	cd bench && GOMAXPROCS=2 go test -run '^$' -bench 'NVMe' -count 5
//
//   - gcm:   raw crypto/cipher AES-256-GCM on 4 KiB, the limit.
//   - xts:   golang.org/x/crypto/xts AES-256-XTS on a 4 KiB sector, as
//     dm-crypt does: no integrity, no replay or relocation detection.
//   - nvme:  nvme.Store.WritePage / ReadPage.
//
// "/hot" runs on 8 pages (32 KiB) of an in-memory device that stay in the
// CPU cache: the store's per-page cost with I/O reduced to a cached copy, to set
// beside raw gcm-seal/gcm-open. "/mem" cycles through 1024 pages (4 MiB) of an
// in-memory device: crypto plus one uncached memory copy per page, the floor
// of any page store. "/file" uses a file in the page cache, where each
// operation is a pread/pwrite (the store makes two: data and metadata
// record). gcm and xts runs on a device write the sealed page in one call.

const (
	nvmePageSize = 4096
	nvmePages    = 1024
)

type nvmeDev struct {
	name  string
	pages int64
	open  func(b *testing.B) (nvme.Device, int64)
}

type memDev []byte

func (m memDev) ReadAt(p []byte, off int64) (int, error) {
	n := copy(p, m[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m memDev) WriteAt(p []byte, off int64) (int, error) { return copy(m[off:], p), nil }

var nvmeDevs = []nvmeDev{
	{"hot", 8, func(b *testing.B) (nvme.Device, int64) {
		n := int64(11 * (nvmePageSize + 16))
		return make(memDev, n), n
	}},
	{"mem", nvmePages, func(b *testing.B) (nvme.Device, int64) {
		n := int64((nvmePageSize + 16) * (nvmePages + 10))
		return make(memDev, n), n
	}},
	{"file", nvmePages, func(b *testing.B) (nvme.Device, int64) {
		f, err := os.Create(filepath.Join(b.TempDir(), "flash.img"))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { f.Close() })
		n := int64((nvmePageSize + 16) * (nvmePages + 10))
		if err := f.Truncate(n); err != nil {
			b.Fatal(err)
		}
		return f, n
	}},
}

// pageCipher is one way to protect a 4 KiB page: seal into dst (returning
// the bytes to write) and open from src into dst.
type pageCipher struct {
	name string
	new  func() (seal func(dst, p []byte, n uint64) []byte, open func(dst, src []byte, n uint64) error)
	over int // bytes added per page
}

func randKey(n int) []byte {
	k := make([]byte, n)
	rand.Read(k)
	return k
}

var pageCiphers = []pageCipher{
	{"gcm", func() (func([]byte, []byte, uint64) []byte, func([]byte, []byte, uint64) error) {
		block, _ := aes.NewCipher(randKey(32))
		g, _ := cipher.NewGCM(block)
		nonce := make([]byte, 12)
		return func(dst, p []byte, _ uint64) []byte { return g.Seal(dst[:0], nonce, p, nil) },
			func(dst, src []byte, _ uint64) error { _, err := g.Open(dst[:0], nonce, src, nil); return err }
	}, 16},
	{"xts", func() (func([]byte, []byte, uint64) []byte, func([]byte, []byte, uint64) error) {
		c, err := xts.NewCipher(aes.NewCipher, randKey(64)) // AES-256-XTS
		if err != nil {
			panic(err)
		}
		return func(dst, p []byte, n uint64) []byte { dst = dst[:len(p)]; c.Encrypt(dst, p, n); return dst },
			func(dst, src []byte, n uint64) error { c.Decrypt(dst, src, n); return nil }
	}, 0},
}

// cpuNs returns the CPU time this process has used, in nanoseconds.
func cpuNs() int64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return syscall.TimevalToNsec(ru.Utime) + syscall.TimevalToNsec(ru.Stime)
}

// loop runs op in b.Loop and reports cpu-ns/op: the CPU time the process
// spent per operation (all threads). Unlike ns/op it does not grow when the
// shared machine takes the CPU away, so ratios between benchmarks hold
// under load.
func loop(b *testing.B, op func(i int64)) {
	b.SetBytes(nvmePageSize)
	start := cpuNs()
	i := int64(0)
	for b.Loop() {
		op(i)
		i++
	}
	b.ReportMetric(float64(cpuNs()-start)/float64(b.N), "cpu-ns/op")
}

// loopParallel is loop for b.RunParallel; each goroutine gets its own op
// from newOp.
func loopParallel(b *testing.B, newOp func() func(i int64)) {
	b.SetBytes(nvmePageSize)
	var next atomic.Int64
	start := cpuNs()
	b.RunParallel(func(pb *testing.PB) {
		op := newOp()
		for pb.Next() {
			op(next.Add(1))
		}
	})
	b.ReportMetric(float64(cpuNs()-start)/float64(b.N), "cpu-ns/op")
}

func BenchmarkNVMe(b *testing.B) {
	for _, pc := range pageCiphers {
		b.Run(pc.name+"-seal", func(b *testing.B) {
			seal, _ := pc.new()
			p, dst := make([]byte, nvmePageSize), make([]byte, nvmePageSize+pc.over)
			loop(b, func(int64) { seal(dst, p, 7) })
		})
		b.Run(pc.name+"-open", func(b *testing.B) {
			seal, open := pc.new()
			p := make([]byte, nvmePageSize)
			ct := seal(make([]byte, nvmePageSize+pc.over), p, 7)
			loop(b, func(int64) {
				if err := open(p, ct, 7); err != nil {
					b.Fatal(err)
				}
			})
		})
	}
	for _, d := range nvmeDevs {
		for _, pc := range pageCiphers {
			slot := int64(nvmePageSize + pc.over)
			b.Run(pc.name+"-write/"+d.name, func(b *testing.B) {
				dev, _ := d.open(b)
				seal, _ := pc.new()
				p, buf := make([]byte, nvmePageSize), make([]byte, slot)
				loop(b, func(i int64) {
					pg := i % d.pages
					dev.WriteAt(seal(buf, p, uint64(pg)), pg*slot)
				})
			})
			b.Run(pc.name+"-read/"+d.name, func(b *testing.B) {
				dev, _ := d.open(b)
				seal, open := pc.new()
				p, buf := make([]byte, nvmePageSize), make([]byte, slot)
				for i := range d.pages {
					dev.WriteAt(seal(buf, p, uint64(i)), i*slot)
				}
				loop(b, func(i int64) {
					pg := i % d.pages
					dev.ReadAt(buf, pg*slot)
					if err := open(p, buf, uint64(pg)); err != nil {
						b.Fatal(err)
					}
				})
			})
		}
		b.Run("nvme-write/"+d.name, func(b *testing.B) {
			s := nvmeStore(b, d)
			p := make([]byte, nvmePageSize)
			loop(b, func(i int64) {
				if err := s.WritePage(i%d.pages, p); err != nil {
					b.Fatal(err)
				}
			})
		})
		b.Run("nvme-read/"+d.name, func(b *testing.B) {
			s := nvmeStore(b, d)
			p := make([]byte, nvmePageSize)
			loop(b, func(i int64) {
				if err := s.ReadPage(i%d.pages, p); err != nil {
					b.Fatal(err)
				}
			})
		})
	}
}

// BenchmarkNVMeParallel runs the same operations from GOMAXPROCS goroutines.
func BenchmarkNVMeParallel(b *testing.B) {
	for _, pc := range pageCiphers {
		b.Run(pc.name+"-seal", func(b *testing.B) {
			seal, _ := pc.new()
			loopParallel(b, func() func(int64) {
				p, dst := make([]byte, nvmePageSize), make([]byte, nvmePageSize+pc.over)
				return func(int64) { seal(dst, p, 7) }
			})
		})
		b.Run(pc.name+"-open", func(b *testing.B) {
			seal, open := pc.new()
			ct := seal(make([]byte, nvmePageSize+pc.over), make([]byte, nvmePageSize), 7)
			loopParallel(b, func() func(int64) {
				p := make([]byte, nvmePageSize)
				return func(int64) {
					if err := open(p, ct, 7); err != nil {
						b.Error(err)
					}
				}
			})
		})
	}
	for _, d := range nvmeDevs {
		b.Run("nvme-write/"+d.name, func(b *testing.B) {
			s := nvmeStore(b, d)
			loopParallel(b, func() func(int64) {
				p := make([]byte, nvmePageSize)
				return func(i int64) {
					if err := s.WritePage(i%d.pages, p); err != nil {
						b.Error(err)
					}
				}
			})
		})
		b.Run("nvme-read/"+d.name, func(b *testing.B) {
			s := nvmeStore(b, d)
			loopParallel(b, func() func(int64) {
				p := make([]byte, nvmePageSize)
				return func(i int64) {
					if err := s.ReadPage(i%d.pages, p); err != nil {
						b.Error(err)
					}
				}
			})
		})
	}
}

// nvmeStore opens a store over a fresh device with every page written.
func nvmeStore(b *testing.B, d nvmeDev) *nvme.Store {
	dev, size := d.open(b)
	s, err := nvme.OpenDevice(dev, size, &nvme.Options{Pages: d.pages})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	p := make([]byte, nvmePageSize)
	for i := range s.Pages() {
		if err := s.WritePage(i, p); err != nil {
			b.Fatal(err)
		}
	}
	return s
}
