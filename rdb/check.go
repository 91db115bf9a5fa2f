package rdb

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"hash/crc64"
	"io"
	"strconv"
)

// Info describes a plaintext RDB file checked by CheckPlain.
type Info struct {
	Version  int    // RDB format version from the header ("REDIS0011" is 11)
	Size     int64  // bytes read
	Checksum uint64 // CRC-64 trailer; 0 when the writer disabled checksums (rdbchecksum no) or Version < 5
}

// crcTable is CRC-64/Jones as Redis computes it (src/crc64.c): reflected
// polynomial 0xad93d23594c935a9, initial value 0, no final xor.
var crcTable = crc64.MakeTable(0x95ac9329ac4bc9b5)

// redisCRC continues a Redis CRC-64 over p. hash/crc64 inverts the value
// before and after; Redis does not, so undo it.
func redisCRC(crc uint64, p []byte) uint64 {
	return ^crc64.Update(^crc, crcTable, p)
}

// CheckPlain reads r to its end and checks that it is a plaintext RDB file:
// "REDIS" and a 4-digit version, the end-of-file opcode (0xFF), and for
// version 5 and later the CRC-64 trailer (8 bytes, little-endian) over
// everything before it; a zero trailer means the writer disabled checksums.
// It does not parse the entries. Errors match ErrNotRDB or ErrChecksum.
func CheckPlain(r io.Reader) (Info, error) {
	br := bufio.NewReader(r)
	var hdr [9]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return Info{}, fmt.Errorf("rdb.CheckPlain: %d-byte header unreadable (%v): %w", len(hdr), err, ErrNotRDB)
	}
	v, err := strconv.Atoi(string(hdr[5:]))
	if string(hdr[:5]) != "REDIS" || err != nil || hdr[5] < '0' || hdr[5] > '9' {
		return Info{}, fmt.Errorf("rdb.CheckPlain: header %q is not \"REDIS\" and a 4-digit version: %w", hdr[:], ErrNotRDB)
	}
	in := Info{Version: v, Size: int64(len(hdr))}
	trailer := 0
	if v >= 5 {
		trailer = 8
	}
	// The last 1+trailer bytes stay out of the CRC until the end is known;
	// they are kept at the front of buf, and reads land after them.
	keep := 1 + trailer
	crc := redisCRC(0, hdr[:])
	buf := make([]byte, 256<<10)
	held := 0
	for {
		n, err := br.Read(buf[held:])
		in.Size += int64(n)
		held += n
		if held > keep {
			crc = redisCRC(crc, buf[:held-keep])
			held = copy(buf, buf[held-keep:held])
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return in, fmt.Errorf("rdb.CheckPlain: %w", err)
		}
	}
	tail := buf[:held]
	if len(tail) < 1+trailer || tail[0] != 0xFF {
		return in, fmt.Errorf("rdb.CheckPlain: no end-of-file opcode before the %d-byte trailer; the RDB is truncated: %w", trailer, ErrNotRDB)
	}
	if trailer == 0 {
		return in, nil
	}
	crc = redisCRC(crc, tail[:1])
	in.Checksum = binary.LittleEndian.Uint64(tail[1:])
	if in.Checksum != 0 && in.Checksum != crc {
		return in, fmt.Errorf("rdb.CheckPlain: trailer CRC-64 %016x, content %016x; the RDB is damaged: %w", in.Checksum, crc, ErrChecksum)
	}
	return in, nil
}
