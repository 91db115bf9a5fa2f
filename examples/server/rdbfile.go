package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/cachecrypt/cachecrypt/rdb"
)

// The subset of the RDB format (version 9) this server writes and reads:
// strings with an optional expiry in milliseconds. redis-server loads it.
const (
	rdbVersion    = "0009"
	opAux         = 0xFA
	opResizeDB    = 0xFB
	opExpireMs    = 0xFC
	opExpireSec   = 0xFD
	opSelectDB    = 0xFE
	opEOF         = 0xFF
	typeString    = 0x00
	encInt8       = 0xC0
	encInt16      = 0xC1
	encInt32      = 0xC2
	encLZF        = 0xC3
	maxRDBKeySize = 512 << 20 // proto-max-bulk-len
)

// crcWriter computes Redis' CRC-64 of what passes through it.
type crcWriter struct {
	w   io.Writer
	crc uint64
}

func (c *crcWriter) Write(p []byte) (int, error) {
	c.crc = rdb.CRC64(c.crc, p)
	return c.w.Write(p)
}

// writeRDB writes the keyspace snap as an RDB file ending with its CRC-64.
func writeRDB(w io.Writer, snap map[string]entry) error {
	c := &crcWriter{w: w}
	b := bufio.NewWriterSize(c, 64<<10)
	expires := 0
	for _, e := range snap {
		if e.exp != 0 {
			expires++
		}
	}
	b.WriteString("REDIS" + rdbVersion)
	writeAux(b, "redis-ver", "7.0.0")
	writeAux(b, "redis-bits", "64")
	b.Write([]byte{opSelectDB, 0})
	b.WriteByte(opResizeDB)
	b.Write(appendLen(nil, uint64(len(snap))))
	b.Write(appendLen(nil, uint64(expires)))
	var buf []byte
	for k, e := range snap {
		buf = buf[:0]
		if e.exp != 0 {
			buf = append(buf, opExpireMs)
			buf = binary.LittleEndian.AppendUint64(buf, uint64(e.exp))
		}
		buf = append(buf, typeString)
		buf = appendString(buf, []byte(k))
		buf = appendString(buf, e.val)
		if _, err := b.Write(buf); err != nil {
			return err
		}
	}
	b.WriteByte(opEOF)
	if err := b.Flush(); err != nil {
		return err
	}
	_, err := w.Write(binary.LittleEndian.AppendUint64(nil, c.crc))
	return err
}

func writeAux(b *bufio.Writer, k, v string) {
	b.WriteByte(opAux)
	b.Write(appendString(nil, []byte(k)))
	b.Write(appendString(nil, []byte(v)))
}

// appendLen appends an RDB length encoding.
func appendLen(b []byte, n uint64) []byte {
	switch {
	case n < 1<<6:
		return append(b, byte(n))
	case n < 1<<14:
		return append(b, 0x40|byte(n>>8), byte(n))
	case n <= 0xFFFFFFFF:
		return binary.BigEndian.AppendUint32(append(b, 0x80), uint32(n))
	}
	return binary.BigEndian.AppendUint64(append(b, 0x81), n)
}

func appendString(b, s []byte) []byte { return append(appendLen(b, uint64(len(s))), s...) }

// readRDB loads an RDB file of strings into d, skipping keys expired at now.
// It checks the CRC-64 trailer, and reads nothing past it.
func readRDB(r *bufio.Reader, d *db, now int64) error {
	br := &rdbReader{r: r}
	hdr := br.bytes(9)
	if br.err != nil || string(hdr[:5]) != "REDIS" {
		return errors.New("not an RDB file: no REDIS header")
	}
	if v, err := strconv.Atoi(string(hdr[5:])); err != nil || v < 1 || v > 11 {
		return fmt.Errorf("RDB version %q not supported (want 1 to 11)", hdr[5:])
	}
	var exp int64
	for br.err == nil {
		op := br.byte()
		switch op {
		case opAux:
			br.str()
			br.str()
		case opResizeDB:
			br.length()
			br.length()
		case opSelectDB:
			if n := br.length(); n != 0 && br.err == nil {
				return fmt.Errorf("database %d: this server has only database 0", n)
			}
		case opExpireMs:
			exp = int64(binary.LittleEndian.Uint64(br.bytes(8)))
		case opExpireSec:
			exp = int64(binary.LittleEndian.Uint32(br.bytes(4))) * 1000
		case typeString:
			k, v := br.str(), br.str()
			if br.err == nil && (exp == 0 || exp > now) {
				d.set(string(k), entry{val: v, exp: exp})
			}
			exp = 0
		case opEOF:
			want := br.crc
			sum := br.bytes(8)
			if br.err != nil {
				return fmt.Errorf("RDB ends before its checksum: %w", br.err)
			}
			if got := binary.LittleEndian.Uint64(sum); got != 0 && got != want {
				return fmt.Errorf("RDB checksum mismatch: %w", rdb.ErrChecksum)
			}
			return nil
		default:
			if br.err == nil {
				return fmt.Errorf("RDB value type %#x not supported: this server stores strings only", op)
			}
		}
	}
	return fmt.Errorf("RDB ends early: %w", br.err)
}

// rdbReader reads RDB items, keeping the first error and the CRC-64 of the
// bytes read so far.
type rdbReader struct {
	r   *bufio.Reader
	crc uint64
	err error
}

func (r *rdbReader) bytes(n int) []byte {
	if r.err != nil {
		return make([]byte, n)
	}
	var b []byte
	if n <= 64<<10 {
		b = make([]byte, n)
		if _, err := io.ReadFull(r.r, b); err != nil {
			r.err = io.ErrUnexpectedEOF
			return b
		}
	} else { // a damaged length must not allocate before the bytes arrive
		b, _ = io.ReadAll(io.LimitReader(r.r, int64(n)))
		if len(b) < n {
			r.err = io.ErrUnexpectedEOF
			return nil
		}
	}
	r.crc = rdb.CRC64(r.crc, b)
	return b
}

func (r *rdbReader) byte() byte { return r.bytes(1)[0] }

// lengthOrEnc reads a length; enc reports a special string encoding.
func (r *rdbReader) lengthOrEnc() (n uint64, enc int) {
	b := r.byte()
	switch b >> 6 {
	case 0:
		return uint64(b & 0x3F), -1
	case 1:
		return uint64(b&0x3F)<<8 | uint64(r.byte()), -1
	case 3:
		return 0, int(b)
	}
	switch b {
	case 0x80:
		return uint64(binary.BigEndian.Uint32(r.bytes(4))), -1
	case 0x81:
		return binary.BigEndian.Uint64(r.bytes(8)), -1
	}
	if r.err == nil {
		r.err = fmt.Errorf("bad length encoding %#x", b)
	}
	return 0, -1
}

func (r *rdbReader) length() uint64 {
	n, enc := r.lengthOrEnc()
	if enc >= 0 && r.err == nil {
		r.err = fmt.Errorf("encoded string %#x where a length was expected", enc)
	}
	return n
}

func (r *rdbReader) str() []byte {
	n, enc := r.lengthOrEnc()
	switch enc {
	case -1:
		if n > maxRDBKeySize {
			if r.err == nil {
				r.err = fmt.Errorf("string of %d bytes is over the 512 MiB limit", n)
			}
			return nil
		}
		return r.bytes(int(n))
	case encInt8:
		return strconv.AppendInt(nil, int64(int8(r.byte())), 10)
	case encInt16:
		return strconv.AppendInt(nil, int64(int16(binary.LittleEndian.Uint16(r.bytes(2)))), 10)
	case encInt32:
		return strconv.AppendInt(nil, int64(int32(binary.LittleEndian.Uint32(r.bytes(4)))), 10)
	}
	if r.err == nil {
		r.err = fmt.Errorf("string encoding %#x (LZF) not supported", enc)
	}
	return nil
}
