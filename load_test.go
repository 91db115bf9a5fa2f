package cachecrypt

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cachecrypt/cachecrypt/aof"
	"github.com/cachecrypt/cachecrypt/kek/kektest"
	"github.com/stretchr/testify/require"
)

func snapshotBody(n int64) []byte {
	return bytes.Repeat(fmt.Appendf(nil, "snapshot %d;", n), 20000)
}

// TestSwitchUnderLoad keeps appending to the AOF and saving snapshots while
// the instance moves MMK -> Key Vault -> SoftHSM -> MMK. Every acknowledged
// record replays, in order, and the last committed snapshot reads back.
func TestSwitchUnderLoad(t *testing.T) {
	ctx := context.Background()
	vk, _, srv := keyVault(t)
	hk := hsmKEK(t)
	dir := t.TempDir()
	i := open(t, dir, noProbe(Config{}))
	log, err := i.OpenAOF(aof.Options{Fsync: aof.No})
	require.NoError(t, err)

	var stop atomic.Bool
	var wg sync.WaitGroup
	acked := make([]int, 3)
	for g := range acked {
		wg.Go(func() {
			for n := 0; !stop.Load(); n++ {
				if err := log.Append(fmt.Appendf(nil, "rec %d %d\n", g, n)); err != nil {
					t.Errorf("append during switch: %v", err)
					return
				}
				acked[g] = n + 1
			}
		})
	}
	var lastSnap atomic.Int64
	wg.Go(func() {
		for n := int64(1); !stop.Load(); n++ {
			err := i.SaveSnapshot(func(w io.Writer) error { _, err := w.Write(snapshotBody(n)); return err })
			if err != nil {
				t.Errorf("snapshot during switch: %v", err)
				return
			}
			lastSnap.Store(n)
		}
	})

	for _, e := range []Encryption{vaultEncryption(vk, srv), CustomerManaged(hk), MMK} {
		time.Sleep(50 * time.Millisecond)
		require.NoError(t, i.SetEncryption(ctx, e))
	}
	time.Sleep(50 * time.Millisecond)
	stop.Store(true)
	wg.Wait()
	require.NoError(t, log.Close())
	require.NoError(t, i.Close())

	again := open(t, dir, noProbe(Config{}))
	r, err := aof.Replay(again.AOFDir(), mustKeyring(t, again), aof.Options{})
	require.NoError(t, err)
	defer r.Close()
	next := make([]int, len(acked))
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		var g, n int
		_, err := fmt.Sscanf(sc.Text(), "rec %d %d", &g, &n)
		require.NoError(t, err, "line %q", sc.Text())
		require.Equal(t, next[g], n, "records of appender %d in order, none lost", g)
		next[g]++
	}
	require.NoError(t, sc.Err())
	require.Equal(t, acked, next, "every acknowledged append replays")
	for _, n := range acked {
		require.Greater(t, n, 0)
	}

	snap, err := again.OpenSnapshot()
	require.NoError(t, err)
	defer snap.Close()
	got, err := io.ReadAll(snap)
	require.NoError(t, err)
	require.Equal(t, snapshotBody(lastSnap.Load()), got)
	t.Logf("appended %v records and %d snapshots across 3 switches", acked, lastSnap.Load())
}

func mustKeyring(t *testing.T, i *Instance) aof.Keys {
	t.Helper()
	r, err := i.Keyring(DiskPersistence)
	require.NoError(t, err)
	return r
}

// TestReadsAndWritesMakeNoKEKCalls counts KEK calls around AOF appends,
// replays and snapshot writes and reads: there must be none.
func TestReadsAndWritesMakeNoKEKCalls(t *testing.T) {
	cmk := kektest.New("cmk")
	i := open(t, t.TempDir(), noProbe(Config{Encryption: CustomerManaged(cmk)}))
	log, err := i.OpenAOF(aof.Options{Fsync: aof.No})
	require.NoError(t, err)
	calls := cmk.Calls()
	for n := range 1000 {
		require.NoError(t, log.Append(fmt.Appendf(nil, "SET k%d v\n", n)))
	}
	require.NoError(t, i.SaveSnapshot(func(w io.Writer) error { _, err := w.Write(snapshotBody(1)); return err }))
	r, err := log.Replay()
	require.NoError(t, err)
	b, err := io.ReadAll(r)
	require.NoError(t, err)
	r.Close()
	require.Equal(t, 1000, strings.Count(string(b), "SET"))
	snap, err := i.OpenSnapshot()
	require.NoError(t, err)
	_, err = io.Copy(io.Discard, snap)
	require.NoError(t, err)
	snap.Close()
	require.NoError(t, log.Close())
	require.Equal(t, calls, cmk.Calls(), "the data path made KEK calls")
}

func TestDataFailsClosedOnRevocationAndResumes(t *testing.T) {
	ctx := context.Background()
	cmk := kektest.New("cmk")
	clk := &clock{now: time.Unix(1e9, 0)}
	cfg := noProbe(Config{Encryption: CustomerManaged(cmk), RevocationGrace: time.Second})
	cfg.now = clk.Now
	i := open(t, t.TempDir(), cfg)
	log, err := i.OpenAOF(aof.Options{Fsync: aof.Always})
	require.NoError(t, err)
	defer log.Close()
	require.NoError(t, log.Append([]byte("before\n")))

	cmk.FailWith(ErrRevoked)
	i.Probe(ctx)
	clk.Add(2 * time.Second)
	require.ErrorIs(t, i.Probe(ctx), ErrRevoked)
	require.ErrorIs(t, log.Append([]byte("during\n")), ErrRevoked)
	require.ErrorIs(t, i.SaveSnapshot(func(io.Writer) error { return nil }), ErrRevoked)
	_, err = i.OpenSnapshot()
	require.ErrorIs(t, err, ErrRevoked)

	cmk.FailWith(nil)
	require.NoError(t, i.Probe(ctx))
	require.NoError(t, log.Append([]byte("after\n")))
	r, err := log.Replay()
	require.NoError(t, err)
	b, _ := io.ReadAll(r)
	r.Close()
	require.Equal(t, "before\nafter\n", string(b))
}
