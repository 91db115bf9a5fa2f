package cachecrypt_test

// The attacker of these tests holds the data disks and nothing else (T1),
// or can also write them between runs (T2): they copy files, keep them and
// put them back. They work through files and the public API only; they
// cannot touch the platform key store, the vault or the HSM. Each move of
// issue 14 is refused with its stated error, or made impossible.

import (
	"bytes"
	"context"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cachecrypt/cachecrypt"
	"github.com/cachecrypt/cachecrypt/aof"
	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/cachecrypt/cachecrypt/kek/kektest"
	"github.com/cachecrypt/cachecrypt/nvme"
	"github.com/stretchr/testify/require"
)

const secret = "CANARY-2b9e4d1a-the-attacker-wants-this"

func body(n int) []byte { return bytes.Repeat([]byte(secret+string(rune('a'+n))), 3000) }

func openInst(t *testing.T, dir string, cfg cachecrypt.Config) *cachecrypt.Instance {
	t.Helper()
	cfg.ProbeInterval = -1
	i, err := cachecrypt.Open(context.Background(), dir, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { i.Close() })
	return i
}

func save(t *testing.T, i *cachecrypt.Instance, n int) {
	t.Helper()
	require.NoError(t, i.SaveSnapshot(func(w io.Writer) error { _, err := w.Write(body(n)); return err }))
}

// keepFile copies path now; the returned func puts the copy back.
func keepFile(t *testing.T, path string) func() {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return func() { require.NoError(t, os.WriteFile(path, b, 0o600)) }
}

// keepTree copies the tree at dir now; the returned func restores it.
func keepTree(t *testing.T, dir string) func() {
	t.Helper()
	c := t.TempDir()
	require.NoError(t, os.CopyFS(c, os.DirFS(dir)))
	return func() {
		require.NoError(t, os.RemoveAll(dir))
		require.NoError(t, os.CopyFS(dir, os.DirFS(c)))
	}
}

func refused(t *testing.T, dir string, cfg cachecrypt.Config, want error) {
	t.Helper()
	cfg.ProbeInterval = -1
	i, err := cachecrypt.Open(context.Background(), dir, cfg)
	if err == nil {
		i.Close()
	}
	require.ErrorIs(t, err, want)
}

func grep(t *testing.T, dir string, needle []byte) []string {
	t.Helper()
	var found []string
	require.NoError(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err == nil && bytes.Contains(b, needle) {
			found = append(found, p)
		}
		return err
	}))
	return found
}

// Move 1: a copy of the instance directory, made with the default
// configuration, decrypts nothing: it holds neither the platform key nor
// any plaintext, and it cannot be opened without the platform key store.
func TestAttackCopyOfTheDirectory(t *testing.T) {
	dir := t.TempDir()
	i := openInst(t, dir, cachecrypt.Config{})
	save(t, i, 1)
	log, err := i.OpenAOF(aof.Options{Fsync: aof.Always})
	require.NoError(t, err)
	require.NoError(t, log.Append([]byte("SET k "+secret+"\n")))
	require.NoError(t, log.Close())
	require.NoError(t, i.Close())
	keyPath, err := cachecrypt.PlatformKeyPath(dir)
	require.NoError(t, err)
	key, err := os.ReadFile(keyPath)
	require.NoError(t, err)

	stolen := t.TempDir()
	require.NoError(t, os.CopyFS(stolen, os.DirFS(dir)))
	require.Empty(t, grep(t, stolen, key), "the platform key is not in the copy")
	require.Empty(t, grep(t, stolen, []byte(secret)), "no plaintext in the copy")
	t.Setenv(cachecrypt.PlatformStoreEnv, t.TempDir()) // the attacker's machine
	refused(t, stolen, cachecrypt.Config{}, cachecrypt.ErrPlatformKey)
}

// Move 2: a keyring copied before a RotateDEK and put back after it.
func TestAttackOldKeyringPutBack(t *testing.T) {
	dir := t.TempDir()
	i := openInst(t, dir, cachecrypt.Config{})
	put := keepFile(t, filepath.Join(i.DiskDir(cachecrypt.DiskPersistence), "keyring"))
	require.NoError(t, i.RotateDEK())
	require.NoError(t, i.Close())
	put()
	refused(t, dir, cachecrypt.Config{}, cachecrypt.ErrRollback)
}

// Move 3: after a switch to a CMK and Reencrypt, the MMK keyrings of
// before are put back: with the CMK, with the CMK revoked, with the MMK.
func TestAttackOldMMKKeyringsAfterASwitch(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	cmk := kektest.New("cmk")
	i := openInst(t, dir, cachecrypt.Config{})
	save(t, i, 1)
	putPers := keepFile(t, filepath.Join(i.DiskDir(cachecrypt.DiskPersistence), "keyring"))
	putOS := keepFile(t, filepath.Join(i.DiskDir(cachecrypt.DiskOS), "keyring"))
	require.NoError(t, i.SetEncryption(ctx, cachecrypt.CustomerManaged(cmk)))
	require.NoError(t, i.Reencrypt(ctx, nil, cachecrypt.ReencryptOptions{}))
	require.NoError(t, i.Close())
	putPers()
	putOS()
	refused(t, dir, cachecrypt.Config{Encryption: cachecrypt.CustomerManaged(cmk)}, cachecrypt.ErrRollback)
	cmk.FailWith(kek.ErrRevoked)
	refused(t, dir, cachecrypt.Config{Encryption: cachecrypt.CustomerManaged(cmk)}, cachecrypt.ErrRollback)
	refused(t, dir, cachecrypt.Config{}, cachecrypt.ErrRollback)
}

// Move 4: an older encrypted snapshot of the same disk, or none at all.
func TestAttackOlderSnapshot(t *testing.T) {
	dir := t.TempDir()
	i := openInst(t, dir, cachecrypt.Config{})
	save(t, i, 1)
	put := keepFile(t, i.SnapshotPath())
	save(t, i, 2)
	require.NoError(t, i.Close())
	put()
	refused(t, dir, cachecrypt.Config{}, cachecrypt.ErrRollback)
	require.NoError(t, os.Remove(i.SnapshotPath()))
	refused(t, dir, cachecrypt.Config{}, cachecrypt.ErrRollback)
}

// More: the AOF directory of before a rewrite; the whole directory of an
// hour ago; another instance's snapshot under the same CMK.
func TestAttackOlderAOFWholeDirectoryAndAnotherInstance(t *testing.T) {
	dir := t.TempDir()
	i := openInst(t, dir, cachecrypt.Config{})
	save(t, i, 1)
	log, err := i.OpenAOF(aof.Options{Fsync: aof.Always})
	require.NoError(t, err)
	require.NoError(t, log.Append([]byte("SET a 1\n")))
	require.NoError(t, log.Close())
	require.NoError(t, i.Close())
	putAll := keepTree(t, dir)
	putAOF := keepTree(t, i.AOFDir())

	i = openInst(t, dir, cachecrypt.Config{})
	log, err = i.OpenAOF(aof.Options{Fsync: aof.Always})
	require.NoError(t, err)
	require.NoError(t, log.Rewrite(aof.BaseAOF, func(*aof.Rewrite) error { return nil }))
	require.NoError(t, log.Close())
	save(t, i, 2)
	require.NoError(t, i.RotateDEK())
	require.NoError(t, i.Close())

	putAOF()
	refused(t, dir, cachecrypt.Config{}, cachecrypt.ErrRollback)
	putAll()
	refused(t, dir, cachecrypt.Config{}, cachecrypt.ErrRollback)

	cmk := kektest.New("cmk")
	cfg := cachecrypt.Config{Encryption: cachecrypt.CustomerManaged(cmk)}
	a, b := openInst(t, t.TempDir(), cfg), openInst(t, t.TempDir(), cfg)
	save(t, a, 3)
	save(t, b, 4)
	require.NoError(t, a.Close())
	require.NoError(t, b.Close())
	snap, err := os.ReadFile(a.SnapshotPath())
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(b.SnapshotPath(), snap, 0o600))
	refused(t, b.Dir(), cfg, cachecrypt.ErrAuthentication) // another disk's file
}

// Move 7: once the instance fails closed, what it handed out before stops
// too: snapshot readers, AOF readers, scratch files, the flash store.
func TestAttackHandlesAfterFailClosed(t *testing.T) {
	cmk := kektest.New("cmk")
	cfg := cachecrypt.Config{Tier: cachecrypt.FlashOptimized, Flash: nvme.Options{Pages: 16},
		Encryption: cachecrypt.CustomerManaged(cmk), RevocationGrace: time.Nanosecond}
	i := openInst(t, t.TempDir(), cfg)
	save(t, i, 1)
	log, err := i.OpenAOF(aof.Options{Fsync: aof.Always})
	require.NoError(t, err)
	defer log.Close()
	require.NoError(t, log.Append([]byte("SET k v\n")))
	snap, err := i.OpenSnapshot()
	require.NoError(t, err)
	defer snap.Close()
	replay, err := log.Replay()
	require.NoError(t, err)
	defer replay.Close()
	tmp, err := i.Scratch().CreateTemp("t")
	require.NoError(t, err)
	defer tmp.Close()
	flash := i.Flash()

	cmk.FailWith(kek.ErrRevoked)
	for n := 0; i.Status()[0].Err == nil; n++ { // the grace period is one nanosecond
		require.ErrorIs(t, i.Probe(context.Background()), cachecrypt.ErrRevoked)
		require.Less(t, n, 1000, "the instance never failed closed")
	}
	_, err = snap.ReadAt(make([]byte, 8), 0)
	require.ErrorIs(t, err, cachecrypt.ErrRevoked)
	_, err = io.ReadAll(replay)
	require.ErrorIs(t, err, cachecrypt.ErrRevoked)
	_, err = tmp.Write([]byte("x"))
	require.ErrorIs(t, err, cachecrypt.ErrRevoked)
	require.ErrorIs(t, log.Append([]byte("x\n")), cachecrypt.ErrRevoked)
	require.ErrorIs(t, flash.WritePage(0, make([]byte, flash.PageSize())), nvme.ErrClosed)
}
