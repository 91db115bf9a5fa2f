package cachecrypt

import (
	"io"
	"testing"
	"time"

	"github.com/cachecrypt/cachecrypt/aof"
	"github.com/stretchr/testify/require"
)

// TestRetireUnusedKeepsVersionsFilesUse rotates around a snapshot and an
// AOF: only versions no file uses are retired, and every file still reads.
func TestRetireUnusedKeepsVersionsFilesUse(t *testing.T) {
	i := open(t, t.TempDir(), noProbe(Config{}))
	require.NoError(t, i.SaveSnapshot(func(w io.Writer) error { _, err := w.Write(snapshotBody(1)); return err })) // v1
	require.NoError(t, i.RotateDEK())                                                                              // v2: unused
	require.NoError(t, i.RotateDEK())                                                                              // v3
	log, err := i.OpenAOF(aof.Options{Fsync: aof.Always})                                                          // parts under v3
	require.NoError(t, err)
	require.NoError(t, log.Append([]byte("rec\n")))
	require.NoError(t, i.RotateDEK()) // v4, active

	retired, err := i.RetireUnused()
	require.NoError(t, err)
	require.Equal(t, []uint32{2}, retired[DiskPersistence], "v1 (snapshot) and v3 (AOF) stay")
	require.Equal(t, []uint32{1, 2, 3}, retired[DiskOS], "no temp files: every old OS-disk version goes")

	snap, err := i.OpenSnapshot()
	require.NoError(t, err)
	got, _ := io.ReadAll(snap)
	snap.Close()
	require.Equal(t, snapshotBody(1), got)
	r, err := log.Replay()
	require.NoError(t, err)
	b, _ := io.ReadAll(r)
	r.Close()
	require.Equal(t, "rec\n", string(b))
	require.NoError(t, log.Close())

	// A new snapshot under v4 frees v1.
	require.NoError(t, i.SaveSnapshot(func(w io.Writer) error { _, err := w.Write(snapshotBody(2)); return err }))
	retired, err = i.RetireUnused()
	require.NoError(t, err)
	require.Equal(t, []uint32{1}, retired[DiskPersistence])
}

func TestScheduledRotation(t *testing.T) {
	clk := &clock{now: time.Now()}
	cfg := noProbe(Config{RotateDEKEvery: 24 * time.Hour})
	cfg.now = clk.Now
	i := open(t, t.TempDir(), cfg)
	i.rotateIfDue()
	require.Equal(t, uint32(1), i.Status()[0].DEKVersion, "not due yet")
	clk.Add(25 * time.Hour)
	i.rotateIfDue()
	rows := i.Status()
	require.Equal(t, uint32(2), rows[0].DEKVersion)
	keys, _ := i.Keyring(DiskPersistence)
	require.Equal(t, []uint32{2}, keys.Info().Versions, "v1 was used by no file and is retired")
}
