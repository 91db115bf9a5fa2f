package cachecrypt

import (
	"fmt"
	"slices"
	"sync"

	"github.com/cachecrypt/cachecrypt/aof"
)

// AOF is the instance's append-only log on the persistence disk. Its
// methods are those of an *aof.Log; they register the DEK versions the
// log uses, so retirement never removes a key it still needs.
//
// When the instance fails closed, the log is closed (its part key
// dropped) and every call fails with the instance's error; when the
// instance resumes, the log is reopened (a new incremental part, a fresh
// salt) and the same AOF works again. Close the AOF before the instance.
type AOF struct {
	inst *Instance
	opts aof.Options

	gate sync.RWMutex // calls hold it shared; Reencrypt's snapshot, suspend, resume and Close exclusively
	log  *aof.Log     // guarded by gate; nil while suspended or closed
	err  error        // guarded by gate: why log is nil
}

// OpenAOF opens (creating on first use) the encrypted AOF of the
// persistence disk. A torn last write a crash left is cut off, as Redis'
// aof-load-truncated yes does (opts.Strict refuses it instead), and
// reported as an event and in Status. One AOF may be open at a time.
func (i *Instance) OpenAOF(opts aof.Options) (*AOF, error) {
	l, err := i.openAOFLog(opts)
	if err != nil {
		return nil, fmt.Errorf("cachecrypt.OpenAOF: %w", err)
	}
	if rec, ok := l.Recovered(); ok {
		i.noteRecovery(rec)
	}
	a := &AOF{inst: i, opts: opts, log: l}
	i.aofMu.Lock()
	i.aof, i.aofHandle = l, a
	i.aofMu.Unlock()
	return a, nil
}

// openAOFLog opens the log and records its manifest's generation.
func (i *Instance) openAOFLog(opts aof.Options) (*aof.Log, error) {
	keys, err := i.Keyring(DiskPersistence)
	if err != nil {
		return nil, err
	}
	release := i.lease(DiskPersistence, 0) // a new part is sealed under the active version
	defer release()
	opts.FS = i.cfg.fs
	l, err := aof.Open(i.AOFDir(), keys, opts)
	if err != nil {
		return nil, err
	}
	if err := i.recordAOF(l.Generation()); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// openLog returns the log an open AOF holds, or nil.
func (i *Instance) openLog() *aof.Log {
	i.aofMu.Lock()
	defer i.aofMu.Unlock()
	return i.aof
}

// current returns the log, or why there is none; the caller holds gate.
func (a *AOF) current(op string) (*aof.Log, error) {
	if err := a.inst.usable(); err != nil {
		return nil, fmt.Errorf("cachecrypt.AOF.%s: %w", op, err)
	}
	if a.log == nil {
		return nil, fmt.Errorf("cachecrypt.AOF.%s: %w", op, a.err)
	}
	return a.log, nil
}

// Append appends one batch of commands. See aof.Log.Append.
func (a *AOF) Append(p []byte) error {
	a.gate.RLock()
	defer a.gate.RUnlock()
	l, err := a.current("Append")
	if err != nil {
		return err
	}
	return l.Append(p)
}

// Rewrite replaces the log's base. See aof.Log.Rewrite.
func (a *AOF) Rewrite(f aof.BaseFormat, write func(w *aof.Rewrite) error) error {
	a.gate.RLock()
	defer a.gate.RUnlock()
	l, err := a.current("Rewrite")
	if err != nil {
		return err
	}
	release := a.inst.lease(DiskPersistence, 0)
	defer release()
	if err := l.Rewrite(f, write); err != nil {
		return err
	}
	return a.inst.recordAOF(l.Generation())
}

// Replay returns a reader of every command the log holds. See
// aof.Log.Replay. The DEK versions it reads stay until it is closed.
func (a *AOF) Replay() (*AOFReader, error) {
	a.gate.RLock()
	defer a.gate.RUnlock()
	l, err := a.current("Replay")
	if err != nil {
		return nil, err
	}
	release := a.inst.lease(DiskPersistence, slices.Min(l.Versions()))
	r, err := l.Replay()
	if err != nil {
		release()
		return nil, err
	}
	ar := &AOFReader{inst: a.inst, r: r, release: release}
	a.inst.track(ar)
	return ar, nil
}

// Sync makes every append durable now. See aof.Log.Sync.
func (a *AOF) Sync() error {
	a.gate.RLock()
	defer a.gate.RUnlock()
	l, err := a.current("Sync")
	if err != nil {
		return err
	}
	return l.Sync()
}

// Dir returns the log's directory.
func (a *AOF) Dir() string { return a.inst.AOFDir() }

// Generation returns the manifest's generation (see aof.Log.Generation),
// or 0 while the log is closed.
func (a *AOF) Generation() uint64 {
	a.gate.RLock()
	defer a.gate.RUnlock()
	if a.log == nil {
		return 0
	}
	return a.log.Generation()
}

// Recovered reports the torn tail OpenAOF cut off after a crash, if any.
// See aof.Log.Recovered.
func (a *AOF) Recovered() (aof.Recovery, bool) {
	a.gate.RLock()
	defer a.gate.RUnlock()
	if a.log == nil {
		return aof.Recovery{}, false
	}
	return a.log.Recovered()
}

// Close closes the log. See aof.Log.Close.
func (a *AOF) Close() error {
	a.gate.Lock()
	defer a.gate.Unlock()
	a.unregister()
	l := a.log
	a.log, a.err = nil, ErrClosed
	if l == nil {
		return nil
	}
	return l.Close()
}

// unregister forgets the handle; the caller holds gate.
func (a *AOF) unregister() {
	i := a.inst
	i.aofMu.Lock()
	defer i.aofMu.Unlock()
	if i.aofHandle == a {
		i.aof, i.aofHandle = nil, nil
	}
}

// suspend closes the log when the instance fails closed: its part key goes
// with it. It runs outside i.mu, since calls may wait on the instance.
func (a *AOF) suspend(reason error) {
	a.gate.Lock()
	defer a.gate.Unlock()
	if a.log == nil {
		return
	}
	a.log.Close()
	a.log, a.err = nil, reason
	a.inst.aofMu.Lock()
	a.inst.aof = nil
	a.inst.aofMu.Unlock()
}

// resume reopens the log once the instance resumed.
func (a *AOF) resume() error {
	a.gate.Lock()
	defer a.gate.Unlock()
	if a.log != nil || a.err == ErrClosed {
		return nil
	}
	l, err := a.inst.openAOFLog(a.opts)
	if err != nil {
		return err
	}
	a.log, a.err = l, nil
	a.inst.aofMu.Lock()
	a.inst.aof = l
	a.inst.aofMu.Unlock()
	return nil
}

// handle returns the open AOF, or nil.
func (i *Instance) handle() *AOF {
	i.aofMu.Lock()
	defer i.aofMu.Unlock()
	return i.aofHandle
}

// oldestVersion returns the lowest DEK version the log depends on.
func (a *AOF) oldestVersion() (uint32, error) {
	a.gate.RLock()
	defer a.gate.RUnlock()
	l, err := a.current("Reencrypt")
	if err != nil {
		return 0, err
	}
	return slices.Min(l.Versions()), nil
}
