package nvme_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cachecrypt/cachecrypt/internal/integrity"
	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/cachecrypt/cachecrypt/kek/kektest"
	"github.com/cachecrypt/cachecrypt/nvme"
)

// memDev is an in-memory Device. Concurrent calls on disjoint ranges are
// race-free, as with a file.
type memDev []byte

func (m memDev) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(m)) {
		return 0, io.EOF
	}
	n := copy(p, m[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m memDev) WriteAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > int64(len(m)) {
		return 0, io.ErrShortWrite
	}
	return copy(m[off:], p), nil
}

func page(ps int, fill byte) []byte { return bytes.Repeat([]byte{fill}, ps) }

func openFile(t testing.TB, pages int64) (*nvme.Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "flash.img")
	s, err := nvme.Open(path, &nvme.Options{Pages: pages})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

func TestRoundTrip(t *testing.T) {
	for _, ps := range []int{512, 4096, 65536} {
		t.Run(fmt.Sprint(ps), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "flash.img")
			s, err := nvme.Open(path, &nvme.Options{PageSize: ps, Pages: 8})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if s.PageSize() != ps || s.Pages() != 8 {
				t.Fatalf("PageSize, Pages = %d, %d; want %d, 8", s.PageSize(), s.Pages(), ps)
			}
			for i := range int64(8) {
				if err := s.WritePage(i, page(ps, byte(i+1))); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.WritePage(3, page(ps, 0xAA)); err != nil { // overwrite: generation 2
				t.Fatal(err)
			}
			got := make([]byte, ps)
			for i := range int64(8) {
				want := page(ps, byte(i+1))
				if i == 3 {
					want = page(ps, 0xAA)
				}
				if err := s.ReadPage(i, got); err != nil {
					t.Fatalf("ReadPage(%d): %v", i, err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("ReadPage(%d) = %x..., want %x...", i, got[:4], want[:4])
				}
			}
			raw, _ := os.ReadFile(path)
			if bytes.Contains(raw, page(ps, 0xAA)[:64]) {
				t.Fatal("plaintext found on disk")
			}
		})
	}
}

func TestReaderAtWriterAt(t *testing.T) {
	s, _ := openFile(t, 4)
	ps := s.PageSize()
	src := make([]byte, 3*ps)
	for i := range src {
		src[i] = byte(i * 7)
	}
	if n, err := s.WriteAt(src, int64(ps)); err != nil || n != len(src) {
		t.Fatalf("WriteAt = %d, %v", n, err)
	}
	dst := make([]byte, 3*ps)
	if n, err := s.ReadAt(dst, int64(ps)); err != nil || n != len(dst) || !bytes.Equal(dst, src) {
		t.Fatalf("ReadAt = %d, %v, equal %v", n, err, bytes.Equal(dst, src))
	}
	// Page 0 was never written: ReadAt stops there with n = 0.
	if n, err := s.ReadAt(dst, 0); n != 0 || !errors.Is(err, nvme.ErrNotWritten) {
		t.Fatalf("ReadAt(0) = %d, %v; want 0, ErrNotWritten", n, err)
	}
	// Past the end: io.EOF with the pages before it.
	if n, err := s.ReadAt(dst[:2*ps], 3*int64(ps)); n != ps || err != io.EOF {
		t.Fatalf("ReadAt past end = %d, %v; want %d, io.EOF", n, err, ps)
	}
	if n, err := s.WriteAt(src[:2*ps], 3*int64(ps)); n != ps || !errors.Is(err, nvme.ErrPageRange) {
		t.Fatalf("WriteAt past end = %d, %v; want %d, ErrPageRange", n, err, ps)
	}
	for _, c := range []struct {
		off int64
		n   int
	}{{1, ps}, {0, ps - 1}, {-int64(ps), ps}} {
		if _, err := s.ReadAt(make([]byte, c.n), c.off); !errors.Is(err, nvme.ErrPageRange) {
			t.Errorf("ReadAt(len %d, off %d) = %v; want ErrPageRange", c.n, c.off, err)
		}
		if _, err := s.WriteAt(make([]byte, c.n), c.off); !errors.Is(err, nvme.ErrPageRange) {
			t.Errorf("WriteAt(len %d, off %d) = %v; want ErrPageRange", c.n, c.off, err)
		}
	}
	if err := s.WritePage(4, page(ps, 1)); !errors.Is(err, nvme.ErrPageRange) {
		t.Errorf("WritePage(4) = %v; want ErrPageRange", err)
	}
	if err := s.ReadPage(-1, page(ps, 1)); !errors.Is(err, nvme.ErrPageRange) {
		t.Errorf("ReadPage(-1) = %v; want ErrPageRange", err)
	}
	if err := s.WritePage(0, page(ps+1, 1)); !errors.Is(err, nvme.ErrPageRange) {
		t.Errorf("WritePage(short buffer) = %v; want ErrPageRange", err)
	}
}

func TestErrorsAreIntegrityValues(t *testing.T) {
	if nvme.ErrAuthentication != integrity.ErrAuthentication || nvme.ErrTruncated != integrity.ErrTruncated || nvme.ErrClosed != integrity.ErrClosed {
		t.Fatal("nvme errors are not the integrity values")
	}
}

// TestRestart: a new Open of the same file is a new session. Old pages are
// still on disk, but read as ErrNotWritten, not as corruption.
func TestRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flash.img")
	s, err := nvme.Open(path, &nvme.Options{Pages: 4})
	if err != nil {
		t.Fatal(err)
	}
	ps := s.PageSize()
	for i := range int64(4) {
		if err := s.WritePage(i, page(ps, 0x5A)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)
	s2, err := nvme.Open(path, nil) // size from the existing file
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if s2.Pages() != 4 {
		t.Fatalf("reopened Pages = %d, want 4", s2.Pages())
	}
	for i := range int64(4) {
		err := s2.ReadPage(i, make([]byte, ps))
		if !errors.Is(err, nvme.ErrNotWritten) || errors.Is(err, nvme.ErrAuthentication) {
			t.Fatalf("ReadPage(%d) after restart = %v; want ErrNotWritten only", i, err)
		}
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(before, after) {
		t.Fatal("Open rewrote old pages; it should only forget them")
	}
	// The new session writes and reads its own pages normally.
	if err := s2.WritePage(2, page(ps, 7)); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, ps)
	if err := s2.ReadPage(2, got); err != nil || !bytes.Equal(got, page(ps, 7)) {
		t.Fatalf("ReadPage after rewrite = %v", err)
	}
}

// TestTwoSessions: a page written by another live session on the same file
// is not readable in this one.
func TestTwoSessions(t *testing.T) {
	a, path := openFile(t, 2)
	b, err := nvme.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.WritePage(0, page(a.PageSize(), 1)); err != nil {
		t.Fatal(err)
	}
	if err := a.ReadPage(0, make([]byte, a.PageSize())); !errors.Is(err, nvme.ErrNotWritten) {
		t.Fatalf("page of another session = %v; want ErrNotWritten", err)
	}
}

func TestCheckKEK(t *testing.T) {
	mmk, err := kek.NewMMK("platform")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []kek.Descriptor{{}, mmk.Descriptor()} {
		if err := nvme.CheckKEK(d); err != nil {
			t.Errorf("CheckKEK(%v) = %v; want nil", d, err)
		}
	}
	for _, d := range []kek.Descriptor{
		{Kind: kek.KindKeyVault, KeyID: "https://v.vault.azure.net/keys/k/1", Algorithm: "RSA-OAEP-256"},
		{Kind: kek.KindPKCS11, KeyID: "pkcs11:token=t;object=k", Algorithm: "RSA-OAEP-256"},
		kektest.New("x").Descriptor(),
	} {
		err := nvme.CheckKEK(d)
		if !errors.Is(err, kek.ErrUnsupported) {
			t.Fatalf("CheckKEK(%v) = %v; want kek.ErrUnsupported", d, err)
		}
		for _, want := range []string{"nvme.CheckKEK", "ephemeral", "MMK", d.KeyID} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("CheckKEK error %q does not say %q", err, want)
			}
		}
	}
	dir := t.TempDir()
	if _, err := nvme.Open(filepath.Join(dir, "a"), &nvme.Options{Pages: 1, KEK: kektest.New("cmk")}); !errors.Is(err, kek.ErrUnsupported) {
		t.Fatalf("Open with a non-MMK KEK = %v; want kek.ErrUnsupported", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "a")); !errors.Is(err, os.ErrNotExist) {
		t.Error("Open refused the KEK but created the file")
	}
	s, err := nvme.Open(filepath.Join(dir, "b"), &nvme.Options{Pages: 1, KEK: mmk})
	if err != nil {
		t.Fatalf("Open with the MMK = %v", err)
	}
	s.Close()
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	for _, o := range []nvme.Options{{PageSize: 1000, Pages: 1}, {PageSize: 256, Pages: 1}, {PageSize: 2 << 20, Pages: 1}, {Pages: -1}} {
		if _, err := nvme.Open(filepath.Join(dir, "x"), &o); err == nil || !strings.HasPrefix(err.Error(), "nvme.Open:") {
			t.Errorf("Open(%+v) = %v; want an nvme.Open error", o, err)
		}
	}
	if _, err := nvme.Open(filepath.Join(dir, "empty"), nil); err == nil || !strings.Contains(err.Error(), "Options.Pages") {
		t.Errorf("Open of an empty file without Pages = %v; want a hint to set Options.Pages", err)
	}
	if _, err := nvme.OpenDevice(make(memDev, 4096*3), 4096*3, &nvme.Options{Pages: 3}); err == nil {
		t.Error("OpenDevice on a device too small succeeded")
	}
	s, err := nvme.OpenDevice(make(memDev, 4096*3), 4096*3, nil)
	if err != nil || s.Pages() != 1 {
		t.Fatalf("OpenDevice sized from the device = %v, %v; want 1 page", s, err)
	}
}

func TestOpenRefusesForeignFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dump.rdb")
	data := append([]byte("REDIS0011"), make([]byte, 100)...) // smaller than the store: must not be grown
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := nvme.Open(path, &nvme.Options{Pages: 4})
	if err == nil || !strings.Contains(err.Error(), "not an nvme page store") {
		t.Fatalf("Open of a foreign file = %v; want a refusal", err)
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, data) {
		t.Fatal("Open changed a foreign file")
	}
}

func TestCloseThenUse(t *testing.T) {
	s, _ := openFile(t, 2)
	ps := s.PageSize()
	if err := s.WritePage(0, page(ps, 1)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	if err := s.ReadPage(0, make([]byte, ps)); !errors.Is(err, nvme.ErrClosed) {
		t.Errorf("ReadPage after Close = %v", err)
	}
	if err := s.WritePage(0, page(ps, 1)); !errors.Is(err, nvme.ErrClosed) {
		t.Errorf("WritePage after Close = %v", err)
	}
	if _, err := s.ReadAt(make([]byte, ps), 0); !errors.Is(err, nvme.ErrClosed) {
		t.Errorf("ReadAt after Close = %v", err)
	}
}

// failDev fails writes at offsets from failFrom up to failTo (0: no end).
type failDev struct {
	memDev
	failFrom, failTo int64
}

func (f *failDev) WriteAt(p []byte, off int64) (int, error) {
	if off >= f.failFrom && (f.failTo == 0 || off < f.failTo) {
		return 0, errors.New("injected device error")
	}
	return f.memDev.WriteAt(p, off)
}

// TestFailedWrite: a write that fails on the device leaves the page
// "not written", never an authentication error or stale plaintext.
func TestFailedWrite(t *testing.T) {
	dev := &failDev{memDev: make(memDev, 4096*4), failFrom: 1 << 62}
	s, err := nvme.OpenDevice(dev, int64(len(dev.memDev)), &nvme.Options{Pages: 2})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.WritePage(1, page(4096, 1)); err != nil {
		t.Fatal(err)
	}
	dev.failFrom = 4096 * 2 // the data region: metadata writes succeed, data writes fail
	if err := s.WritePage(1, page(4096, 2)); err == nil || !strings.Contains(err.Error(), "injected") {
		t.Fatalf("WritePage on a failing device = %v", err)
	}
	if err := s.ReadPage(1, make([]byte, 4096)); !errors.Is(err, nvme.ErrNotWritten) {
		t.Fatalf("ReadPage after a failed write = %v; want ErrNotWritten", err)
	}
}

// TestFailedWriteNeverLowersTheGeneration: after a write that fails (on the
// data or on the metadata), the page's next generation is still above every
// generation it had, so an older ciphertext of the page put back (data and
// record, as written by an earlier write of this session) fails with
// ErrAuthentication instead of returning stale plaintext (issue 14, item 6).
func TestFailedWriteNeverLowersTheGeneration(t *testing.T) {
	const ps = 4096
	// 2 pages of 4096 bytes: header [0, 4096), metadata [4096, 8192),
	// data from 8192; page 1's data at 12288, its record at 4096+32.
	const rec, data = ps + 32, 3 * ps
	for name, fail := range map[string][2]int64{
		"data write fails":     {2 * ps, 0},
		"metadata write fails": {ps, 2 * ps},
	} {
		t.Run(name, func(t *testing.T) {
			dev := &failDev{memDev: make(memDev, ps*4), failFrom: 1 << 62}
			s, err := nvme.OpenDevice(dev, int64(len(dev.memDev)), &nvme.Options{Pages: 2})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if err := s.WritePage(1, page(ps, 'A')); err != nil { // generation 1
				t.Fatal(err)
			}
			staleRec := bytes.Clone(dev.memDev[rec : rec+32])
			staleData := bytes.Clone(dev.memDev[data : data+ps])
			if err := s.WritePage(1, page(ps, 'B')); err != nil { // generation 2
				t.Fatal(err)
			}
			dev.failFrom, dev.failTo = fail[0], fail[1]
			if err := s.WritePage(1, page(ps, 'C')); err == nil {
				t.Fatal("WritePage on a failing device succeeded")
			}
			if err := s.ReadPage(1, make([]byte, ps)); !errors.Is(err, nvme.ErrNotWritten) {
				t.Fatalf("ReadPage after a failed write = %v; want ErrNotWritten", err)
			}
			dev.failFrom, dev.failTo = 1<<62, 0
			if err := s.WritePage(1, page(ps, 'D')); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, ps)
			if err := s.ReadPage(1, got); err != nil || got[0] != 'D' {
				t.Fatalf("ReadPage = %q, %v; want the last write", got[:1], err)
			}

			copy(dev.memDev[rec:], staleRec) // the attacker puts generation 1 back
			copy(dev.memDev[data:], staleData)
			err = s.ReadPage(1, got)
			if !errors.Is(err, nvme.ErrAuthentication) {
				t.Fatalf("ReadPage of a replayed older page = %v; want ErrAuthentication", err)
			}
			if bytes.Contains(got, []byte("A")) {
				t.Fatal("stale plaintext returned")
			}
		})
	}
}
