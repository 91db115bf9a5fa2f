package cachecrypt

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cachecrypt/cachecrypt/aof"
	"github.com/cachecrypt/cachecrypt/dek"
	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/cachecrypt/cachecrypt/kek/kektest"
	"github.com/stretchr/testify/require"
)

// TestReencryptAfterSwitch switches to a CMK and re-encrypts while appends
// go on: afterwards every file is under the new DEK, the old versions are
// retired, nothing is lost, and a copy of the old keyring opened with the
// old KEK cannot decrypt any file.
func TestReencryptAfterSwitch(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	i := open(t, dir, noProbe(Config{}))
	log, err := i.OpenAOF(aof.Options{Fsync: aof.No})
	require.NoError(t, err)
	for n := range 5000 {
		require.NoError(t, log.Append(fmt.Appendf(nil, "rec %d\n", n)))
	}
	require.NoError(t, i.SaveSnapshot(func(w io.Writer) error { _, err := w.Write(snapshotBody(7)); return err }))
	oldKeyring, err := os.ReadFile(filepath.Join(dir, DiskPersistence, keyringFile))
	require.NoError(t, err)

	require.NoError(t, i.SetEncryption(ctx, CustomerManaged(kektest.New("cmk"))))
	var stop atomic.Bool
	var appended atomic.Int64
	appended.Store(5000)
	var wg sync.WaitGroup
	wg.Go(func() {
		for n := 5000; !stop.Load(); n++ {
			if err := log.Append(fmt.Appendf(nil, "rec %d\n", n)); err != nil {
				t.Errorf("append during re-encryption: %v", err)
				return
			}
			appended.Store(int64(n + 1))
		}
	})
	var progress atomic.Int64
	err = i.Reencrypt(ctx, log, ReencryptOptions{BytesPerSecond: 64 << 20,
		Progress: func(ReencryptProgress) { progress.Add(1) }})
	stop.Store(true)
	wg.Wait()
	require.NoError(t, err)
	require.Positive(t, progress.Load())
	require.False(t, i.ReencryptPending())

	keys, _ := i.Keyring(DiskPersistence)
	require.Equal(t, []uint32{2}, keys.Info().Versions, "old DEK retired")
	snap, err := i.OpenSnapshot()
	require.NoError(t, err)
	require.Equal(t, uint32(2), snap.Header().DEKVersion)
	got, _ := io.ReadAll(snap)
	snap.Close()
	require.Equal(t, snapshotBody(7), got)
	require.NoError(t, log.Close())
	rep, err := aof.Check(i.AOFDir(), keys, aof.Options{})
	require.NoError(t, err)
	for _, p := range rep.Parts {
		require.Equal(t, uint32(2), p.DEK, "part %s", p.Name)
	}
	r, err := aof.Replay(i.AOFDir(), keys, aof.Options{})
	require.NoError(t, err)
	sc := bufio.NewScanner(r)
	n := int64(0)
	for ; sc.Scan(); n++ {
		require.Equal(t, fmt.Sprintf("rec %d", n), sc.Text())
	}
	r.Close()
	require.Equal(t, appended.Load(), n, "every append survived the re-encryption")

	// The old keyring, opened with the old KEK, holds only DEK v1: no file
	// uses it any more.
	stale := filepath.Join(t.TempDir(), "keyring")
	require.NoError(t, os.WriteFile(stale, oldKeyring, 0o600))
	mmk, err := kek.LoadMMK(i.pkPath)
	require.NoError(t, err)
	old, err := dek.Open(ctx, stale, mmk)
	require.NoError(t, err)
	defer old.Close()
	_, err = old.FileKey(2, "rdb", salt)
	require.ErrorIs(t, err, dek.ErrUnknownVersion)
}

// TestReencryptResumesAfterCrash kills a child process (SIGKILL) after each
// step of a re-encryption; Reencrypt then resumes toward the same version.
func TestReencryptResumesAfterCrash(t *testing.T) {
	if os.Getenv("CACHECRYPT_REENCRYPT_CHILD") != "" {
		reencryptChild(t)
		return
	}
	for step := 1; step <= 4; step++ {
		t.Run(fmt.Sprint("step", step), func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			i := open(t, dir, noProbe(Config{}))
			log, err := i.OpenAOF(aof.Options{Fsync: aof.Always})
			require.NoError(t, err)
			require.NoError(t, log.Append([]byte("rec 0\n")))
			require.NoError(t, log.Close())
			require.NoError(t, i.SaveSnapshot(func(w io.Writer) error { _, err := w.Write(snapshotBody(1)); return err }))
			i.Close()

			cmd := exec.Command(os.Args[0], "-test.run=^TestReencryptResumesAfterCrash$")
			cmd.Env = append(os.Environ(), "CACHECRYPT_REENCRYPT_CHILD=1", "CRASH_DIR="+dir, fmt.Sprint("CRASH_STEP=", step))
			out, err := cmd.CombinedOutput()
			require.ErrorContains(t, err, "killed", "%s", out)

			again := open(t, dir, noProbe(Config{}))
			require.True(t, again.ReencryptPending())
			require.NoError(t, again.Reencrypt(ctx, nil, ReencryptOptions{}))
			keys, _ := again.Keyring(DiskPersistence)
			require.Equal(t, []uint32{2}, keys.Info().Versions)
			snap, err := again.OpenSnapshot()
			require.NoError(t, err)
			got, _ := io.ReadAll(snap)
			snap.Close()
			require.Equal(t, snapshotBody(1), got)
			r, err := aof.Replay(again.AOFDir(), keys, aof.Options{})
			require.NoError(t, err)
			b, _ := io.ReadAll(r)
			r.Close()
			require.Equal(t, "rec 0\n", string(b))
		})
	}
}

func reencryptChild(t *testing.T) {
	var step int
	fmt.Sscan(os.Getenv("CRASH_STEP"), &step)
	n := 0
	cfg := noProbe(Config{})
	cfg.stepHook = func(string) {
		if n++; n == step {
			p, _ := os.FindProcess(os.Getpid())
			p.Kill()
			time.Sleep(time.Hour)
		}
	}
	i, err := Open(context.Background(), os.Getenv("CRASH_DIR"), cfg)
	require.NoError(t, err)
	require.NoError(t, i.Reencrypt(context.Background(), nil, ReencryptOptions{}))
	time.Sleep(time.Hour)
}
