package export

import (
	"context"
	"crypto/subtle"
	"fmt"
	"io"
	"sync"

	"github.com/cachecrypt/cachecrypt/osdisk"
)

// DefaultChunkSize is the plaintext size of one staging file. The snapshot is
// staged as a sequence of encrypted staging files of this size, so sending
// starts as soon as the first one is sealed while staging goes on: staging
// runs ahead of the send at disk speed, and the two overlap.
const DefaultChunkSize = 32 << 20

// maxChunks is the capacity of the staging queue (128 GiB at the default
// chunk size):
// staging waits for the send only beyond it.
const maxChunks = 4096

// chunk is one sealed staging file, or the error that ended staging.
type chunk struct {
	f   *osdisk.File
	err error
}

// reporter serializes Progress callbacks from the staging and sending
// goroutines.
type reporter struct {
	mu    sync.Mutex
	fn    func(Progress)
	every int64
}

func newReporter(o Options) *reporter {
	every := o.ProgressEvery
	if every <= 0 {
		every = 4 << 20
	}
	return &reporter{fn: o.Progress, every: every}
}

func (r *reporter) report(p Progress) {
	if r.fn == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fn(p)
}

func transfer(ctx context.Context, op string, scratch *osdisk.Disk, src Source, dst Destination, opts *Options) (Info, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if err := ctx.Err(); err != nil {
		return Info{}, err
	}
	var seal *sealer
	if o.Seal != nil {
		var err error
		if seal, err = newSealer(ctx, o.Seal, 0); err != nil {
			return Info{}, err
		}
	}
	rc, meta, err := src.Open(ctx)
	if err != nil {
		return Info{}, fmt.Errorf("open source: %w", err)
	}
	defer rc.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	rep := newReporter(o)
	st := &stager{ctx: ctx, op: op, scratch: scratch, meta: meta, size: o.ChunkSize, chunks: make(chan chunk, maxChunks), done: make(chan struct{})}
	if st.size <= 0 {
		st.size = DefaultChunkSize
	}
	st.pr = &progressReader{ctx: ctx, r: io.TeeReader(rc, &st.head), rep: rep, p: Progress{Phase: Staging, Total: meta.Size}}
	st.pr.start()
	go st.run()
	s := &Stream{ctx: ctx, chunks: st.chunks, chk: newChecker(), meta: meta, rep: rep, seal: seal}
	defer func() {
		cancel()
		<-st.done
		s.close() // removes every staging file left
	}()

	if err := dst.Put(ctx, s); err != nil {
		if s.err != nil {
			// The stream stopped the destination: its error says why.
			return s.info, s.err
		}
		return s.info, fmt.Errorf("send: %w", err)
	}
	if !s.ok || (s.seal != nil && !s.seal.eof) {
		return s.info, fmt.Errorf("destination returned after reading %d bytes, before the end; nothing was checked", s.done)
	}
	return s.info, nil
}

// stager copies the source into a sequence of sealed staging files.
type stager struct {
	ctx     context.Context
	op      string
	scratch *osdisk.Disk
	meta    Meta
	size    int64 // of a chunk
	head    headCheck
	pr      *progressReader
	chunks  chan chunk
	done    chan struct{}
}

func (st *stager) run() {
	defer close(st.done)
	defer close(st.chunks)
	if err := st.stage(); err != nil {
		st.send(chunk{err: err})
	}
}

// send queues c, unless the transfer was cancelled (then c's file is
// removed).
func (st *stager) send(c chunk) bool {
	select {
	case st.chunks <- c:
		return true
	case <-st.ctx.Done():
		if c.f != nil {
			c.f.Close()
		}
		return false
	}
}

func (st *stager) stage() error {
	var total int64
	for {
		f, err := st.scratch.CreateTemp(st.op)
		if err != nil {
			return fmt.Errorf("create staging file: %w", err)
		}
		n, err := f.ReadFrom(io.LimitReader(st.pr, st.size))
		total += n
		switch {
		case st.head.err != nil:
			err = fmt.Errorf("source is not a valid RDB: %w", st.head.err)
		case st.pr.err != nil:
			err = fmt.Errorf("read source: %w", st.pr.err)
		case err != nil:
			err = fmt.Errorf("write staging file: %w", err)
		case n == 0:
			f.Close()
			return st.end(total)
		default:
			err = f.Seal()
		}
		if err != nil {
			f.Close()
			return err
		}
		if !st.send(chunk{f: f}) {
			return st.ctx.Err()
		}
		if n < st.size {
			return st.end(total)
		}
	}
}

// end checks what only the whole source shows.
func (st *stager) end(total int64) error {
	st.pr.finish()
	if err := checkMagic(st.head.b); err != nil {
		return fmt.Errorf("source is not a valid RDB: %w", err)
	}
	if st.meta.Size >= 0 && st.meta.Size != total {
		return fmt.Errorf("source announced %d bytes but yielded %d: %w", st.meta.Size, total, ErrDigest)
	}
	return nil
}

// headCheck refuses a source as soon as its first bytes show it is not an
// RDB.
type headCheck struct {
	b   []byte
	err error
}

func (h *headCheck) Write(p []byte) (int, error) {
	if len(h.b) < 9 {
		h.b = append(h.b, p[:min(len(p), 9-len(h.b))]...)
		if len(h.b) == 9 {
			h.err = checkMagic(h.b)
		}
	}
	if h.err != nil {
		return 0, h.err
	}
	return len(p), nil
}

// Stream is the plain RDB a Destination reads, decrypted from the staging
// files as they are sealed, or with Options.Seal the sealed export of that
// RDB (Sealed). As it is read it checks the RDB's CRC-64 and computes its
// SHA-256; it returns io.EOF only once the whole source was staged and
// every check passed, and otherwise an error matching ErrNotRDB,
// ErrChecksum, ErrDigest, ErrAuthentication or the context's error. Errors
// are sticky. A Stream is not safe for concurrent use.
type Stream struct {
	ctx    context.Context
	chunks chan chunk
	cur    *osdisk.File
	chk    *checker
	meta   Meta
	rep    *reporter
	p      Progress
	done   int64
	next   int64
	info   Info
	ok     bool  // reached io.EOF with every check passed
	ended  bool  // the checker returned its result
	err    error // sticky error
	seal   *sealer
}

// Size returns the number of bytes Read will yield, as far as the source
// announced it, or -1: the RDB's size, or the sealed export's.
func (s *Stream) Size() int64 {
	if s.seal != nil {
		return s.seal.size(s.meta.Size)
	}
	return s.meta.Size
}

// Info returns the plain RDB's size, SHA-256 and CRC-64, also for a sealed
// export. It is valid once Read returned io.EOF.
func (s *Stream) Info() Info { return s.info }

// Sealed reports whether Read yields a sealed export (Options.Seal) rather
// than a plain RDB. A destination must then store nothing derived from
// the plaintext, such as Info's SHA-256 and CRC-64, beside the export.
func (s *Stream) Sealed() bool { return s.seal != nil }

// Read reads decrypted RDB bytes, or the sealed export's bytes.
func (s *Stream) Read(p []byte) (int, error) {
	if s.seal != nil {
		return s.seal.read(p, s.readPlain)
	}
	return s.readPlain(p)
}

// readPlain reads decrypted RDB bytes and checks them.
func (s *Stream) readPlain(p []byte) (int, error) {
	switch {
	case s.err != nil:
		return 0, s.err
	case s.ok:
		return 0, io.EOF
	}
	if s.p.Phase == 0 {
		s.p = Progress{Phase: Sending, Total: s.meta.Size}
		s.next = s.rep.every
		s.rep.report(s.p)
	}
	n, err := s.read(p)
	if n > 0 {
		s.chk.Write(p[:n])
		s.done += int64(n)
		if s.done >= s.next {
			s.next = s.done + s.rep.every
			s.p.Done = s.done
			s.rep.report(s.p)
		}
	}
	if err == io.EOF {
		err = s.finish()
		if err == nil {
			s.ok = true
			s.p.Done, s.p.Total = s.done, s.done
			s.rep.report(s.p)
			return n, io.EOF
		}
	}
	if err != nil {
		s.err = err
	}
	return n, err
}

// read reads from the current staging file, moving to the next one at its
// end. It returns io.EOF when staging ended without error.
func (s *Stream) read(p []byte) (int, error) {
	for {
		if err := s.ctx.Err(); err != nil {
			return 0, err
		}
		if s.cur == nil {
			var c chunk
			var ok bool
			select {
			case c, ok = <-s.chunks:
			case <-s.ctx.Done():
				return 0, s.ctx.Err()
			}
			switch {
			case !ok:
				return 0, io.EOF
			case c.err != nil:
				return 0, c.err
			}
			s.cur = c.f
		}
		n, err := s.cur.Read(p)
		if err == io.EOF {
			s.cur.Close() // removes it
			s.cur = nil
			err = nil
		}
		if err != nil {
			return n, fmt.Errorf("read staging file %s: %w", s.cur.Name(), err)
		}
		if n > 0 {
			return n, nil
		}
	}
}

// close removes the current staging file and those still queued, and stops
// the checker if the destination returned before the end. The stager must
// have ended.
func (s *Stream) close() {
	if s.cur != nil {
		s.cur.Close()
	}
	for c := range s.chunks {
		if c.f != nil {
			c.f.Close()
		}
	}
	if !s.ended {
		s.chk.abort()
	}
}

func (s *Stream) finish() error {
	s.ended = true
	in, err := s.chk.result()
	s.info = in
	if err != nil {
		return fmt.Errorf("source is not a valid RDB: %w", err)
	}
	if s.meta.SHA256 != nil && subtle.ConstantTimeCompare(s.meta.SHA256, in.SHA256[:]) != 1 {
		return fmt.Errorf("source announced SHA-256 %x but the data hashes to %x: %w", s.meta.SHA256, in.SHA256, ErrDigest)
	}
	return nil
}

// progressReader counts the bytes read from the source, reports staging
// progress, stops on cancellation and remembers the first error of the
// source.
type progressReader struct {
	ctx  context.Context
	r    io.Reader
	rep  *reporter
	p    Progress
	next int64
	err  error // first error other than io.EOF
}

func (pr *progressReader) start() {
	pr.next = pr.rep.every
	pr.rep.report(pr.p)
}

func (pr *progressReader) finish() {
	pr.p.Total = pr.p.Done
	pr.rep.report(pr.p)
}

func (pr *progressReader) Read(p []byte) (int, error) {
	if pr.err != nil {
		return 0, pr.err
	}
	if err := pr.ctx.Err(); err != nil {
		pr.err = err
		return 0, err
	}
	n, err := pr.r.Read(p)
	pr.p.Done += int64(n)
	if pr.p.Done >= pr.next {
		pr.next = pr.p.Done + pr.rep.every
		pr.rep.report(pr.p)
	}
	if err != nil && err != io.EOF {
		pr.err = err
	}
	return n, err
}
