package cachecrypt

import (
	"context"
	"fmt"
	"github.com/cachecrypt/cachecrypt/rdb"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/cachecrypt/cachecrypt/internal/atomicfile"
	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/stretchr/testify/require"
)

// maintenanceOps are the operations of an instance that write durably
// through Config.fs: snapshots, keyrings and the re-encryption marker.
func maintenanceOps(other kek.KEK) map[string]func(i *Instance) error {
	ctx := context.Background()
	return map[string]func(i *Instance) error{
		"save snapshot": func(i *Instance) error { return i.SaveSnapshot(writeBody(2)) },
		"rotate":        func(i *Instance) error { return i.RotateDEK() },
		"retire": func(i *Instance) error {
			_, err := i.RetireUnused()
			return err
		},
		"switch":    func(i *Instance) error { return i.SetEncryption(ctx, CustomerManaged(other)) },
		"reencrypt": func(i *Instance) error { return i.Reencrypt(ctx, nil, ReencryptOptions{}) },
	}
}

// TestMaintenanceFaultAtEveryStep fails each durable step of each
// operation in turn (a torn write, a failed fsync, rename or directory
// sync). The operation either fails or took effect; either way the
// instance reopens, an interrupted re-encryption finishes, and the
// snapshot reads back whole.
func TestMaintenanceFaultAtEveryStep(t *testing.T) {
	other, err := kek.LoadMMK(t.TempDir() + "/other.key")
	require.NoError(t, err)
	for name, op := range maintenanceOps(other) {
		steps := countSteps(t, other, op)
		require.Positive(t, steps, "%s writes through Config.fs", name)
		for k := 1; k <= steps; k++ {
			t.Run(fmt.Sprintf("%s/step%d", name, k), func(t *testing.T) {
				dir, fsys := t.TempDir(), &atomicfile.FaultFS{Inner: atomicfile.OS}
				i := faultInstance(t, dir, other, fsys)
				fsys.FailAt = fsys.Steps() + k
				opErr := op(i)
				require.NoError(t, i.Close())

				again := open(t, dir, noProbe(Config{Previous: []kek.Unwrapper{other}}))
				if again.ReencryptPending() {
					require.NoError(t, again.Reencrypt(context.Background(), nil, ReencryptOptions{}))
				}
				got, _ := readSnapshot(t, again)
				if name == "save snapshot" && opErr == nil {
					require.Equal(t, string(snapshotBody(2)), got, "an acknowledged snapshot stays")
				} else if got != string(snapshotBody(2)) {
					require.Equal(t, string(snapshotBody(1)), got)
				}
			})
		}
	}
}

// faultInstance opens an instance on dir whose durable writes go through
// fsys, with a snapshot and two DEK versions.
func faultInstance(t *testing.T, dir string, other kek.KEK, fsys *atomicfile.FaultFS) *Instance {
	cfg := noProbe(Config{Previous: []kek.Unwrapper{other}})
	cfg.fs = fsys
	i := open(t, dir, cfg)
	require.NoError(t, i.SaveSnapshot(writeBody(1)))
	require.NoError(t, i.RotateDEK())
	return i
}

// countSteps returns how many durable steps op takes.
func countSteps(t *testing.T, other kek.KEK, op func(*Instance) error) int {
	fsys := &atomicfile.FaultFS{Inner: atomicfile.OS}
	i := faultInstance(t, t.TempDir(), other, fsys)
	before := fsys.Steps()
	require.NoError(t, op(i))
	return fsys.Steps() - before
}

// writeBody returns a SaveSnapshot writer of snapshotBody(n).
func writeBody(n int64) func(w io.Writer) error {
	return func(w io.Writer) error { _, err := w.Write(snapshotBody(n)); return err }
}

// syncCounter counts fsyncs (of files and of directories) through an FS.
type syncCounter struct {
	atomicfile.FS
	syncs atomic.Int64
}

type countedFile struct {
	atomicfile.File
	c *syncCounter
}

func (f countedFile) Sync() error { f.c.syncs.Add(1); return f.File.Sync() }

func (c *syncCounter) CreateExcl(name string, perm os.FileMode) (atomicfile.File, error) {
	f, err := c.FS.CreateExcl(name, perm)
	if err != nil {
		return nil, err
	}
	return countedFile{f, c}, nil
}

func (c *syncCounter) OpenFile(name string, flag int, perm os.FileMode) (atomicfile.File, error) {
	f, err := c.FS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return countedFile{f, c}, nil
}

func (c *syncCounter) SyncDir(dir string) error { c.syncs.Add(1); return c.FS.SyncDir(dir) }

// TestSnapshotPaysOneExtraFsync: recording a snapshot in the state record
// costs one fsync on top of the snapshot's own (file and directory), as
// measured against rdb.Create and Commit through the same FS.
func TestSnapshotPaysOneExtraFsync(t *testing.T) {
	fsys := &syncCounter{FS: atomicfile.OS}
	cfg := noProbe(Config{})
	cfg.fs = fsys
	i := open(t, t.TempDir(), cfg)
	require.NoError(t, i.SaveSnapshot(writeBody(1))) // both state slots exist from here on
	require.NoError(t, i.SaveSnapshot(writeBody(2)))

	keys, _ := i.Keyring(DiskPersistence)
	before := fsys.syncs.Load()
	w, err := rdb.Create(filepath.Join(t.TempDir(), "dump.rdb"), keys, rdb.Options{FS: fsys})
	require.NoError(t, err)
	require.NoError(t, writeBody(3)(w))
	require.NoError(t, w.Commit())
	plain := fsys.syncs.Load() - before

	before = fsys.syncs.Load()
	require.NoError(t, i.SaveSnapshot(writeBody(4)))
	require.Equal(t, plain+1, fsys.syncs.Load()-before, "a snapshot costs %d fsyncs alone", plain)
}
