package aof

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
)

// Report describes a checked log.
type Report struct {
	Generation uint64
	Parts      []PartInfo
	// Damage is the torn tail of the last incremental part (a write a
	// crash cut short): found by Check, cut off by Fix. Other damage is
	// only an error.
	Damage *Damage
}

// PartInfo describes one part.
type PartInfo struct {
	Name   string
	Type   byte // TypeBase or TypeIncr
	Seq    uint64
	DEK    uint32 // DEK version the part is encrypted under
	Frames uint64
	Size   int64 // bytes on disk
	Bytes  int64 // plaintext bytes
}

// Check authenticates everything in dir, like redis-check-aof: the
// manifest, every part's header and every frame. A torn tail of the last
// incremental part is returned in the report and as the error (Fix cuts
// it off); any other damage is an error naming the file and offset.
func Check(dir string, keys Keys, opts Options) (*Report, error) {
	rep, err := check(dir, keys, opts)
	if err != nil {
		return rep, fmt.Errorf("aof.Check: %w", err)
	}
	return rep, nil
}

// Parts lists the parts of the log in dir as its authenticated manifest
// names them, checking each part's header and size but decrypting no frame:
// a cheap way to learn which DEK versions the parts use. Frames and Bytes
// are left zero; Check fills them by authenticating every frame.
func Parts(dir string, keys Keys, opts Options) ([]PartInfo, error) {
	_, parts, _, err := inspect(dir, opts.name(), keys)
	if err != nil {
		return nil, fmt.Errorf("aof.Parts: %w", err)
	}
	out := make([]PartInfo, 0, len(parts))
	for _, p := range parts {
		out = append(out, partInfo(p))
	}
	return out, nil
}

func partInfo(p partFile) PartInfo {
	return PartInfo{Name: p.e.Name, Type: p.e.Type, Seq: p.e.Seq, DEK: p.e.DEK, Size: p.size}
}

func check(dir string, keys Keys, opts Options) (*Report, error) {
	m, parts, _, err := inspect(dir, opts.name(), keys)
	if err != nil {
		return nil, err
	}
	rep := &Report{Generation: m.Generation}
	for i, p := range parts {
		pi, err := checkPart(p, keys)
		rep.Parts = append(rep.Parts, pi)
		var d *damage
		if err != nil && errors.As(err, &d) && d.torn && i == len(parts)-1 && !p.e.Closed {
			rep.Damage = &Damage{File: p.e.Name, Offset: d.off, Dropped: p.size - d.off, Err: d.err}
		}
		if err != nil {
			return rep, err
		}
	}
	return rep, nil
}

func checkPart(p partFile, keys Keys) (PartInfo, error) {
	pi := partInfo(p)
	f, fr, err := openPart(p, keys, p.size, false)
	if err != nil {
		return pi, err
	}
	defer f.Close()
	for {
		b, err := fr.next()
		pi.Bytes += int64(len(b))
		pi.Frames = fr.index
		if err == io.EOF {
			return pi, endCheck(p, fr)
		}
		if err != nil {
			return pi, err
		}
	}
}

// Fix checks dir and, when the only damage is a torn tail of the last
// incremental part (a write a crash cut short, or a zero-filled tail),
// cuts that part at the end of its last whole frame, as redis-check-aof
// --fix does. The report's Damage says what was cut. Anything else, a
// frame of the last part that fails authentication included (tampering
// is not a torn write), is left alone and returned as an error naming the
// part and offset: restore from a backup.
func Fix(dir string, keys Keys, opts Options) (*Report, error) {
	rep, err := check(dir, keys, opts)
	if err == nil {
		return rep, nil
	}
	if rep == nil || rep.Damage == nil {
		return rep, fmt.Errorf("aof.Fix: cannot fix: %w", err)
	}
	last := rep.Parts[len(rep.Parts)-1]
	if err := cutTail(opts.fs(), filepath.Join(dir, last.Name), rep.Damage.Offset); err != nil {
		return rep, fmt.Errorf("aof.Fix: %w", err)
	}
	return rep, nil
}
