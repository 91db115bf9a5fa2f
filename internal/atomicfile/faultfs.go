package atomicfile

import (
	"errors"
	"os"
	"sync"
)

// ErrInjected is the error a FaultFS returns at its chosen step.
var ErrInjected = errors.New("atomicfile: injected fault")

// FaultFS wraps an FS and fails the Nth mutating step (create, open for
// writing, write, truncate, sync, close, rename, remove, directory sync),
// counting from 1. With FailAt 0 it
// only counts, so a test can learn how many steps an operation takes and then
// fail each one in turn. Remove is counted but never failed, like the
// best-effort cleanups that call it.
type FaultFS struct {
	Inner  FS
	FailAt int

	mu    sync.Mutex
	steps int
}

// Steps returns how many mutating steps have run.
func (f *FaultFS) Steps() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.steps
}

func (f *FaultFS) step() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.steps++
	if f.steps == f.FailAt {
		return ErrInjected
	}
	return nil
}

// CreateExcl implements FS.
func (f *FaultFS) CreateExcl(name string, perm os.FileMode) (File, error) {
	if err := f.step(); err != nil {
		return nil, err
	}
	inner, err := f.Inner.CreateExcl(name, perm)
	if err != nil {
		return nil, err
	}
	return &faultFile{fs: f, f: inner}, nil
}

// OpenFile implements FS.
func (f *FaultFS) OpenFile(name string, flag int, perm os.FileMode) (File, error) {
	if err := f.step(); err != nil {
		return nil, err
	}
	inner, err := f.Inner.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &faultFile{fs: f, f: inner}, nil
}

// Truncate implements FS.
func (f *FaultFS) Truncate(name string, size int64) error {
	if err := f.step(); err != nil {
		return err
	}
	return f.Inner.Truncate(name, size)
}

// Rename implements FS.
func (f *FaultFS) Rename(oldname, newname string) error {
	if err := f.step(); err != nil {
		return err
	}
	return f.Inner.Rename(oldname, newname)
}

// Remove implements FS.
func (f *FaultFS) Remove(name string) error {
	f.mu.Lock()
	f.steps++
	f.mu.Unlock()
	return f.Inner.Remove(name)
}

// SyncDir implements FS.
func (f *FaultFS) SyncDir(dir string) error {
	if err := f.step(); err != nil {
		return err
	}
	return f.Inner.SyncDir(dir)
}

type faultFile struct {
	fs *FaultFS
	f  File
}

func (w *faultFile) Write(b []byte) (int, error) {
	if err := w.fs.step(); err != nil {
		// A torn write: half the bytes reach the file.
		n, _ := w.f.Write(b[:len(b)/2])
		return n, err
	}
	return w.f.Write(b)
}

func (w *faultFile) Sync() error {
	if err := w.fs.step(); err != nil {
		return err
	}
	return w.f.Sync()
}

func (w *faultFile) Close() error {
	if err := w.fs.step(); err != nil {
		w.f.Close()
		return err
	}
	return w.f.Close()
}
