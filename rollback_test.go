package cachecrypt

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/cachecrypt/cachecrypt/aof"
	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/cachecrypt/cachecrypt/kek/kektest"
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

// keepDir returns a copy of the directory tree at dir, and put restores
// dir to exactly that copy.
func keepDir(t *testing.T, dir string) (put func()) {
	t.Helper()
	c := t.TempDir()
	copyDir(t, dir, c)
	return func() {
		require.NoError(t, os.RemoveAll(dir))
		copyDir(t, c, dir)
	}
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

// TestOldKeyringPutBack is issue 14 item 2: a keyring copied before a
// RotateDEK and put back after it is refused (before, Open took it and the
// next RotateDEK sealed a DEK under a nonce already used).
func TestOldKeyringPutBack(t *testing.T) {
	dir := t.TempDir()
	i := open(t, dir, noProbe(Config{}))
	put := keep(t, filepath.Join(dir, DiskPersistence, keyringFile))
	require.NoError(t, i.RotateDEK())
	require.NoError(t, i.Close())
	put()
	requireRollback(t, dir, noProbe(Config{}))
}

// TestOldMMKKeyringsAfterASwitch is issue 14 item 3: after a switch to a
// CMK and Reencrypt, the MMK keyrings of before are put back: with the
// CMK, and with the CMK revoked, both are refused.
func TestOldMMKKeyringsAfterASwitch(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	cmk := kektest.New("cmk")
	i := open(t, dir, noProbe(Config{}))
	require.NoError(t, i.SaveSnapshot(writeBody(1)))
	putPers := keep(t, filepath.Join(dir, DiskPersistence, keyringFile))
	putOS := keep(t, filepath.Join(dir, DiskOS, keyringFile))
	require.NoError(t, i.SetEncryption(ctx, CustomerManaged(cmk)))
	require.NoError(t, i.Reencrypt(ctx, nil, ReencryptOptions{}))
	require.NoError(t, i.Close())

	putPers()
	requireRollback(t, dir, noProbe(Config{Encryption: CustomerManaged(cmk)}))
	putOS()
	cmk.FailWith(kek.ErrRevoked)
	requireRollback(t, dir, noProbe(Config{Encryption: CustomerManaged(cmk)}))
	requireRollback(t, dir, noProbe(Config{}))
}

// TestOlderSnapshotPutBack is issue 14 item 4: an older encrypted snapshot
// of the same disk is refused, and so is a deleted one.
func TestOlderSnapshotPutBack(t *testing.T) {
	dir := t.TempDir()
	i := open(t, dir, noProbe(Config{}))
	require.NoError(t, i.SaveSnapshot(writeBody(1)))
	put := keep(t, i.SnapshotPath())
	require.NoError(t, i.SaveSnapshot(writeBody(2)))
	require.NoError(t, i.Close())
	put()
	requireRollback(t, dir, noProbe(Config{}))

	require.NoError(t, os.Remove(i.SnapshotPath()))
	requireRollback(t, dir, noProbe(Config{}))
}

// TestOlderAOFPutBack: the AOF directory of before a rewrite, put back, is
// refused.
func TestOlderAOFPutBack(t *testing.T) {
	dir := t.TempDir()
	i := open(t, dir, noProbe(Config{}))
	log, err := i.OpenAOF(aof.Options{Fsync: aof.Always})
	require.NoError(t, err)
	require.NoError(t, log.Append([]byte("SET a 1\n")))
	put := keepDir(t, i.AOFDir())
	require.NoError(t, log.Append([]byte("DEL a\n")))
	require.NoError(t, log.Rewrite(aof.BaseAOF, func(w *aof.Rewrite) error { return nil }))
	require.NoError(t, log.Close())
	require.NoError(t, i.Close())
	put()
	requireRollback(t, dir, noProbe(Config{}))
}

// TestWholeDirectoryRolledBack: a consistent copy of the whole instance
// directory, older than its last commit, is refused.
func TestWholeDirectoryRolledBack(t *testing.T) {
	dir := t.TempDir()
	i := open(t, dir, noProbe(Config{}))
	require.NoError(t, i.SaveSnapshot(writeBody(1)))
	require.NoError(t, i.Close())
	put := keepDir(t, dir)
	i = open(t, dir, noProbe(Config{}))
	require.NoError(t, i.SaveSnapshot(writeBody(2)))
	require.NoError(t, i.RotateDEK())
	require.NoError(t, i.Close())
	put()
	requireRollback(t, dir, noProbe(Config{}))
}

// TestSnapshotOfAnotherInstance: a snapshot of another instance under the
// same CMK, put in place, is refused: its stream names another disk, so it
// fails authentication (ErrAuthentication, "copied from another disk")
// before the state record is even consulted.
func TestSnapshotOfAnotherInstance(t *testing.T) {
	cmk := kektest.New("cmk")
	cfg := noProbe(Config{Encryption: CustomerManaged(cmk)})
	a, b := open(t, t.TempDir(), cfg), open(t, t.TempDir(), cfg)
	require.NoError(t, a.SaveSnapshot(writeBody(1)))
	require.NoError(t, b.SaveSnapshot(writeBody(2)))
	require.NoError(t, a.Close())
	require.NoError(t, b.Close())
	put := keep(t, a.SnapshotPath())
	require.NoError(t, os.Remove(b.SnapshotPath()))
	require.NoError(t, os.Rename(a.SnapshotPath(), b.SnapshotPath()))
	put()
	_, err := Open(context.Background(), b.Dir(), cfg)
	require.ErrorIs(t, err, ErrAuthentication)
	require.ErrorContains(t, err, "copied from another disk")
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
