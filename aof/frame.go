package aof

import (
	"bufio"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/cachecrypt/cachecrypt/internal/integrity"
)

// The part file layout is specified in FORMAT.md ("AOF").
const (
	magic         = "CCAOF\r\n\x1a"
	formatVersion = 1
	saltSize      = 32
	tagSize       = 16
	frameHdrSize  = 8 // length + check
	fixedHdrSize  = len(magic) + 1 + 1 + 4 + saltSize + 8 + 8 + 1

	// MaxAppend is the largest batch one Append accepts, and so the largest
	// frame payload: Redis' proto-max-bulk-len default (512 MiB).
	MaxAppend = 512 << 20

	kindBase = 'b'
	kindIncr = 'i'

	purposeBase     = "aof-base"
	purposeIncr     = "aof-incr"
	purposeManifest = "aof-manifest"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// maxFrame bounds a frame's plaintext; tests lower it.
var maxFrame = MaxAppend

// header is the plaintext header of a part file. It is authenticated twice:
// its SHA-256 is associated data of every frame, and every field is
// repeated in the part's manifest entry, which is HMAC'd.
type header struct {
	Kind       byte   // kindBase or kindIncr
	DEK        uint32 // DEK version of the file key
	Salt       [saltSize]byte
	Seq        uint64 // the part's sequence number (as in Redis' manifest)
	Generation uint64 // manifest generation that first lists the part
	DiskID     string
}

func (h *header) marshal() []byte {
	b := make([]byte, 0, fixedHdrSize+len(h.DiskID))
	b = append(b, magic...)
	b = append(b, formatVersion, h.Kind)
	b = binary.BigEndian.AppendUint32(b, h.DEK)
	b = append(b, h.Salt[:]...)
	b = binary.BigEndian.AppendUint64(b, h.Seq)
	b = binary.BigEndian.AppendUint64(b, h.Generation)
	b = append(b, byte(len(h.DiskID)))
	return append(b, h.DiskID...)
}

func (h *header) size() int64 { return int64(fixedHdrSize + len(h.DiskID)) }

// readHeader parses a part header from r.
func readHeader(r io.Reader) (*header, error) {
	var fix [fixedHdrSize]byte
	if _, err := io.ReadFull(r, fix[:]); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil, fmt.Errorf("header: file ends within the %d-byte header: %w", fixedHdrSize, integrity.ErrTruncated)
		}
		return nil, err
	}
	if string(fix[:len(magic)]) != magic {
		return nil, fmt.Errorf("header: not an encrypted AOF part (bad magic): %w", integrity.ErrFormat)
	}
	b := fix[len(magic):]
	if b[0] != formatVersion {
		return nil, fmt.Errorf("header: format version %d, this build reads %d: %w", b[0], formatVersion, integrity.ErrVersion)
	}
	h := &header{Kind: b[1], DEK: binary.BigEndian.Uint32(b[2:])}
	if h.Kind != kindBase && h.Kind != kindIncr {
		return nil, fmt.Errorf("header: unknown part kind %#x: %w", h.Kind, integrity.ErrFormat)
	}
	copy(h.Salt[:], b[6:])
	h.Seq = binary.BigEndian.Uint64(b[6+saltSize:])
	h.Generation = binary.BigEndian.Uint64(b[14+saltSize:])
	id := make([]byte, b[22+saltSize])
	if _, err := io.ReadFull(r, id); err != nil {
		return nil, fmt.Errorf("header: file ends within the disk id: %w", integrity.ErrTruncated)
	}
	h.DiskID = string(id)
	return h, nil
}

// sealer seals and opens the frames of one part file.
type sealer struct {
	aead  cipher.AEAD // nil: plain framing (benchmark baseline only)
	nonce [12]byte
	ad    [sha256.Size + 12]byte // header digest || frame index || length
	crc   [12]byte               // frame index || length, for the check
}

func newSealer(keys Keys, h *header, plain bool) (*sealer, error) {
	s := &sealer{}
	d := sha256.Sum256(h.marshal())
	copy(s.ad[:], d[:])
	if plain {
		return s, nil
	}
	purpose := purposeIncr
	if h.Kind == kindBase {
		purpose = purposeBase
	}
	key, err := keys.FileKey(h.DEK, purpose, h.Salt[:])
	if err != nil {
		return nil, err
	}
	defer clear(key)
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	if s.aead, err = cipher.NewGCM(block); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *sealer) overhead() int {
	if s.aead == nil {
		return 0
	}
	return tagSize
}

func (s *sealer) setIndex(index uint64, n uint32) {
	binary.BigEndian.PutUint64(s.nonce[4:], index)
	binary.BigEndian.PutUint64(s.ad[sha256.Size:], index)
	binary.BigEndian.PutUint32(s.ad[sha256.Size+8:], n)
}

// frameCheck is the checksum of a frame's length field: it tells a torn
// write (length present, payload short) from a damaged length.
func (s *sealer) frameCheck(index uint64, n uint32) uint32 {
	binary.BigEndian.PutUint64(s.crc[:], index)
	binary.BigEndian.PutUint32(s.crc[8:], n)
	return crc32.Checksum(s.crc[:], castagnoli)
}

// appendFrame appends frame index sealing p to dst.
func (s *sealer) appendFrame(dst []byte, index uint64, p []byte) []byte {
	n := uint32(len(p) + s.overhead())
	dst = binary.BigEndian.AppendUint32(dst, n)
	dst = binary.BigEndian.AppendUint32(dst, s.frameCheck(index, n))
	if s.aead == nil {
		return append(dst, p...)
	}
	s.setIndex(index, n)
	return s.aead.Seal(dst, s.nonce[:], p, s.ad[:])
}

// open authenticates frame index in place and returns its plaintext.
func (s *sealer) open(index uint64, sealed []byte) ([]byte, error) {
	if s.aead == nil {
		return sealed, nil
	}
	s.setIndex(index, uint32(len(sealed)))
	return s.aead.Open(sealed[:0], s.nonce[:], sealed, s.ad[:])
}

// frameReader reads the frames of one part file in order. Its memory is
// one buffer as large as the largest frame, whatever the file size.
type frameReader struct {
	name  string // for errors
	r     *bufio.Reader
	s     *sealer
	off   int64 // offset of the next frame
	size  int64 // file size: frames never extend past it
	index uint64
	buf   []byte
	hdr   [frameHdrSize]byte
}

// damage reports an error at offset off of the part being read.
type damage struct {
	file string
	off  int64
	torn bool // the file ends inside the frame: a torn final write
	err  error
}

func (d *damage) Error() string {
	if d.torn {
		return fmt.Sprintf("%s at offset %d: %v", d.file, d.off, d.err)
	}
	return fmt.Sprintf("%s at offset %d: %v (not a torn write: the log was damaged or tampered with; restore the directory from a backup)", d.file, d.off, d.err)
}
func (d *damage) Unwrap() error { return d.err }

// next returns the plaintext of the next frame, io.EOF at a clean end of
// file, or a *damage. The plaintext is valid until the next call.
func (fr *frameReader) next() ([]byte, error) {
	rem := fr.size - fr.off
	if rem == 0 {
		return nil, io.EOF
	}
	if rem < frameHdrSize {
		return nil, fr.torn(rem, fmt.Errorf("%d bytes left, less than a frame header: %w", rem, integrity.ErrTruncated))
	}
	h := &fr.hdr
	if _, err := io.ReadFull(fr.r, h[:]); err != nil {
		return nil, fr.ioErr(err)
	}
	n := binary.BigEndian.Uint32(h[:])
	if binary.BigEndian.Uint32(h[4:]) != fr.s.frameCheck(fr.index, n) {
		if *h == [frameHdrSize]byte{} {
			// A crash can leave a zero-filled tail on some filesystems.
			if z, err := fr.zeroTail(rem - frameHdrSize); err != nil || z {
				if err != nil {
					return nil, fr.ioErr(err)
				}
				return nil, fr.torn(rem, fmt.Errorf("zero-filled tail of %d bytes: %w", rem, integrity.ErrTruncated))
			}
		}
		return nil, fr.bad(fmt.Errorf("frame %d: length field checksum mismatch: %w", fr.index, integrity.ErrAuthentication))
	}
	if int64(n) < int64(fr.s.overhead()) || n > uint32(maxFrame)+tagSize {
		return nil, fr.bad(fmt.Errorf("frame %d: length %d out of range: %w", fr.index, n, integrity.ErrFormat))
	}
	if int64(n) > rem-frameHdrSize {
		return nil, fr.torn(rem, fmt.Errorf("frame %d of %d bytes, but only %d bytes left: %w", fr.index, n, rem-frameHdrSize, integrity.ErrTruncated))
	}
	if cap(fr.buf) < int(n) {
		fr.buf = make([]byte, n)
	}
	buf := fr.buf[:n]
	if _, err := io.ReadFull(fr.r, buf); err != nil {
		return nil, fr.ioErr(err)
	}
	p, err := fr.s.open(fr.index, buf)
	if err != nil {
		return nil, fr.bad(fmt.Errorf("frame %d of %d bytes: %w", fr.index, n, integrity.ErrAuthentication))
	}
	fr.off += frameHdrSize + int64(n)
	fr.index++
	return p, nil
}

func (fr *frameReader) zeroTail(n int64) (bool, error) {
	var b [4096]byte
	for n > 0 {
		k := min(n, int64(len(b)))
		if _, err := io.ReadFull(fr.r, b[:k]); err != nil {
			return false, err
		}
		for _, c := range b[:k] {
			if c != 0 {
				return false, nil
			}
		}
		n -= k
	}
	return true, nil
}

func (fr *frameReader) torn(rem int64, err error) error {
	return &damage{file: fr.name, off: fr.off, torn: true, err: err}
}
func (fr *frameReader) bad(err error) error { return &damage{file: fr.name, off: fr.off, err: err} }
func (fr *frameReader) ioErr(err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		err = fmt.Errorf("file shrank while being read: %w", integrity.ErrTruncated)
	}
	return &damage{file: fr.name, off: fr.off, err: err}
}
