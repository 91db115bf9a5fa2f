package export

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash"
	"strconv"
)

// crcPoly is the reflected form of the Jones polynomial 0xad93d23594c935a9
// that Redis uses for the RDB trailer (crc64.c: reflected in and out, init 0,
// no final xor).
const crcPoly = 0x95ac9329ac4bc9b5

var crcTable = makeCRCTable()

func makeCRCTable() *[8][256]uint64 {
	t := new([8][256]uint64)
	for i := range 256 {
		c := uint64(i)
		for range 8 {
			if c&1 == 1 {
				c = c>>1 ^ crcPoly
			} else {
				c >>= 1
			}
		}
		t[0][i] = c
	}
	for i := range 256 {
		c := t[0][i]
		for j := 1; j < 8; j++ {
			c = t[0][c&0xff] ^ c>>8
			t[j][i] = c
		}
	}
	return t
}

// crc64 updates a Redis CRC-64 with p (slicing by 8).
func crc64(crc uint64, p []byte) uint64 {
	t := crcTable
	for len(p) >= 8 {
		crc ^= binary.LittleEndian.Uint64(p)
		crc = t[7][crc&0xff] ^ t[6][crc>>8&0xff] ^ t[5][crc>>16&0xff] ^ t[4][crc>>24&0xff] ^
			t[3][crc>>32&0xff] ^ t[2][crc>>40&0xff] ^ t[1][crc>>48&0xff] ^ t[0][crc>>56]
		p = p[8:]
	}
	for _, b := range p {
		crc = t[0][byte(crc)^b] ^ crc>>8
	}
	return crc
}

// checker is an io.Writer that checks a plain RDB as it streams by: the
// "REDIS" magic and version, the EOF opcode, and the CRC-64 trailer over
// every byte before it; it also computes the SHA-256 of the whole file.
type checker struct {
	sha  hash.Hash
	crc  uint64 // over every byte written except the last 8 (held in tail)
	head []byte // first 9 bytes
	tail [8]byte
	nt   int // bytes held in tail
	n    int64
}

func newChecker() *checker { return &checker{sha: sha256.New()} }

func (c *checker) Write(p []byte) (int, error) {
	c.sha.Write(p)
	c.n += int64(len(p))
	if len(c.head) < 9 {
		c.head = append(c.head, p[:min(len(p), 9-len(c.head))]...)
	}
	if len(p) >= 8 {
		c.crc = crc64(c.crc, c.tail[:c.nt])
		c.crc = crc64(c.crc, p[:len(p)-8])
		c.nt = copy(c.tail[:], p[len(p)-8:])
		return len(p), nil
	}
	// Short write: push out of tail what no longer fits.
	if over := c.nt + len(p) - 8; over > 0 {
		c.crc = crc64(c.crc, c.tail[:over])
		c.nt = copy(c.tail[:], c.tail[over:c.nt])
	}
	c.nt += copy(c.tail[c.nt:], p)
	return len(p), nil
}

// result checks what was written and returns its description.
func (c *checker) result() (Info, error) {
	in := Info{Size: c.n}
	copy(in.SHA256[:], c.sha.Sum(nil))
	if err := checkMagic(c.head); err != nil {
		return in, err
	}
	v, _ := strconv.Atoi(string(c.head[5:9]))
	if v < 5 {
		return in, fmt.Errorf("RDB version %d has no CRC-64 trailer; only version 5 and later can be checked: %w", v, ErrNotRDB)
	}
	if c.n < 9+1+8 {
		return in, fmt.Errorf("RDB of %d bytes is shorter than its header and trailer: %w", c.n, ErrNotRDB)
	}
	// The byte before the checksum is the EOF opcode, hashed in crc.
	want := binary.LittleEndian.Uint64(c.tail[:])
	in.CRC64 = want
	if want == 0 {
		// Written with rdbchecksum no: Redis itself skips the check.
		return in, nil
	}
	if c.crc != want {
		return in, fmt.Errorf("RDB CRC-64 is %016x but its trailer says %016x: the file is damaged or truncated: %w", c.crc, want, ErrChecksum)
	}
	return in, nil
}

func checkMagic(h []byte) error {
	if len(h) < 9 || string(h[:5]) != "REDIS" {
		return fmt.Errorf("it starts with %q, not \"REDIS\" and a 4-digit version; give the path of an RDB snapshot (dump.rdb): %w", h, ErrNotRDB)
	}
	for _, b := range h[5:9] {
		if b < '0' || b > '9' {
			return fmt.Errorf("RDB version %q is not 4 digits: %w", h[5:9], ErrNotRDB)
		}
	}
	return nil
}
