package cachecrypt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/cachecrypt/cachecrypt/aof"
	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/cachecrypt/cachecrypt/kek/kektest"
	"github.com/cachecrypt/cachecrypt/nvme"
	"github.com/stretchr/testify/require"
)

// revoke makes the instance fail closed: the CMK is revoked and the probe
// fails past the grace period.
func revoke(t *testing.T, i *Instance, cmk *kektest.KEK, clk *clock) {
	t.Helper()
	cmk.FailWith(kek.ErrRevoked)
	require.ErrorIs(t, i.Probe(context.Background()), ErrRevoked)
	clk.Add(time.Hour)
	require.ErrorIs(t, i.Probe(context.Background()), ErrRevoked)
	require.Error(t, i.Status()[0].Err, "failed closed")
}

// TestFailClosedReachesEveryHandle is issue 14 item 7: once the instance
// fails closed, every snapshot reader, AOF reader, scratch file and the
// flash store it handed out before refuses with the instance's error; the
// readers stay failed after it resumes, and new ones work.
func TestFailClosedReachesEveryHandle(t *testing.T) {
	ctx := context.Background()
	cmk := kektest.New("cmk")
	clk := &clock{now: time.Unix(1e9, 0)}
	cfg := noProbe(Config{Tier: FlashOptimized, Encryption: CustomerManaged(cmk), RevocationGrace: time.Minute})
	cfg.Flash = nvme.Options{Pages: 16}
	cfg.now = clk.Now
	i := open(t, t.TempDir(), cfg)
	require.NoError(t, i.SaveSnapshot(writeBody(1)))
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
	_, err = tmp.Write([]byte("scratch"))
	require.NoError(t, err)
	flash := i.Flash()
	page := make([]byte, flash.PageSize())
	require.NoError(t, flash.WritePage(0, page))

	revoke(t, i, cmk, clk)
	_, err = snap.ReadAt(make([]byte, 10), 0)
	require.ErrorIs(t, err, ErrRevoked, "a snapshot reader opened before")
	_, err = io.ReadAll(replay)
	require.ErrorIs(t, err, ErrRevoked, "an AOF replay opened before")
	_, err = tmp.Write([]byte("more"))
	require.ErrorIs(t, err, ErrRevoked, "a scratch file")
	require.ErrorIs(t, log.Append([]byte("x\n")), ErrRevoked)
	require.Nil(t, i.openLog(), "the AOF's log is closed: its part key is gone")
	require.ErrorIs(t, flash.ReadPage(0, page), nvme.ErrClosed, "the flash store: its key is gone")
	_, err = i.OpenSnapshot()
	require.ErrorIs(t, err, ErrRevoked)

	cmk.FailWith(nil)
	require.NoError(t, i.Probe(ctx))
	_, err = snap.ReadAt(make([]byte, 10), 0)
	require.ErrorIs(t, err, ErrRevoked, "a reader that failed stays failed")
	got, _ := readSnapshot(t, i)
	require.Equal(t, string(snapshotBody(1)), got, "a new reader works")
	require.NoError(t, log.Append([]byte("SET k2 v2\n")), "the AOF resumes, reopened")
	require.Equal(t, "SET k v\nSET k2 v2\n", replayAll(t, log))
	require.NotSame(t, flash, i.Flash(), "a fresh flash store")
	require.NoError(t, i.Flash().WritePage(0, page))
}

// TestNoExportedFieldLeadsAroundTheGate: the handles the instance gives
// out expose methods only, so nothing reaches the log or the reader
// without the instance's checks.
func TestNoExportedFieldLeadsAroundTheGate(t *testing.T) {
	for _, v := range []any{AOF{}, AOFReader{}, SnapshotReader{}} {
		typ := reflect.TypeOf(v)
		for f := range typ.Fields() {
			require.False(t, f.IsExported(), "%s.%s is exported", typ.Name(), f.Name)
		}
	}
}

// TestCloseFailsEveryHandle: after Close, readers handed out refuse with
// ErrClosed.
func TestCloseFailsEveryHandle(t *testing.T) {
	i := open(t, t.TempDir(), noProbe(Config{}))
	require.NoError(t, i.SaveSnapshot(writeBody(1)))
	snap, err := i.OpenSnapshot()
	require.NoError(t, err)
	require.NoError(t, i.Close())
	_, err = snap.Read(make([]byte, 1))
	require.ErrorIs(t, err, ErrClosed)
}

// TestFailClosedWhileWriting revokes and restores the KEK again and again
// while appenders and a rewriter run: nothing deadlocks, writes during a
// failure are refused with ErrRevoked, and every acknowledged append is
// back after the last restore.
func TestFailClosedWhileWriting(t *testing.T) {
	ctx := context.Background()
	cmk := kektest.New("cmk")
	clk := &clock{now: time.Unix(1e9, 0)}
	cfg := noProbe(Config{Encryption: CustomerManaged(cmk), RevocationGrace: time.Minute})
	cfg.now = clk.Now
	i := open(t, t.TempDir(), cfg)
	log, err := i.OpenAOF(aof.Options{Fsync: aof.Always})
	require.NoError(t, err)
	defer log.Close()

	var acked sync.Map
	var hold sync.RWMutex // the rewriter holds appends back while it starts
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				rec := fmt.Sprintf("rec %d %d\n", w, n)
				hold.RLock()
				err := log.Append([]byte(rec))
				hold.RUnlock()
				switch {
				case err == nil:
					acked.Store(rec, true)
				case !errors.Is(err, ErrRevoked):
					t.Errorf("append: %v", err)
					return
				}
			}
		})
	}
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			err := rewriteWithReplay(log, &hold)
			if err != nil && !errors.Is(err, ErrRevoked) && !errors.Is(err, aof.ErrClosed) {
				t.Errorf("rewrite: %v", err)
				return
			}
		}
	})
	for range 5 {
		revoke(t, i, cmk, clk)
		cmk.FailWith(nil)
		require.NoError(t, i.Probe(ctx))
	}
	close(stop)
	wg.Wait()

	r, err := log.Replay()
	require.NoError(t, err)
	b, err := io.ReadAll(r)
	r.Close()
	require.NoError(t, err)
	got := string(b)
	acked.Range(func(k, _ any) bool {
		require.Contains(t, got, k.(string), "an acknowledged append survives")
		return true
	})
}

// rewriteWithReplay rewrites the log's base with everything appended
// before it, holding appends back while it starts (as Redis' fork does).
func rewriteWithReplay(log *AOF, hold *sync.RWMutex) error {
	hold.Lock()
	release := sync.OnceFunc(hold.Unlock)
	defer release() // if the rewrite never started
	r, err := log.Replay()
	if err != nil {
		return err
	}
	defer r.Close()
	return log.Rewrite(aof.BaseAOF, func(w *aof.Rewrite) error {
		release()
		_, err := io.Copy(w, r)
		return err
	})
}
