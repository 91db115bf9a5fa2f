package nvme_test

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/cachecrypt/cachecrypt/nvme"
)

func newSpill(t testing.TB, pageSize int, pages int64) (*nvme.Spill, *nvme.Store) {
	t.Helper()
	size := int64(pageSize) * (pages + 2 + pages*32/int64(pageSize))
	s, err := nvme.OpenDevice(make(memDev, size), size, &nvme.Options{PageSize: pageSize, Pages: pages})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return nvme.NewSpill(s), s
}

func TestSpill(t *testing.T) {
	sp, s := newSpill(t, 512, 16)
	vals := map[string][]byte{
		"empty": {},
		"small": []byte("cold value"),
		"page":  bytes.Repeat([]byte{1}, 512),
		"large": bytes.Repeat([]byte("0123456789"), 200), // 2000 bytes: 4 pages
	}
	for k, v := range vals {
		if err := sp.Put(k, v); err != nil {
			t.Fatal(err)
		}
	}
	if sp.Len() != 4 || sp.FreePages() != 16-6 {
		t.Fatalf("Len, FreePages = %d, %d; want 4, 10", sp.Len(), sp.FreePages())
	}
	for k, v := range vals {
		got, err := sp.Get(k)
		if err != nil || !bytes.Equal(got, v) {
			t.Fatalf("Get(%q) = %d bytes, %v; want %d bytes", k, len(got), err, len(v))
		}
	}
	// Replace a large value with a small one: pages return to the free list.
	if err := sp.Put("large", []byte("now small")); err != nil {
		t.Fatal(err)
	}
	if got, _ := sp.Get("large"); string(got) != "now small" || sp.FreePages() != 13 {
		t.Fatalf("after replace: %q, %d free pages; want now small, 13", got, sp.FreePages())
	}
	if err := sp.Delete("page"); err != nil {
		t.Fatal(err)
	}
	if _, err := sp.Get("page"); !errors.Is(err, nvme.ErrNotFound) {
		t.Fatalf("Get after Delete = %v; want ErrNotFound", err)
	}
	if err := sp.Delete("page"); !errors.Is(err, nvme.ErrNotFound) {
		t.Fatalf("second Delete = %v; want ErrNotFound", err)
	}
	// Full: a value needing more pages than free fails, the old value stays.
	if err := sp.Put("small", make([]byte, 512*15)); !errors.Is(err, nvme.ErrFull) {
		t.Fatalf("Put beyond capacity = %v; want ErrFull", err)
	}
	if got, _ := sp.Get("small"); string(got) != "cold value" {
		t.Fatalf("failed Put lost the old value: %q", got)
	}
	// Fill exactly, then free everything.
	if err := sp.Put("fill", make([]byte, 512*sp.FreePages())); err != nil {
		t.Fatal(err)
	}
	if sp.FreePages() != 0 {
		t.Fatalf("FreePages = %d after filling", sp.FreePages())
	}
	for _, k := range []string{"fill", "small", "empty", "large"} {
		if err := sp.Delete(k); err != nil {
			t.Fatal(err)
		}
	}
	if sp.FreePages() != 16 || sp.Len() != 0 {
		t.Fatalf("after deleting everything: %d free, %d keys", sp.FreePages(), sp.Len())
	}
	s.Close()
	if _, err := sp.Get("x"); !errors.Is(err, nvme.ErrNotFound) {
		t.Fatalf("Get of a missing key after Close = %v", err)
	}
	if err := sp.Put("x", []byte("v")); !errors.Is(err, nvme.ErrClosed) {
		t.Fatalf("Put after Close = %v; want ErrClosed", err)
	}
	if sp.FreePages() != 16 {
		t.Fatal("failed Put leaked pages")
	}
}

// TestSpillTampered: a damaged page of a value fails Get with
// ErrAuthentication and returns no bytes.
func TestSpillTampered(t *testing.T) {
	dev := make(memDev, 4096*8)
	s, err := nvme.OpenDevice(dev, int64(len(dev)), &nvme.Options{PageSize: 512, Pages: 4})
	if err != nil {
		t.Fatal(err)
	}
	sp := nvme.NewSpill(s)
	if err := sp.Put("k", bytes.Repeat([]byte("v"), 1500)); err != nil {
		t.Fatal(err)
	}
	dev[2*512+512+7] ^= 1 // data page 1: header block, one metadata block, page 0, page 1
	got, err := sp.Get("k")
	if !errors.Is(err, nvme.ErrAuthentication) || got != nil {
		t.Fatalf("Get of a damaged value = %d bytes, %v; want nothing, ErrAuthentication", len(got), err)
	}
}

// TestSpillConcurrent: writers replace values while readers read them
// (run with -race). A Get returns a whole value written for its key.
func TestSpillConcurrent(t *testing.T) {
	sp, _ := newSpill(t, 512, 256)
	value := func(key, round int) []byte {
		return bytes.Repeat([]byte(fmt.Sprintf("%d/%d;", key, round)), 50+key*37+round%7*90)
	}
	var wg sync.WaitGroup
	for k := range 4 {
		wg.Go(func() {
			for r := range 100 {
				if err := sp.Put(fmt.Sprint(k), value(k, r)); err != nil {
					t.Error(err)
					return
				}
			}
		})
		wg.Go(func() {
			for range 100 {
				v, err := sp.Get(fmt.Sprint(k))
				if errors.Is(err, nvme.ErrNotFound) {
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				var r int
				fmt.Sscanf(string(v), fmt.Sprintf("%d/%%d;", k), &r)
				if !bytes.Equal(v, value(k, r)) {
					t.Errorf("Get(%d) returned a value that was never written", k)
					return
				}
			}
		})
	}
	wg.Wait()
}

// FuzzSpill runs random Put/Get/Delete against a model map.
func FuzzSpill(f *testing.F) {
	f.Add([]byte{0, 1, 10, 1, 1, 0, 2, 1, 1, 1})
	f.Add([]byte{0, 2, 200, 0, 3, 255, 2, 3, 1, 2, 1, 3})
	f.Fuzz(func(t *testing.T, ops []byte) {
		sp, _ := newSpill(t, 512, 8)
		model := map[string][]byte{}
		rng := rand.New(rand.NewPCG(uint64(len(ops)), 1))
		for i := 0; i+2 < len(ops); i += 3 {
			key := fmt.Sprint(ops[i+1] % 5)
			switch ops[i] % 3 {
			case 0:
				v := make([]byte, int(ops[i+2])*17)
				for j := range v {
					v[j] = byte(rng.Uint32())
				}
				err := sp.Put(key, v)
				if errors.Is(err, nvme.ErrFull) {
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				model[key] = v
			case 1:
				got, err := sp.Get(key)
				want, ok := model[key]
				if !ok {
					if !errors.Is(err, nvme.ErrNotFound) {
						t.Fatalf("Get(%s) of a missing key = %v", key, err)
					}
					continue
				}
				if err != nil || !bytes.Equal(got, want) {
					t.Fatalf("Get(%s) = %v, equal %v", key, err, bytes.Equal(got, want))
				}
			case 2:
				err := sp.Delete(key)
				if _, ok := model[key]; ok != (err == nil) {
					t.Fatalf("Delete(%s) = %v, model has it: %v", key, err, ok)
				}
				delete(model, key)
			}
		}
		used := int64(0)
		for _, v := range model {
			used += int64(len(v)+511) / 512
		}
		if sp.FreePages() != 8-used || sp.Len() != len(model) {
			t.Fatalf("FreePages %d, Len %d; model uses %d pages for %d keys", sp.FreePages(), sp.Len(), used, len(model))
		}
	})
}

// FuzzStore runs random page writes, reads, whole-range I/O and damage
// against a model of page contents.
func FuzzStore(f *testing.F) {
	f.Add([]byte{0, 1, 7, 1, 1, 0, 3, 1, 5, 1, 1, 0})
	f.Add([]byte{2, 0, 9, 3, 0, 0, 4, 2, 1, 1, 2, 0})
	f.Fuzz(func(t *testing.T, ops []byte) {
		const ps, pages = 512, 4
		dev := make(memDev, ps*(pages+2))
		s, err := nvme.OpenDevice(dev, int64(len(dev)), &nvme.Options{PageSize: ps, Pages: pages})
		if err != nil {
			t.Fatal(err)
		}
		model := map[int64][]byte{}       // last plaintext written per page
		flips := map[int64]map[int]byte{} // per page: offset -> XOR applied under the store
		buf := make([]byte, 2*ps)
		for i := 0; i+2 < len(ops); i += 3 {
			p := int64(ops[i+1] % pages)
			switch ops[i] % 5 {
			case 0: // WritePage
				v := page(ps, ops[i+2])
				if err := s.WritePage(p, v); err != nil {
					t.Fatal(err)
				}
				model[p], flips[p] = v, nil
			case 1: // ReadPage
				err := s.ReadPage(p, buf[:ps])
				checkRead(t, p, err, buf[:ps], model, flips[p])
			case 2: // WriteAt two pages
				p = min(p, pages-2)
				v := append(page(ps, ops[i+2]), page(ps, ops[i+2]+1)...)
				if n, err := s.WriteAt(v, p*ps); err != nil || n != 2*ps {
					t.Fatal(n, err)
				}
				model[p], model[p+1] = v[:ps], v[ps:]
				flips[p], flips[p+1] = nil, nil
			case 3: // ReadAt one page
				_, err := s.ReadAt(buf[:ps], p*ps)
				checkRead(t, p, err, buf[:ps], model, flips[p])
			case 4: // flip a bit of a written page's ciphertext
				if _, ok := model[p]; ok {
					off, mask := int(ops[i+2]), byte(1)<<(ops[i+2]%8)
					dev[(2+p)*ps+int64(off)] ^= mask
					if flips[p] == nil {
						flips[p] = map[int]byte{}
					}
					if flips[p][off] ^= mask; flips[p][off] == 0 {
						delete(flips[p], off) // flipped back
					}
				}
			}
		}
	})
}

func checkRead(t *testing.T, p int64, err error, got []byte, model map[int64][]byte, flips map[int]byte) {
	t.Helper()
	want, ok := model[p]
	switch {
	case !ok:
		if !errors.Is(err, nvme.ErrNotWritten) {
			t.Fatalf("read of unwritten page %d = %v", p, err)
		}
	case len(flips) > 0:
		if !errors.Is(err, nvme.ErrAuthentication) {
			t.Fatalf("read of damaged page %d = %v; want ErrAuthentication", p, err)
		}
	default:
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("read of page %d = %v, equal %v", p, err, bytes.Equal(got, want))
		}
	}
}
