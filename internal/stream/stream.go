// Package stream implements cachecrypt's segmented stream format: a header,
// then fixed-size segments, each sealed with AES-256-GCM under a per-file key
// (the STREAM construction of Hoang, Reyhanitabar, Rogaway and Vizár, as used
// by Tink's streaming AEAD). The nonce of a segment is its index and a
// last-segment flag, and the whole header is the associated data of every
// segment, so truncation, reordering, appended bytes, header edits and
// segments copied from another file or disk are all detected. Segment i sits
// at a computable offset, so the Reader offers random access (io.ReaderAt,
// io.Seeker) and authenticates only the segments it reads.
//
// The Writer seals segments in parallel on all cores with memory bounded by
// a small multiple of the segment size, whatever the stream's length, and
// allocates nothing per segment in steady state. FORMAT.md ("Stream")
// specifies the bytes; testdata/stream-v1 holds a vector.
//
// # Parallelism
//
// Segments are sealed and opened in batches of about 512 KiB per core by
// the calling goroutine and a process-wide pool of helper goroutines (the
// crypter, in crypt.go). Each participant owns a contiguous share of a
// batch with its own claim word, steals from the other shares when its own
// is empty, and blocks when there is nothing left to claim: helpers on the
// pool's channel, the caller on the batch's completion channel. No
// goroutine waits by spinning. A Writer given a large buffer and
// Reader.WriteTo pipeline their batches: batch b+1 is handed out before
// batch b's last units are done, so helpers go from batch to batch without
// being put to sleep and woken again, and nobody idles through a batch's
// tail; only the end of a write waits. Large s2 writes are compressed in
// parallel straight from the caller's buffer, and compressed chunks of 1
// MiB or more are sealed without being copied first.
//
// An earlier engine spun instead. All participants claimed units from one
// shared atomic word, the caller spun on the batch's completion counter,
// and helpers lingered between batches doing atomic adds to one shared
// variable, so as not to pay a scheduler wake-up per batch. On two cores
// it looked fine. On sixteen, the spinning goroutines fought over the same
// cache lines and took every processor: a profile showed 90% of the CPU in
// the spin loop and 8% in AES-GCM, the stream ran at 0.12x of the all-core
// GCM ceiling (no faster than one core), and a snapshot took every core
// from the cache serving beside it. At GOMAXPROCS=2 the same profile put
// 32% of the CPU in the spin loop; now AES-GCM is over 90% of it and a
// stream's CPU per byte is raw AES-GCM's plus the copies the stream needs
// (the read of the ciphertext, when opening).
package stream

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/cachecrypt/cachecrypt/internal/integrity"
)

// Keys gives a stream its per-file keys. *dek.Keyring implements it.
type Keys interface {
	// DiskID names the disk the keys belong to; it is written into every
	// header and checked on read.
	DiskID() string
	// Active returns the DEK version new streams use.
	Active() uint32
	// FileKey derives the 32-byte AES key of one stream.
	FileKey(version uint32, purpose string, salt []byte) ([]byte, error)
}

// Compression selects an optional compression of the whole plaintext before
// it is cut into segments. Compressed streams are sequential only.
type Compression uint8

// The compressions a stream may use; the values are stored in the header.
const (
	None Compression = 0 // no compression: random access available
	Zstd Compression = 1 // zstd (github.com/klauspost/compress/zstd)
	S2   Compression = 2 // s2 (github.com/klauspost/compress/s2), faster, larger
)

// String names the compression.
func (c Compression) String() string {
	switch c {
	case None:
		return "none"
	case Zstd:
		return "zstd"
	case S2:
		return "s2"
	}
	return fmt.Sprintf("compression(%d)", uint8(c))
}

// Limits of the format.
const (
	// DefaultSegmentSize is the segment size when Options.SegmentSize is 0.
	DefaultSegmentSize = 64 << 10
	// MinSegmentSize and MaxSegmentSize bound Options.SegmentSize.
	MinSegmentSize = 16
	MaxSegmentSize = 16 << 20
	// MaxSegments is the number of segments a stream may hold: the segment
	// index is a 32-bit counter. A stream holds at most
	// MaxSegments*SegmentSize plaintext bytes (256 TiB at 64 KiB segments).
	MaxSegments = 1 << 32
	// TagSize is the bytes each segment adds: the GCM tag.
	TagSize = 16
	// SaltSize is the size of the random per-file salt in the header.
	SaltSize = 32
)

// Errors of this package: the integrity errors every cachecrypt format
// returns, matched with errors.Is.
var (
	ErrAuthentication = integrity.ErrAuthentication
	ErrTruncated      = integrity.ErrTruncated
	ErrFormat         = integrity.ErrFormat
	ErrVersion        = integrity.ErrVersion
	ErrClosed         = integrity.ErrClosed
	// ErrSequential is returned by ReadAt and Seek on a compressed stream.
	ErrSequential = errors.New("stream: compressed streams are sequential only (no ReadAt or Seek); read them from the start")
)

// Options configure a Writer.
type Options struct {
	// SegmentSize is the number of plaintext bytes per segment, from
	// MinSegmentSize to MaxSegmentSize; 0 means DefaultSegmentSize.
	SegmentSize int
	// Compression compresses the plaintext before it is segmented.
	// Compressed streams are sequential only (no ReadAt or Seek).
	Compression Compression
	// Concurrency is the number of goroutines sealing segments; 0 means
	// GOMAXPROCS. 1 seals inline on the calling goroutine.
	Concurrency int
}

func (o Options) segmentSize() (int, error) {
	switch s := o.SegmentSize; {
	case s == 0:
		return DefaultSegmentSize, nil
	case s < MinSegmentSize || s > MaxSegmentSize:
		return 0, fmt.Errorf("segment size %d out of range [%d, %d]", s, MinSegmentSize, MaxSegmentSize)
	default:
		return s, nil
	}
}

func concurrency(n int) int {
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	return min(n, 256)
}

// batchSegments is how many segments one parallel round seals or opens:
// per goroutine, at least two segments and about 512 KiB (at most 1024
// segments), so handing work over costs little beside the crypto. The
// Writer's memory is two such batches (plaintext in, ciphertext out), the
// Reader's one: constant whatever the stream's length.
func batchSegments(segSize, conc int) int {
	per := max(2, min(1024, (512<<10)/segSize))
	return conc * per
}

// readerBatch is batchSegments for a Reader. On one goroutine there is
// nothing to hand over, so it keeps about 64 KiB: one ciphertext slot that
// stays in cache while it is read, decrypted and written out.
func readerBatch(segSize, conc int) int {
	if conc == 1 {
		return max(1, (64<<10)/segSize)
	}
	return batchSegments(segSize, conc)
}

// segmentCount returns the number of segments of a stream of plain bytes.
// An empty stream has one empty segment.
func segmentCount(plain int64, segSize int) int64 {
	if plain == 0 {
		return 1
	}
	return (plain + int64(segSize) - 1) / int64(segSize)
}

// EncryptedSize returns the size of the segments of a stream holding plain
// bytes (uncompressed) cut into segments of segmentSize (0 means
// DefaultSegmentSize). The file is this plus the header's length,
// Header.Len.
func EncryptedSize(plain int64, segmentSize int) int64 {
	if segmentSize == 0 {
		segmentSize = DefaultSegmentSize
	}
	return plain + segmentCount(plain, segmentSize)*TagSize
}
