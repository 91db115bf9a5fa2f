package export

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

// Redis' crc64.c self-test: crc64(0, "123456789") == 0xe9c6d914c4b8d9ca.
func TestCRC64KnownAnswer(t *testing.T) {
	if got := crc64(0, []byte("123456789")); got != 0xe9c6d914c4b8d9ca {
		t.Fatalf("crc64 = %016x, want e9c6d914c4b8d9ca", got)
	}
	long := bytes.Repeat([]byte("123456789"), 1000)
	var inc uint64
	for i := 0; i < len(long); i += 7 {
		inc = crc64(inc, long[i:min(i+7, len(long))])
	}
	if one := crc64(0, long); one != inc {
		t.Fatalf("incremental crc64 %016x != one-shot %016x", inc, one)
	}
}

// fakeRDB builds "REDIS0011" + body + 0xFF + CRC-64 trailer.
func fakeRDB(body []byte) []byte {
	b := append([]byte("REDIS0011"), body...)
	b = append(b, 0xff)
	return binary.LittleEndian.AppendUint64(b, crc64(0, b))
}

// FuzzChecker: however the data is split into writes, the checker accepts
// a valid RDB and reports the same CRC; any single flipped bit is caught.
func FuzzChecker(f *testing.F) {
	f.Add([]byte("body"), uint8(3), uint16(0))
	f.Add([]byte{}, uint8(1), uint16(5))
	f.Add(bytes.Repeat([]byte{0xaa}, 300), uint8(9), uint16(200))
	f.Fuzz(func(t *testing.T, body []byte, step uint8, flipAt uint16) {
		rdb := fakeRDB(body)
		check := func(data []byte) (Info, error) {
			c := newChecker()
			s := int(step%17) + 1
			for i := 0; i < len(data); i += s {
				c.Write(data[i:min(i+s, len(data))])
			}
			return c.result()
		}
		in, err := check(rdb)
		if err != nil {
			t.Fatalf("valid RDB refused: %v", err)
		}
		if in.Size != int64(len(rdb)) || in.CRC64 != binary.LittleEndian.Uint64(rdb[len(rdb)-8:]) {
			t.Fatalf("info %+v", in)
		}
		bad := bytes.Clone(rdb)
		i := int(flipAt) % len(bad)
		bad[i] ^= 1 << (flipAt % 8)
		if _, err := check(bad); err == nil {
			t.Fatalf("flipped bit at byte %d accepted", i)
		} else if !errors.Is(err, ErrChecksum) && !errors.Is(err, ErrNotRDB) {
			t.Fatalf("flipped bit: unexpected error %v", err)
		}
	})
}

func TestCheckerZeroCRCAccepted(t *testing.T) {
	b := append([]byte("REDIS0011"), 1, 2, 3, 0xff, 0, 0, 0, 0, 0, 0, 0, 0)
	c := newChecker()
	c.Write(b)
	in, err := c.result()
	if err != nil || in.CRC64 != 0 {
		t.Fatalf("rdbchecksum-no file: %+v, %v", in, err)
	}
}
