package aof

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/stretchr/testify/require"
)

// fixedKeys derives every file key from a fixed DEK, for the fuzz targets.
type fixedKeys struct{}

func (fixedKeys) DiskID() string { return "fuzz" }
func (fixedKeys) Active() uint32 { return 1 }
func (fixedKeys) FileKey(v uint32, purpose string, salt []byte) ([]byte, error) {
	return bytes.Repeat([]byte{byte(v), byte(len(purpose)), salt[0]}, 11)[:32], nil
}

func FuzzManifest(f *testing.F) {
	fx := newFixture(f)
	f.Add(fx.oldMan)
	f.Add(fx.preRewrite)
	f.Add(readManifest(f, fx.dir))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseManifest(b)
		if err != nil {
			if !errors.Is(err, ErrFormat) && !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrVersion) {
				t.Fatalf("unexpected error class: %v", err)
			}
			return
		}
		require.Equal(t, b, m.marshal(), "parse then serialise must give the input back")
		m.check() // must not panic
	})
}

func FuzzRedisManifest(f *testing.F) {
	f.Add([]byte("file appendonly.aof.1.base.rdb seq 1 type b\nfile appendonly.aof.1.incr.aof seq 1 type i\n"))
	f.Add([]byte("file a seq 1 type h\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		es, err := parseRedisManifest(b)
		if err != nil {
			return
		}
		m := &manifest{}
		for _, e := range es {
			m.Entries = append(m.Entries, entry{Name: e.Name, Seq: e.Seq, Type: e.Type})
		}
		out := marshalRedisManifest(m)
		es2, err := parseRedisManifest(out)
		require.NoError(t, err)
		require.Equal(t, es, es2)
	})
}

// fuzzPart builds a part of three frames under fixedKeys.
func fuzzPart() []byte {
	h := &header{Kind: kindIncr, DEK: 1, Seq: 1, Generation: 1, DiskID: "fuzz"}
	h.Salt[0] = 7
	s, _ := newSealer(fixedKeys{}, h, false)
	b := h.marshal()
	for i, p := range []string{"*1\r\n$4\r\nPING\r\n", "hello", "world!"} {
		b = s.appendFrame(b, uint64(i), []byte(p))
	}
	return b
}

func FuzzFrameReader(f *testing.F) {
	f.Add(fuzzPart())
	f.Add(fuzzPart()[:90])
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := readHeader(bytes.NewReader(b))
		if err != nil {
			return
		}
		require.Equal(t, h.marshal(), b[:h.size()], "header: parse then serialise")
		s, err := newSealer(fixedKeys{}, h, false)
		if err != nil {
			return
		}
		fr := &frameReader{name: "fuzz", r: bufio.NewReader(bytes.NewReader(b[h.size():])), s: s, off: h.size(), size: int64(len(b))}
		var got []byte
		for {
			p, err := fr.next()
			if err == io.EOF {
				break
			}
			if err != nil {
				var d *damage
				require.True(t, errors.As(err, &d))
				require.True(t, errors.Is(err, ErrTruncated) || errors.Is(err, ErrAuthentication) || errors.Is(err, ErrFormat), "%v", err)
				break
			}
			got = append(got, p...)
		}
		// Only genuine frames authenticate: whatever was returned is a
		// prefix of the genuine plaintext (the seed's), frame by frame.
		require.True(t, bytes.HasPrefix([]byte("*1\r\n$4\r\nPING\r\nhelloworld!"), got) || !bytes.Equal(b[:h.size()], fuzzPart()[:h.size()]), "%q", got)
	})
}

// TestFuzzPartIsValid keeps the fuzz seed a genuine part.
func TestFuzzPartIsValid(t *testing.T) {
	h, err := readHeader(bytes.NewReader(fuzzPart()))
	require.NoError(t, err)
	s, _ := newSealer(fixedKeys{}, h, false)
	fr := &frameReader{r: bufio.NewReader(bytes.NewReader(fuzzPart()[h.size():])), s: s, off: h.size(), size: int64(len(fuzzPart()))}
	var got []byte
	for {
		b, err := fr.next()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		got = append(got, b...)
	}
	require.Equal(t, "*1\r\n$4\r\nPING\r\nhelloworld!", string(got))
}

// FuzzCommandFrames: the frames of an imported part are its bytes, in
// order, none empty; while the input is whole commands every frame ends
// on a command boundary and holds at most importFrame bytes or one
// command.
func FuzzCommandFrames(f *testing.F) {
	f.Add([]byte("*2\r\n$6\r\nSELECT\r\n$1\r\n0\r\n*3\r\n$3\r\nSET\r\n$1\r\na\r\n$1\r\n1\r\n"))
	f.Add([]byte("#TS:1700000000\r\n*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPI"))
	f.Add(append([]byte("*1\r\n$5000\r\n"), append(bytes.Repeat([]byte("x"), 5000), "\r\n*0\r\n"...)...))
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, in []byte) {
		var got [][]byte
		err := commandFrames(bufio.NewReader(bytes.NewReader(in)), func(b []byte) error {
			got = append(got, bytes.Clone(b))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(bytes.Join(got, nil), in) {
			t.Fatalf("frames do not rebuild the input")
		}
		for _, g := range got {
			if len(g) == 0 {
				t.Fatal("empty frame")
			}
		}
		// Frames of whole commands: each parses as commands to its end.
		for _, g := range got {
			r := bufio.NewReader(bytes.NewReader(g))
			n, cmds := 0, 0
			for n < len(g) {
				c, err := readCommand(r, nil)
				if err != nil {
					return // from here on the input is not whole commands
				}
				n += len(c)
				cmds++
			}
			if len(g) > importFrame && cmds != 1 {
				t.Fatalf("frame of %d bytes holds %d commands", len(g), cmds)
			}
		}
	})
}
