package cachecrypt

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"github.com/cachecrypt/cachecrypt/export"
	"hash/crc64"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cachecrypt/cachecrypt/aof"
	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/stretchr/testify/require"
)

var soakFor = flag.Duration("soak", 3*time.Second, "how long TestSoak runs its maintenance-against-writers load (CI runs it for 30s under -race)")

// soakBody is snapshot number n: small, recognisable when read back, and
// an RDB as far as export and import check one (magic and version, the
// end-of-file opcode, the CRC-64).
func soakBody(n int64) []byte {
	b := append([]byte("REDIS0011"), bytes.Repeat(fmt.Appendf(nil, "snapshot %d;", n), 2000)...)
	b = append(b, 0xff)
	return binary.LittleEndian.AppendUint64(b, ^crc64.Update(^uint64(0), redisCRC, b))
}

var redisCRC = crc64.MakeTable(0x95ac9329ac4bc9b5) // Redis' CRC-64 (Jones)

// parseSoakBody returns the number of a snapshot soakBody wrote.
func parseSoakBody(b []byte) (int64, error) {
	var n int64
	if len(b) < 9 {
		return 0, errors.New("not a soak snapshot: too short")
	}
	if _, err := fmt.Sscanf(string(b[9:]), "snapshot %d;", &n); err != nil {
		return 0, fmt.Errorf("not a soak snapshot: %w", err)
	}
	if !bytes.Equal(b, soakBody(n)) {
		return 0, fmt.Errorf("snapshot %d is not whole", n)
	}
	return n, nil
}

// soakAppenders is how many goroutines append to the AOF at once.
const soakAppenders = 2

// soak runs every maintenance operation against every writer on one
// instance until ctx ends: appenders (fsync always), snapshots, AOF
// rewrites, scheduled DEK rotation with retirement, Reencrypt, RefreshKEK
// and SetEncryption between the MMK and other. Each acknowledged write is
// reported to ack ("A worker seq" or "S n") before the next starts.
type soak struct {
	inst  *Instance
	log   *AOF
	other kek.KEK
	clock *clock
	ack   func(format string, args ...any)
	tmp   string // where exports go before they are imported back

	next     [soakAppenders]int64 // first sequence number of each appender
	nextSnap int64                // first snapshot number

	holdAppends sync.RWMutex // the rewriter holds appends back while it starts, as Redis' fork does
	counts      struct{ records, snapshots, exports, rewrites, rotations, reencryptions, switches, refreshes atomic.Int64 }
}

// run starts every worker and returns the first error any of them met.
func (s *soak) run(ctx context.Context) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	loop := func(name string, op func(n int64) error) {
		wg.Go(func() {
			for n := int64(0); ctx.Err() == nil; n++ {
				if err := op(n); err != nil && ctx.Err() == nil {
					cancel(fmt.Errorf("%s: %w", name, err))
				}
			}
		})
	}
	for w := range soakAppenders {
		loop(fmt.Sprint("appender ", w), func(n int64) error { return s.appendRec(w, s.next[w]+n) })
	}
	loop("snapshots", func(n int64) error { return s.snapshot(s.nextSnap + n) })
	loop("rewrites", s.rewrite)
	loop("scheduled rotation", s.rotate)
	loop("reencrypt", func(int64) error { return s.reencrypt(ctx) })
	loop("switch", func(n int64) error { return s.switchKEK(ctx, n) })
	loop("refresh", func(int64) error { return s.refresh(ctx) })
	wg.Wait()
	if err := context.Cause(ctx); !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}

// soakPad makes every 32nd record of the first appender a large one
// (96 KiB), as a big MSET would be: a crash then often cuts a frame's
// write short, which the next open must cut off like Redis.
func soakPad(w int, n int64) string {
	if w == 0 && n%32 == 31 {
		return " " + strings.Repeat("x", 96<<10)
	}
	return ""
}

func (s *soak) appendRec(w int, n int64) error {
	s.holdAppends.RLock()
	err := s.log.Append(fmt.Appendf(nil, "rec %d %d%s\n", w, n, soakPad(w, n)))
	s.holdAppends.RUnlock()
	if err == nil {
		s.counts.records.Add(1)
		s.ack("A %d %d", w, n)
	}
	return err
}

// snapshot saves snapshot n; every eighth time it also exports the
// snapshot and imports it back (the same content, through the OS disk's
// staging) first.
func (s *soak) snapshot(n int64) error {
	if n%8 == 7 {
		if err := s.exportImport(); err != nil {
			return err
		}
	}
	err := s.inst.SaveSnapshot(func(w io.Writer) error { _, err := w.Write(soakBody(n)); return err })
	if err == nil {
		s.counts.snapshots.Add(1)
		s.ack("S %d", n)
	}
	return err
}

func (s *soak) exportImport() error {
	ctx := context.Background()
	p := filepath.Join(s.tmp, "export.rdb")
	defer os.Remove(p)
	if _, err := s.inst.Export(ctx, export.ToFile(p), nil); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil // no snapshot yet
		}
		return err
	}
	if _, err := s.inst.Import(ctx, export.FromFile(p), nil); err != nil {
		return err
	}
	s.counts.exports.Add(1)
	return nil
}

// rewrite replaces the AOF's base with everything appended before it
// started, through the public API.
func (s *soak) rewrite(int64) error {
	err := rewriteWithReplay(s.log, &s.holdAppends)
	if err == nil {
		s.counts.rewrites.Add(1)
	}
	return err
}

// rotate lets the DEK age past Config.RotateDEKEvery and runs the
// scheduled rotation (rotate, then retire what nothing uses).
func (s *soak) rotate(int64) error {
	s.clock.Add(25 * time.Hour)
	before := s.inst.disks[0].keyring.Active()
	s.inst.rotateIfDue()
	if s.inst.disks[0].keyring.Active() == before {
		return errors.New("the scheduled rotation did not rotate (see the log)")
	}
	s.counts.rotations.Add(1)
	_, err := s.inst.RetireUnused()
	return err
}

func (s *soak) reencrypt(ctx context.Context) error {
	err := s.inst.Reencrypt(ctx, s.log, ReencryptOptions{})
	if err == nil {
		s.counts.reencryptions.Add(1)
	}
	return err
}

func (s *soak) switchKEK(ctx context.Context, n int64) error {
	e := MMK
	if n%2 == 0 {
		e = CustomerManaged(s.other)
	}
	err := s.inst.SetEncryption(ctx, e)
	if err == nil {
		s.counts.switches.Add(1)
	}
	return err
}

func (s *soak) refresh(ctx context.Context) error {
	_, err := s.inst.RefreshKEK(ctx)
	if err == nil {
		s.counts.refreshes.Add(1)
	}
	return err
}

func (s *soak) figures() string {
	c := &s.counts
	return fmt.Sprintf("records=%d snapshots=%d export+import=%d rewrites=%d rotations=%d reencryptions=%d switches=%d refreshes=%d",
		c.records.Load(), c.snapshots.Load(), c.exports.Load(), c.rewrites.Load(), c.rotations.Load(), c.reencryptions.Load(), c.switches.Load(), c.refreshes.Load())
}

// acked is what a soak acknowledged: per appender the records, and the
// last snapshot.
type acked struct {
	mu       sync.Mutex
	records  [soakAppenders]int64 // next sequence number of each appender
	snapshot int64                // -1 before the first
}

func newAcked() *acked { return &acked{snapshot: -1} }

// record takes one acknowledgement line of soak.ack.
func (a *acked) record(line string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var w int
	var n int64
	switch {
	case strings.HasPrefix(line, "A "):
		fmt.Sscanf(line, "A %d %d", &w, &n)
		a.records[w] = max(a.records[w], n+1)
	case strings.HasPrefix(line, "S "):
		fmt.Sscanf(line, "S %d", &n)
		a.snapshot = max(a.snapshot, n)
	}
}

// verify reopens nothing: it checks that log and inst hold every
// acknowledged record, in order per appender, and a snapshot at least as
// new as the last acknowledged one.
func (a *acked) verify(t *testing.T, inst *Instance, log *AOF) {
	t.Helper()
	r, err := log.Replay()
	require.NoError(t, err)
	defer r.Close()
	var next [soakAppenders]int64
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var w int
		var n int64
		_, err := fmt.Sscanf(sc.Text(), "rec %d %d", &w, &n)
		require.NoError(t, err, "line %q", sc.Text())
		require.Equal(t, next[w], n, "appender %d: records in order, none missing", w)
		next[w]++
	}
	require.NoError(t, sc.Err())
	for w := range next {
		require.GreaterOrEqual(t, next[w], a.records[w], "appender %d: every acknowledged record is back", w)
	}
	if a.snapshot < 0 {
		return
	}
	snap, err := inst.OpenSnapshot()
	require.NoError(t, err, "an acknowledged snapshot is readable")
	b, err := io.ReadAll(snap)
	snap.Close()
	require.NoError(t, err)
	n, err := parseSoakBody(b)
	require.NoError(t, err)
	require.GreaterOrEqual(t, n, a.snapshot, "the last acknowledged snapshot (or a newer one) is on disk")
}

// soakConfig is the configuration of a soak's instance: other may wrap its
// disks when it is reopened.
func soakConfig(clk *clock, other kek.KEK) Config {
	cfg := noProbe(Config{RotateDEKEvery: 24 * time.Hour, Previous: []kek.Unwrapper{other}})
	cfg.now = clk.Now
	cfg.Logger = quietLogger()
	return cfg
}

// TestSoak runs appenders (fsync always), snapshots, rewrites, scheduled
// rotation with retirement, Reencrypt, RefreshKEK and SetEncryption
// between two keys, all at once, for -soak; then it reopens the instance
// and checks that every acknowledged record and the last acknowledged
// snapshot are there and readable.
func TestSoak(t *testing.T) {
	dir := t.TempDir()
	other, err := kek.LoadMMK(t.TempDir() + "/other.key")
	require.NoError(t, err)
	clk := &clock{now: time.Now()}
	i := open(t, dir, soakConfig(clk, other))
	log, err := i.OpenAOF(aof.Options{Fsync: aof.Always})
	require.NoError(t, err)
	a := newAcked()
	s := &soak{inst: i, log: log, other: other, clock: clk, tmp: t.TempDir(), ack: func(f string, args ...any) { a.record(fmt.Sprintf(f, args...)) }}
	ctx, cancel := context.WithTimeout(context.Background(), *soakFor)
	defer cancel()
	require.NoError(t, s.run(ctx))
	t.Logf("soak for %s: %s", *soakFor, s.figures())
	require.NoError(t, log.Close())
	require.NoError(t, i.Close())

	again := open(t, dir, soakConfig(clk, other))
	log, err = again.OpenAOF(aof.Options{})
	require.NoError(t, err)
	defer log.Close()
	a.verify(t, again, log)
	for _, c := range []*atomic.Int64{&s.counts.records, &s.counts.snapshots, &s.counts.exports, &s.counts.rewrites, &s.counts.rotations, &s.counts.reencryptions, &s.counts.switches} {
		require.Positive(t, c.Load(), "every operation ran at least once: %s", s.figures())
	}
}

// quietLogger drops the key-operation log lines a soak makes by the
// thousand; the tests check events, not logs.
func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
