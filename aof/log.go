package aof

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/cachecrypt/cachecrypt/internal/atomicfile"
	"github.com/cachecrypt/cachecrypt/internal/integrity"
)

// Keys is what the package needs of a disk's keyring; *dek.Keyring
// implements it.
type Keys interface {
	DiskID() string
	Active() uint32 // DEK version for new parts and manifests
	FileKey(version uint32, purpose string, salt []byte) ([]byte, error)
}

// Errors returned by this package, matched with errors.Is.
var (
	// ErrAuthentication: a frame, header or the manifest failed
	// authentication (tampered, copied from another file, wrong key).
	ErrAuthentication = integrity.ErrAuthentication
	// ErrTruncated: a part ends early. On the last incremental part this is
	// a torn final write, which Open, Replay and Export cut off (unless
	// Options.Strict) and Fix cuts off.
	ErrTruncated = integrity.ErrTruncated
	// ErrFormat: not an encrypted AOF directory or part, or a field out of range.
	ErrFormat = integrity.ErrFormat
	// ErrVersion: a format version this build cannot read.
	ErrVersion = integrity.ErrVersion
	// ErrClosed: the log was closed.
	ErrClosed = integrity.ErrClosed
	// ErrMissingPart: a part the manifest lists is not in the directory.
	ErrMissingPart = errors.New("aof: part listed in the manifest is missing")
	// ErrRollback: the directory holds a part written after the manifest,
	// so the manifest is an older copy put back in place.
	ErrRollback = errors.New("aof: manifest rolled back to an older copy")
	// ErrLocked: another Log has the directory open.
	ErrLocked = errors.New("aof: directory in use")
	// ErrFsync: an fsync failed; under everysec, appends are refused until
	// a later background fsync succeeds, as Redis does. Under always, and
	// for the fsyncs of a part switch, it also makes the log unusable
	// (ErrWriteFailed).
	ErrFsync = errors.New("aof: fsync failed")
	// ErrWriteFailed: a write to the log failed (and so may have left part
	// of a frame in the file), or its fsync under always, or a manifest
	// replacement. Every later Append, Sync and StartRewrite fails with it
	// until the log is closed and reopened: Open cuts the partial frame
	// off and continues in a new part under a fresh salt, so no (key,
	// nonce) is ever used twice. Redis likewise stops accepting writes
	// after an AOF write error.
	ErrWriteFailed = errors.New("aof: a write failed; the log refuses writes until it is reopened")
)

// Policy is when appended data is fsynced: Redis' appendfsync.
type Policy int

const (
	// EverySec: a background flusher fsyncs once a second; a crash loses at
	// most about a second of appends. Redis' default.
	EverySec Policy = iota
	// Always: Append returns only once its data is durable.
	Always
	// No: the operating system flushes when it likes.
	No
)

func (p Policy) String() string {
	switch p {
	case EverySec:
		return "everysec"
	case Always:
		return "always"
	case No:
		return "no"
	}
	return fmt.Sprintf("Policy(%d)", int(p))
}

// Options configure Open and Replay.
type Options struct {
	Fsync Policy
	// Strict refuses a torn tail of the last incremental part with
	// ErrTruncated. By default Open, Replay and Export cut it off (see
	// Log.Recovered and Reader.Truncated), like Redis' default
	// aof-load-truncated yes: a crash during a write leaves one. Damage of
	// any other kind is refused either way.
	Strict bool
	// Name is the base name of the parts and manifest; "" is
	// "appendonly.aof", Redis' default appendfilename.
	Name string
	// FS is what every durable write (part creation, writes, fsyncs,
	// truncations, manifest replacement, renames, removals, directory
	// fsyncs) goes through; nil is the operating system. Tests inject
	// failures with atomicfile.FaultFS.
	FS atomicfile.FS
}

func (o *Options) fs() atomicfile.FS {
	if o.FS == nil {
		return atomicfile.OS
	}
	return o.FS
}

func (o *Options) name() string {
	if o.Name == "" {
		return "appendonly.aof"
	}
	return o.Name
}

// group is one batch of appends that becomes one frame.
type group struct {
	done    bool
	err     error
	waiters int
}

// Log is an open encrypted AOF directory.
//
// Append, Sync, Replay, Rewrite and StartRewrite are safe for concurrent
// use; Close must not run concurrently with the others.
type Log struct {
	dir   string
	keys  Keys
	opts  Options
	plain bool // benchmark baseline: same framing and batching, no sealing

	mu        sync.Mutex
	cond      sync.Cond
	sealing   bool     // a goroutine is sealing a group (stage 1)
	excl      bool     // a goroutine holds the log exclusively
	tickets   uint64   // groups taken for sealing
	written   uint64   // groups done writing: the next to write is ticket == written
	pend      []byte   // appends not yet taken
	bufs      [][]byte // free plaintext buffers
	outs      [][]byte // free frame buffers
	pendGroup *group
	appending int // goroutines inside Append, past the refusal checks
	free      []*group
	dirty     bool  // written since the last fsync
	syncErr   error // last background fsync failed (everysec)
	fatal     error // the log cannot continue: reopen it
	closed    bool

	fileMu sync.RWMutex // held for reading by background fsyncs, for writing by part switches
	cur    *partWriter
	man    *manifest // current manifest; changed under exclusive + manifestMu

	rewriteMu sync.Mutex
	recovered *Recovery // the torn tail Open cut off, if any

	lock     *os.File                    // flock'd NAME.lock, held until Close
	syncFile func(atomicfile.File) error // test hook
	stop     chan struct{}
	stopped  chan struct{}
}

// Recovery is the torn tail Open cut off the last incremental part: a
// write a crash cut short. Every frame before Offset authenticated.
type Recovery struct {
	Part     string // part file name
	Offset   int64  // where the part now ends: the end of its last whole frame
	BytesCut int64  // bytes removed after Offset
}

// Damage describes a torn tail found (Check) or cut off (Fix).
type Damage struct {
	File    string // part name
	Offset  int64  // where the valid data ends
	Dropped int64  // bytes after Offset
	Err     error  // what was wrong there
}

func (d *Damage) String() string {
	return fmt.Sprintf("%s: %d bytes dropped at offset %d (%v)", d.File, d.Dropped, d.Offset, d.Err)
}

// Open opens the encrypted AOF in dir, creating it (an empty base and a
// first incremental part) if the directory is absent or empty. It checks
// the manifest, every part's header and size, and reads the last
// incremental part to its end, cutting a torn tail off (a write a crash
// cut short: see Recovered) unless opts.Strict is set. Appends then go to
// a new incremental part,
// encrypted under the keyring's active DEK version.
func Open(dir string, keys Keys, opts Options) (*Log, error) {
	if err := checkName(opts.name()); err != nil {
		return nil, fmt.Errorf("aof.Open: Options.Name: %v", err)
	}
	if n := len(keys.DiskID()); n == 0 || n > 255 {
		return nil, fmt.Errorf("aof.Open: disk id of %d bytes, want 1 to 255", n)
	}
	l, err := open(dir, keys, opts, false)
	if err != nil {
		return nil, fmt.Errorf("aof.Open: %w", err)
	}
	return l, nil
}

func open(dir string, keys Keys, opts Options, plain bool) (*Log, error) {
	l := &Log{dir: dir, keys: keys, opts: opts, plain: plain, syncFile: atomicfile.File.Sync}
	l.cond.L = &l.mu
	l.pendGroup = &group{}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	lock, err := lockDir(filepath.Join(dir, opts.name()+".lock"))
	if err != nil {
		return nil, err
	}
	l.lock = lock
	if err := l.load(); err != nil {
		lock.Close()
		return nil, err
	}
	l.stop, l.stopped = make(chan struct{}), make(chan struct{})
	if opts.Fsync == EverySec {
		go l.flusher()
	} else {
		close(l.stopped)
	}
	return l, nil
}

// load creates or recovers the directory.
func (l *Log) load() error {
	dir, opts := l.dir, l.opts
	_, err := os.Stat(filepath.Join(dir, opts.name()+".manifest"))
	switch {
	case errors.Is(err, os.ErrNotExist):
		return l.create()
	case err != nil:
		return err
	}
	return l.recover()
}

// Recovered reports the torn tail Open cut off the last incremental part,
// and whether there was one.
func (l *Log) Recovered() (Recovery, bool) {
	if l.recovered == nil {
		return Recovery{}, false
	}
	return *l.recovered, true
}

// Dir returns the log's directory.
func (l *Log) Dir() string { return l.dir }

// Generation returns the manifest generation. It only grows: a caller that
// keeps it elsewhere (with the keyring, say) can detect a wholesale
// rollback of the directory that the directory alone cannot show.
func (l *Log) Generation() uint64 {
	l.fileMu.RLock()
	defer l.fileMu.RUnlock()
	return l.man.Generation
}

// Append writes one batch of commands (RESP bytes) as a unit: after a
// crash it is replayed whole or not at all. p is copied; the caller may
// reuse it at once. Under Always, Append returns once p is durable; under
// EverySec and No, once it is written to the operating system. Concurrent
// appends are group-committed into one frame and one write. After a failed
// background fsync (EverySec), Append fails with ErrFsync until a later
// fsync succeeds. After a failed write (or fsync under Always), that
// Append and every later one fail with ErrWriteFailed until the log is
// reopened: the failed batch may be partly in the file, and Open cuts it.
func (l *Log) Append(p []byte) error {
	if len(p) > maxFrame {
		return fmt.Errorf("aof.Append: batch of %d bytes exceeds %d; split it between commands", len(p), maxFrame)
	}
	l.mu.Lock()
	// A frame holds at most maxFrame bytes: let the pending group go first
	// when p does not fit in it.
	for len(l.pend) > 0 && len(l.pend)+len(p) > maxFrame && l.refuse() == nil {
		if !l.canLead() {
			l.cond.Wait()
			continue
		}
		l.sealing = true
		l.writePending()
	}
	if err := l.refuse(); err != nil {
		l.mu.Unlock()
		return fmt.Errorf("aof.Append: %w", err)
	}
	if len(p) == 0 {
		l.mu.Unlock()
		return nil
	}
	g := l.pendGroup
	g.waiters++
	l.pend = append(l.pend, p...)
	l.appending++
	err := l.await(g)
	l.appending--
	l.mu.Unlock()
	if err != nil {
		return fmt.Errorf("aof.Append: %w", err)
	}
	return nil
}

// await waits until g is written, sealing and writing pending groups
// whenever the sealing stage is free. l.mu is held.
func (l *Log) await(g *group) error {
	yielded := false
	for !g.done {
		if l.canLead() && len(l.pend) > 0 {
			if !yielded && l.appending > l.pendGroup.waiters {
				// Other appenders are between their last group and
				// this one (woken, not yet run): let them add their
				// appends first, so that one frame and one write carry
				// them all. On one core a write never yields the
				// processor, so without this no group ever forms. Once
				// per Append, and only with appenders about: a lone
				// appender never waits here.
				yielded = true
				l.mu.Unlock()
				runtime.Gosched()
				l.mu.Lock()
				continue
			}
			l.sealing = true
			l.writePending()
			continue
		}
		l.cond.Wait()
	}
	err := g.err
	if g.waiters--; g.waiters == 0 {
		*g = group{}
		l.free = append(l.free, g)
	}
	return err
}

// canLead reports whether a goroutine may take the pending appends as a
// new group: the sealing stage is free and at most one group is ahead of
// it (being written). Under Always groups do not overlap: the fsync
// dominates, and the appends waiting for it make the next group larger.
func (l *Log) canLead() bool {
	depth := uint64(2)
	if l.opts.Fsync == Always {
		depth = 1
	}
	return !l.sealing && !l.excl && l.tickets-l.written < depth
}

// unusable is the sticky error of a log after a failed write. l.mu is
// held.
func (l *Log) unusable() error {
	if errors.Is(l.fatal, ErrWriteFailed) {
		return l.fatal
	}
	return fmt.Errorf("%w (%w)", ErrWriteFailed, l.fatal)
}

func (l *Log) refuse() error {
	switch {
	case l.closed:
		return ErrClosed
	case l.fatal != nil:
		return l.unusable()
	case l.syncErr != nil:
		return fmt.Errorf("refusing writes: the last background fsync failed (%v); retrying every second: %w", l.syncErr, ErrFsync)
	}
	return nil
}

// writePending takes the pending appends as one group and writes them as
// one frame, in two stages so that sealing a group overlaps writing the
// one before: stage 1 (sealing, one goroutine at a time) seals the frame
// under the index it will have once the groups ahead of it are written;
// stage 2 writes groups strictly in the order they were taken (tickets).
// A frame is sealed once, under one index, and written at most once: if a
// write ahead of it failed, the log is unusable (l.fatal) and the frame is
// dropped, never sealed again under another index (see ErrWriteFailed).
// l.mu is held, l.sealing set by the caller; the lock is released during
// sealing and I/O.
func (l *Log) writePending() {
	g, buf := l.pendGroup, l.pend
	if n := len(l.free); n > 0 {
		l.pendGroup, l.free = l.free[n-1], l.free[:n-1]
	} else {
		l.pendGroup = &group{}
	}
	l.pend = pop(&l.bufs)
	out := pop(&l.outs)
	w := l.cur
	ticket := l.tickets
	l.tickets++
	idx := w.frames + (ticket - l.written)
	err := l.refuseWrite()
	l.mu.Unlock()
	if err == nil {
		out = w.s.appendFrame(out[:0], idx, buf)
	}
	l.mu.Lock()
	l.sealing = false
	l.cond.Broadcast()
	for l.written != ticket {
		l.cond.Wait()
	}
	if err == nil {
		err = l.refuseWrite()
	}
	if err == nil && idx != w.frames {
		// Unreachable: every failed write makes the log unusable.
		err = fmt.Errorf("frame sealed under index %d but the part is at %d: %w", idx, w.frames, ErrWriteFailed)
		l.fatal = err
	}
	l.mu.Unlock()

	written := false
	if err == nil {
		if err = w.write(out); err == nil {
			written = true
			if l.opts.Fsync == Always {
				if serr := l.syncFile(w.f); serr != nil {
					err = fmt.Errorf("fsync %s: %v: %w: %w", w.name, serr, ErrFsync, ErrWriteFailed)
				}
			}
		}
	}

	l.mu.Lock()
	if written {
		w.frames++ // the frame is in the file (under always, maybe not durably)
	}
	if err != nil && l.fatal == nil && !l.closed {
		// A write that failed may have put part of the frame in the file:
		// the part takes no further frame, so no index is sealed twice.
		l.fatal = err
	}
	if err == nil {
		l.dirty = l.opts.Fsync != Always
	}
	l.written++
	l.bufs = append(l.bufs, buf[:0])
	l.outs = append(l.outs, out[:0])
	g.done, g.err = true, err
	l.cond.Broadcast()
}

// refuseWrite is the error a group taken now must fail with, if any.
// l.mu is held.
func (l *Log) refuseWrite() error {
	switch {
	case l.closed:
		return ErrClosed
	case l.fatal != nil:
		return l.unusable()
	}
	return nil
}

func pop(free *[][]byte) []byte {
	n := len(*free)
	if n == 0 {
		return nil
	}
	b := (*free)[n-1]
	*free = (*free)[:n-1]
	return b
}

// Sync writes pending appends and fsyncs the current part.
func (l *Log) Sync() error {
	err := l.exclusive(func() error {
		if err := l.syncFile(l.cur.f); err != nil {
			return fmt.Errorf("fsync %s: %v: %w", l.cur.name, err, ErrFsync)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("aof.Sync: %w", err)
	}
	l.mu.Lock()
	l.dirty, l.syncErr = false, nil
	l.mu.Unlock()
	return nil
}

// exclusive runs fn with appends held back, after writing the pending ones.
func (l *Log) exclusive(fn func() error) error {
	l.mu.Lock()
	if !l.acquire() {
		l.mu.Unlock()
		return ErrClosed
	}
	var err error
	if l.fatal != nil {
		err = l.unusable()
	}
	l.mu.Unlock()
	if err == nil {
		err = fn()
	}
	l.mu.Lock()
	l.excl = false
	l.cond.Broadcast()
	l.mu.Unlock()
	return err
}

// acquire takes the log exclusively once every group in flight and every
// pending append is written. It reports false if the log is closed. l.mu
// is held.
func (l *Log) acquire() bool {
	for l.excl {
		l.cond.Wait()
	}
	if l.closed {
		return false
	}
	l.excl = true
	for l.sealing || l.written != l.tickets {
		l.cond.Wait()
	}
	for len(l.pend) > 0 {
		l.sealing = true
		l.writePending()
	}
	return true
}

// flusher fsyncs the current part once a second under EverySec.
func (l *Log) flusher() {
	defer close(l.stopped)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		l.backgroundSync()
	}
}

func (l *Log) backgroundSync() {
	l.mu.Lock()
	need := l.dirty || l.syncErr != nil
	l.dirty = false
	l.mu.Unlock()
	if !need {
		return
	}
	l.fileMu.RLock()
	err := l.syncFile(l.cur.f)
	l.fileMu.RUnlock()
	l.mu.Lock()
	if err != nil {
		l.syncErr, l.dirty = err, true
	} else {
		l.syncErr = nil
	}
	l.mu.Unlock()
}

// Close writes pending appends, fsyncs and closes the current part. It
// does not close the keyring. Appends racing with Close fail with
// ErrClosed; Close must not run concurrently with a Rewrite.
func (l *Log) Close() error {
	l.mu.Lock()
	if !l.acquire() {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	l.mu.Unlock()

	close(l.stop)
	<-l.stopped
	var err error
	if serr := l.syncFile(l.cur.f); serr != nil {
		err = fmt.Errorf("fsync %s: %v: %w", l.cur.name, serr, ErrFsync)
	}
	if cerr := l.cur.f.Close(); err == nil && cerr != nil {
		err = cerr
	}
	l.lock.Close()
	l.mu.Lock()
	l.excl = false
	l.cond.Broadcast()
	l.mu.Unlock()
	if err != nil {
		return fmt.Errorf("aof.Close: %w", err)
	}
	return nil
}

func (l *Log) path(name string) string { return filepath.Join(l.dir, name) }
