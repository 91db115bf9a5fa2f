package aof

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/cachecrypt/cachecrypt/internal/atomicfile"
)

// create starts an empty log: generation 1, an empty base, incremental 1.
func (l *Log) create() error {
	fsys := l.opts.fs()
	if err := removeTemps(fsys, l.dir); err != nil {
		return err
	}
	ents, err := os.ReadDir(l.dir)
	if err != nil {
		return err
	}
	var stale []string
	for _, d := range ents {
		if !isPartName(l.opts.name(), d.Name()) {
			continue
		}
		// A crash while creating the directory leaves parts that hold only
		// a header (or less): remove them. A part with frames and no
		// manifest means the manifest was lost: never overwrite data.
		if st, err := d.Info(); err == nil && st.Size() <= int64(fixedHdrSize+len(l.keys.DiskID())) {
			stale = append(stale, d.Name())
			continue
		}
		return fmt.Errorf("%s holds %s but no manifest %s.manifest: %w; restore the manifest, or Import a plain Redis directory", l.dir, d.Name(), l.opts.name(), ErrMissingPart)
	}
	removeParts(fsys, l.dir, stale)
	m := &manifest{DiskID: l.keys.DiskID(), Generation: 1}
	bw, err := l.newBase(BaseAOF, 1, 1)
	if err != nil {
		return err
	}
	be, err := bw.finish()
	if err != nil {
		return err
	}
	w, ie, err := l.createIncr(1, 1)
	if err != nil {
		return err
	}
	m.Entries = []entry{be, ie}
	err = fsys.SyncDir(l.dir)
	if err == nil {
		err = writeManifest(fsys, l.dir, l.opts.name(), m, l.keys)
	}
	if err != nil {
		// The parts hold only headers: the next Open removes them, with
		// the manifest if it was written.
		w.f.Close()
		return err
	}
	l.cur, l.man = w, m
	return nil
}

// recover checks the directory, scans the last incremental part to its end
// (cutting a torn tail when allowed) and starts a new incremental part.
func (l *Log) recover() error {
	fsys := l.opts.fs()
	if err := removeTemps(fsys, l.dir); err != nil {
		return err
	}
	m, parts, leftovers, err := inspect(l.dir, l.opts.name(), l.keys)
	if err != nil {
		return err
	}
	l.man = m
	// Unlisted parts are leftovers of a crash between creating a part and
	// committing the manifest that lists it (inspect ruled out a rollback).
	removeParts(fsys, l.dir, leftovers)
	if last := m.last(); last != nil && !last.Closed {
		p := parts[len(parts)-1]
		size, frames, dmg, err := scanTail(p, l.keys, !l.opts.Strict, l.plain)
		if err != nil {
			return err
		}
		// cutTail also fsyncs: the manifest is about to record this size
		// as final, so the bytes must be durable first (the last process
		// may have died with them only in the page cache).
		if err := cutTail(fsys, p.path, size); err != nil {
			return err
		}
		if dmg != nil {
			l.recovered = &Recovery{Part: dmg.File, Offset: dmg.Offset, BytesCut: dmg.Dropped}
		}
		m.Entries[len(m.Entries)-1].Closed = true
		m.Entries[len(m.Entries)-1].Size = size
		m.Entries[len(m.Entries)-1].Frames = frames
	}
	return l.startIncr(m, nil)
}

// scanTail authenticates every frame of the open part p and returns where
// its valid frames end. A torn final frame is reported as damage when
// allowed, as an error otherwise.
func scanTail(p partFile, keys Keys, allowTorn, plain bool) (int64, uint64, *Damage, error) {
	f, fr, err := openPart(p, keys, p.size, plain)
	if err != nil {
		return 0, 0, nil, err
	}
	defer f.Close()
	for {
		_, err := fr.next()
		if err == nil {
			continue
		}
		if err == io.EOF {
			return fr.off, fr.index, nil, nil
		}
		var d *damage
		if errors.As(err, &d) && d.torn && allowTorn {
			return fr.off, fr.index, &Damage{File: p.e.Name, Offset: fr.off, Dropped: p.size - fr.off, Err: d.err}, nil
		}
		if d != nil && d.torn {
			return 0, 0, nil, fmt.Errorf("%w (a torn final write: open without Options.Strict, or run aof.Fix, to cut it off)", err)
		}
		return 0, 0, nil, err
	}
}

// cutTail truncates path to size (a no-op when it is that size) and
// fsyncs it.
func cutTail(fsys atomicfile.FS, path string, size int64) error {
	if st, err := os.Stat(path); err != nil || st.Size() != size {
		if err := fsys.Truncate(path, size); err != nil {
			return err
		}
	}
	f, err := fsys.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// errManifest marks a failed manifest replacement: whether the old or the
// new manifest is on disk is unknown, so the Log must not go on.
var errManifest = errors.New("writing the manifest failed")

// startIncr makes m (whose last incremental part, if any, is closed) the
// manifest of a new generation that adds a fresh incremental part, and
// switches appends to it. old, when set, is the part being closed; it is
// fsynced before the manifest records its size.
func (l *Log) startIncr(m *manifest, old *partWriter) error {
	m = m.clone()
	m.Generation++
	var seq uint64
	for _, e := range m.Entries {
		if e.Type != TypeBase {
			seq = max(seq, e.Seq)
		}
	}
	w, e, err := l.createIncr(seq+1, m.Generation)
	if err != nil {
		return err
	}
	m.Entries = append(m.Entries, e)
	fsys := l.opts.fs()
	if old != nil {
		if err = l.syncFile(old.f); err != nil {
			err = fmt.Errorf("fsync %s: %v: %w", old.name, err, ErrFsync)
		}
	}
	if err == nil {
		err = fsys.SyncDir(l.dir)
	}
	if err != nil {
		w.f.Close()
		fsys.Remove(l.path(w.name))
		return err
	}
	if err := writeManifest(fsys, l.dir, l.opts.name(), m, l.keys); err != nil {
		// The new manifest may be in place (a failed directory fsync
		// comes after the rename), listing the new part: keep it. The
		// caller stops using this Log; the next Open sorts it out.
		w.f.Close()
		return fmt.Errorf("%w: %w", errManifest, err)
	}
	l.fileMu.Lock()
	l.cur, l.man = w, m
	l.fileMu.Unlock()
	if old != nil {
		old.f.Close()
	}
	return nil
}

// removeParts deletes parts no manifest lists any more, best effort: a
// part left behind is removed by the next Open.
func removeParts(fsys atomicfile.FS, dir string, names []string) {
	for _, n := range names {
		fsys.Remove(filepath.Join(dir, n))
	}
	fsys.SyncDir(dir)
}

// removeTemps deletes the temporary files (an unfinished manifest or base)
// a crash left in dir.
func removeTemps(fsys atomicfile.FS, dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if e.Type().IsRegular() && atomicfile.IsTemp(e.Name()) {
			if err := fsys.Remove(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}
