package aof

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/cachecrypt/cachecrypt/dek"
	"github.com/cachecrypt/cachecrypt/internal/atomicfile"
	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/cachecrypt/cachecrypt/kek/kektest"
	"github.com/stretchr/testify/require"
)

func newKeys(t testing.TB) *dek.Keyring {
	t.Helper()
	k, err := dek.Create(context.Background(), filepath.Join(t.TempDir(), "keyring"), "disk-aof", kektest.New("aof"))
	require.NoError(t, err)
	t.Cleanup(func() { k.Close() })
	return k
}

// fileKeys opens (creating on first use) a keyring protected by an MMK in
// dir, so a child process can open the same keys.
func fileKeys(t testing.TB, dir string) *dek.Keyring {
	t.Helper()
	m, err := kek.LoadMMK(filepath.Join(dir, "mmk.key"))
	require.NoError(t, err)
	path := filepath.Join(dir, "keyring")
	var k *dek.Keyring
	if _, err := os.Stat(path); err == nil {
		k, err = dek.Open(context.Background(), path, m)
		require.NoError(t, err)
	} else {
		k, err = dek.Create(context.Background(), path, "disk-crash", m)
		require.NoError(t, err)
	}
	t.Cleanup(func() { k.Close() })
	return k
}

func replayAll(t testing.TB, dir string, keys Keys, opts Options) []byte {
	t.Helper()
	r, err := Replay(dir, keys, opts)
	require.NoError(t, err)
	defer r.Close()
	b, err := io.ReadAll(r)
	require.NoError(t, err)
	return b
}

func cmd(i int) []byte {
	k := fmt.Sprintf("key:%d", i)
	v := fmt.Sprintf("value-%d", i)
	return fmt.Appendf(nil, "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", len(k), k, len(v), v)
}

func TestAppendReplayRoundTrip(t *testing.T) {
	for _, pol := range []Policy{Always, EverySec, No} {
		t.Run(pol.String(), func(t *testing.T) {
			keys, dir := newKeys(t), t.TempDir()
			l, err := Open(dir, keys, Options{Fsync: pol})
			require.NoError(t, err)
			var want bytes.Buffer
			for i := range 200 {
				require.NoError(t, l.Append(cmd(i)))
				want.Write(cmd(i))
			}
			r, err := l.Replay()
			require.NoError(t, err)
			got, err := io.ReadAll(r)
			require.NoError(t, err)
			require.Equal(t, want.Bytes(), got)
			require.NoError(t, l.Close())
			require.Equal(t, want.Bytes(), replayAll(t, dir, keys, Options{}))

			// Reopen: appends continue in a new part, after the old ones.
			l, err = Open(dir, keys, Options{Fsync: pol})
			require.NoError(t, err)
			require.NoError(t, l.Append([]byte("more")))
			require.NoError(t, l.Close())
			want.WriteString("more")
			require.Equal(t, want.Bytes(), replayAll(t, dir, keys, Options{}))
			rep, err := Check(dir, keys, Options{})
			require.NoError(t, err)
			require.Len(t, rep.Parts, 3)
			require.Equal(t, int64(want.Len()), rep.Parts[1].Bytes+rep.Parts[2].Bytes)
		})
	}
}

func TestConcurrentAppendsGroupCommit(t *testing.T) {
	keys, dir := newKeys(t), t.TempDir()
	l, err := Open(dir, keys, Options{Fsync: Always})
	require.NoError(t, err)
	const writers, each = 8, 200
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				require.NoError(t, l.Append(fmt.Appendf(nil, "w%d:%04d;", w, i)))
			}
		})
	}
	wg.Wait()
	frames := l.cur.frames
	require.NoError(t, l.Close())
	got := replayAll(t, dir, keys, Options{})
	// Every record whole, each writer's records in its order.
	next := make([]int, writers)
	for _, rec := range bytes.Split(bytes.TrimSuffix(got, []byte(";")), []byte(";")) {
		var w, i int
		_, err := fmt.Sscanf(string(rec), "w%d:%04d", &w, &i)
		require.NoError(t, err, "record %q", rec)
		require.Equal(t, next[w], i)
		next[w]++
	}
	for _, n := range next {
		require.Equal(t, each, n)
	}
	t.Logf("%d appends in %d frames", writers*each, frames)
	require.Less(t, frames, uint64(writers*each), "no group commit happened")
}

func TestAppendIsZeroAlloc(t *testing.T) {
	keys, dir := newKeys(t), t.TempDir()
	l, err := Open(dir, keys, Options{Fsync: No})
	require.NoError(t, err)
	defer l.Close()
	p := bytes.Repeat([]byte("x"), 256)
	require.NoError(t, l.Append(p))
	allocs := testing.AllocsPerRun(200, func() { l.Append(p) })
	require.Zero(t, allocs)
}

func TestRewrite(t *testing.T) {
	keys, dir := newKeys(t), t.TempDir()
	l, err := Open(dir, keys, Options{Fsync: No})
	require.NoError(t, err)
	for i := range 100 {
		require.NoError(t, l.Append(cmd(i)))
	}
	r, err := l.StartRewrite(BaseRDB)
	require.NoError(t, err)
	// Appends during the rewrite land after the new base.
	require.NoError(t, l.Append([]byte("during")))
	_, err = r.Write(bytes.Repeat([]byte("B"), 3*baseChunk+7))
	require.NoError(t, err)
	require.NoError(t, r.Commit())
	require.NoError(t, l.Append([]byte("after")))
	want := append(bytes.Repeat([]byte("B"), 3*baseChunk+7), "duringafter"...)
	rr, err := l.Replay()
	require.NoError(t, err)
	got, _ := io.ReadAll(rr)
	require.Equal(t, want, got)
	require.NoError(t, l.Close())
	require.Equal(t, want, replayAll(t, dir, keys, Options{}))

	// The old parts are gone; only the manifest, base and new incr remain.
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	require.ElementsMatch(t, []string{"appendonly.aof.manifest", "appendonly.aof.2.base.rdb", "appendonly.aof.2.incr.aof", "appendonly.aof.lock"}, names)

	// An aborted rewrite keeps everything.
	l, err = Open(dir, keys, Options{})
	require.NoError(t, err)
	err = l.Rewrite(BaseAOF, func(w *Rewrite) error { w.Write([]byte("x")); return errors.New("snapshot failed") })
	require.ErrorContains(t, err, "snapshot failed")
	require.NoError(t, l.Append([]byte("!")))
	require.NoError(t, l.Close())
	require.Equal(t, append(want, '!'), replayAll(t, dir, keys, Options{}))
}

func TestDEKRotation(t *testing.T) {
	keys, dir := newKeys(t), t.TempDir()
	l, err := Open(dir, keys, Options{})
	require.NoError(t, err)
	require.NoError(t, l.Append([]byte("v1;")))
	require.NoError(t, l.Close())
	v2, err := keys.RotateDEK()
	require.NoError(t, err)
	l, err = Open(dir, keys, Options{})
	require.NoError(t, err)
	require.NoError(t, l.Append([]byte("v2;")))
	require.NoError(t, l.Close())
	rep, err := Check(dir, keys, Options{})
	require.NoError(t, err)
	var vs []uint32
	for _, p := range rep.Parts {
		vs = append(vs, p.DEK)
	}
	require.Equal(t, []uint32{1, 1, v2}, vs, "old parts keep their DEK version, new ones use the active one")
	require.Equal(t, "v1;v2;", string(replayAll(t, dir, keys, Options{})))

	// A rewrite moves everything to the active version; then v1 can retire.
	l, err = Open(dir, keys, Options{})
	require.NoError(t, err)
	require.NoError(t, l.Rewrite(BaseAOF, func(w *Rewrite) error { _, err := w.Write([]byte("v1;v2;")); return err }))
	require.NoError(t, l.Close())
	require.NoError(t, keys.Retire(1))
	rep, err = Check(dir, keys, Options{})
	require.NoError(t, err)
	for _, p := range rep.Parts {
		require.Equal(t, v2, p.DEK)
	}
	require.Equal(t, "v1;v2;", string(replayAll(t, dir, keys, Options{})))
}

// failingSync fails fsync while fail is set.
type failingSync struct {
	mu   sync.Mutex
	fail bool
}

func (f *failingSync) sync(file atomicfile.File) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail {
		return errors.New("injected EIO")
	}
	return file.Sync()
}

func TestEverySecRefusesWritesAfterFailedFsync(t *testing.T) {
	keys, dir := newKeys(t), t.TempDir()
	l, err := Open(dir, keys, Options{Fsync: EverySec})
	require.NoError(t, err)
	fs := &failingSync{fail: true}
	l.syncFile = fs.sync
	require.NoError(t, l.Append([]byte("a")))
	l.backgroundSync() // what the flusher does each second
	err = l.Append([]byte("b"))
	require.ErrorIs(t, err, ErrFsync)
	fs.mu.Lock()
	fs.fail = false
	fs.mu.Unlock()
	l.backgroundSync()
	require.NoError(t, l.Append([]byte("c")))
	require.NoError(t, l.Close())
	require.Equal(t, "ac", string(replayAll(t, dir, keys, Options{})))
}

func TestAlwaysFsyncFailureIsFatal(t *testing.T) {
	keys, dir := newKeys(t), t.TempDir()
	l, err := Open(dir, keys, Options{Fsync: Always})
	require.NoError(t, err)
	l.syncFile = (&failingSync{fail: true}).sync
	require.ErrorIs(t, l.Append([]byte("a")), ErrFsync)
	require.ErrorIs(t, l.Append([]byte("b")), ErrFsync, "after a failed fsync under always the log must be reopened")
	l.syncFile = atomicfile.File.Sync
	l.Close()
}

func TestClosed(t *testing.T) {
	keys, dir := newKeys(t), t.TempDir()
	l, err := Open(dir, keys, Options{})
	require.NoError(t, err)
	require.NoError(t, l.Close())
	require.ErrorIs(t, l.Append([]byte("x")), ErrClosed)
	require.NoError(t, l.Close())
}

func TestTornTailRecovery(t *testing.T) {
	keys, dir := newKeys(t), t.TempDir()
	l, err := Open(dir, keys, Options{})
	require.NoError(t, err)
	require.NoError(t, l.Append([]byte("one;")))
	require.NoError(t, l.Append([]byte("two;")))
	name := l.cur.name
	require.NoError(t, l.Close())
	path := filepath.Join(dir, name)
	st, _ := os.Stat(path)
	require.NoError(t, os.Truncate(path, st.Size()-3))

	_, err = Open(dir, keys, Options{Strict: true})
	require.ErrorIs(t, err, ErrTruncated)
	require.ErrorContains(t, err, name)
	r, err := Replay(dir, keys, Options{Strict: true})
	require.NoError(t, err)
	_, err = io.ReadAll(r)
	require.ErrorIs(t, err, ErrTruncated)
	r.Close()
	rep, err := Check(dir, keys, Options{})
	require.ErrorIs(t, err, ErrTruncated)
	require.NotNil(t, rep.Damage)

	r, err = Replay(dir, keys, Options{})
	require.NoError(t, err)
	b, _ := io.ReadAll(r)
	require.Equal(t, "one;", string(b))
	require.NotNil(t, r.Truncated())

	// By default, as after a SIGKILL, Open cuts the torn tail off.
	l, err = Open(dir, keys, Options{})
	require.NoError(t, err)
	rec, ok := l.Recovered()
	require.True(t, ok)
	frame := int64(len("two;") + frameHdrSize + tagSize)
	require.Equal(t, Recovery{Part: name, Offset: st.Size() - frame, BytesCut: frame - 3}, rec)
	require.NoError(t, l.Append([]byte("three;")))
	require.NoError(t, l.Close())
	require.Equal(t, "one;three;", string(replayAll(t, dir, keys, Options{})))
	_, err = Check(dir, keys, Options{})
	require.NoError(t, err)
}

func TestFix(t *testing.T) {
	keys, dir := newKeys(t), t.TempDir()
	l, err := Open(dir, keys, Options{})
	require.NoError(t, err)
	require.NoError(t, l.Append([]byte("one;")))
	require.NoError(t, l.Append([]byte("two;")))
	name := l.cur.name
	require.NoError(t, l.Close())
	f, _ := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_APPEND, 0)
	f.Write([]byte{0, 0, 0, 9, 1}) // a torn next frame
	f.Close()
	rep, err := Fix(dir, keys, Options{})
	require.NoError(t, err)
	require.Equal(t, int64(5), rep.Damage.Dropped)
	_, err = Check(dir, keys, Options{})
	require.NoError(t, err)
	require.Equal(t, "one;two;", string(replayAll(t, dir, keys, Options{})))
}

// TestAppendsDuringRewrites runs appenders against repeated rewrites and
// replays: no append is lost or reordered (run it with -race).
func TestAppendsDuringRewrites(t *testing.T) {
	keys, dir := newKeys(t), t.TempDir()
	l, err := Open(dir, keys, Options{Fsync: No})
	require.NoError(t, err)
	var snap sync.RWMutex // held for writing while the rewrite's snapshot is taken
	const writers, each = 4, 300
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				snap.RLock()
				err := l.Append(fmt.Appendf(nil, "w%d:%04d;", w, i))
				snap.RUnlock()
				require.NoError(t, err)
			}
		})
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 5 {
			snap.Lock()
			r, err := l.Replay()
			require.NoError(t, err)
			state, err := io.ReadAll(r)
			require.NoError(t, err)
			r.Close()
			rw, err := l.StartRewrite(BaseAOF)
			snap.Unlock()
			require.NoError(t, err)
			rw.Write(state)
			require.NoError(t, rw.Commit())
		}
	}()
	wg.Wait()
	<-done
	require.NoError(t, l.Close())
	got := replayAll(t, dir, keys, Options{})
	next := make([]int, writers)
	for _, rec := range bytes.Split(bytes.TrimSuffix(got, []byte(";")), []byte(";")) {
		var w, i int
		_, err := fmt.Sscanf(string(rec), "w%d:%04d", &w, &i)
		require.NoError(t, err, "record %q", rec)
		require.Equal(t, next[w], i, "writer %d", w)
		next[w]++
	}
	require.Equal(t, []int{each, each, each, each}, next)
}

func TestGroupNeverExceedsMaxFrame(t *testing.T) {
	defer func(v int) { maxFrame = v }(maxFrame)
	maxFrame = 1000
	keys, dir := newKeys(t), t.TempDir()
	l, err := Open(dir, keys, Options{Fsync: Always})
	require.NoError(t, err)
	require.ErrorContains(t, l.Append(make([]byte, 1001)), "exceeds 1000")
	var wg sync.WaitGroup
	for w := range 6 {
		wg.Go(func() {
			for range 30 {
				require.NoError(t, l.Append(bytes.Repeat([]byte{byte('a' + w)}, 400)))
			}
		})
	}
	wg.Wait()
	name := l.cur.name
	require.NoError(t, l.Close())
	offs, b := frames(t, filepath.Join(dir, name))
	for _, off := range offs {
		require.LessOrEqual(t, int(binary.BigEndian.Uint32(b[off:]))-tagSize, 1000)
	}
	require.Len(t, replayAll(t, dir, keys, Options{}), 6*30*400)
}

func TestOneLogPerDirectory(t *testing.T) {
	keys, dir := newKeys(t), t.TempDir()
	l, err := Open(dir, keys, Options{})
	require.NoError(t, err)
	_, err = Open(dir, keys, Options{})
	require.ErrorIs(t, err, ErrLocked)
	require.NoError(t, l.Close())
	l, err = Open(dir, keys, Options{})
	require.NoError(t, err)
	require.NoError(t, l.Close())
}

func TestInterruptedCreate(t *testing.T) {
	keys, dir := newKeys(t), t.TempDir()
	l, err := Open(dir, keys, Options{})
	require.NoError(t, err)
	require.NoError(t, l.Close())
	// A crash before the first manifest: header-only parts, no manifest.
	require.NoError(t, os.Remove(filepath.Join(dir, "appendonly.aof.manifest")))
	l, err = Open(dir, keys, Options{})
	require.NoError(t, err)
	require.NoError(t, l.Append([]byte("x")))
	require.NoError(t, l.Close())
	// A lost manifest beside parts holding data is an error, never a reset.
	require.NoError(t, os.Remove(filepath.Join(dir, "appendonly.aof.manifest")))
	_, err = Open(dir, keys, Options{})
	require.ErrorIs(t, err, ErrMissingPart)
}

func TestRetiredDEKVersion(t *testing.T) {
	keys, dir := newKeys(t), t.TempDir()
	l, err := Open(dir, keys, Options{})
	require.NoError(t, err)
	require.NoError(t, l.Append([]byte("v1")))
	require.NoError(t, l.Close())
	_, err = keys.RotateDEK()
	require.NoError(t, err)
	l, err = Open(dir, keys, Options{}) // manifest now under v2; v1 parts stay
	require.NoError(t, err)
	require.NoError(t, l.Close())
	require.NoError(t, keys.Retire(1)) // too early: parts still use it
	_, err = Check(dir, keys, Options{})
	require.ErrorIs(t, err, dek.ErrUnknownVersion)
	require.ErrorContains(t, err, "appendonly.aof.1.")
}

// Replay streams: its memory is one frame, not the log.
func TestReplayMemoryDoesNotGrowWithTheLog(t *testing.T) {
	keys, dir := newKeys(t), t.TempDir()
	l, err := Open(dir, keys, Options{Fsync: No})
	require.NoError(t, err)
	rec := bytes.Repeat([]byte("m"), 4096)
	const total = 32 << 20
	for range total / len(rec) {
		require.NoError(t, l.Append(rec))
	}
	require.NoError(t, l.Close())
	r, err := Replay(dir, keys, Options{})
	require.NoError(t, err)
	defer r.Close()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	n, err := io.Copy(io.Discard, r)
	runtime.ReadMemStats(&after)
	require.NoError(t, err)
	require.Equal(t, int64(total), n)
	require.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(2<<20), "replaying 32 MiB allocated too much")
}

// Appends racing with Close either succeed, and are in the log, or fail
// with ErrClosed.
func TestCloseDuringAppends(t *testing.T) {
	keys, dir := newKeys(t), t.TempDir()
	l, err := Open(dir, keys, Options{Fsync: No})
	require.NoError(t, err)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		acked = map[string]bool{}
	)
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				rec := fmt.Sprintf("w%d:%06d;", w, i)
				if err := l.Append([]byte(rec)); err != nil {
					require.ErrorIs(t, err, ErrClosed)
					return
				}
				mu.Lock()
				acked[rec] = true
				mu.Unlock()
			}
		})
	}
	time.Sleep(20 * time.Millisecond)
	require.NoError(t, l.Close())
	wg.Wait()
	got := replayAll(t, dir, keys, Options{})
	recs := bytes.Split(bytes.TrimSuffix(got, []byte(";")), []byte(";"))
	require.Len(t, recs, len(acked))
	for _, r := range recs {
		require.True(t, acked[string(r)+";"])
	}
}

// Parts reads only the manifest and headers, yet agrees with Check on each
// part's name and DEK version.
func TestPartsListsDEKVersionsWithoutDecrypting(t *testing.T) {
	keys := newKeys(t)
	dir := filepath.Join(t.TempDir(), "aof")
	l, err := Open(dir, keys, Options{Fsync: Always})
	require.NoError(t, err)
	require.NoError(t, l.Append(cmd(1)))
	require.NoError(t, l.Close())
	_, err = keys.RotateDEK()
	require.NoError(t, err)
	l, err = Open(dir, keys, Options{Fsync: Always})
	require.NoError(t, err)
	require.NoError(t, l.Append(cmd(2)))
	require.NoError(t, l.Close())

	parts, err := Parts(dir, keys, Options{})
	require.NoError(t, err)
	rep, err := Check(dir, keys, Options{})
	require.NoError(t, err)
	require.Len(t, parts, len(rep.Parts))
	var dek []uint32
	for i, p := range parts {
		require.Equal(t, rep.Parts[i].DEK, p.DEK)
		require.Equal(t, rep.Parts[i].Name, p.Name)
		require.Zero(t, p.Frames)
		dek = append(dek, p.DEK)
	}
	require.Contains(t, dek, uint32(1))
	require.Contains(t, dek, uint32(2))
}
