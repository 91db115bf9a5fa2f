package aof

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
)

// Reader replays a log: the base part, then the incremental parts in
// order, as one plaintext stream. Every frame is authenticated before any
// of its bytes is returned; memory is one frame, whatever the log's size.
// A Reader is not safe for concurrent use.
type Reader struct {
	parts     []partFile
	files     []*os.File
	limits    []int64
	keys      Keys
	plain     bool
	allowTorn bool

	i    int
	fr   *frameReader
	rest []byte
	buf  []byte // frame buffer, kept across parts
	err  error
	torn *Damage
}

// Replay opens the log in dir for reading only. A torn tail of the last
// incremental part ends the stream (see Truncated), or fails with
// ErrTruncated when opts.Strict is set.
// To read a log another goroutine is appending to, use Log.Replay.
func Replay(dir string, keys Keys, opts Options) (*Reader, error) {
	_, parts, _, err := inspect(dir, opts.name(), keys)
	if err != nil {
		return nil, fmt.Errorf("aof.Replay: %w", err)
	}
	r, err := newReader(parts, nil, keys, !opts.Strict, false)
	if err != nil {
		return nil, fmt.Errorf("aof.Replay: %w", err)
	}
	return r, nil
}

// Replay returns a Reader of everything appended before the call. It
// waits for a rewrite in progress to finish.
func (l *Log) Replay() (*Reader, error) {
	l.rewriteMu.Lock()
	defer l.rewriteMu.Unlock()
	var m *manifest
	var curSize int64
	if err := l.exclusive(func() error { m, curSize = l.man, l.cur.size; return nil }); err != nil {
		return nil, fmt.Errorf("aof.Log.Replay: %w", err)
	}
	var parts []partFile
	for _, e := range m.parts() {
		p, err := statPart(l.dir, e, l.keys)
		if err != nil {
			return nil, fmt.Errorf("aof.Log.Replay: %w", err)
		}
		parts = append(parts, p)
	}
	limits := make([]int64, len(parts))
	for i, p := range parts {
		limits[i] = p.size
	}
	limits[len(limits)-1] = curSize
	r, err := newReader(parts, limits, l.keys, false, l.plain)
	if err != nil {
		return nil, fmt.Errorf("aof.Log.Replay: %w", err)
	}
	return r, nil
}

func newReader(parts []partFile, limits []int64, keys Keys, allowTorn, plain bool) (*Reader, error) {
	r := &Reader{parts: parts, limits: limits, keys: keys, allowTorn: allowTorn, plain: plain}
	if r.limits == nil {
		for _, p := range parts {
			r.limits = append(r.limits, p.size)
		}
	}
	// Open every part now: a rewrite may delete them while we read.
	for _, p := range parts {
		f, err := os.Open(p.path)
		if err != nil {
			r.Close()
			return nil, err
		}
		r.files = append(r.files, f)
	}
	return r, nil
}

// Truncated reports the torn tail the stream stopped at, or nil.
func (r *Reader) Truncated() *Damage { return r.torn }

// Read reads replayed plaintext.
func (r *Reader) Read(p []byte) (int, error) {
	for len(r.rest) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		r.rest, r.err = r.frame()
	}
	n := copy(p, r.rest)
	r.rest = r.rest[n:]
	return n, nil
}

// WriteTo writes the rest of the stream to w without an extra copy.
func (r *Reader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		if len(r.rest) > 0 {
			n, err := w.Write(r.rest)
			total += int64(n)
			r.rest = r.rest[n:]
			if err != nil {
				return total, err
			}
		}
		if r.err != nil {
			if r.err == io.EOF {
				return total, nil
			}
			return total, r.err
		}
		r.rest, r.err = r.frame()
	}
}

// frame is nextFrame with errors prefixed for the caller.
func (r *Reader) frame() ([]byte, error) {
	b, err := r.nextFrame()
	if err != nil && err != io.EOF {
		err = fmt.Errorf("aof.Reader: %w", err)
	}
	return b, err
}

// nextFrame returns the next frame's plaintext across parts.
func (r *Reader) nextFrame() ([]byte, error) {
	for {
		if r.i >= len(r.parts) {
			return nil, io.EOF
		}
		p := r.parts[r.i]
		if r.fr == nil {
			s, err := newSealer(r.keys, p.hdr, r.plain)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", p.e.Name, err)
			}
			f := r.files[r.i]
			if _, err := f.Seek(p.hdr.size(), io.SeekStart); err != nil {
				return nil, err
			}
			r.fr = &frameReader{name: p.e.Name, r: bufio.NewReaderSize(f, 256<<10), s: s, off: p.hdr.size(), size: r.limits[r.i], buf: r.buf}
		}
		b, err := r.fr.next()
		if err == nil {
			return b, nil
		}
		if err == io.EOF {
			if err := endCheck(p, r.fr); err != nil {
				return nil, err
			}
			r.files[r.i].Close()
			r.files[r.i] = nil
			r.buf = r.fr.buf
			r.i++
			r.fr = nil
			continue
		}
		var d *damage
		lastOpen := r.i == len(r.parts)-1 && !p.e.Closed
		if errors.As(err, &d) && d.torn && lastOpen && r.allowTorn {
			r.torn = &Damage{File: p.e.Name, Offset: d.off, Dropped: r.limits[r.i] - d.off, Err: d.err}
			return nil, io.EOF
		}
		return nil, err
	}
}

// Close releases the part files.
func (r *Reader) Close() error {
	for i, f := range r.files {
		if f != nil {
			f.Close()
			r.files[i] = nil
		}
	}
	if r.err == nil {
		r.err = ErrClosed
	}
	return nil
}
