// Package atomicfile replaces files atomically, the way Redis writes
// temp-PID.rdb: write a temporary file beside the target, fsync it, rename it
// over the target, fsync the directory. A crash at any instant leaves either
// the old file or the new one, never a mix.
//
// Every operation goes through the FS interface so tests can inject a failure
// at each step (see FaultFS).
package atomicfile

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// File is the subset of *os.File the package writes through.
type File interface {
	io.Writer
	Sync() error
	Close() error
}

// FS is the filesystem the package writes through. Implementations must be
// safe for concurrent use by multiple goroutines on distinct files.
type FS interface {
	// CreateExcl creates name, failing if it exists.
	CreateExcl(name string, perm os.FileMode) (File, error)
	// OpenFile opens name with the flags of os.OpenFile, for writers that
	// append to or fsync an existing file.
	OpenFile(name string, flag int, perm os.FileMode) (File, error)
	// Truncate changes the size of name, as os.Truncate; it is durable once
	// the file is fsynced.
	Truncate(name string, size int64) error
	// Rename atomically replaces newname with oldname.
	Rename(oldname, newname string) error
	// Remove deletes name.
	Remove(name string) error
	// SyncDir fsyncs a directory, making renames and creations in it durable.
	SyncDir(dir string) error
}

// OS is the FS of the operating system.
var OS FS = osFS{}

type osFS struct{}

func (osFS) CreateExcl(name string, perm os.FileMode) (File, error) {
	return os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
}
func (osFS) OpenFile(name string, flag int, perm os.FileMode) (File, error) {
	return os.OpenFile(name, flag, perm)
}
func (osFS) Truncate(name string, size int64) error { return os.Truncate(name, size) }
func (osFS) Rename(oldname, newname string) error   { return os.Rename(oldname, newname) }
func (osFS) Remove(name string) error               { return os.Remove(name) }
func (osFS) SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// TempMarker is part of the name of every temporary file this package
// creates, so a directory can be swept of leftovers after a crash.
const TempMarker = ".cctmp-"

// IsTemp reports whether a base name is a temporary file of this package.
func IsTemp(base string) bool { return strings.Contains(base, TempMarker) }

// Pending is a file being written that replaces its target on Commit.
// It is not safe for concurrent use.
type Pending struct {
	fs     FS
	f      File
	tmp    string
	target string
	done   bool
}

// Create starts a replacement of target. Write to the result, then Commit it,
// or Abort it to remove the temporary file.
func Create(fsys FS, target string, perm os.FileMode) (*Pending, error) {
	var rnd [6]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, err
	}
	tmp := fmt.Sprintf("%s%s%d-%s", target, TempMarker, os.Getpid(), hex.EncodeToString(rnd[:]))
	f, err := fsys.CreateExcl(tmp, perm)
	if err != nil {
		return nil, fmt.Errorf("atomicfile: create temporary file for %s: %w", target, err)
	}
	return &Pending{fs: fsys, f: f, tmp: tmp, target: target}, nil
}

// Write writes to the temporary file.
func (p *Pending) Write(b []byte) (int, error) { return p.f.Write(b) }

// Name returns the path of the temporary file.
func (p *Pending) Name() string { return p.tmp }

// Commit fsyncs the temporary file, renames it over the target and fsyncs
// the directory. On error the temporary file is removed and the target is
// left as it was, unless the error came from the final directory fsync, when
// the new file is in place but may not yet be durable.
func (p *Pending) Commit() error {
	if p.done {
		return errors.New("atomicfile: Commit after Commit or Abort")
	}
	p.done = true
	if err := p.f.Sync(); err != nil {
		p.f.Close()
		p.fs.Remove(p.tmp)
		return fmt.Errorf("atomicfile: fsync %s: %w", p.tmp, err)
	}
	if err := p.f.Close(); err != nil {
		p.fs.Remove(p.tmp)
		return fmt.Errorf("atomicfile: close %s: %w", p.tmp, err)
	}
	if err := p.fs.Rename(p.tmp, p.target); err != nil {
		p.fs.Remove(p.tmp)
		return fmt.Errorf("atomicfile: rename to %s: %w", p.target, err)
	}
	if err := p.fs.SyncDir(filepath.Dir(p.target)); err != nil {
		return fmt.Errorf("atomicfile: fsync directory of %s: %w", p.target, err)
	}
	return nil
}

// Abort removes the temporary file. It is a no-op after Commit.
func (p *Pending) Abort() {
	if p.done {
		return
	}
	p.done = true
	p.f.Close()
	p.fs.Remove(p.tmp)
}

// WriteFile atomically replaces target with data.
func WriteFile(fsys FS, target string, data []byte, perm os.FileMode) error {
	p, err := Create(fsys, target, perm)
	if err != nil {
		return err
	}
	if _, err := p.Write(data); err != nil {
		p.Abort()
		return fmt.Errorf("atomicfile: write %s: %w", p.tmp, err)
	}
	return p.Commit()
}

// RemoveTemps deletes the temporary files a crash left in dir and returns
// how many it removed.
func RemoveTemps(dir string) (int, error) {
	removed, err := RemoveTempsOf(dir, "")
	return len(removed), err
}

// RemoveTempsOf deletes the temporary files in dir whose names start with
// prefix ("" for all) and returns their paths.
func RemoveTempsOf(dir, prefix string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var removed []string
	for _, e := range ents {
		if !e.Type().IsRegular() || !IsTemp(e.Name()) || !strings.HasPrefix(e.Name(), prefix) {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if err := os.Remove(p); err != nil {
			return removed, err
		}
		removed = append(removed, p)
	}
	return removed, nil
}
