package aof

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/cachecrypt/cachecrypt/internal/atomicfile"
)

// Import encrypts the plain Redis 7 appendonlydir src into dst, which must
// be absent or empty. Every part keeps its name and sequence number; the
// last incremental part stays open, so a Log opened on dst goes on from
// there. History entries are kept by name only. opts.Name is Redis'
// appendfilename ("" = appendonly.aof).
func Import(src, dst string, keys Keys, opts Options) error {
	if err := importDir(src, dst, keys, opts); err != nil {
		return fmt.Errorf("aof.Import: %w", err)
	}
	return nil
}

func importDir(src, dst string, keys Keys, opts Options) error {
	b, err := os.ReadFile(filepath.Join(src, opts.name()+".manifest"))
	if err != nil {
		return err
	}
	res, err := parseRedisManifest(b)
	if err != nil {
		return err
	}
	if len(res) == 0 || res[0].Type != TypeBase {
		return fmt.Errorf("%s: the Redis manifest lists no base first; import supports Redis 7 directories with a base: %w", src, ErrFormat)
	}
	if err := os.MkdirAll(dst, 0o700); err != nil {
		return err
	}
	if ents, _ := os.ReadDir(dst); len(ents) > 0 {
		return fmt.Errorf("destination %s is not empty", dst)
	}
	l := &Log{dir: dst, keys: keys, opts: opts}
	if err := l.importParts(src, res); err != nil {
		// Leave dst empty, as it was, so the import can be run again.
		fsys := opts.fs()
		fsys.Remove(filepath.Join(dst, opts.name()+".manifest"))
		for _, re := range res {
			fsys.Remove(filepath.Join(dst, re.Name))
		}
		removeTemps(fsys, dst)
		fsys.SyncDir(dst)
		return err
	}
	return nil
}

// importParts encrypts every part res lists into l.dir, then writes the
// manifest.
func (l *Log) importParts(src string, res []redisEntry) error {
	m := &manifest{DiskID: l.keys.DiskID(), Generation: 1}
	for i, re := range res {
		e := entry{Name: re.Name, Seq: re.Seq, Type: re.Type}
		if re.Type != TypeHistory {
			open := re.Type == TypeIncr && i == len(res)-1
			var err error
			if e, err = l.importPart(src, re, open); err != nil {
				return err
			}
		}
		m.Entries = append(m.Entries, e)
	}
	if err := m.check(); err != nil {
		return err
	}
	fsys := l.opts.fs()
	if err := fsys.SyncDir(l.dir); err != nil {
		return err
	}
	return writeManifest(fsys, l.dir, l.opts.name(), m, l.keys)
}

// importPart encrypts one part file as frames of baseChunk bytes.
func (l *Log) importPart(src string, re redisEntry, open bool) (entry, error) {
	in, err := os.Open(filepath.Join(src, re.Name))
	if err != nil {
		return entry{}, err
	}
	defer in.Close()
	kind := byte(kindBase)
	if re.Type == TypeIncr {
		kind = kindIncr
	}
	h := l.newHeader(kind, re.Seq, 1)
	s, err := newSealer(l.keys, h, false)
	if err != nil {
		return entry{}, err
	}
	p, err := atomicfile.Create(l.opts.fs(), l.path(re.Name), 0o600)
	if err != nil {
		return entry{}, err
	}
	defer p.Abort()
	hb := h.marshal()
	if _, err := p.Write(hb); err != nil {
		return entry{}, err
	}
	e := entryFor(re.Name, re.Type, h)
	e.Size = int64(len(hb))
	buf, out := make([]byte, baseChunk), []byte(nil)
	for {
		n, rerr := io.ReadFull(in, buf)
		if n > 0 {
			out = s.appendFrame(out[:0], e.Frames, buf[:n])
			if _, err := p.Write(out); err != nil {
				return entry{}, err
			}
			e.Frames++
			e.Size += int64(len(out))
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return entry{}, rerr
		}
	}
	if err := p.Commit(); err != nil {
		return entry{}, err
	}
	e.Closed = !open
	if open {
		e.Size, e.Frames = 0, 0
	}
	return e, nil
}

// Export decrypts the encrypted log in src into dst (absent or empty) as a
// plain Redis 7 appendonlydir: the same part names and sequence numbers
// and a Redis manifest, which redis-server loads. Every frame is
// authenticated first; a torn tail of the last incremental part is left
// out, or fails with ErrTruncated when opts.Strict is set.
func Export(src, dst string, keys Keys, opts Options) error {
	if err := exportDir(src, dst, keys, opts); err != nil {
		return fmt.Errorf("aof.Export: %w", err)
	}
	return nil
}

func exportDir(src, dst string, keys Keys, opts Options) error {
	m, parts, _, err := inspect(src, opts.name(), keys)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dst, 0o700); err != nil {
		return err
	}
	if ents, _ := os.ReadDir(dst); len(ents) > 0 {
		return fmt.Errorf("destination %s is not empty", dst)
	}
	for i, p := range parts {
		last := i == len(parts)-1
		if err := exportPart(opts.fs(), dst, p, keys, last && !opts.Strict); err != nil {
			return err
		}
	}
	if err := opts.fs().SyncDir(dst); err != nil {
		return err
	}
	return atomicfile.WriteFile(opts.fs(), filepath.Join(dst, opts.name()+".manifest"), marshalRedisManifest(m), 0o644)
}

func exportPart(fsys atomicfile.FS, dst string, p partFile, keys Keys, allowTorn bool) error {
	r, err := newReader([]partFile{p}, nil, keys, allowTorn && !p.e.Closed, false)
	if err != nil {
		return err
	}
	defer r.Close()
	out, err := atomicfile.Create(fsys, filepath.Join(dst, p.e.Name), 0o644)
	if err != nil {
		return err
	}
	defer out.Abort()
	if _, err := r.WriteTo(out); err != nil {
		var d *damage
		if errors.As(err, &d) {
			return err
		}
		return fmt.Errorf("%s: %w", p.e.Name, err)
	}
	return out.Commit()
}
