package nvme_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/cachecrypt/cachecrypt/nvme"
)

// Offsets of the FORMAT.md layout for 4 pages of 4096 bytes: header block,
// one metadata block (4 records of 32 bytes), then the data pages.
const (
	tps        = 4096
	tpages     = 4
	metaOff    = tps
	dataOff    = 2 * tps
	recordSize = 32
)

func recOff(p int64) int64 { return metaOff + p*recordSize }
func dataAt(p int64) int64 { return dataOff + p*tps }
func fileOf(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func readAt(t *testing.T, f *os.File, off int64, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}

func writeAt(t *testing.T, f *os.File, off int64, b []byte) {
	t.Helper()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func flip(t *testing.T, f *os.File, off int64, mask byte) {
	t.Helper()
	b := readAt(t, f, off, 1)
	writeAt(t, f, off, []byte{b[0] ^ mask})
}

// TestTamper damages the file under a live store, which has written pages 0
// to 2 (page 1 twice), and reads page 1. Every case fails with its sentinel
// and leaves no plaintext in the caller's buffer.
func TestTamper(t *testing.T) {
	cases := []struct {
		name   string
		damage func(t *testing.T, s *nvme.Store, f *os.File, old1 []byte)
		want   error
	}{
		{"untouched", func(*testing.T, *nvme.Store, *os.File, []byte) {}, nil},
		{"bit flip in data, first byte", func(t *testing.T, _ *nvme.Store, f *os.File, _ []byte) { flip(t, f, dataAt(1), 0x01) }, nvme.ErrAuthentication},
		{"bit flip in data, last byte", func(t *testing.T, _ *nvme.Store, f *os.File, _ []byte) { flip(t, f, dataAt(1)+tps-1, 0x80) }, nvme.ErrAuthentication},
		{"bit flip in tag", func(t *testing.T, _ *nvme.Store, f *os.File, _ []byte) { flip(t, f, recOff(1)+5, 0x10) }, nvme.ErrAuthentication},
		{"bit flip in nonce counter", func(t *testing.T, _ *nvme.Store, f *os.File, _ []byte) { flip(t, f, recOff(1)+23, 0x01) }, nvme.ErrAuthentication},
		{"bit flip in session id", func(t *testing.T, _ *nvme.Store, f *os.File, _ []byte) { flip(t, f, recOff(1)+31, 0x01) }, nvme.ErrAuthentication},
		{"page 0 moved to slot 1", func(t *testing.T, _ *nvme.Store, f *os.File, _ []byte) {
			writeAt(t, f, dataAt(1), readAt(t, f, dataAt(0), tps))
			writeAt(t, f, recOff(1), readAt(t, f, recOff(0), recordSize))
		}, nvme.ErrAuthentication},
		{"page 2 data moved to slot 1, metadata kept", func(t *testing.T, _ *nvme.Store, f *os.File, _ []byte) {
			writeAt(t, f, dataAt(1), readAt(t, f, dataAt(2), tps))
		}, nvme.ErrAuthentication},
		{"older version replayed", func(t *testing.T, _ *nvme.Store, f *os.File, old1 []byte) {
			writeAt(t, f, dataAt(1), old1[:tps])
			writeAt(t, f, recOff(1), old1[tps:])
		}, nvme.ErrAuthentication},
		{"zeroed page and metadata", func(t *testing.T, _ *nvme.Store, f *os.File, _ []byte) {
			writeAt(t, f, dataAt(1), make([]byte, tps))
			writeAt(t, f, recOff(1), make([]byte, recordSize))
		}, nvme.ErrAuthentication},
		{"zeroed data only", func(t *testing.T, _ *nvme.Store, f *os.File, _ []byte) {
			writeAt(t, f, dataAt(1), make([]byte, tps))
		}, nvme.ErrAuthentication},
		{"short read: file cut inside page 1", func(t *testing.T, _ *nvme.Store, f *os.File, _ []byte) {
			if err := f.Truncate(dataAt(1) + 100); err != nil {
				t.Fatal(err)
			}
		}, nvme.ErrTruncated},
		{"short read: file cut before the metadata", func(t *testing.T, _ *nvme.Store, f *os.File, _ []byte) {
			if err := f.Truncate(recOff(1) + 10); err != nil {
				t.Fatal(err)
			}
		}, nvme.ErrTruncated},
		{"read after Close", func(t *testing.T, s *nvme.Store, _ *os.File, _ []byte) { s.Close() }, nvme.ErrClosed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "flash.img")
			s, err := nvme.Open(path, &nvme.Options{Pages: tpages})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			for p := range int64(3) {
				if err := s.WritePage(p, page(tps, byte('a'+p))); err != nil {
					t.Fatal(err)
				}
			}
			f := fileOf(t, path)
			old1 := append(readAt(t, f, dataAt(1), tps), readAt(t, f, recOff(1), recordSize)...)
			if err := s.WritePage(1, page(tps, 'B')); err != nil {
				t.Fatal(err)
			}
			c.damage(t, s, f, old1)
			got := page(tps, 0xEE)
			err = s.ReadPage(1, got)
			if c.want == nil {
				if err != nil || !bytes.Equal(got, page(tps, 'B')) {
					t.Fatalf("ReadPage = %v", err)
				}
				return
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("ReadPage = %v; want %v", err, c.want)
			}
			if bytes.Contains(got, []byte("BBBB")) || bytes.Contains(got, []byte("bbbb")) || bytes.Contains(got, []byte("aaaa")) {
				t.Fatal("plaintext of a damaged page reached the caller")
			}
		})
	}
	t.Run("never written page", func(t *testing.T) {
		s, _ := openFile(t, tpages)
		if err := s.ReadPage(3, make([]byte, tps)); !errors.Is(err, nvme.ErrNotWritten) {
			t.Fatalf("ReadPage of a never-written page = %v; want ErrNotWritten", err)
		}
	})
}
