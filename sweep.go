package cachecrypt

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/cachecrypt/cachecrypt/internal/atomicfile"
	"github.com/cachecrypt/cachecrypt/osdisk"
)

// sweep removes the temporary files a crash left behind: on every disk
// (snapshots, keyrings, the re-encryption marker, scratch files) and next
// to the platform key file (only that file's own). It runs under the
// instance lock, so no live writer owns them; each removal is a plain
// unlink, so a crash during the sweep leaves only fewer leftovers. The
// AOF directory sweeps its own when it is opened.
func (i *Instance) sweep(pk platformKey) error {
	var removed []string
	for _, dir := range []string{
		i.dir, i.DiskDir(DiskPersistence), i.DiskDir(DiskOS), filepath.Join(i.DiskDir(DiskOS), osdisk.TempDir),
		filepath.Dir(filepath.Join(i.dir, legacyPlatformKey)),
	} {
		names, err := removeTemps(dir, "")
		removed = append(removed, names...)
		if err != nil {
			return fmt.Errorf("removing temporary files a crash left: %w", err)
		}
	}
	if pk.readOnly {
		return i.reportSwept(removed)
	}
	own := filepath.Base(pk.path) + atomicfile.TempMarker
	names, err := removeTemps(filepath.Dir(pk.path), own)
	removed = append(removed, names...)
	if err != nil {
		return fmt.Errorf("removing temporary files a crash left: %w", err)
	}
	return i.reportSwept(removed)
}

// reportSwept emits one event naming the removed files, if any.
func (i *Instance) reportSwept(removed []string) error {
	if len(removed) > 0 {
		i.emit(Event{Kind: EventSweep, Detail: fmt.Sprintf("removed %d temporary files a crash left: %s",
			len(removed), strings.Join(removed, ", "))})
	}
	return nil
}

// removeTemps removes the temporary files in dir whose names start with
// prefix and returns their paths. A missing dir holds none.
func removeTemps(dir, prefix string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var removed []string
	for _, e := range ents {
		if !e.Type().IsRegular() || !atomicfile.IsTemp(e.Name()) || !strings.HasPrefix(e.Name(), prefix) {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return removed, err
		}
		removed = append(removed, p)
	}
	return removed, nil
}
