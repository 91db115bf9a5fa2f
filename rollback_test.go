package cachecrypt

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// The attacker of these tests (T2 in DESIGN.md) can read and write the
// data disks between runs, through nothing but files: they keep copies and
// put them back. They cannot touch the platform key store, the vault or
// the HSM. Each move must be refused with ErrRollback, never served.

// keep returns a copy of the file at path, and put writes it back.
func keep(t *testing.T, path string) (put func()) {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return func() { require.NoError(t, os.WriteFile(path, b, 0o600)) }
}

func requireRollback(t *testing.T, dir string, cfg Config) {
	t.Helper()
	i, err := Open(context.Background(), dir, cfg)
	if err == nil {
		i.Close()
	}
	require.ErrorIs(t, err, ErrRollback)
	require.ErrorContains(t, err, ".state-*", "the error says how to accept a restore made on purpose")
}

// TestRestoredBackupAcceptedOnPurpose: an operator who restores an older
// backup on purpose removes the state record; the next Open records what
// is on disk and serves it.
func TestRestoredBackupAcceptedOnPurpose(t *testing.T) {
	dir := t.TempDir()
	i := open(t, dir, noProbe(Config{}))
	require.NoError(t, i.SaveSnapshot(writeBody(1)))
	put := keep(t, i.SnapshotPath())
	require.NoError(t, i.SaveSnapshot(writeBody(2)))
	require.NoError(t, i.Close())
	put()
	requireRollback(t, dir, noProbe(Config{}))
	slots, err := filepath.Glob(i.state.base + "-*")
	require.NoError(t, err)
	require.Len(t, slots, stateSlots)
	for _, s := range slots {
		require.NoError(t, os.Remove(s))
	}
	got, _ := readSnapshot(t, open(t, dir, noProbe(Config{})))
	require.Equal(t, string(snapshotBody(1)), got)
}

// TestStateSurvivesATornSlot: a state slot torn by a crash is ignored; the
// other slot still holds the state before it, and the disk (one commit
// ahead of it at most) is accepted.
func TestStateSurvivesATornSlot(t *testing.T) {
	dir := t.TempDir()
	i := open(t, dir, noProbe(Config{}))
	require.NoError(t, i.SaveSnapshot(writeBody(1)))
	require.NoError(t, i.RotateDEK())
	last := i.state.slot(i.state.cur.Seq)
	require.NoError(t, i.Close())
	b, err := os.ReadFile(last)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(last, b[:len(b)/2], 0o600))
	got, _ := readSnapshot(t, open(t, dir, noProbe(Config{})))
	require.Equal(t, string(snapshotBody(1)), got)
}

// TestStateFirstWriteTorn: a crash during the very first write of the
// record leaves one torn slot and nothing recorded; the next Open starts
// the record afresh.
func TestStateFirstWriteTorn(t *testing.T) {
	dir := t.TempDir()
	i := open(t, dir, noProbe(Config{}))
	require.Equal(t, uint64(1), i.state.cur.Seq)
	only := i.state.slot(1)
	require.NoError(t, i.Close())
	require.NoFileExists(t, i.state.slot(0), "one write so far")
	b, err := os.ReadFile(only)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(only, b[:len(b)/3], 0o600))
	open(t, dir, noProbe(Config{}))
}
