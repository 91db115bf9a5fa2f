package stream

import (
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
)

// Reader decrypts a stream. It authenticates every segment before any of
// its plaintext leaves the Reader, and never returns plaintext of a segment
// that failed.
//
// ReadAt, Size, Header and Verify are safe for concurrent use (ReadAt calls
// are serialized internally; each decrypts its segments in parallel). Read,
// Seek and WriteTo share the Reader's offset and must not be called
// concurrently with each other.
type Reader struct {
	src     io.ReaderAt
	hdr     Header
	hdrLen  int64
	seg     int64 // plaintext bytes per segment
	nseg    int64
	size    int64 // plaintext size of the segments (compressed size if compressed)
	lastBuf []byte

	mu     sync.Mutex // guards everything below
	c      *crypter
	ct     []byte    // ciphertext of one batch
	ct2    []byte    // a second batch, for WriteTo's pipeline (see writeBatches)
	cur    []byte    // plaintext of segment curIdx
	curIdx int64     // -1 when cur holds nothing
	off    int64     // Read/Seek offset
	z      io.Reader // decompressor, for compressed streams
}

// NewReader opens the stream of size bytes in src. It parses the header,
// checks that the stream is a purpose stream of keys' disk, derives its key
// (dek.ErrUnknownVersion if keys lack its DEK version), and authenticates
// the final segment, so Size is trustworthy and truncation is detected here.
func NewReader(src io.ReaderAt, size int64, keys Keys, purpose string) (*Reader, error) {
	r, err := newReader(src, size, keys, purpose)
	if err != nil {
		return nil, fmt.Errorf("stream.NewReader: %w", err)
	}
	return r, nil
}

func newReader(src io.ReaderAt, size int64, keys Keys, purpose string) (*Reader, error) {
	if size < 0 {
		return nil, fmt.Errorf("negative size %d", size)
	}
	hb := make([]byte, min(size, int64(MaxHeaderLen)))
	m, err := src.ReadAt(hb, 0)
	if err != nil && err != io.EOF {
		return nil, fmt.Errorf("read header: %w", err)
	}
	hb = hb[:m]
	h, n, err := ParseHeader(hb)
	if err != nil {
		return nil, err
	}
	if h.Purpose != purpose {
		return nil, fmt.Errorf("this is a %q stream, not %q: %w", h.Purpose, purpose, ErrFormat)
	}
	if d := keys.DiskID(); h.DiskID != d {
		return nil, fmt.Errorf("stream belongs to disk %q, not this disk %q: a file copied from another disk cannot be opened with this disk's keys: %w", h.DiskID, d, ErrAuthentication)
	}
	aead, err := newAEAD(keys, h)
	if err != nil {
		return nil, err
	}
	body := size - int64(n)
	seg := int64(h.SegmentSize)
	if body < TagSize {
		return nil, fmt.Errorf("stream has %d bytes after its header, less than one segment tag: %w", body, ErrTruncated)
	}
	nseg := (body + seg + TagSize - 1) / (seg + TagSize)
	lastCT := body - (nseg-1)*(seg+TagSize)
	if lastCT < TagSize {
		return nil, fmt.Errorf("final segment has %d bytes, less than its tag: %w", lastCT, ErrTruncated)
	}
	if nseg > MaxSegments {
		return nil, fmt.Errorf("stream has %d segments, more than %d: %w", nseg, int64(MaxSegments), ErrFormat)
	}
	conc := concurrency(0)
	batch := int(min(int64(readerBatch(int(seg), conc)), nseg))
	r := &Reader{
		src: src, hdr: h, hdrLen: int64(n), seg: seg, nseg: nseg,
		size:   (nseg-1)*seg + lastCT - TagSize,
		c:      newCrypter(aead, hb[:n:n], batch, conc),
		ct:     make([]byte, batch*int(seg+TagSize)),
		curIdx: -1,
	}
	if nseg > 1 || lastCT == seg+TagSize { // never more memory than the file's size
		r.cur = make([]byte, seg)
	}
	r.lastBuf = make([]byte, lastCT-TagSize)
	if err := r.openLast(lastCT); err != nil {
		return nil, err
	}
	if h.Compression != None {
		if err := r.startDecompression(); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// openLast authenticates the final segment. If it fails as final but opens
// as a middle segment, the stream was cut at a segment boundary.
func (r *Reader) openLast(lastCT int64) error {
	i := r.nseg - 1
	ct := r.ct[:lastCT]
	if err := r.readCT(ct, i); err != nil {
		return err
	}
	u := &r.c.units[0]
	u.src, u.dst = ct, r.lastBuf[:0]
	u.setNonce(uint32(i), true)
	r.c.do(1, true, nil)
	if u.ok {
		return nil
	}
	if lastCT == r.seg+TagSize {
		u.setNonce(uint32(i), false)
		u.dst = r.cur[:0]
		r.c.do(1, true, nil)
		clear(r.cur)
		if u.ok {
			return fmt.Errorf("stream ends after segment %d without its final segment (cut at a segment boundary): %w", i, ErrTruncated)
		}
	}
	return fmt.Errorf("final segment %d failed authentication (tampered, truncated, extended, or from another file or key): %w", i, ErrAuthentication)
}

func (r *Reader) readCT(ct []byte, seg int64) error {
	_, err := r.src.ReadAt(ct, r.hdrLen+seg*(r.seg+TagSize))
	if err == io.EOF {
		return fmt.Errorf("segment %d: file shrank while open: %w", seg, ErrTruncated)
	}
	if err != nil {
		return fmt.Errorf("segment %d: %w", seg, err)
	}
	return nil
}

// Header returns the stream's header.
func (r *Reader) Header() Header { return r.hdr }

// Size returns the plaintext size. For a compressed stream it returns -1:
// its decompressed size is known only once it has been read.
func (r *Reader) Size() int64 {
	if r.hdr.Compression != None {
		return -1
	}
	return r.size
}

// segLen is the plaintext length of segment i.
func (r *Reader) segLen(i int64) int64 {
	if i == r.nseg-1 {
		return int64(len(r.lastBuf))
	}
	return r.seg
}

// ReadAt reads len(p) plaintext bytes at off. Segments that p covers whole
// are decrypted straight into p, several in parallel. On an authentication
// failure it returns the bytes of the segments before the failing one, and
// p holds no plaintext beyond them.
func (r *Reader) ReadAt(p []byte, off int64) (int, error) {
	if r.hdr.Compression != None {
		return 0, fmt.Errorf("stream.Reader.ReadAt: %w", ErrSequential)
	}
	if off < 0 {
		return 0, fmt.Errorf("stream.Reader.ReadAt: negative offset %d", off)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	n, err := r.readAt(p, off)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("stream.Reader.ReadAt: %w", err)
	}
	return n, err
}

func (r *Reader) readAt(p []byte, off int64) (int, error) {
	if off >= r.size {
		return 0, io.EOF
	}
	want := int(min(int64(len(p)), r.size-off))
	pos := 0
	for pos < want {
		i := (off + int64(pos)) / r.seg
		in := int((off + int64(pos)) % r.seg)
		sl := int(r.segLen(i))
		if i == r.nseg-1 {
			pos += copy(p[pos:want], r.lastBuf[in:])
			continue
		}
		if in == 0 && want-pos >= sl {
			// Whole segments straight into p, at most one batch, never
			// the final (cached) one.
			k := min(int64(len(r.c.units)), int64(want-pos)/r.seg, r.nseg-1-i)
			m, err := r.openInto(p[pos:pos+int(k*r.seg)], i, int(k))
			pos += m
			if err != nil {
				return pos, err
			}
			continue
		}
		if err := r.load(i); err != nil {
			return pos, err
		}
		pos += copy(p[pos:want], r.cur[in:sl])
	}
	if want < len(p) {
		return want, io.EOF
	}
	return want, nil
}

// openInto decrypts k full middle segments starting at first into dst
// (k*seg bytes). It returns how many bytes are authenticated; everything
// after them in dst is zeroed.
func (r *Reader) openInto(dst []byte, first int64, k int) (int, error) {
	m, err := r.openBatch(dst, first, k)
	return m * int(r.seg), err
}

// openBatch reads and opens k full middle segments starting at first,
// into dst (k*seg bytes), or in place in r.ct when dst is nil. It returns
// how many segments, from the first, authenticated; the output of the
// others is zeroed.
func (r *Reader) openBatch(dst []byte, first int64, k int) (int, error) {
	r.prepare(r.ct, dst, first, k)
	r.c.do(k, true, r.src)
	return r.check(r.c.units, dst, first, k)
}

// prepare sets up r.c.units[:k] to read and open k full middle segments
// starting at first into dst (k*seg bytes), or in place in ct when dst is
// nil.
func (r *Reader) prepare(ct, dst []byte, first int64, k int) {
	ctLen := int(r.seg + TagSize)
	seg := int(r.seg)
	for j := range k {
		u := &r.c.units[j]
		u.src = ct[j*ctLen : (j+1)*ctLen]
		u.off = r.hdrLen + (first+int64(j))*int64(ctLen)
		if dst == nil {
			u.dst = u.src[:0:seg]
		} else {
			u.dst = dst[j*seg : j*seg : (j+1)*seg]
		}
		u.setNonce(uint32(first+int64(j)), false)
	}
}

// check returns how many of the k opened units, from the first, are
// authenticated, and why the next one is not; it zeroes dst from there.
func (r *Reader) check(units []unit, dst []byte, first int64, k int) (int, error) {
	seg := int(r.seg)
	for j := range k {
		u := &units[j]
		if u.ok {
			continue
		}
		if dst != nil {
			clear(dst[j*seg:])
		}
		switch {
		case u.err == io.ErrUnexpectedEOF:
			return j, fmt.Errorf("segment %d: file shrank while open: %w", first+int64(j), ErrTruncated)
		case u.err != nil:
			return j, fmt.Errorf("segment %d: %w", first+int64(j), u.err)
		}
		return j, fmt.Errorf("segment %d failed authentication (tampered, reordered, or from another file or key): %w", first+int64(j), ErrAuthentication)
	}
	return k, nil
}

// load decrypts middle segment i into cur.
func (r *Reader) load(i int64) error {
	if r.curIdx == i {
		return nil
	}
	r.curIdx = -1
	if _, err := r.openInto(r.cur, i, 1); err != nil {
		return err
	}
	r.curIdx = i
	return nil
}

// Read reads plaintext at the Reader's offset and advances it.
func (r *Reader) Read(p []byte) (int, error) {
	if r.z != nil {
		n, err := r.z.Read(p)
		if err != nil && err != io.EOF {
			err = fmt.Errorf("stream.Reader.Read: %w", err)
		}
		return n, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	n, err := r.readAt(p, r.off)
	r.off += int64(n)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("stream.Reader.Read: %w", err)
	}
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

// Seek sets the offset of Read and WriteTo, as io.Seeker. Seeking past the
// end is allowed; reads there return io.EOF.
func (r *Reader) Seek(off int64, whence int) (int64, error) {
	if r.z != nil {
		return 0, fmt.Errorf("stream.Reader.Seek: %w", ErrSequential)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		off += r.off
	case io.SeekEnd:
		off += r.size
	default:
		return 0, fmt.Errorf("stream.Reader.Seek: invalid whence %d", whence)
	}
	if off < 0 {
		return 0, fmt.Errorf("stream.Reader.Seek: negative position %d", off)
	}
	r.off = off
	return off, nil
}

// WriteTo writes the plaintext from the Reader's offset to the end to w,
// decrypting one batch of segments at a time, in parallel.
func (r *Reader) WriteTo(w io.Writer) (int64, error) {
	if r.z != nil {
		n, err := io.Copy(w, struct{ io.Reader }{r.z})
		if err != nil {
			err = fmt.Errorf("stream.Reader.WriteTo: %w", err)
		}
		return n, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	n, err := r.writeTo(w)
	if err != nil {
		err = fmt.Errorf("stream.Reader.WriteTo: %w", err)
	}
	return n, err
}

// writeTo decrypts whole middle segments in place in the ciphertext batch
// and writes them from there: the smallest cache footprint, no second
// buffer. A partial first segment and the final one come from the caches.
func (r *Reader) writeTo(w io.Writer) (int64, error) {
	var total int64
	write := func(p []byte) error {
		m, err := w.Write(p)
		r.off += int64(m)
		total += int64(m)
		return err
	}
	if r.off >= r.size {
		return 0, nil
	}
	if i, in := r.off/r.seg, r.off%r.seg; in != 0 && i < r.nseg-1 {
		if err := r.load(i); err != nil {
			return 0, err
		}
		if err := write(r.cur[in:]); err != nil {
			return total, err
		}
	}
	ctLen := int(r.seg + TagSize)
	if r.c.slots[1].units != nil && r.nseg-1-r.off/r.seg > int64(len(r.c.units)) {
		if err := r.writeBatches(write); err != nil {
			return total, err
		}
		return total, write(r.lastBuf[r.off-(r.nseg-1)*r.seg:])
	}
	for i := r.off / r.seg; i < r.nseg-1; {
		k := int(min(int64(len(r.c.units)), r.nseg-1-i))
		m, err := r.openBatch(nil, i, k)
		for j := range m {
			if werr := write(r.ct[j*ctLen : j*ctLen+int(r.seg)]); werr != nil {
				clear(r.ct)
				return total, werr
			}
		}
		if err != nil {
			clear(r.ct)
			return total, err
		}
		i += int64(k)
	}
	clear(r.ct)
	return total, write(r.lastBuf[r.off-(r.nseg-1)*r.seg:])
}

// writeBatches is writeTo's loop over the whole middle segments from the
// offset on, pipelined (see crypter): batch b+1 is read and opened while
// batch b's last units finish, then b is written out. It needs a second
// ciphertext buffer, allocated on first use. Only authenticated segments
// are written, in order; on failure nothing opened after them is.
func (r *Reader) writeBatches(write func([]byte) error) error {
	if r.ct2 == nil {
		r.ct2 = make([]byte, len(r.ct))
	}
	cts := [2][]byte{r.ct, r.ct2}
	defer clear(r.ct2)
	defer clear(r.ct)
	ctLen, seg := int(r.seg+TagSize), int(r.seg)
	type batch struct {
		slot, k int
		first   int64
	}
	var prev batch
	pending := false
	r.c.open, r.c.src = true, r.src
	for i := r.off / r.seg; i < r.nseg-1 || pending; {
		var cur batch
		if i < r.nseg-1 {
			k := int(min(int64(len(r.c.units)), r.nseg-1-i))
			cur = batch{r.c.cur, k, i}
			r.prepare(cts[cur.slot], nil, i, k)
			r.c.publish(k)
			i += int64(k)
		}
		if pending {
			r.c.finish(prev.slot)
			m, err := r.check(r.c.slots[prev.slot].units, nil, prev.first, prev.k)
			for j := 0; j < m; j++ {
				if werr := write(cts[prev.slot][j*ctLen : j*ctLen+seg]); werr != nil {
					err = werr
					break
				}
			}
			if err != nil {
				if cur.k > 0 {
					r.c.finish(cur.slot)
				}
				return err
			}
		}
		prev, pending = cur, cur.k > 0
	}
	return nil
}

// Verify authenticates every segment of the stream without returning any
// plaintext.
func (r *Reader) Verify() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	buf := make([]byte, min(int64(len(r.c.units)), r.nseg-1)*r.seg)
	defer clear(buf)
	for i := int64(0); i < r.nseg-1; {
		k := min(int64(len(r.c.units)), r.nseg-1-i)
		if _, err := r.openInto(buf[:k*r.seg], i, int(k)); err != nil {
			return fmt.Errorf("stream.Reader.Verify: %w", err)
		}
		i += k
	}
	return nil
}

// segments is a sequential io.Reader over the segments' plaintext, the
// input of the decompressor.
type segments struct {
	r   *Reader
	off int64
}

func (s *segments) Read(p []byte) (int, error) {
	s.r.mu.Lock()
	defer s.r.mu.Unlock()
	n, err := s.r.readAt(p, s.off)
	s.off += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

func (r *Reader) startDecompression() error {
	src := &segments{r: r}
	switch r.hdr.Compression {
	case Zstd:
		// One decoder goroutine-free: concurrency 1 decodes synchronously,
		// so a Reader needs no Close.
		d, err := zstd.NewReader(src, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
		if err != nil {
			return err
		}
		r.z = decompressor{d}
	case S2:
		r.z = decompressor{s2.NewReader(src)}
	}
	return nil
}

// decompressor turns decompression errors into ErrFormat: a stream whose
// segments authenticate but do not decompress was written wrongly.
// Authentication and truncation errors of the segments pass through.
type decompressor struct{ r io.Reader }

func (z decompressor) Read(p []byte) (int, error) {
	n, err := z.r.Read(p)
	if err != nil && err != io.EOF && !errors.Is(err, ErrAuthentication) && !errors.Is(err, ErrTruncated) {
		err = fmt.Errorf("decompress: %v: %w", err, ErrFormat)
	}
	return n, err
}
