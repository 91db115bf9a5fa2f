package cachecrypt

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/cachecrypt/cachecrypt/aof"
	"github.com/cachecrypt/cachecrypt/kek/kektest"
	"github.com/stretchr/testify/require"
)

func saveBody(t *testing.T, i *Instance, n int64) {
	t.Helper()
	require.NoError(t, i.SaveSnapshot(func(w io.Writer) error { _, err := w.Write(snapshotBody(n)); return err }))
}

// readSnapshot returns the snapshot's plaintext and DEK version.
func readSnapshot(t *testing.T, i *Instance) (string, uint32) {
	t.Helper()
	snap, err := i.OpenSnapshot()
	require.NoError(t, err)
	defer snap.Close()
	got, err := io.ReadAll(snap)
	require.NoError(t, err)
	return string(got), snap.Header().DEKVersion
}

func replayAll(t *testing.T, log *AOF) string {
	t.Helper()
	r, err := log.Replay()
	require.NoError(t, err)
	defer r.Close()
	b, err := io.ReadAll(r)
	require.NoError(t, err)
	return string(b)
}

// TestRetireKeepsTheManifestVersion is issue 15 item 1: a rotation while a
// rewrite runs seals the manifest under a newer version than its parts;
// retiring must keep that version, or the AOF never opens again.
func TestRetireKeepsTheManifestVersion(t *testing.T) {
	dir := t.TempDir()
	i := open(t, dir, noProbe(Config{}))
	log, err := i.OpenAOF(aof.Options{Fsync: aof.Always})
	require.NoError(t, err)
	require.NoError(t, log.Append([]byte("SET a 1\n")))
	require.NoError(t, log.Rewrite(aof.BaseAOF, func(w *aof.Rewrite) error { // base and new incr part under v1
		_, err := w.Write([]byte("SET a 1\n"))
		if err == nil {
			err = i.RotateDEK() // v2: the commit seals the manifest under it
		}
		return err
	}))
	require.NoError(t, log.Append([]byte("SET b 2\n")))
	require.NoError(t, i.RotateDEK()) // v3
	_, err = i.RetireUnused()
	require.NoError(t, err)
	require.NoError(t, log.Close())

	again, err := i.OpenAOF(aof.Options{})
	require.NoError(t, err, "the AOF must open after the retirement")
	require.Equal(t, "SET a 1\nSET b 2\n", replayAll(t, again))
	require.NoError(t, again.Close())
	_, err = i.RetireUnused()
	require.NoError(t, err, "a later retirement works too")
}

// blockedSave starts a SaveSnapshot of body n that stops inside its write
// until the returned release is called; started is closed once it runs.
func blockedSave(i *Instance, n int64) (started <-chan struct{}, release func(), done <-chan error) {
	s, r, d := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		d <- i.SaveSnapshot(func(w io.Writer) error {
			close(s)
			<-r
			_, err := w.Write(snapshotBody(n))
			return err
		})
	}()
	return s, sync.OnceFunc(func() { close(r) }), d
}

// TestReencryptKeepsTheDEKOfASnapshotBeingWritten is issue 15 item 2: a
// snapshot writer that started under the old DEK finishes after Reencrypt
// moved everything else; its acknowledged snapshot must stay readable.
func TestReencryptKeepsTheDEKOfASnapshotBeingWritten(t *testing.T) {
	var once sync.Once
	var release func()
	cfg := noProbe(Config{})
	cfg.stepHook = func(step string) {
		if step == "reencrypt aof" || step == "reencrypt retire" {
			once.Do(func() { release() }) // the writer commits under v1 now
		}
	}
	i := open(t, t.TempDir(), cfg)
	saveBody(t, i, 1)
	started, rel, done := blockedSave(i, 2)
	release = rel
	<-started
	require.NoError(t, i.Reencrypt(context.Background(), nil, ReencryptOptions{}))
	release()
	require.NoError(t, <-done, "the writer's snapshot was acknowledged")

	got, v := readSnapshot(t, i)
	require.Equal(t, string(snapshotBody(2)), got, "the acknowledged snapshot is readable")
	keys, _ := i.Keyring(DiskPersistence)
	require.Contains(t, keys.Info().Versions, v)
}

// TestReencryptNeverRollsBackASnapshot is issue 15 item 3: a snapshot saved
// while Reencrypt copies the old one must not be replaced by that copy.
func TestReencryptNeverRollsBackASnapshot(t *testing.T) {
	i := open(t, t.TempDir(), noProbe(Config{}))
	saveBody(t, i, 1)
	var saved sync.Once
	var results []string
	err := i.Reencrypt(context.Background(), nil, ReencryptOptions{Progress: func(p ReencryptProgress) {
		if p.File == i.SnapshotPath() {
			saved.Do(func() { saveBody(t, i, 2) }) // acknowledged mid-copy
		}
		if p.Result != "" {
			results = append(results, p.Result)
		}
	}})
	require.NoError(t, err)
	got, v := readSnapshot(t, i)
	require.Equal(t, string(snapshotBody(2)), got, "the newer snapshot stays")
	require.Equal(t, uint32(2), v)
	require.Contains(t, results, ReencryptSkipped, "progress says the copy was skipped")
	keys, _ := i.Keyring(DiskPersistence)
	require.Equal(t, []uint32{2}, keys.Info().Versions)
}

// TestOpenSweepsCrashLeftovers is issue 15 item 5: temporary files a crash
// left behind on every disk and in the platform key's directory are removed
// by the next Open, which names them in one event.
func TestOpenSweepsCrashLeftovers(t *testing.T) {
	dir := t.TempDir()
	cfg := noProbe(Config{})
	i := open(t, dir, cfg)
	saveBody(t, i, 1)
	require.NoError(t, i.Close())
	leftovers := []string{
		filepath.Join(dir, DiskPersistence, "dump.rdb.cctmp-123-0011223344556677"),
		filepath.Join(dir, DiskPersistence, "keyring.cctmp-123-0011223344556677"),
		filepath.Join(dir, DiskPersistence, "reencrypt.target.cctmp-123-0011223344556677"),
		filepath.Join(dir, DiskOS, "keyring.cctmp-123-0011223344556677"),
		filepath.Join(dir, DiskOS, "tmp", "export.cctmp-123-0011223344556677"),
		i.pkPath + ".cctmp-123-0011223344556677",
	}
	for _, f := range leftovers {
		require.NoError(t, os.WriteFile(f, make([]byte, 1<<10), 0o600))
	}
	var swept []Event
	cfg.OnEvent = func(e Event) {
		if e.Kind == EventSweep {
			swept = append(swept, e)
		}
	}
	open(t, dir, cfg)
	for _, f := range leftovers {
		require.NoFileExists(t, f)
	}
	require.Len(t, swept, 1, "one event names what was removed")
	for _, f := range leftovers {
		require.Contains(t, swept[0].Detail, filepath.Base(f))
	}
}

// TestFailedSwitchErrorReadsWell is issue 15 item 9: the error of a switch
// that failed and was rolled back names the disk once and carries no
// formatting debris.
func TestFailedSwitchErrorReadsWell(t *testing.T) {
	i := open(t, t.TempDir(), noProbe(Config{}))
	bad := &failingWrap{KEK: kektest.New("cmk"), n: 1}
	err := i.SetEncryption(context.Background(), CustomerManaged(bad))
	require.Error(t, err)
	msg := err.Error()
	require.NotContains(t, msg, "%!")
	require.Equal(t, 1, strings.Count(msg, `disk "os`), msg)
	require.NotContains(t, msg, "rolling back failed", msg)
}

// TestInUseVersionsCoverEveryFile checks the one function that decides
// what retirement keeps: the snapshot's version, the parts', the manifest's
// and those held by writers still running.
func TestInUseVersionsCoverEveryFile(t *testing.T) {
	i := open(t, t.TempDir(), noProbe(Config{}))
	saveBody(t, i, 1) // v1
	require.NoError(t, i.RotateDEK())
	log, err := i.OpenAOF(aof.Options{Fsync: aof.Always}) // v2
	require.NoError(t, err)
	defer log.Close()
	require.NoError(t, log.Append([]byte("x\n")))
	require.NoError(t, i.RotateDEK()) // v3
	started, release, done := blockedSave(i, 2)
	<-started                         // a writer holds v3 and later
	require.NoError(t, i.RotateDEK()) // v4
	keep, err := inUseNow(i, DiskPersistence)
	require.NoError(t, err)
	slices.Sort(keep)
	require.Equal(t, []uint32{1, 2, 3, 4}, slices.Compact(keep))
	release()
	require.NoError(t, <-done)
	keep, err = inUseNow(i, DiskPersistence)
	require.NoError(t, err)
	slices.Sort(keep)
	require.Equal(t, []uint32{2, 3, 4}, slices.Compact(keep), "the new snapshot under v3 replaced v1's")
}

func inUseNow(i *Instance, disk string) ([]uint32, error) {
	i.leases.mu.Lock()
	defer i.leases.mu.Unlock()
	return i.inUse(disk)
}

// TestTornAOFTailCutAndReported is issue 15 item 4 through the instance: a
// torn last write (a crash inside a frame) no longer stops OpenAOF; the
// cut is reported as an event and in Status, and every whole record stays.
func TestTornAOFTailCutAndReported(t *testing.T) {
	dir := t.TempDir()
	i := open(t, dir, noProbe(Config{}))
	log, err := i.OpenAOF(aof.Options{Fsync: aof.Always})
	require.NoError(t, err)
	require.NoError(t, log.Append([]byte("SET a 1\n")))
	require.NoError(t, log.Append([]byte("SET b 2\n")))
	require.NoError(t, log.Close())
	require.NoError(t, i.Close())
	parts, err := filepath.Glob(filepath.Join(dir, DiskPersistence, AOFDir, "*.incr.aof"))
	require.NoError(t, err)
	slices.Sort(parts)
	last := parts[len(parts)-1]
	st, err := os.Stat(last)
	require.NoError(t, err)
	require.NoError(t, os.Truncate(last, st.Size()-5)) // the second frame, cut short

	var recovered []Event
	cfg := noProbe(Config{OnEvent: func(e Event) {
		if e.Kind == EventRecover {
			recovered = append(recovered, e)
		}
	}})
	again := open(t, dir, cfg)
	log, err = again.OpenAOF(aof.Options{})
	require.NoError(t, err, "a torn tail opens by default, as Redis' aof-load-truncated yes")
	defer log.Close()
	require.Equal(t, "SET a 1\n", replayAll(t, log))
	rec, ok := log.Recovered()
	require.True(t, ok)
	require.Equal(t, filepath.Base(last), filepath.Base(rec.Part))
	require.Len(t, recovered, 1)
	require.Contains(t, recovered[0].Detail, filepath.Base(last))
	require.Contains(t, again.Status()[0].Recovered, "torn")
}

// TestOneProcessAtATime: a second Open of an open instance is refused with
// ErrLocked, naming the holder, and works once the first is closed.
func TestOneProcessAtATime(t *testing.T) {
	dir := t.TempDir()
	i := open(t, dir, noProbe(Config{}))
	_, err := Open(context.Background(), dir, noProbe(Config{}))
	require.ErrorIs(t, err, ErrLocked)
	require.ErrorContains(t, err, "this process")
	require.NoError(t, i.Close())
	open(t, dir, noProbe(Config{}))
}
