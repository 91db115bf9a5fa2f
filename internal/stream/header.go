package stream

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// Magic starts every stream file.
const Magic = "CCST"

// FormatVersion is the stream format this package writes and reads.
const FormatVersion = 1

// MaxHeaderLen is the longest possible header.
const MaxHeaderLen = len(Magic) + 1 + 1 + 255 + 1 + 255 + 4 + 4 + 1 + SaltSize

// Header is the plaintext, authenticated header of a stream.
type Header struct {
	Purpose     string      // what the stream holds, such as "rdb"; 1 to 255 bytes
	DiskID      string      // the disk whose keyring encrypts it; 1 to 255 bytes
	DEKVersion  uint32      // DEK version of the per-file key
	SegmentSize int         // plaintext bytes per segment
	Compression Compression // compression applied before segmenting
	Salt        [SaltSize]byte
}

// Len returns the length of the marshaled header.
func (h Header) Len() int {
	return len(Magic) + 1 + 1 + len(h.Purpose) + 1 + len(h.DiskID) + 4 + 4 + 1 + SaltSize
}

// Marshal returns the header's bytes, as FORMAT.md lays them out.
func (h Header) Marshal() []byte {
	b := make([]byte, 0, h.Len())
	b = append(b, Magic...)
	b = append(b, FormatVersion)
	b = append(b, byte(len(h.Purpose)))
	b = append(b, h.Purpose...)
	b = append(b, byte(len(h.DiskID)))
	b = append(b, h.DiskID...)
	b = binary.BigEndian.AppendUint32(b, h.DEKVersion)
	b = binary.BigEndian.AppendUint32(b, uint32(h.SegmentSize))
	b = append(b, byte(h.Compression))
	return append(b, h.Salt[:]...)
}

func (h Header) check() error {
	switch {
	case h.Purpose == "" || len(h.Purpose) > 255:
		return fmt.Errorf("purpose must be 1 to 255 bytes, got %d: %w", len(h.Purpose), ErrFormat)
	case h.DiskID == "" || len(h.DiskID) > 255:
		return fmt.Errorf("disk id must be 1 to 255 bytes, got %d: %w", len(h.DiskID), ErrFormat)
	case h.SegmentSize < MinSegmentSize || h.SegmentSize > MaxSegmentSize:
		return fmt.Errorf("segment size %d out of range [%d, %d]: %w", h.SegmentSize, MinSegmentSize, MaxSegmentSize, ErrFormat)
	case h.Compression > S2:
		return fmt.Errorf("unknown compression %d: %w", h.Compression, ErrFormat)
	}
	return nil
}

// ParseHeader decodes the header at the start of b and returns it with its
// length. It checks the structure only: the header is authenticated by the
// segments, which bind it as associated data.
func ParseHeader(b []byte) (Header, int, error) {
	var h Header
	if len(b) < len(Magic)+1 {
		return h, 0, fmt.Errorf("stream.ParseHeader: %d bytes, too short for a header: %w", len(b), ErrTruncated)
	}
	if !bytes.Equal(b[:len(Magic)], []byte(Magic)) {
		return h, 0, fmt.Errorf("stream.ParseHeader: not a cachecrypt stream (bad magic %q): %w", b[:len(Magic)], ErrFormat)
	}
	if v := b[len(Magic)]; v != FormatVersion {
		return h, 0, fmt.Errorf("stream.ParseHeader: stream format version %d, this build reads %d; upgrade cachecrypt: %w", v, FormatVersion, ErrVersion)
	}
	p := len(Magic) + 1
	str := func() (string, bool) {
		if p >= len(b) || p+1+int(b[p]) > len(b) {
			return "", false
		}
		s := string(b[p+1 : p+1+int(b[p])])
		p += 1 + int(b[p])
		return s, true
	}
	var ok1, ok2 bool
	h.Purpose, ok1 = str()
	if ok1 {
		h.DiskID, ok2 = str()
	}
	if !ok1 || !ok2 || len(b)-p < 4+4+1+SaltSize {
		return Header{}, 0, fmt.Errorf("stream.ParseHeader: header ends early: %w", ErrTruncated)
	}
	h.DEKVersion = binary.BigEndian.Uint32(b[p:])
	seg := binary.BigEndian.Uint32(b[p+4:])
	if seg > MaxSegmentSize {
		return Header{}, 0, fmt.Errorf("stream.ParseHeader: segment size %d out of range: %w", seg, ErrFormat)
	}
	h.SegmentSize = int(seg)
	h.Compression = Compression(b[p+8])
	copy(h.Salt[:], b[p+9:])
	if err := h.check(); err != nil {
		return Header{}, 0, fmt.Errorf("stream.ParseHeader: %w", err)
	}
	return h, p + 9 + SaltSize, nil
}
