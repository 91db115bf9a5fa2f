package stream

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
)

// Writer encrypts a stream. Write the plaintext, then Close to seal the
// final segment. A Writer is not safe for concurrent use; it runs its own
// sealing goroutines internally. After an error every later call returns it.
type Writer struct {
	hdr Header
	seg *segWriter
	z   io.WriteCloser // compressor in front of seg, or nil
	s2  *s2.Writer     // z, when it is s2 compressing blocks in parallel
	err error
	// s2Direct is the smallest Write that s2 encodes in place, block by
	// block in parallel, instead of copying it into its block buffers.
	s2Direct int
}

// NewWriter writes the header of a new stream to dst and returns a Writer
// for its plaintext. The stream uses keys' active DEK version, a fresh
// random salt, and purpose, which a Reader must name to open it.
func NewWriter(dst io.Writer, keys Keys, purpose string, opts Options) (*Writer, error) {
	seg, err := opts.segmentSize()
	if err != nil {
		return nil, fmt.Errorf("stream.NewWriter: %w", err)
	}
	h := Header{Purpose: purpose, DiskID: keys.DiskID(), DEKVersion: keys.Active(), SegmentSize: seg, Compression: opts.Compression}
	if err := h.check(); err != nil {
		return nil, fmt.Errorf("stream.NewWriter: %w", err)
	}
	rand.Read(h.Salt[:])
	aead, err := newAEAD(keys, h)
	if err != nil {
		return nil, fmt.Errorf("stream.NewWriter: %w", err)
	}
	hdr := h.Marshal()
	if _, err := dst.Write(hdr); err != nil {
		return nil, fmt.Errorf("stream.NewWriter: write header: %w", err)
	}
	conc := concurrency(opts.Concurrency)
	batch := batchSegments(seg, conc)
	sw := &segWriter{
		dst: dst, seg: seg, c: newCrypter(aead, hdr, batch, conc),
		buf: make([]byte, batch*seg+1),
	}
	sw.out[0] = make([]byte, batch*(seg+TagSize))
	if conc > 1 {
		sw.out[1] = make([]byte, batch*(seg+TagSize))
	}
	w := &Writer{hdr: h, seg: sw}
	switch opts.Compression {
	case Zstd:
		w.z, err = zstd.NewWriter(sw, zstd.WithEncoderConcurrency(conc))
	case S2:
		z := s2.NewWriter(sw, s2.WriterConcurrency(conc))
		w.z = z
		if conc > 1 {
			w.s2, w.s2Direct = z, conc*s2BlockSize
		}
	}
	if err != nil {
		return nil, fmt.Errorf("stream.NewWriter: %w", err)
	}
	return w, nil
}

// Header returns the stream's header (its salt tells streams apart).
func (w *Writer) Header() Header { return w.hdr }

// Write encrypts p. Whole segments are sealed straight from p; only the
// unsealed tail (at most one batch of segments) is copied. p is not
// retained.
func (w *Writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	var n int
	switch {
	case w.s2 != nil && len(p) >= w.s2Direct:
		n, w.err = w.encodeS2(p)
	case w.z != nil:
		n, w.err = w.z.Write(p)
	default:
		n, w.err = w.seg.Write(p)
	}
	if w.err != nil {
		w.err = fmt.Errorf("stream.Writer.Write: %w", w.err)
	}
	return n, w.err
}

// s2BlockSize is the s2 writer's block size (its default): the unit its
// goroutines compress in parallel.
const s2BlockSize = 1 << 20

// encodeS2 compresses a large p with s2 in place: its blocks are
// compressed in parallel straight from p (no copy into s2's buffers), and
// sealed as they come out. It returns once all of p is sealed, so p is not
// retained.
func (w *Writer) encodeS2(p []byte) (int, error) {
	if err := w.s2.EncodeBuffer(p); err != nil {
		return 0, err
	}
	if err := w.s2.Flush(); err != nil {
		return 0, err
	}
	return len(p), nil
}

// ReadFrom encrypts everything r yields until io.EOF, reading straight into
// the Writer's segment buffer. It does not seal the final segment: call
// Close.
func (w *Writer) ReadFrom(r io.Reader) (int64, error) {
	if w.err != nil {
		return 0, w.err
	}
	var n int64
	if w.z != nil {
		n, w.err = io.Copy(w.z, r)
	} else {
		n, w.err = w.seg.readFrom(r)
	}
	if w.err != nil {
		w.err = fmt.Errorf("stream.Writer.ReadFrom: %w", w.err)
	}
	return n, w.err
}

// Close seals the buffered segments and the final one, and writes them. It
// does not close the destination. A second Close returns ErrClosed.
func (w *Writer) Close() error {
	if w.err != nil {
		return w.err
	}
	if w.z != nil {
		if err := w.z.Close(); err != nil {
			w.err = fmt.Errorf("stream.Writer.Close: %w", err)
			return w.err
		}
	}
	if err := w.seg.close(); err != nil {
		w.err = fmt.Errorf("stream.Writer.Close: %w", err)
		return w.err
	}
	w.err = fmt.Errorf("stream.Writer: %w", ErrClosed)
	return nil
}

// segWriter cuts plaintext into segments and seals them in batches.
//
// Invariant between calls: buf[:n] holds the plaintext not yet sealed,
// n <= len(buf)-1. A segment is sealed only once a byte after it is known,
// so the final segment (flagged last) is always still buffered at close,
// full when the plaintext is a multiple of the segment size.
type segWriter struct {
	dst   io.Writer
	seg   int
	c     *crypter
	buf   []byte // batch*seg + 1 bytes
	n     int
	out   [2][]byte // sealed segments of a batch, one buffer per crypter slot
	index int64     // index of the next segment to seal

	// The batch submitted and not yet written (see submit).
	pending                            bool
	pendingSlot, pendingK, pendingSize int
}

// capacity is the most plaintext kept between calls.
func (s *segWriter) capacity() int { return len(s.buf) - 1 }

// directSeal is the smallest Write whose whole segments are sealed straight
// from p rather than copied into the buffer first: the copy is a serial
// step that bounds how far sealing scales with cores, and a write this
// large is a batch of its own. (A compressor's output arrives in chunks of
// about its block size.)
const directSeal = 1 << 20

func (s *segWriter) Write(p []byte) (int, error) {
	total := len(p)
	// At least two segments, so that completing a buffered partial segment
	// leaves a whole one to seal.
	if s.n+len(p) <= s.capacity() && len(p) < max(directSeal, 2*s.seg) {
		s.n += copy(s.buf[s.n:], p)
		return total, nil
	}
	// Complete the buffered partial segment, then seal the buffered
	// segments together with the first whole segments of p.
	if r := s.n % s.seg; r != 0 {
		c := copy(s.buf[s.n:s.n+s.seg-r], p)
		s.n += c
		p = p[c:]
	}
	batch := len(s.c.units)
	for len(p) > 0 {
		k := 0
		for off := 0; off < s.n; off += s.seg {
			s.c.units[k].src = s.buf[off : off+s.seg]
			k++
		}
		s.n = 0
		for k < batch && len(p) > s.seg {
			s.c.units[k].src = p[:s.seg]
			p = p[s.seg:]
			k++
		}
		if err := s.submit(k, false); err != nil {
			return total - len(p), err
		}
		if len(p) <= s.seg {
			break
		}
	}
	if err := s.flush(); err != nil {
		return total - len(p), err
	}
	s.n = copy(s.buf, p)
	return total, nil
}

func (s *segWriter) readFrom(r io.Reader) (int64, error) {
	var total int64
	for {
		m, err := io.ReadFull(r, s.buf[s.n:])
		s.n += m
		total += int64(m)
		if err == nil { // buf full: every whole segment has a byte after it
			k := (len(s.buf) - 1) / s.seg
			if err := s.sealBuffered(k, false); err != nil {
				return total, err
			}
			continue
		}
		if err != io.EOF && err != io.ErrUnexpectedEOF {
			return total, err
		}
		if s.n > 0 {
			return total, s.sealBuffered((s.n-1)/s.seg, false)
		}
		return total, nil
	}
}

// sealBuffered seals the first k segments of buf and moves the rest of
// buf[:n] (at most one segment, or one byte) to its front.
func (s *segWriter) sealBuffered(k int, last bool) error {
	for i := range k {
		s.c.units[i].src = s.buf[i*s.seg : (i+1)*s.seg]
	}
	if err := s.seal(k, last); err != nil {
		return err
	}
	s.n = copy(s.buf, s.buf[k*s.seg:s.n])
	return nil
}

// close seals everything buffered, the final segment flagged last.
func (s *segWriter) close() error {
	batch := len(s.c.units)
	for {
		k := 0
		off := 0
		for ; k < batch && s.n-off > s.seg; k++ {
			s.c.units[k].src = s.buf[off : off+s.seg]
			off += s.seg
		}
		last := s.n-off <= s.seg && k < batch
		if last {
			s.c.units[k].src = s.buf[off:s.n]
			k++
		}
		if err := s.seal(k, last); err != nil {
			return err
		}
		if last {
			s.n = 0
			return nil
		}
		s.n = copy(s.buf, s.buf[off:s.n])
	}
}

// seal seals units[:k] (srcs set by the caller) as the next k segments, the
// last of them flagged last if last is set, and writes them to dst.
func (s *segWriter) seal(k int, last bool) error {
	if err := s.submit(k, last); err != nil {
		return err
	}
	return s.flush()
}

// submit is seal, pipelined: with more than one core it may return while
// the batch is still being sealed, after writing the batch before it, so
// the caller can fill the next batch meanwhile. Until flush, the pending
// batch's sources must not change. On error nothing is left pending.
func (s *segWriter) submit(k int, last bool) error {
	if k == 0 {
		return nil
	}
	if s.index+int64(k) > MaxSegments {
		return errors.Join(fmt.Errorf("stream exceeds %d segments of %d bytes; use a larger segment size", int64(MaxSegments), s.seg), s.flush())
	}
	slot, out := s.c.cur, s.out[s.c.cur]
	size := 0
	for i := range k {
		u := &s.c.units[i]
		u.setNonce(uint32(s.index+int64(i)), last && i == k-1)
		u.dst = out[size:size]
		size += len(u.src) + TagSize
	}
	s.index += int64(k)
	if !s.c.parallel(k) {
		s.c.inline(k)
		clearSources(s.c.units[:k])
		if err := s.flush(); err != nil {
			return err
		}
		_, err := s.dst.Write(out[:size])
		return err
	}
	s.c.publish(k)
	err := s.flush() // the batch before, while helpers start on this one
	s.pending, s.pendingK, s.pendingSize = true, k, size
	s.pendingSlot = slot
	if err != nil {
		s.pending = false
		s.c.finish(slot)
		clearSources(s.c.slots[slot].units[:k])
	}
	return err
}

// flush waits for the pending batch, if any, and writes it.
func (s *segWriter) flush() error {
	if !s.pending {
		return nil
	}
	s.pending = false
	s.c.finish(s.pendingSlot)
	clearSources(s.c.slots[s.pendingSlot].units[:s.pendingK])
	_, err := s.dst.Write(s.out[s.pendingSlot][:s.pendingSize])
	return err
}

// clearSources drops the units' references to the caller's plaintext.
func clearSources(units []unit) {
	for i := range units {
		units[i].src = nil
	}
}
