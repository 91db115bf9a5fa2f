package cachecrypt

import (
	"errors"
	"fmt"
	"io/fs"
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
	type place struct{ dir, prefix string }
	places := []place{
		{i.dir, ""}, {i.DiskDir(DiskPersistence), ""}, {i.DiskDir(DiskOS), ""},
		{filepath.Join(i.DiskDir(DiskOS), osdisk.TempDir), ""}, {filepath.Dir(filepath.Join(i.dir, legacyPlatformKey)), ""},
	}
	if !pk.readOnly {
		places = append(places, place{filepath.Dir(pk.path), filepath.Base(pk.path) + atomicfile.TempMarker})
	}
	var removed []string
	for _, p := range places {
		names, err := atomicfile.RemoveTempsOf(p.dir, p.prefix)
		removed = append(removed, names...)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("removing temporary files a crash left: %w", err)
		}
	}
	if len(removed) > 0 {
		i.emit(Event{Kind: EventSweep, Detail: fmt.Sprintf("removed %d temporary files a crash left: %s",
			len(removed), strings.Join(removed, ", "))})
	}
	return nil
}
