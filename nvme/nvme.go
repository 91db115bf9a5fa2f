// Package nvme is the encrypted page store of the Flash tier: the keys and
// values a cache keeps on transient NVMe flash, sealed page by page with
// AES-256-GCM.
//
// The store is ephemeral by design, like the Flash tier of the managed service
// it mirrors. Open draws a fresh 256-bit key from crypto/rand and keeps it only
// in memory: it is never written anywhere, not even wrapped by a KEK. Close,
// or the end of the process, destroys it. Pages written by an earlier session
// (an earlier Open of the same file) are therefore unreadable, and read as
// ErrNotWritten rather than as corruption. For the same reason the disk takes
// no customer-managed key: see CheckKEK.
//
// Every write of a page seals it under a nonce drawn from a session-wide
// counter, so no nonce ever repeats, with the page number and the page's
// generation (kept in memory) as associated data. The generation only goes
// up during a session, a failed write included. A flipped bit, a page copied
// to another slot and an older version of the same page replayed (from this
// session) all fail with ErrAuthentication. The on-disk layout is specified in FORMAT.md,
// section "Pages (NVMe flash)".
//
// Spill, on top of a Store, keeps values of any size under string keys with a
// free list of pages: the piece a Flash-tier cache needs to push cold values
// out of RAM.
package nvme

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"

	"github.com/cachecrypt/cachecrypt/internal/integrity"
	"github.com/cachecrypt/cachecrypt/kek"
)

// DefaultPageSize is the page size used when Options.PageSize is zero.
const DefaultPageSize = 4096

// Page size limits. A page size must be a power of two in this range.
const (
	MinPageSize = 512
	MaxPageSize = 1 << 20
)

// Errors returned by the store. ErrAuthentication, ErrTruncated and ErrClosed
// are the values of package internal/integrity, shared by every cachecrypt
// format, so errors.Is matches them whichever package the caller imported.
var (
	// ErrAuthentication reports a page that failed AES-GCM authentication:
	// a flipped bit, a page copied from another slot, an older version of
	// the page replayed, or erased metadata. No plaintext is returned.
	ErrAuthentication = integrity.ErrAuthentication

	// ErrTruncated reports a device that ended before the page: the file
	// was cut short under the store.
	ErrTruncated = integrity.ErrTruncated

	// ErrClosed reports use of a Store or Spill after Close.
	ErrClosed = integrity.ErrClosed

	// ErrNotWritten reports a page that was not written in this session:
	// never written, written by an earlier session (whose key is gone), or
	// lost by a failed write. It is not corruption.
	ErrNotWritten = errors.New("nvme: page not written in this session")

	// ErrPageRange reports a page number outside the store, or an offset or
	// length that is not a whole number of pages.
	ErrPageRange = errors.New("nvme: page out of range or not page-aligned")
)

// A Device is what a Store reads and writes: an *os.File on a regular file
// or a block device, or anything else with positioned reads and writes that
// are safe for concurrent use on disjoint ranges.
type Device interface {
	io.ReaderAt
	io.WriterAt
}

// Options configure a Store. The zero value is valid for OpenDevice and for
// Open of an existing file or block device.
type Options struct {
	// PageSize is the size of a page in bytes: a power of two from
	// MinPageSize to MaxPageSize. Zero means DefaultPageSize.
	PageSize int

	// Pages is the number of pages. Zero means as many as fit in the
	// device. Open grows a regular file that is too small.
	Pages int64

	// KEK may only be nil or the platform-managed key (a KEK whose
	// Descriptor has kind kek.KindMMK, which is then not used: the page
	// key is never wrapped). Anything else fails with kek.ErrUnsupported;
	// see CheckKEK.
	KEK kek.KEK
}

// CheckKEK reports whether a key-encryption key may be configured for the
// NVMe flash disk. Only the platform-managed key (kind kek.KindMMK, or the
// zero Descriptor meaning "default") is allowed; any customer-managed key
// fails with an error matching kek.ErrUnsupported. The flash disk holds
// ephemeral data under a key that lives only in memory and is never wrapped,
// so a customer-managed key would protect nothing and could revoke nothing.
func CheckKEK(d kek.Descriptor) error {
	if d == (kek.Descriptor{}) || d.Kind == kek.KindMMK {
		return nil
	}
	return fmt.Errorf("nvme.CheckKEK: %w", unsupported(d.String()))
}

func unsupported(what string) error {
	return fmt.Errorf("%s cannot protect the NVMe flash disk: its data is ephemeral and its page key lives only in memory, is never wrapped and dies with the process, so only the platform-managed key (MMK) is supported; remove this key from the flash disk's configuration and leave the default: %w", what, kek.ErrUnsupported)
}

func checkOptionKEK(k kek.KEK) error {
	if k == nil {
		return nil
	}
	if d, ok := k.(interface{ Descriptor() kek.Descriptor }); ok && d.Descriptor().Kind == kek.KindMMK {
		return nil
	}
	if d, ok := k.(interface{ Descriptor() kek.Descriptor }); ok {
		return fmt.Errorf("Options.KEK: %w", unsupported(d.Descriptor().String()))
	}
	return fmt.Errorf("Options.KEK: %w", unsupported(fmt.Sprintf("a %T", k)))
}

// Store is an encrypted page store over a Device. Its methods are safe for
// concurrent use. Calls on different pages run in parallel (pages share 1024
// striped locks, so two pages whose numbers are equal modulo 1024 take turns);
// calls on the same page are serialized, so a read that overlaps a write of the same page
// returns either the old or the new contents, whole, and never a spurious
// error.
type Store struct {
	dev      Device
	name     string   // path, or "device", for errors
	file     *os.File // non-nil when the store owns the device (Open)
	lay      layout
	aead     cipher.AEAD
	key      []byte // zeroed by Close
	session  uint64 // random id of this session, in memory only
	counter  atomic.Uint64
	scratch  sync.Pool // *scratch
	stripes  []stripe
	gens     []uint64 // per page: last generation sealed, | lost if that write failed; 0 = never written; guarded by the page's stripe
	closed   bool     // guarded by all stripes: Close holds every one
	closeMu  sync.Mutex
	closeErr error
}

var (
	_ io.ReaderAt = (*Store)(nil)
	_ io.WriterAt = (*Store)(nil)
	_ Device      = (*os.File)(nil)
)

type stripe struct {
	sync.RWMutex
	_ [40]byte // keep stripes on separate cache lines
}

// lost marks, in Store.gens, a page whose last write failed: it reads as
// ErrNotWritten, and the generation below the bit stays, so the next write
// seals a higher one. A generation never goes down in a session, whatever
// fails, so no older ciphertext of the page ever authenticates again.
const lost = 1 << 63

// nonceBlock is how many counter values a scratch buffer reserves at once
// from the session counter, so parallel writers do not contend on it.
const nonceBlock = 64

type scratch struct {
	buf        []byte // pageSize ciphertext + tag
	rec        [recordSize]byte
	nonce      [nonceSize]byte
	ad         [adSize]byte
	next, last uint64 // reserved nonce counters [next, last)
}

// Open opens or creates the file or block device at path as a page store,
// with a fresh key. Whatever the store held before is discarded: earlier
// pages read as ErrNotWritten. A device that is neither blank nor a page
// store is refused, so a mistyped path cannot clobber another file. A
// regular file is grown to hold opts.Pages pages; a block device must be
// large enough. The store owns the file and closes it on Close.
func Open(path string, opts *Options) (*Store, error) {
	o, err := opts.normalize()
	if err != nil {
		return nil, fmt.Errorf("nvme.Open: %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("nvme.Open: %w", err)
	}
	err = checkForeign(f)
	var size int64
	if err == nil {
		size, err = f.Seek(0, io.SeekEnd)
	}
	if err == nil && o.Pages > 0 {
		need := newLayout(o.PageSize, o.Pages).size()
		if size < need {
			if st, serr := f.Stat(); serr == nil && st.Mode().IsRegular() {
				err = f.Truncate(need)
				size = need
			}
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("nvme.Open: %s: %w", path, err)
	}
	s, err := newStore(f, size, o)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("nvme.Open: %s: %w", path, err)
	}
	s.file, s.name = f, path
	return s, nil
}

// OpenDevice opens a page store over dev, whose usable size is size bytes,
// with a fresh key. The caller keeps ownership of dev: Close does not close
// it.
func OpenDevice(dev Device, size int64, opts *Options) (*Store, error) {
	o, err := opts.normalize()
	if err == nil {
		var s *Store
		s, err = newStore(dev, size, o)
		if err == nil {
			return s, nil
		}
	}
	return nil, fmt.Errorf("nvme.OpenDevice: %w", err)
}

func (o *Options) normalize() (Options, error) {
	var n Options
	if o != nil {
		n = *o
	}
	if err := checkOptionKEK(n.KEK); err != nil {
		return n, err
	}
	if n.PageSize == 0 {
		n.PageSize = DefaultPageSize
	}
	if n.PageSize < MinPageSize || n.PageSize > MaxPageSize || n.PageSize&(n.PageSize-1) != 0 {
		return n, fmt.Errorf("page size %d is not a power of two from %d to %d", n.PageSize, MinPageSize, MaxPageSize)
	}
	if n.Pages < 0 || n.Pages > maxPages {
		return n, fmt.Errorf("page count %d is not from 0 to %d", n.Pages, int64(maxPages))
	}
	return n, nil
}

func newStore(dev Device, size int64, o Options) (*Store, error) {
	lay, err := fitLayout(o.PageSize, o.Pages, size)
	if err != nil {
		return nil, err
	}
	key := make([]byte, 32)
	var sid [8]byte
	rand.Read(key) // never fails (crypto/rand panics rather than return short)
	rand.Read(sid[:])
	return newStoreKey(dev, lay, key, binary.BigEndian.Uint64(sid[:]))
}

// checkForeign refuses a device whose first bytes are neither blank nor a
// page store header, so a mistyped path never clobbers another file.
func checkForeign(dev Device) error {
	h := make([]byte, headerSize)
	n, err := dev.ReadAt(h, 0)
	if err != nil && n < len(h) && !errors.Is(err, io.EOF) {
		return fmt.Errorf("read header: %w", err)
	}
	if string(h[:len(magic)]) == magic || bytes.Count(h[:n], []byte{0}) == n {
		return nil
	}
	return errors.New("device holds data that is not an nvme page store (no " + magic + " header); refusing to overwrite it: point at a dedicated file or device, or zero its first block")
}

// newStoreKey builds a store with the given key and session id; tests use it
// to check the committed test vector.
func newStoreKey(dev Device, lay layout, key []byte, session uint64) (*Store, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	if err := checkForeign(dev); err != nil {
		return nil, err
	}
	if _, err := dev.WriteAt(lay.header(), 0); err != nil {
		return nil, fmt.Errorf("write header: %w", err)
	}
	nstripes := min(int64(1024), lay.pages)
	s := &Store{
		dev:     dev,
		name:    "device",
		lay:     lay,
		aead:    aead,
		key:     key,
		session: session,
		stripes: make([]stripe, nstripes),
		gens:    make([]uint64, lay.pages),
	}
	s.scratch.New = func() any { return &scratch{buf: make([]byte, lay.pageSize+tagSize)} }
	return s, nil
}

// PageSize returns the size of a page in bytes.
func (s *Store) PageSize() int { return s.lay.pageSize }

// Pages returns the number of pages in the store.
func (s *Store) Pages() int64 { return s.lay.pages }

func (s *Store) stripe(page int64) *stripe { return &s.stripes[page%int64(len(s.stripes))] }

func (s *Store) checkPage(op string, page int64, n int) error {
	if page < 0 || page >= s.lay.pages {
		return fmt.Errorf("nvme.%s: %s: page %d outside the store's %d pages: %w", op, s.name, page, s.lay.pages, ErrPageRange)
	}
	if n != s.lay.pageSize {
		return fmt.Errorf("nvme.%s: %s: buffer of %d bytes, want exactly one page of %d: %w", op, s.name, n, s.lay.pageSize, ErrPageRange)
	}
	return nil
}

// WritePage seals p, which must be exactly one page long, and writes it as
// page number page. It does not retain p. Concurrent writes to different
// pages run in parallel; writes to the same page are serialized, and the last
// to finish is the one ReadPage returns. If the device write fails the page
// reads as ErrNotWritten afterwards; its generation still counts the failed
// write, so no earlier version of the page can be replayed.
func (s *Store) WritePage(page int64, p []byte) error {
	if err := s.checkPage("WritePage", page, len(p)); err != nil {
		return err
	}
	sc := s.scratch.Get().(*scratch)
	defer s.scratch.Put(sc)
	st := s.stripe(page)
	st.Lock()
	defer st.Unlock()
	if s.closed {
		return fmt.Errorf("nvme.WritePage: %s: page %d: %w", s.name, page, ErrClosed)
	}
	gen := s.gens[page]&^lost + 1
	ctr := s.nextCounter(sc)
	s.gens[page] = gen | lost // until both writes land
	sealed := s.aead.Seal(sc.buf[:0], sc.setNonce(ctr), p, sc.setAD(s.session, page, gen))
	sc.setRecord(sealed[s.lay.pageSize:], ctr, s.session)
	if _, err := s.dev.WriteAt(sealed[:s.lay.pageSize], s.lay.dataOffset(page)); err != nil {
		return fmt.Errorf("nvme.WritePage: %s: page %d: write data: %w", s.name, page, err)
	}
	if _, err := s.dev.WriteAt(sc.rec[:], s.lay.recordOffset(page)); err != nil {
		return fmt.Errorf("nvme.WritePage: %s: page %d: write metadata: %w", s.name, page, err)
	}
	s.gens[page] = gen
	return nil
}

// nextCounter returns a counter value never used before in this session.
// Each scratch buffer reserves a block of values from the shared atomic
// counter, so parallel writers rarely touch the same cache line.
func (s *Store) nextCounter(sc *scratch) uint64 {
	if sc.next == sc.last {
		sc.last = s.counter.Add(nonceBlock) + 1 // values start at 1: 0 marks an unwritten record
		sc.next = sc.last - nonceBlock
	}
	c := sc.next
	sc.next++
	return c
}

// ReadPage reads page number page into p, which must be exactly one page
// long, after authenticating it. A page not written in this session fails
// with ErrNotWritten; a tampered, moved or replayed page with
// ErrAuthentication; a device that ends too early with ErrTruncated. On error
// p holds no plaintext of the page. Reads of different pages run in parallel;
// a read that overlaps a write of the same page waits for it.
func (s *Store) ReadPage(page int64, p []byte) error {
	if err := s.checkPage("ReadPage", page, len(p)); err != nil {
		return err
	}
	sc := s.scratch.Get().(*scratch)
	defer s.scratch.Put(sc)
	st := s.stripe(page)
	st.RLock()
	defer st.RUnlock()
	if s.closed {
		return fmt.Errorf("nvme.ReadPage: %s: page %d: %w", s.name, page, ErrClosed)
	}
	gen := s.gens[page]
	if gen == 0 {
		return fmt.Errorf("nvme.ReadPage: %s: page %d (flash pages do not survive a restart; treat as a cache miss): %w", s.name, page, ErrNotWritten)
	}
	if gen&lost != 0 {
		return fmt.Errorf("nvme.ReadPage: %s: page %d: its last write failed, the value is lost; treat as a cache miss: %w", s.name, page, ErrNotWritten)
	}
	if err := readFull(s.dev, sc.rec[:], s.lay.recordOffset(page)); err != nil {
		return fmt.Errorf("nvme.ReadPage: %s: page %d: read metadata: %w", s.name, page, err)
	}
	ctr, sid := sc.record()
	switch {
	case ctr == 0:
		return fmt.Errorf("nvme.ReadPage: %s: page %d: metadata erased although the page was written in this session: %w", s.name, page, ErrAuthentication)
	case sid != s.session:
		return fmt.Errorf("nvme.ReadPage: %s: page %d: metadata of another session although the page was written in this one: %w", s.name, page, ErrAuthentication)
	}
	buf := sc.buf[:s.lay.pageSize+tagSize]
	if err := readFull(s.dev, buf[:s.lay.pageSize], s.lay.dataOffset(page)); err != nil {
		return fmt.Errorf("nvme.ReadPage: %s: page %d: read data: %w", s.name, page, err)
	}
	copy(buf[s.lay.pageSize:], sc.rec[:tagSize])
	if _, err := s.aead.Open(p[:0], sc.setNonce(ctr), buf, sc.setAD(s.session, page, gen)); err != nil {
		clear(p)
		return fmt.Errorf("nvme.ReadPage: %s: page %d (generation %d): bit flip, page moved from another slot or older version replayed; the value is lost, treat as a cache miss and check the device: %w", s.name, page, gen, ErrAuthentication)
	}
	return nil
}

func readFull(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("device ends %d bytes into the %d at offset %d; was the file truncated under the store?: %w", n, len(p), off, ErrTruncated)
	}
	return err
}

// ReadAt reads whole pages: off and len(p) must be multiples of the page
// size. It implements io.ReaderAt: it returns io.EOF for a read that starts
// at or runs past the end of the store, and otherwise the first error of
// ReadPage, with n the bytes of the whole pages read before it. Safe for
// concurrent use, with the same-page rules of ReadPage.
func (s *Store) ReadAt(p []byte, off int64) (int, error) {
	return s.pages("ReadAt", p, off, s.ReadPage)
}

// WriteAt writes whole pages: off and len(p) must be multiples of the page
// size. It implements io.WriterAt, with n the bytes of the whole pages
// written before the first error. A write past the end of the store fails
// with ErrPageRange. Safe for concurrent use, with the same-page rules of
// WritePage.
func (s *Store) WriteAt(p []byte, off int64) (int, error) {
	return s.pages("WriteAt", p, off, s.WritePage)
}

func (s *Store) pages(op string, p []byte, off int64, do func(int64, []byte) error) (int, error) {
	ps := int64(s.lay.pageSize)
	if off < 0 || off%ps != 0 || int64(len(p))%ps != 0 {
		return 0, fmt.Errorf("nvme.%s: %s: offset %d and length %d must be multiples of the %d-byte page: %w", op, s.name, off, len(p), ps, ErrPageRange)
	}
	n := 0
	for page := off / ps; n < len(p); page++ {
		if page >= s.lay.pages {
			if op == "ReadAt" {
				return n, io.EOF
			}
			return n, fmt.Errorf("nvme.%s: %s: page %d outside the store's %d pages: %w", op, s.name, page, s.lay.pages, ErrPageRange)
		}
		if err := do(page, p[n:n+int(ps)]); err != nil {
			return n, err
		}
		n += int(ps)
	}
	return n, nil
}

// Close zeroes the page key and the in-memory generations and, for a store
// made by Open, closes the file. (The expanded AES key schedule inside
// crypto/aes cannot be zeroed from outside; Close drops the last reference.)
// It waits for calls in flight; later calls fail with ErrClosed. Every page
// of the session becomes unreadable for good. Close is idempotent: later
// calls return the first call's result.
func (s *Store) Close() error {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.closed {
		return s.closeErr
	}
	for i := range s.stripes {
		s.stripes[i].Lock()
	}
	s.closed = true
	clear(s.key)
	s.aead = nil // the expanded key schedule inside crypto/aes cannot be zeroed; drop it
	clear(s.gens)
	s.session = 0
	for i := range s.stripes {
		s.stripes[i].Unlock()
	}
	if s.file != nil {
		if err := s.file.Close(); err != nil {
			s.closeErr = fmt.Errorf("nvme.Close: %w", err)
		}
	}
	return s.closeErr
}
