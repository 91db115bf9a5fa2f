package aof

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/cachecrypt/cachecrypt/internal/atomicfile"
)

// create starts an empty log: generation 1, an empty base, incremental 1.
func (l *Log) create() error {
	if _, err := atomicfile.RemoveTemps(l.dir); err != nil {
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
	removeParts(l.dir, stale)
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
	if err := atomicfile.OS.SyncDir(l.dir); err == nil {
		err = writeManifest(l.dir, l.opts.name(), m, l.keys)
	}
	if err != nil {
		w.f.Close()
		return err
	}
	l.cur, l.man = w, m
	return nil
}

// recover checks the directory, scans the last incremental part to its end
// (cutting a torn tail when allowed) and starts a new incremental part.
func (l *Log) recover() error {
	if _, err := atomicfile.RemoveTemps(l.dir); err != nil {
		return err
	}
	m, parts, leftovers, err := inspect(l.dir, l.opts.name(), l.keys)
	if err != nil {
		return err
	}
	l.man = m
	// Unlisted parts are leftovers of a crash between creating a part and
	// committing the manifest that lists it (inspect ruled out a rollback).
	removeParts(l.dir, leftovers)
	if last := m.last(); last != nil && !last.Closed {
		p := parts[len(parts)-1]
		size, frames, dmg, err := scanTail(p, l.keys, l.opts.AllowTruncated, l.plain)
		if err != nil {
			return err
		}
		// cutTail also fsyncs: the manifest is about to record this size
		// as final, so the bytes must be durable first (the last process
		// may have died with them only in the page cache).
		if err := cutTail(p.path, size); err != nil {
			return err
		}
		l.recovered = dmg
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
			return 0, 0, nil, fmt.Errorf("%w (a torn final write: set AllowTruncated, or run aof.Fix, to cut it off)", err)
		}
		return 0, 0, nil, err
	}
}

// cutTail truncates path to size (a no-op when it is that size) and
// fsyncs it.
func cutTail(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if st, serr := f.Stat(); serr != nil || st.Size() != size {
		err = f.Truncate(size)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

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
	if old != nil {
		err = old.f.Sync()
	}
	if err == nil {
		err = atomicfile.OS.SyncDir(l.dir)
	}
	if err == nil {
		err = writeManifest(l.dir, l.opts.name(), m, l.keys)
	}
	if err != nil {
		w.f.Close()
		os.Remove(w.f.Name())
		return err
	}
	l.fileMu.Lock()
	l.cur, l.man = w, m
	l.fileMu.Unlock()
	if old != nil {
		old.f.Close()
	}
	return nil
}

func removeParts(dir string, names []string) {
	for _, n := range names {
		os.Remove(dir + string(os.PathSeparator) + n)
	}
	atomicfile.OS.SyncDir(dir)
}
