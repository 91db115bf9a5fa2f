package aof

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/cachecrypt/cachecrypt/internal/atomicfile"
)

// Import encrypts the plain Redis 7 appendonlydir src into dst, which must
// be absent or empty. Every part keeps its name and sequence number; the
// last incremental part stays open, so a Log opened on dst goes on from
// there. History entries are kept by name only. opts.Name is Redis'
// appendfilename ("" = appendonly.aof).
func Import(src, dst string, keys Keys, opts Options) error {
	if err := importDir(src, dst, keys, opts); err != nil {
		return fmt.Errorf("aof.Import: %w", err)
	}
	return nil
}

func importDir(src, dst string, keys Keys, opts Options) error {
	b, err := os.ReadFile(filepath.Join(src, opts.name()+".manifest"))
	if err != nil {
		return err
	}
	res, err := parseRedisManifest(b)
	if err != nil {
		return err
	}
	if len(res) == 0 || res[0].Type != TypeBase {
		return fmt.Errorf("%s: the Redis manifest lists no base first; import supports Redis 7 directories with a base: %w", src, ErrFormat)
	}
	if err := os.MkdirAll(dst, 0o700); err != nil {
		return err
	}
	if ents, _ := os.ReadDir(dst); len(ents) > 0 {
		return fmt.Errorf("destination %s is not empty", dst)
	}
	l := &Log{dir: dst, keys: keys, opts: opts}
	if err := l.importParts(src, res); err != nil {
		// Leave dst empty, as it was, so the import can be run again.
		fsys := opts.fs()
		fsys.Remove(filepath.Join(dst, opts.name()+".manifest"))
		for _, re := range res {
			fsys.Remove(filepath.Join(dst, re.Name))
		}
		removeTemps(fsys, dst)
		fsys.SyncDir(dst)
		return err
	}
	return nil
}

// importParts encrypts every part res lists into l.dir, then writes the
// manifest.
func (l *Log) importParts(src string, res []redisEntry) error {
	m := &manifest{DiskID: l.keys.DiskID(), Generation: 1}
	for i, re := range res {
		e := entry{Name: re.Name, Seq: re.Seq, Type: re.Type}
		if re.Type != TypeHistory {
			open := re.Type == TypeIncr && i == len(res)-1
			var err error
			if e, err = l.importPart(src, re, open); err != nil {
				return err
			}
		}
		m.Entries = append(m.Entries, e)
	}
	if err := m.check(); err != nil {
		return err
	}
	fsys := l.opts.fs()
	if err := fsys.SyncDir(l.dir); err != nil {
		return err
	}
	return writeManifest(fsys, l.dir, l.opts.name(), m, l.keys)
}

// importPart encrypts one part file: an RDB base as frames of baseChunk
// bytes, a part of commands as frames that end on command boundaries.
func (l *Log) importPart(src string, re redisEntry, open bool) (entry, error) {
	in, err := os.Open(filepath.Join(src, re.Name))
	if err != nil {
		return entry{}, err
	}
	defer in.Close()
	kind := byte(kindBase)
	if re.Type == TypeIncr {
		kind = kindIncr
	}
	h := l.newHeader(kind, re.Seq, 1)
	s, err := newSealer(l.keys, h, false)
	if err != nil {
		return entry{}, err
	}
	p, err := atomicfile.Create(l.opts.fs(), l.path(re.Name), 0o600)
	if err != nil {
		return entry{}, err
	}
	defer p.Abort()
	hb := h.marshal()
	if _, err := p.Write(hb); err != nil {
		return entry{}, err
	}
	e := entryFor(re.Name, re.Type, h)
	e.Size = int64(len(hb))
	var out []byte
	emit := func(b []byte) error {
		out = s.appendFrame(out[:0], e.Frames, b)
		if _, err := p.Write(out); err != nil {
			return err
		}
		e.Frames++
		e.Size += int64(len(out))
		return nil
	}
	if strings.HasSuffix(re.Name, ".rdb") {
		err = rawFrames(in, emit)
	} else {
		err = commandFrames(bufio.NewReaderSize(in, 64<<10), emit)
	}
	if err != nil {
		return entry{}, err
	}
	if err := p.Commit(); err != nil {
		return entry{}, err
	}
	e.Closed = !open
	if open {
		e.Size, e.Frames = 0, 0
	}
	return e, nil
}

// Export decrypts the encrypted log in src into dst (absent or empty) as a
// plain Redis 7 appendonlydir: the same part names and sequence numbers
// and a Redis manifest, which redis-server loads. Every frame is
// authenticated first; a torn tail of the last incremental part is left
// out, or fails with ErrTruncated when opts.Strict is set.
func Export(src, dst string, keys Keys, opts Options) error {
	if err := exportDir(src, dst, keys, opts); err != nil {
		return fmt.Errorf("aof.Export: %w", err)
	}
	return nil
}

func exportDir(src, dst string, keys Keys, opts Options) error {
	m, parts, _, err := inspect(src, opts.name(), keys)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dst, 0o700); err != nil {
		return err
	}
	if ents, _ := os.ReadDir(dst); len(ents) > 0 {
		return fmt.Errorf("destination %s is not empty", dst)
	}
	for i, p := range parts {
		last := i == len(parts)-1
		if err := exportPart(opts.fs(), dst, p, keys, last && !opts.Strict); err != nil {
			return err
		}
	}
	if err := opts.fs().SyncDir(dst); err != nil {
		return err
	}
	return atomicfile.WriteFile(opts.fs(), filepath.Join(dst, opts.name()+".manifest"), marshalRedisManifest(m), 0o644)
}

func exportPart(fsys atomicfile.FS, dst string, p partFile, keys Keys, allowTorn bool) error {
	r, err := newReader([]partFile{p}, nil, keys, allowTorn && !p.e.Closed, false)
	if err != nil {
		return err
	}
	defer r.Close()
	out, err := atomicfile.Create(fsys, filepath.Join(dst, p.e.Name), 0o644)
	if err != nil {
		return err
	}
	defer out.Abort()
	if _, err := r.WriteTo(out); err != nil {
		var d *damage
		if errors.As(err, &d) {
			return err
		}
		return fmt.Errorf("%s: %w", p.e.Name, err)
	}
	return out.Commit()
}

// importFrame is the plaintext size a frame of imported commands aims at:
// a torn tail loses at most the other commands of one such frame more
// than redis-check-aof --fix would lose on the plain file.
const importFrame = 4 << 10

// rawFrames cuts r into frames of baseChunk bytes.
func rawFrames(r io.Reader, emit func([]byte) error) error {
	buf := make([]byte, baseChunk)
	for {
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			if err := emit(buf[:n]); err != nil {
				return err
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// commandFrames cuts the RESP commands of r into frames of whole
// commands: as many as fit in importFrame bytes, or one command alone
// when it is larger. From the first bytes that are not a whole command
// (a plain file that is itself torn) on, the rest goes in raw frames.
func commandFrames(r *bufio.Reader, emit func([]byte) error) error {
	var frame, cmd []byte
	flush := func() error {
		if len(frame) == 0 {
			return nil
		}
		err := emit(frame)
		frame = frame[:0]
		return err
	}
	for {
		var err error
		cmd, err = readCommand(r, cmd[:0])
		if err == io.EOF && len(cmd) == 0 {
			return flush()
		}
		if errors.Is(err, errNotCommand) || err == io.EOF || err == io.ErrUnexpectedEOF {
			if err := flush(); err != nil {
				return err
			}
			return rawFrames(io.MultiReader(bytes.NewReader(cmd), r), emit)
		}
		if err != nil {
			return err
		}
		if len(frame)+len(cmd) > importFrame {
			if err := flush(); err != nil {
				return err
			}
		}
		for len(cmd) > maxFrame { // beyond a frame's limit: no boundary to keep
			if err := emit(cmd[:maxFrame]); err != nil {
				return err
			}
			cmd = cmd[maxFrame:]
		}
		frame = append(frame, cmd...)
		if len(frame) >= importFrame {
			if err := flush(); err != nil {
				return err
			}
		}
	}
}

var errNotCommand = errors.New("not a RESP command")

// readCommand appends to dst the next command of r: a RESP array of bulk
// strings (*N, then N times $LEN and LEN bytes, each line ending in CRLF)
// or an annotation line (#...CRLF) as Redis writes with
// aof-timestamp-enabled. It returns what it consumed with io.EOF,
// io.ErrUnexpectedEOF or errNotCommand when r does not hold a whole one.
func readCommand(r *bufio.Reader, dst []byte) ([]byte, error) {
	c, err := r.Peek(1)
	if err != nil {
		return dst, err
	}
	start := len(dst)
	switch c[0] {
	case '#':
		line, err := r.ReadSlice('\n')
		dst = append(dst, line...)
		if err == bufio.ErrBufferFull {
			return dst, errNotCommand
		}
		return dst, unexpected(err)
	case '*':
	default:
		return dst, errNotCommand
	}
	dst, n, err := readHeaderLine(r, dst, '*')
	if err != nil {
		return dst, err
	}
	for range n {
		var size int64
		if dst, size, err = readHeaderLine(r, dst, '$'); err != nil {
			return dst, err
		}
		at := len(dst)
		if dst, err = appendN(r, dst, size+2); err != nil {
			return dst, err
		}
		if !bytes.HasSuffix(dst[at:], []byte("\r\n")) {
			return dst, errNotCommand
		}
	}
	if len(dst) == start {
		return dst, errNotCommand
	}
	return dst, nil
}

// readHeaderLine appends a line "<kind><decimal>\r\n" to dst and returns
// its number.
func readHeaderLine(r *bufio.Reader, dst []byte, kind byte) ([]byte, int64, error) {
	line, err := r.ReadSlice('\n')
	dst = append(dst, line...)
	if err == bufio.ErrBufferFull {
		return dst, 0, errNotCommand
	}
	if err != nil {
		return dst, 0, unexpected(err)
	}
	digits, ok := bytes.CutSuffix(line[1:], []byte("\r\n"))
	if line[0] != kind || !ok {
		return dst, 0, errNotCommand
	}
	n, err := strconv.ParseInt(string(digits), 10, 64)
	if err != nil || n < 0 || n > MaxAppend {
		return dst, 0, errNotCommand
	}
	return dst, n, nil
}

// appendN appends the next n bytes of r to dst, growing dst only as the
// bytes arrive.
func appendN(r io.Reader, dst []byte, n int64) ([]byte, error) {
	for n > 0 {
		k := int(min(n, 64<<10))
		dst = slices.Grow(dst, k)
		m, err := io.ReadFull(r, dst[len(dst):len(dst)+k])
		dst = dst[:len(dst)+m]
		if err != nil {
			return dst, unexpected(err)
		}
		n -= int64(k)
	}
	return dst, nil
}

// unexpected turns io.EOF inside a command into io.ErrUnexpectedEOF.
func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
