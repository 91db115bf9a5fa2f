package export

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/cachecrypt/cachecrypt/dek"
	"github.com/cachecrypt/cachecrypt/internal/stream"
	"github.com/cachecrypt/cachecrypt/kek"
)

// A sealed export (FORMAT.md, "Sealed export") is one self-describing
// object: an envelope naming the KEK and holding the export DEK it wrapped,
// then the RDB as a stream (internal/stream) under that DEK.
//
//	magic        8 bytes  "CCSEALED"
//	version      u8       1
//	kek_kind     str8     1..255 bytes
//	kek_key_id   str16    1..4096 bytes
//	kek_alg      str8     0..255 bytes
//	wrapped_dek  str16    1..4096 bytes
//	stream       stream format 1: purpose "export/sealed", disk id "export",
//	             DEK version 1, no compression; its plaintext is the RDB
const (
	// SealedMagic starts every sealed export.
	SealedMagic = "CCSEALED"
	// SealedVersion is the sealed-export format this package writes and
	// reads.
	SealedVersion = 1
)

const (
	sealedPurpose = "export/sealed"
	sealedDiskID  = "export"
	sealedDEKVer  = 1
	maxKeyID      = 4096
	maxWrapped    = 4096
	// maxEnvelope is the longest envelope: magic, version and the four
	// strings at their limits.
	maxEnvelope = len(SealedMagic) + 1 + (1 + 255) + (2 + maxKeyID) + (1 + 255) + (2 + maxWrapped)
	// maxSealedHeader is the longest envelope and stream header together.
	maxSealedHeader = maxEnvelope + stream.MaxHeaderLen
)

// sealedHeader is everything of a sealed export before its first segment.
type sealedHeader struct {
	wrapped kek.Wrapped
	stream  stream.Header
}

// envelope returns the bytes of the envelope alone.
func (h sealedHeader) envelope() []byte {
	w := h.wrapped
	b := make([]byte, 0, len(SealedMagic)+1+1+len(w.Kind)+2+len(w.KeyID)+1+len(w.Algorithm)+2+len(w.Ciphertext))
	b = append(b, SealedMagic...)
	b = append(b, SealedVersion)
	b = append(b, byte(len(w.Kind)))
	b = append(b, w.Kind...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(w.KeyID)))
	b = append(b, w.KeyID...)
	b = append(b, byte(len(w.Algorithm)))
	b = append(b, w.Algorithm...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(w.Ciphertext)))
	return append(b, w.Ciphertext...)
}

// marshal returns the envelope followed by the stream header.
func (h sealedHeader) marshal() []byte { return append(h.envelope(), h.stream.Marshal()...) }

// checkWrapped checks that a wrapped DEK fits the envelope's fields.
func checkWrapped(w kek.Wrapped) error {
	if err := w.Descriptor.Validate(); err != nil {
		return err
	}
	if len(w.Ciphertext) == 0 || len(w.Ciphertext) > maxWrapped {
		return fmt.Errorf("wrapped export key of %d bytes, want 1 to %d", len(w.Ciphertext), maxWrapped)
	}
	return nil
}

// parseSealedHeader decodes the envelope and the stream header at the
// start of b. It returns the length of each. Every byte string of the
// envelope has one encoding, and so does the stream header: marshal gives
// b[:env+hdr] back.
func parseSealedHeader(b []byte) (h sealedHeader, env, hdr int, err error) {
	if len(b) < len(SealedMagic)+1 {
		return h, 0, 0, fmt.Errorf("%d bytes, too short for a sealed export: %w", len(b), ErrTruncated)
	}
	if !bytes.Equal(b[:len(SealedMagic)], []byte(SealedMagic)) {
		return h, 0, 0, fmt.Errorf("not a sealed export: it starts with %q, not %q; import a plain RDB without unsealing it: %w", b[:len(SealedMagic)], SealedMagic, ErrFormat)
	}
	if v := b[len(SealedMagic)]; v != SealedVersion {
		return h, 0, 0, fmt.Errorf("sealed export format version %d, this build reads %d; upgrade cachecrypt: %w", v, SealedVersion, ErrVersion)
	}
	p := len(SealedMagic) + 1
	field := func(width int) ([]byte, bool) {
		if len(b)-p < width {
			return nil, false
		}
		n := int(b[p])
		if width == 2 {
			n = int(binary.BigEndian.Uint16(b[p:]))
		}
		if len(b)-p-width < n {
			return nil, false
		}
		f := b[p+width : p+width+n]
		p += width + n
		return f, true
	}
	kind, ok1 := field(1)
	keyID, ok2 := field(2)
	alg, ok3 := field(1)
	ct, ok4 := field(2)
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return sealedHeader{}, 0, 0, fmt.Errorf("sealed export envelope ends early: %w", ErrTruncated)
	}
	h.wrapped = kek.Wrapped{
		Descriptor: kek.Descriptor{Kind: kek.Kind(kind), KeyID: string(keyID), Algorithm: string(alg)},
		Ciphertext: bytes.Clone(ct),
	}
	if err := checkWrapped(h.wrapped); err != nil {
		return sealedHeader{}, 0, 0, fmt.Errorf("sealed export envelope: %v: %w", err, ErrFormat)
	}
	env = p
	sh, hdr, err := stream.ParseHeader(b[env:])
	if err != nil {
		return sealedHeader{}, 0, 0, fmt.Errorf("sealed export: %w", err)
	}
	switch {
	case sh.Purpose != sealedPurpose || sh.DiskID != sealedDiskID || sh.DEKVersion != sealedDEKVer:
		return sealedHeader{}, 0, 0, fmt.Errorf("sealed export holds a %q stream of disk %q, DEK version %d; want %q, %q, %d: %w",
			sh.Purpose, sh.DiskID, sh.DEKVersion, sealedPurpose, sealedDiskID, sealedDEKVer, ErrFormat)
	case sh.Compression != stream.None:
		return sealedHeader{}, 0, 0, fmt.Errorf("sealed export stream is compressed (%s); the format never compresses: %w", sh.Compression, ErrFormat)
	}
	h.stream = sh
	return h, env, hdr, nil
}

// exportKeys gives the stream of a sealed export its file key from the raw
// export DEK (dek.DeriveFileKey, disk id "export", version 1).
type exportKeys struct{ dek []byte }

func (k exportKeys) DiskID() string { return sealedDiskID }
func (k exportKeys) Active() uint32 { return sealedDEKVer }
func (k exportKeys) FileKey(v uint32, purpose string, salt []byte) ([]byte, error) {
	if v != sealedDEKVer {
		return nil, fmt.Errorf("sealed export names DEK version %d, not %d: %w", v, sealedDEKVer, ErrFormat)
	}
	return dek.DeriveFileKey(k.dek, sealedDiskID, v, purpose, salt)
}

// sealer turns the plain RDB of a Stream into a sealed export as it is
// read: a fresh export DEK, wrapped once by the KEK, seals the stream.
type sealer struct {
	out    bytes.Buffer // sealed bytes not yet read
	w      *stream.Writer
	buf    []byte // plaintext read from the staging
	hdrLen int64  // envelope and stream header
	eof    bool   // every sealed byte was read
	closed bool   // w was closed: out holds the rest
	err    error
}

// newSealer draws the export DEK, has w wrap it (the only KEK call) and
// writes the envelope and the stream header. The raw DEK is cleared before
// it returns: only the stream's cipher holds key material.
// segSize 0 means stream.DefaultSegmentSize, what Export uses; the test
// vector uses smaller segments.
func newSealer(ctx context.Context, w kek.Wrapper, segSize int) (*sealer, error) {
	key := make([]byte, dek.KeySize)
	defer clear(key)
	rand.Read(key)
	wrapped, err := w.Wrap(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("wrap the export key: %w", err)
	}
	if err := checkWrapped(wrapped); err != nil {
		return nil, fmt.Errorf("wrap the export key: the KEK returned %v", err)
	}
	z := &sealer{buf: make([]byte, 1<<20)}
	z.out.Write(sealedHeader{wrapped: wrapped}.envelope())
	z.w, err = stream.NewWriter(&z.out, exportKeys{key}, sealedPurpose, stream.Options{SegmentSize: segSize})
	if err != nil {
		return nil, err
	}
	z.hdrLen = int64(z.out.Len())
	return z, nil
}

// size returns the size of the sealed export of plain bytes, or -1.
func (z *sealer) size(plain int64) int64 {
	if plain < 0 {
		return -1
	}
	return z.hdrLen + stream.EncryptedSize(plain, stream.DefaultSegmentSize)
}

// read returns sealed bytes, reading the plain RDB from plain. It returns
// io.EOF only once plain did, that is once every check of the RDB passed.
func (z *sealer) read(p []byte, plain func([]byte) (int, error)) (int, error) {
	for z.out.Len() == 0 {
		switch {
		case z.err != nil:
			return 0, z.err
		case z.closed:
			z.eof = true
			return 0, io.EOF
		}
		n, err := plain(z.buf)
		if n > 0 {
			if _, werr := z.w.Write(z.buf[:n]); werr != nil {
				z.err = fmt.Errorf("seal: %w", werr)
				continue
			}
		}
		switch {
		case err == io.EOF:
			if cerr := z.w.Close(); cerr != nil {
				z.err = fmt.Errorf("seal: %w", cerr)
				continue
			}
			z.closed = true
		case err != nil:
			z.err = err
		}
	}
	return z.out.Read(p)
}

// Unseal returns a Source that reads the sealed export src yields (written
// by Export with Options.Seal) and yields the plain RDB inside. Open reads
// the envelope, unwraps the export DEK with k (its one KEK call) and
// decrypts as the transfer reads, authenticating every segment before its
// bytes are staged; the final segment is authenticated as final, so a
// truncated export fails. With a KEK that did not seal the export, Open
// fails with k's error (kek.ErrKeyMismatch for another key, kek.ErrUnwrap
// for a key that cannot open it) before a byte is staged, so nothing
// reaches the destination. The source's SHA-256 metadata, if any, is not
// used: the export authenticates itself.
func Unseal(src Source, k kek.Unwrapper) Source { return unsealSource{src, k} }

type unsealSource struct {
	src Source
	k   kek.Unwrapper
}

func (u unsealSource) Open(ctx context.Context) (io.ReadCloser, Meta, error) {
	rc, meta, err := u.src.Open(ctx)
	if err != nil {
		return nil, Meta{}, err
	}
	r, m, err := u.open(ctx, rc, meta)
	if err != nil {
		rc.Close()
		return nil, Meta{}, fmt.Errorf("unseal: %w", err)
	}
	return readCloser{r, rc}, m, nil
}

func (u unsealSource) open(ctx context.Context, rc io.Reader, meta Meta) (io.Reader, Meta, error) {
	buf := make([]byte, maxSealedHeader)
	n, err := io.ReadFull(rc, buf)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, Meta{}, fmt.Errorf("read the header: %w", err)
	}
	buf = buf[:n]
	h, env, hdr, err := parseSealedHeader(buf)
	if err != nil {
		return nil, Meta{}, err
	}
	key, err := u.k.Unwrap(ctx, h.wrapped)
	if err != nil {
		return nil, Meta{}, fmt.Errorf("unwrap the export key: it was sealed by %s; import it with that key: %w", h.wrapped.Descriptor, err)
	}
	defer clear(key)
	if len(key) != dek.KeySize {
		return nil, Meta{}, fmt.Errorf("the export key unwrapped to %d bytes, not %d: %w", len(key), dek.KeySize, ErrFormat)
	}
	r, err := stream.NewSequentialReader(io.MultiReader(bytes.NewReader(buf[env:]), rc), exportKeys{key}, sealedPurpose)
	if err != nil {
		return nil, Meta{}, err
	}
	return r, Meta{Size: plainSize(meta.Size-int64(env+hdr), int64(h.stream.SegmentSize))}, nil
}

// plainSize returns the plaintext size of a stream body of body bytes in
// segments of seg plaintext bytes, or -1 when it cannot be one (the reader
// then reports the damage).
func plainSize(body, seg int64) int64 {
	if body < stream.TagSize {
		return -1
	}
	n := (body + seg + stream.TagSize - 1) / (seg + stream.TagSize)
	last := body - (n-1)*(seg+stream.TagSize)
	if last < stream.TagSize {
		return -1
	}
	return (n-1)*seg + last - stream.TagSize
}

type readCloser struct {
	io.Reader
	c io.Closer
}

func (r readCloser) Close() error { return r.c.Close() }
