package nvme

import (
	"errors"
	"fmt"
	"sync"
)

var (
	// ErrNotFound reports a key that Spill does not hold.
	ErrNotFound = errors.New("nvme: key not in the spill store")

	// ErrFull reports a Put that needs more free pages than the store has.
	ErrFull = errors.New("nvme: spill store full")
)

// Spill keeps values of any size under string keys in the pages of a Store:
// the piece a Flash-tier cache uses to keep cold values on NVMe instead of
// RAM. A value takes ceil(len/PageSize) pages, not necessarily adjacent; a
// value shorter than a page takes a whole page, so pick a page size near the
// typical cold value (down to MinPageSize). Freed pages go on a free list and
// are reused before fresh ones. The index (key -> pages and length) lives in
// memory only, like the store's key.
//
// Spill is safe for concurrent use, and no lock is held during I/O. Each Put
// and Delete takes effect atomically; of concurrent ones on the same key, the
// last to finish wins. A Get concurrent with them returns the old or the new
// value, whole, never a mix.
type Spill struct {
	s     *Store
	pages sync.Pool // *[]byte of one page, for partial pages

	mu    sync.RWMutex
	index map[string]*extent
	free  []int64 // free pages, reused last-in first-out
	fresh int64   // next never-allocated page
}

type extent struct {
	pages []int64
	n     int // value length in bytes
}

// NewSpill returns an empty spill store using every page of s. The Spill
// must be the only writer of s.
func NewSpill(s *Store) *Spill {
	return &Spill{s: s, index: make(map[string]*extent)}
}

// Len returns the number of keys held.
func (sp *Spill) Len() int {
	sp.mu.RLock()
	defer sp.mu.RUnlock()
	return len(sp.index)
}

// FreePages returns the number of pages not holding a value.
func (sp *Spill) FreePages() int64 {
	sp.mu.RLock()
	defer sp.mu.RUnlock()
	return int64(len(sp.free)) + sp.s.Pages() - sp.fresh
}

// Put stores value under key, replacing any earlier value. It does not
// retain value. If it fails, the earlier value, if any, is kept. A store
// without enough free pages fails with ErrFull.
func (sp *Spill) Put(key string, value []byte) error {
	ps := sp.s.PageSize()
	e := &extent{n: len(value)}
	var err error
	if e.pages, err = sp.alloc((len(value) + ps - 1) / ps); err != nil {
		return fmt.Errorf("nvme.Spill.Put: key of %d bytes, value of %d bytes: %w", len(key), len(value), err)
	}
	if err := sp.writePages(e.pages, value); err != nil {
		sp.release(e.pages)
		return fmt.Errorf("nvme.Spill.Put: %w", err)
	}
	sp.mu.Lock()
	old := sp.index[key]
	sp.index[key] = e
	sp.mu.Unlock()
	if old != nil {
		sp.release(old.pages)
	}
	return nil
}

func (sp *Spill) writePages(pages []int64, value []byte) error {
	ps := sp.s.PageSize()
	for i, page := range pages {
		chunk := value[i*ps : min(len(value), (i+1)*ps)]
		if len(chunk) < ps { // last page: zero-padded copy
			buf := sp.page()
			defer sp.pages.Put(buf)
			clear((*buf)[copy(*buf, chunk):])
			chunk = *buf
		}
		if err := sp.s.WritePage(page, chunk); err != nil {
			return err
		}
	}
	return nil
}

// page returns a page-sized buffer from the pool.
func (sp *Spill) page() *[]byte {
	if b, ok := sp.pages.Get().(*[]byte); ok {
		return b
	}
	b := make([]byte, sp.s.PageSize())
	return &b
}

// Get returns a copy of the value stored under key, or an error matching
// ErrNotFound. Damaged pages fail with ErrAuthentication and never return
// plaintext.
func (sp *Spill) Get(key string) ([]byte, error) {
	for {
		sp.mu.RLock()
		e := sp.index[key]
		sp.mu.RUnlock()
		if e == nil {
			return nil, fmt.Errorf("nvme.Spill.Get: %w", ErrNotFound)
		}
		v, err := sp.readPages(e)
		sp.mu.RLock()
		same := sp.index[key] == e
		sp.mu.RUnlock()
		// Pages are released only after their extent leaves the index,
		// so an extent still current after the reads was read whole.
		if same {
			if err != nil {
				return nil, fmt.Errorf("nvme.Spill.Get: %w", err)
			}
			return v, nil
		}
	}
}

// readPages reads a value into a buffer of exactly its length: whole pages
// straight into it, the last partial page through a pooled page.
func (sp *Spill) readPages(e *extent) ([]byte, error) {
	ps := sp.s.PageSize()
	v := make([]byte, e.n)
	for i, page := range e.pages {
		if (i+1)*ps <= e.n {
			if err := sp.s.ReadPage(page, v[i*ps:(i+1)*ps]); err != nil {
				return nil, err
			}
			continue
		}
		buf := sp.page()
		err := sp.s.ReadPage(page, *buf)
		copy(v[i*ps:], *buf)
		clear(*buf)
		sp.pages.Put(buf)
		if err != nil {
			return nil, err
		}
	}
	return v, nil
}

// Delete removes key and frees its pages. Deleting a missing key fails with
// ErrNotFound.
func (sp *Spill) Delete(key string) error {
	sp.mu.Lock()
	e := sp.index[key]
	delete(sp.index, key)
	sp.mu.Unlock()
	if e == nil {
		return fmt.Errorf("nvme.Spill.Delete: %w", ErrNotFound)
	}
	sp.release(e.pages)
	return nil
}

func (sp *Spill) alloc(n int) ([]int64, error) {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	avail := int64(len(sp.free)) + sp.s.Pages() - sp.fresh
	if int64(n) > avail {
		return nil, fmt.Errorf("needs %d pages, %d free: %w", n, avail, ErrFull)
	}
	pages := make([]int64, n)
	for i := range pages {
		if k := len(sp.free); k > 0 {
			pages[i] = sp.free[k-1]
			sp.free = sp.free[:k-1]
		} else {
			pages[i] = sp.fresh
			sp.fresh++
		}
	}
	return pages, nil
}

func (sp *Spill) release(pages []int64) {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	sp.free = append(sp.free, pages...)
}
