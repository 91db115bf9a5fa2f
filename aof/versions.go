package aof

import "fmt"

// Versions returns every DEK version the log in dir depends on: those of
// its parts and the one its manifest is authenticated under. Retiring any
// of them makes the log unreadable.
func Versions(dir string, keys Keys, opts Options) ([]uint32, error) {
	m, parts, _, err := inspect(dir, opts.name(), keys)
	if err != nil {
		return nil, fmt.Errorf("aof.Versions: %w", err)
	}
	vs := []uint32{m.MACDEK}
	for _, p := range parts {
		vs = append(vs, p.e.DEK)
	}
	return vs, nil
}

// Versions returns every DEK version the open log depends on, from its
// manifest in memory: those of its parts and the manifest's own. A rewrite
// in progress adds the version of its new base; the caller keeps that one
// (and the active one a Commit seals the manifest under) itself.
func (l *Log) Versions() []uint32 {
	l.fileMu.RLock()
	defer l.fileMu.RUnlock()
	vs := []uint32{l.man.MACDEK}
	for _, e := range l.man.Entries {
		if e.Type != TypeHistory {
			vs = append(vs, e.DEK)
		}
	}
	return vs
}

// Generation returns the generation of the authenticated manifest of the
// log in dir, without opening the log: every commit of a manifest (a
// rewrite, a new incremental part) raises it.
func Generation(dir string, keys Keys, opts Options) (uint64, error) {
	m, _, _, err := inspect(dir, opts.name(), keys)
	if err != nil {
		return 0, fmt.Errorf("aof.Generation: %w", err)
	}
	return m.Generation, nil
}
