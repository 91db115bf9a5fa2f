package stream

import (
	"bufio"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// SequentialReader decrypts a stream read front to back from an io.Reader
// (a download, a pipe), where Reader needs random access to authenticate
// the final segment first. It reads one segment ahead to learn which
// segment is the last, and returns a segment's plaintext only once it
// authenticated; the final segment is authenticated as final, so a stream
// cut at a segment boundary ends with ErrTruncated, never with io.EOF. A
// SequentialReader is not safe for concurrent use; errors are sticky.
//
// Compressed streams are refused (ErrFormat): the sealed exports it is
// made for never compress.
type SequentialReader struct {
	src  *bufio.Reader
	hdr  Header
	ad   []byte
	aead cipher.AEAD
	ct   []byte // one sealed segment
	pt   []byte // plaintext of the segment being returned
	rest []byte // what is left of pt to return
	idx  uint32
	done bool // the final segment was returned
	err  error
}

// NewSequentialReader reads the header of a stream from src, checks its
// purpose and disk (as NewReader does) and derives its key. Nothing of the
// body is authenticated yet: Read does that segment by segment.
func NewSequentialReader(src io.Reader, keys Keys, purpose string) (*SequentialReader, error) {
	r, err := newSequentialReader(src, keys, purpose)
	if err != nil {
		return nil, fmt.Errorf("stream.NewSequentialReader: %w", err)
	}
	return r, nil
}

func newSequentialReader(src io.Reader, keys Keys, purpose string) (*SequentialReader, error) {
	br := bufio.NewReaderSize(src, MaxHeaderLen)
	hb, err := br.Peek(MaxHeaderLen)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read header: %w", err)
	}
	h, n, err := ParseHeader(hb)
	if err != nil {
		return nil, err
	}
	ad := append([]byte(nil), hb[:n]...)
	br.Discard(n)
	switch {
	case h.Purpose != purpose:
		return nil, fmt.Errorf("this is a %q stream, not %q: %w", h.Purpose, purpose, ErrFormat)
	case h.DiskID != keys.DiskID():
		return nil, fmt.Errorf("stream belongs to disk %q, not %q: %w", h.DiskID, keys.DiskID(), ErrAuthentication)
	case h.Compression != None:
		return nil, fmt.Errorf("compressed (%s) streams cannot be read sequentially from a reader: %w", h.Compression, ErrFormat)
	}
	aead, err := newAEAD(keys, h)
	if err != nil {
		return nil, err
	}
	return &SequentialReader{
		src: br, hdr: h, ad: ad, aead: aead,
		ct: make([]byte, h.SegmentSize+TagSize),
		pt: make([]byte, 0, h.SegmentSize),
	}, nil
}

// Header returns the stream's header.
func (r *SequentialReader) Header() Header { return r.hdr }

// Read returns authenticated plaintext. It returns io.EOF only after the
// final segment authenticated as final.
func (r *SequentialReader) Read(p []byte) (int, error) {
	for len(r.rest) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		if r.done {
			return 0, io.EOF
		}
		if err := r.next(); err != nil {
			r.err = err
			return 0, err
		}
	}
	n := copy(p, r.rest)
	r.rest = r.rest[n:]
	return n, nil
}

// next reads and opens the next segment.
func (r *SequentialReader) next() error {
	n, err := io.ReadFull(r.src, r.ct)
	switch {
	case errors.Is(err, io.EOF) && r.idx == 0:
		return fmt.Errorf("stream has no segment after its header: %w", ErrTruncated)
	case errors.Is(err, io.EOF):
		// Only after a full middle segment, which next already ruled out.
		return fmt.Errorf("stream ends after segment %d without its final segment: %w", r.idx-1, ErrTruncated)
	case errors.Is(err, io.ErrUnexpectedEOF):
		err = nil
	case err != nil:
		return fmt.Errorf("segment %d: %w", r.idx, err)
	}
	ct := r.ct[:n]
	if n < TagSize {
		return fmt.Errorf("segment %d has %d bytes, less than its tag: %w", r.idx, n, ErrTruncated)
	}
	last := n < len(r.ct)
	if !last {
		_, perr := r.src.Peek(1)
		switch {
		case errors.Is(perr, io.EOF):
			last = true
		case perr != nil:
			return fmt.Errorf("segment %d: %w", r.idx+1, perr)
		}
	}
	pt, err := r.aead.Open(r.pt[:0], r.nonce(last), ct, r.ad)
	if err != nil {
		clear(r.pt[:cap(r.pt)])
		if last && n == len(r.ct) {
			if _, err := r.aead.Open(r.pt[:0], r.nonce(false), ct, r.ad); err == nil {
				clear(r.pt[:cap(r.pt)])
				return fmt.Errorf("stream ends after segment %d without its final segment (cut at a segment boundary): %w", r.idx, ErrTruncated)
			}
		}
		return fmt.Errorf("segment %d failed authentication (tampered, truncated, extended, or from another file or key): %w", r.idx, ErrAuthentication)
	}
	if !last && r.idx == MaxSegments-1 {
		return fmt.Errorf("stream has more than %d segments: %w", int64(MaxSegments), ErrFormat)
	}
	r.rest, r.done = pt, last
	r.idx++
	return nil
}

func (r *SequentialReader) nonce(last bool) []byte {
	var n [12]byte
	binary.BigEndian.PutUint32(n[7:11], r.idx)
	if last {
		n[11] = 1
	}
	return n[:]
}
