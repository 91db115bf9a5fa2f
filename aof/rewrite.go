package aof

import (
	"errors"
	"fmt"

	"github.com/cachecrypt/cachecrypt/internal/atomicfile"
)

// BaseFormat is what a base part holds, which names it as Redis does.
type BaseFormat int

const (
	// BaseRDB: an RDB snapshot (aof-use-rdb-preamble yes): NAME.N.base.rdb.
	BaseRDB BaseFormat = iota
	// BaseAOF: commands: NAME.N.base.aof.
	BaseAOF
)

const baseChunk = 64 << 10 // plaintext bytes per base frame: fits in L2, so a frame is decrypted while hot

// baseWriter writes a base part to a temporary file that replaces nothing
// until finish renames it into place.
type baseWriter struct {
	p      *atomicfile.Pending
	name   string
	hdr    *header
	s      *sealer
	buf    []byte
	out    []byte
	frames uint64
	size   int64
	err    error
}

func (l *Log) newBase(f BaseFormat, seq, gen uint64) (*baseWriter, error) {
	ext := "rdb"
	if f == BaseAOF {
		ext = "aof"
	}
	name := fmt.Sprintf("%s.%d.base.%s", l.opts.name(), seq, ext)
	h := l.newHeader(kindBase, seq, gen)
	s, err := newSealer(l.keys, h, l.plain)
	if err != nil {
		return nil, err
	}
	p, err := atomicfile.Create(l.opts.fs(), l.path(name), 0o600)
	if err != nil {
		return nil, err
	}
	hb := h.marshal()
	if _, err := p.Write(hb); err != nil {
		p.Abort()
		return nil, err
	}
	return &baseWriter{p: p, name: name, hdr: h, s: s, buf: make([]byte, 0, baseChunk), size: int64(len(hb))}, nil
}

func (b *baseWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 && b.err == nil {
		k := copy(b.buf[len(b.buf):cap(b.buf)], p)
		b.buf, p = b.buf[:len(b.buf)+k], p[k:]
		if len(b.buf) == cap(b.buf) {
			b.flush()
		}
	}
	if b.err != nil {
		return 0, b.err
	}
	return n, nil
}

func (b *baseWriter) flush() {
	if len(b.buf) == 0 || b.err != nil {
		return
	}
	b.out = b.s.appendFrame(b.out[:0], b.frames, b.buf)
	if _, err := b.p.Write(b.out); err != nil {
		b.err = fmt.Errorf("write %s: %w", b.p.Name(), err)
		return
	}
	b.frames++
	b.size += int64(len(b.out))
	b.buf = b.buf[:0]
}

// finish seals the last frame and renames the file into place durably.
func (b *baseWriter) finish() (entry, error) {
	b.flush()
	if b.err != nil {
		b.p.Abort()
		return entry{}, b.err
	}
	if err := b.p.Commit(); err != nil {
		return entry{}, err
	}
	e := entryFor(b.name, TypeBase, b.hdr)
	e.Closed, e.Size, e.Frames = true, b.size, b.frames
	return e, nil
}

// Rewrite is a base being written by StartRewrite's caller. Write the
// snapshot to it, then Commit or Abort. It is not safe for concurrent use;
// appends to the log go on meanwhile.
type Rewrite struct {
	l       *Log
	bw      *baseWriter
	keepSeq uint64 // incremental parts from this seq on survive the rewrite
	done    bool
}

// StartRewrite switches appends to a new incremental part and starts a new
// base. Appends that returned before StartRewrite are in the parts the
// rewrite replaces, so the base written to the Rewrite must hold the state
// they produced (a snapshot taken while appends are held back, as Redis'
// fork does); appends from then on land in the new incremental part, after
// the base, and survive the rewrite. One rewrite runs at a time: a second
// StartRewrite waits.
func (l *Log) StartRewrite(f BaseFormat) (*Rewrite, error) {
	l.rewriteMu.Lock()
	err := l.exclusive(func() error { return l.closeAndStartIncr() })
	if err != nil {
		l.rewriteMu.Unlock()
		return nil, fmt.Errorf("aof.StartRewrite: %w", err)
	}
	m := l.man
	bw, err := l.newBase(f, m.base().Seq+1, m.Generation+1)
	if err != nil {
		l.rewriteMu.Unlock()
		return nil, fmt.Errorf("aof.StartRewrite: %w", err)
	}
	return &Rewrite{l: l, bw: bw, keepSeq: m.last().Seq}, nil
}

// closeAndStartIncr closes the current incremental part in a new manifest
// generation and starts the next one. Appends are held back.
func (l *Log) closeAndStartIncr() error {
	m := l.man.clone()
	last := &m.Entries[len(m.Entries)-1]
	last.Closed, last.Size, last.Frames = true, l.cur.size, l.cur.frames
	err := l.startIncr(m, l.cur)
	if errors.Is(err, errManifest) || errors.Is(err, ErrFsync) {
		l.mu.Lock()
		l.fatal = err
		l.mu.Unlock()
	}
	return err
}

// Write adds snapshot bytes to the new base.
func (r *Rewrite) Write(p []byte) (int, error) { return r.bw.Write(p) }

// Commit makes the new base durable, switches the manifest to it and the
// incremental parts written since StartRewrite, and deletes the parts it
// replaced. On error the log keeps its old base and every append.
func (r *Rewrite) Commit() error {
	if r.done {
		return errors.New("aof.Rewrite.Commit: rewrite already finished")
	}
	r.done = true
	l := r.l
	defer l.rewriteMu.Unlock()
	be, err := r.bw.finish()
	if err != nil {
		return fmt.Errorf("aof.Rewrite.Commit: %w", err)
	}
	l.fileMu.RLock()
	m := l.man.clone()
	l.fileMu.RUnlock()
	m.Generation++
	var old []string
	entries := []entry{be}
	for _, e := range m.Entries {
		if e.Type == TypeIncr && e.Seq >= r.keepSeq {
			entries = append(entries, e)
		} else if e.Type != TypeHistory {
			old = append(old, e.Name)
		}
	}
	m.Entries = entries
	fsys := l.opts.fs()
	if err := writeManifest(fsys, l.dir, l.opts.name(), m, l.keys); err != nil {
		// The new manifest may be in place (a failed directory fsync
		// comes after the rename), so the new base stays; the old parts
		// stay too. Both manifests list the open part, so appends go on;
		// the next Open removes whichever parts its manifest does not list.
		return fmt.Errorf("aof.Rewrite.Commit: %w", err)
	}
	l.fileMu.Lock()
	l.man = m
	l.fileMu.Unlock()
	removeParts(fsys, l.dir, old)
	return nil
}

// Abort drops the new base; the log keeps its old parts.
func (r *Rewrite) Abort() {
	if r.done {
		return
	}
	r.done = true
	r.bw.p.Abort()
	r.l.rewriteMu.Unlock()
}

// Rewrite runs StartRewrite, lets write produce the new base, and commits
// it, or aborts if write fails. See StartRewrite for what the base must
// hold.
func (l *Log) Rewrite(f BaseFormat, write func(w *Rewrite) error) error {
	r, err := l.StartRewrite(f)
	if err != nil {
		return err
	}
	if err := write(r); err != nil {
		r.Abort()
		return fmt.Errorf("aof.Rewrite: writing the base: %w", err)
	}
	return r.Commit()
}
