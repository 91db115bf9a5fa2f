package aof

import (
	"bufio"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cachecrypt/cachecrypt/internal/atomicfile"
	"github.com/cachecrypt/cachecrypt/internal/integrity"
)

// partWriter appends frames to one part file.
type partWriter struct {
	f      atomicfile.File
	name   string
	hdr    *header
	s      *sealer
	frames uint64 // frames written: the index of the next frame (guarded by Log.mu)
	size   int64  // bytes of whole frames in the file (owned by the writing goroutine)
}

// write appends whole frames. A failed write may have left part of a
// frame in the file: the caller makes the log unusable, so the part
// takes no further frame.
func (w *partWriter) write(b []byte) error {
	n, err := w.f.Write(b)
	if err == nil && n < len(b) {
		err = io.ErrShortWrite
	}
	if err != nil {
		return fmt.Errorf("write %s (the batch was not logged): %w: %w", w.name, ErrWriteFailed, err)
	}
	w.size += int64(n)
	return nil
}

func (l *Log) newHeader(kind byte, seq, gen uint64) *header {
	h := &header{Kind: kind, DEK: l.keys.Active(), Seq: seq, Generation: gen, DiskID: l.keys.DiskID()}
	rand.Read(h.Salt[:])
	return h
}

func entryFor(name string, t byte, h *header) entry {
	return entry{Name: name, Seq: h.Seq, Type: t, DEK: h.DEK, Generation: h.Generation, Salt: h.Salt}
}

// createIncr creates a new incremental part holding only its header, and
// fsyncs it.
func (l *Log) createIncr(seq, gen uint64) (*partWriter, entry, error) {
	name := fmt.Sprintf("%s.%d.incr.aof", l.opts.name(), seq)
	h := l.newHeader(kindIncr, seq, gen)
	s, err := newSealer(l.keys, h, l.plain)
	if err != nil {
		return nil, entry{}, err
	}
	fsys := l.opts.fs()
	f, err := fsys.CreateExcl(l.path(name), 0o600)
	if err != nil {
		return nil, entry{}, fmt.Errorf("create %s: %w", name, err)
	}
	hb := h.marshal()
	if _, err = f.Write(hb); err == nil {
		err = f.Sync()
	}
	if err != nil {
		f.Close()
		fsys.Remove(l.path(name))
		return nil, entry{}, fmt.Errorf("create %s: %w", name, err)
	}
	w := &partWriter{f: f, name: name, hdr: h, s: s, size: int64(len(hb))}
	return w, entryFor(name, TypeIncr, h), nil
}

// writeManifest replaces the manifest atomically.
func writeManifest(fsys atomicfile.FS, dir, name string, m *manifest, keys Keys) error {
	if err := m.seal(keys); err != nil {
		return err
	}
	return atomicfile.WriteFile(fsys, filepath.Join(dir, name+".manifest"), m.marshal(), 0o600)
}

func loadManifest(dir, name string, keys Keys) (*manifest, error) {
	path := filepath.Join(dir, name+".manifest")
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	m, err := parseManifest(b)
	if err == nil {
		err = m.verify(keys)
	}
	if err == nil {
		err = m.check()
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// partFile is a listed part as found on disk.
type partFile struct {
	e    entry
	path string
	size int64
	hdr  *header
}

// inspect checks a directory against its manifest without reading frames:
// every listed part is present with the header its entry names and, once
// closed, its recorded size; no part written after the manifest is present.
// It returns the parts in replay order and the unlisted part files.
func inspect(dir, name string, keys Keys) (*manifest, []partFile, []string, error) {
	m, err := loadManifest(dir, name, keys)
	if err != nil {
		return nil, nil, nil, err
	}
	var parts []partFile
	listed := map[string]bool{}
	for _, e := range m.Entries {
		listed[e.Name] = true
		if e.Type == TypeHistory {
			continue
		}
		p, err := statPart(dir, e, keys)
		if err != nil {
			return nil, nil, nil, err
		}
		parts = append(parts, p)
	}
	leftovers, err := unlisted(dir, name, m, listed, keys)
	if err != nil {
		return nil, nil, nil, err
	}
	return m, parts, leftovers, nil
}

func statPart(dir string, e entry, keys Keys) (partFile, error) {
	p := partFile{e: e, path: filepath.Join(dir, e.Name)}
	f, err := os.Open(p.path)
	if errors.Is(err, os.ErrNotExist) {
		return p, fmt.Errorf("%s (seq %d, type %c): %w; restore it from backup", e.Name, e.Seq, e.Type, ErrMissingPart)
	}
	if err != nil {
		return p, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return p, err
	}
	p.size = st.Size()
	if p.hdr, err = readHeader(f); err != nil {
		return p, fmt.Errorf("%s: %w", e.Name, err)
	}
	if err := matchHeader(p.hdr, e, keys); err != nil {
		return p, fmt.Errorf("%s: %w", e.Name, err)
	}
	if e.Closed && p.size < e.Size {
		return p, fmt.Errorf("%s: %d bytes, the manifest records %d: %w", e.Name, p.size, e.Size, ErrTruncated)
	}
	if e.Closed && p.size > e.Size {
		return p, fmt.Errorf("%s: %d bytes, the manifest records %d (bytes appended to a closed part): %w", e.Name, p.size, e.Size, ErrAuthentication)
	}
	return p, nil
}

// matchHeader checks a part's header against its authenticated entry.
func matchHeader(h *header, e entry, keys Keys) error {
	want := map[byte]byte{TypeBase: kindBase, TypeIncr: kindIncr}[e.Type]
	if h.Kind != want || h.DEK != e.DEK || h.Salt != e.Salt || h.Seq != e.Seq || h.Generation != e.Generation || h.DiskID != keys.DiskID() {
		return fmt.Errorf("header does not match the manifest entry (part replaced or swapped): %w", ErrAuthentication)
	}
	return nil
}

// unlisted returns the part files in dir the manifest does not list. An
// incremental part with frames written under a newer generation than the
// manifest's proves a rollback: parts only receive frames after the
// manifest listing them is durable.
func unlisted(dir, name string, m *manifest, listed map[string]bool, keys Keys) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, d := range ents {
		n := d.Name()
		if listed[n] || !isPartName(name, n) {
			continue
		}
		f, err := os.Open(filepath.Join(dir, n))
		if err != nil {
			return nil, err
		}
		st, _ := f.Stat()
		h, herr := readHeader(bufio.NewReader(f))
		f.Close()
		if herr == nil && h.Kind == kindIncr && h.DiskID == keys.DiskID() && h.Generation > m.Generation && st.Size() > h.size() {
			return nil, fmt.Errorf("%s holds appends from manifest generation %d, but the manifest is generation %d: %w; restore the newest manifest", n, h.Generation, m.Generation, ErrRollback)
		}
		out = append(out, n)
	}
	return out, nil
}

// isPartName reports whether n is NAME.SEQ.base.rdb, .base.aof or .incr.aof.
func isPartName(name, n string) bool {
	rest, ok := strings.CutPrefix(n, name+".")
	if !ok || atomicfile.IsTemp(n) {
		return false
	}
	for _, suf := range []string{".base.rdb", ".base.aof", ".incr.aof"} {
		if seq, ok := strings.CutSuffix(rest, suf); ok {
			_, err := strconv.ParseUint(seq, 10, 64)
			return err == nil
		}
	}
	return false
}

// openPart opens a part for reading frames, up to limit bytes.
func openPart(p partFile, keys Keys, limit int64, plain bool) (*os.File, *frameReader, error) {
	f, err := os.Open(p.path)
	if err != nil {
		return nil, nil, err
	}
	s, err := newSealer(keys, p.hdr, plain)
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("%s: %w", p.e.Name, err)
	}
	if _, err := f.Seek(p.hdr.size(), io.SeekStart); err != nil {
		f.Close()
		return nil, nil, err
	}
	fr := &frameReader{name: p.e.Name, r: bufio.NewReaderSize(f, 256<<10), s: s, off: p.hdr.size(), size: limit}
	return f, fr, nil
}

// endCheck verifies, at the clean end of a closed part, the frame count.
func endCheck(p partFile, fr *frameReader) error {
	if p.e.Closed && fr.index != p.e.Frames {
		return fmt.Errorf("%s: %d frames, the manifest records %d: %w", p.e.Name, fr.index, p.e.Frames, integrity.ErrAuthentication)
	}
	return nil
}
