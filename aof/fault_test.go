package aof

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/cachecrypt/cachecrypt/internal/atomicfile"
	"github.com/stretchr/testify/require"
)

// faultCase is an operation run through an injectable FS. prepare builds
// the directory the operation starts from and returns the records already
// acknowledged; run performs the operation through fsys and returns the
// records it acknowledged and those it tried, in order, and its error.
type faultCase struct {
	name    string
	prepare func(t *testing.T, keys Keys, dir string) []string
	run     func(t *testing.T, keys Keys, dir string, fsys atomicfile.FS) (acked, tried []string, err error)
}

// reopenOpts are the options of the reopen after a failed step: the
// defaults, as after a crash.
var reopenOpts = Options{}

// TestFaultEveryStep fails each durable step of each operation in turn
// (atomicfile.FaultFS): the operation returns an error or its records are
// durable, and a reopen with default options succeeds and holds every
// acknowledged record, in order, and nothing that was not tried.
func TestFaultEveryStep(t *testing.T) {
	for _, c := range faultCases() {
		t.Run(c.name, func(t *testing.T) {
			keys := newKeys(t)
			count := &atomicfile.FaultFS{Inner: atomicfile.OS}
			dir := t.TempDir()
			before := c.prepare(t, keys, dir)
			_, _, err := c.run(t, keys, dir, count)
			require.NoError(t, err, "without a fault")
			n := count.Steps()
			require.Positive(t, n)
			failed := 0
			for step := 1; step <= n; step++ {
				dir := t.TempDir()
				before := c.prepare(t, keys, dir)
				fsys := &atomicfile.FaultFS{Inner: atomicfile.OS, FailAt: step}
				acked, tried, err := c.run(t, keys, dir, fsys)
				if err != nil {
					failed++
				}
				checkDurable(t, keys, dir, fmt.Sprintf("step %d of %d (%v)", step, n, err), before, acked, tried)
			}
			require.Positive(t, failed, "no injected fault was reported")
			t.Logf("%d steps, %d failed the operation; %d records before", n, failed, len(before))
		})
	}
}

// checkDurable reopens dir with reopenOpts and checks that the records
// replayed are before followed by a subsequence of tried that holds every
// acknowledged one.
func checkDurable(t *testing.T, keys Keys, dir, what string, before, acked, tried []string) {
	t.Helper()
	l, err := Open(dir, keys, reopenOpts)
	require.NoError(t, err, "%s: reopen", what)
	r, err := l.Replay()
	require.NoError(t, err, what)
	var b strings.Builder
	_, err = r.WriteTo(&b)
	r.Close()
	require.NoError(t, err, what)
	require.NoError(t, l.Close())
	got := splitRecords(b.String())
	require.GreaterOrEqual(t, len(got), len(before), "%s: records lost", what)
	require.Equal(t, before, got[:len(before):len(before)], what)
	got = got[len(before):]
	isAcked := map[string]bool{}
	for _, a := range acked {
		isAcked[a] = true
	}
	i := 0
	for _, rec := range tried {
		if i < len(got) && got[i] == rec {
			i++
			continue
		}
		require.False(t, isAcked[rec], "%s: acknowledged record %q lost (replayed %q)", what, rec, got)
	}
	require.Equal(t, len(got), i, "%s: replayed %q, tried %q", what, got, tried)
}

func splitRecords(s string) []string {
	out := strings.SplitAfter(s, ";")
	if out[len(out)-1] == "" {
		out = out[:len(out)-1]
	}
	return out
}

func recs(from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprintf("r%d;", i))
	}
	return out
}

// appendAll appends records until the first failure and returns those
// acknowledged and tried; after a failure it tries one more, which must
// fail too (the log refuses appends until it is reopened).
func appendAll(l *Log, rs []string) (acked, tried []string, err error) {
	for _, r := range rs {
		tried = append(tried, r)
		if err = l.Append([]byte(r)); err != nil {
			return acked, tried, err
		}
		acked = append(acked, r)
	}
	return acked, tried, nil
}

// prepareRecords makes a log holding records 0..n-1, closed cleanly.
func prepareRecords(n int) func(t *testing.T, keys Keys, dir string) []string {
	return func(t *testing.T, keys Keys, dir string) []string {
		if n == 0 {
			return []string{}
		}
		l, err := Open(dir, keys, Options{})
		require.NoError(t, err)
		acked, _, err := appendAll(l, recs(0, n))
		require.NoError(t, err)
		require.NoError(t, l.Close())
		return acked
	}
}

// prepareTorn makes a log holding records 0..2 whose open part ends with
// a torn frame header.
func prepareTorn(t *testing.T, keys Keys, dir string) []string {
	before := prepareRecords(3)(t, keys, dir)
	m, err := loadManifest(dir, "appendonly.aof", keys)
	require.NoError(t, err)
	f, err := os.OpenFile(filepath.Join(dir, m.last().Name), os.O_WRONLY|os.O_APPEND, 0)
	require.NoError(t, err)
	_, err = f.Write([]byte{0, 0, 0})
	require.NoError(t, err)
	require.NoError(t, f.Close())
	return before
}

func faultCases() []faultCase {
	openAppend := func(t *testing.T, keys Keys, dir string, fsys atomicfile.FS, rs []string) ([]string, []string, error) {
		l, err := Open(dir, keys, Options{Fsync: Always, FS: fsys})
		if err != nil {
			return nil, nil, err
		}
		acked, tried, err := appendAll(l, rs)
		if cerr := l.Close(); err == nil {
			err = cerr
		}
		return acked, tried, err
	}
	return []faultCase{
		{name: "open new", prepare: prepareRecords(0),
			run: func(t *testing.T, keys Keys, dir string, fsys atomicfile.FS) ([]string, []string, error) {
				return openAppend(t, keys, dir, fsys, recs(0, 2))
			}},
		{name: "open recovering a torn tail", prepare: prepareTorn,
			run: func(t *testing.T, keys Keys, dir string, fsys atomicfile.FS) ([]string, []string, error) {
				return openAppend(t, keys, dir, fsys, recs(3, 5))
			}},
		{name: "fix a torn tail", prepare: prepareTorn,
			run: func(t *testing.T, keys Keys, dir string, fsys atomicfile.FS) ([]string, []string, error) {
				_, err := Fix(dir, keys, Options{FS: fsys})
				return nil, nil, err
			}},
		{name: "append always", prepare: prepareRecords(2),
			run: func(t *testing.T, keys Keys, dir string, fsys atomicfile.FS) ([]string, []string, error) {
				return openAppend(t, keys, dir, fsys, recs(2, 8))
			}},
		{name: "rewrite", prepare: prepareRecords(2),
			run: func(t *testing.T, keys Keys, dir string, fsys atomicfile.FS) ([]string, []string, error) {
				l, err := Open(dir, keys, Options{Fsync: Always, FS: fsys})
				if err != nil {
					return nil, nil, err
				}
				defer l.Close()
				acked, tried, err := appendAll(l, recs(2, 3))
				if err != nil {
					return acked, tried, err
				}
				rw, err := l.StartRewrite(BaseAOF)
				if err != nil {
					return acked, tried, err
				}
				a, tr, err := appendAll(l, recs(3, 4))
				acked, tried = append(acked, a...), append(tried, tr...)
				if err != nil {
					rw.Abort()
					return acked, tried, err
				}
				rw.Write([]byte(strings.Join(recs(0, 3), "")))
				if err := rw.Commit(); err != nil {
					return acked, tried, err
				}
				a, tr, err = appendAll(l, recs(4, 6))
				return append(acked, a...), append(tried, tr...), err
			}},
		{name: "import", prepare: prepareRecords(0),
			run: func(t *testing.T, keys Keys, dir string, fsys atomicfile.FS) ([]string, []string, error) {
				src := t.TempDir()
				plain := map[string]string{
					"appendonly.aof.1.base.aof": strings.Join(recs(0, 2), ""),
					"appendonly.aof.1.incr.aof": strings.Join(recs(2, 4), ""),
					"appendonly.aof.2.incr.aof": strings.Join(recs(4, 6), ""),
					"appendonly.aof.manifest": "file appendonly.aof.1.base.aof seq 1 type b\n" +
						"file appendonly.aof.1.incr.aof seq 1 type i\nfile appendonly.aof.2.incr.aof seq 2 type i\n",
				}
				for n, c := range plain {
					require.NoError(t, os.WriteFile(filepath.Join(src, n), []byte(c), 0o644))
				}
				if err := Import(src, dir, keys, Options{FS: fsys}); err != nil {
					return nil, recs(0, 6), err
				}
				return recs(0, 6), recs(0, 6), nil
			}},
	}
}

// recordFS records where every write lands in every file.
type recordFS struct {
	atomicfile.FS
	mu     sync.Mutex
	writes map[string][][2]int64 // file -> [offset, end) of each write
}

func (r *recordFS) CreateExcl(name string, perm os.FileMode) (atomicfile.File, error) {
	f, err := r.FS.CreateExcl(name, perm)
	if err != nil {
		return nil, err
	}
	return &recordFile{File: f, fs: r, name: name}, nil
}

type recordFile struct {
	atomicfile.File
	fs   *recordFS
	name string
	off  int64
}

func (f *recordFile) Write(b []byte) (int, error) {
	n, err := f.File.Write(b)
	f.fs.mu.Lock()
	if f.fs.writes == nil {
		f.fs.writes = map[string][][2]int64{}
	}
	f.fs.writes[f.name] = append(f.fs.writes[f.name], [2]int64{f.off, f.off + int64(n)})
	f.fs.mu.Unlock()
	f.off += int64(n)
	return n, err
}

// TestWriteErrorNeverReusesANonce fails each step of appends, torn writes
// included, under every fsync policy with concurrent appenders: no byte
// of a part is written twice (a frame's nonce is its index in a part with
// its own key, so a second write at an offset would seal a second
// plaintext under the same key and nonce), every append after the failure
// fails with ErrWriteFailed until the log is reopened, and the reopened
// log goes on in a part with a fresh salt.
func TestWriteErrorNeverReusesANonce(t *testing.T) {
	keys := newKeys(t)
	for _, pol := range []Policy{Always, EverySec, No} {
		t.Run(pol.String(), func(t *testing.T) {
			for step := 1; ; step++ {
				dir := t.TempDir()
				rec := &recordFS{FS: atomicfile.OS}
				fsys := &atomicfile.FaultFS{Inner: rec, FailAt: step}
				l, err := Open(dir, keys, Options{Fsync: pol, FS: fsys})
				if err != nil {
					continue // a failed Open is TestFaultEveryStep's
				}
				var wg sync.WaitGroup
				var mu sync.Mutex
				var acked []string
				var errs []error
				for w := range 3 {
					wg.Go(func() {
						for i := range 20 {
							r := fmt.Sprintf("w%d.%d;", w, i)
							err := l.Append([]byte(r))
							mu.Lock()
							if err == nil {
								acked = append(acked, r)
							} else {
								errs = append(errs, err)
							}
							mu.Unlock()
						}
					})
				}
				wg.Wait()
				sticky := false
				for _, err := range errs {
					// A failed background fsync (everysec) refuses appends
					// until a later one succeeds; anything else is sticky.
					if !errors.Is(err, ErrFsync) || pol == Always {
						require.ErrorIs(t, err, ErrWriteFailed, "step %d", step)
						sticky = true
					}
				}
				if sticky {
					require.ErrorIs(t, l.Append([]byte("late;")), ErrWriteFailed, "step %d: sticky", step)
				}
				l.Close()
				for name, ws := range rec.writes {
					for i := 1; i < len(ws); i++ {
						require.GreaterOrEqual(t, ws[i][0], ws[i-1][1], "step %d: %s written twice at offset %d", step, filepath.Base(name), ws[i][0])
					}
				}
				// The reopen cuts the partial frame off and goes on in a
				// new part: every part has its own salt.
				l, err = Open(dir, keys, reopenOpts)
				require.NoError(t, err, "step %d", step)
				require.NoError(t, l.Append([]byte("after;")))
				require.NoError(t, l.Close())
				m, err := loadManifest(dir, "appendonly.aof", keys)
				require.NoError(t, err)
				salts := map[[saltSize]byte]string{}
				for _, e := range m.parts() {
					require.NotContains(t, salts, e.Salt, "%s and %s share a salt", salts[e.Salt], e.Name)
					salts[e.Salt] = e.Name
				}
				got := splitRecords(string(replayAll(t, dir, keys, Options{})))
				for _, a := range acked {
					require.Contains(t, got, a, "step %d", step)
				}
				if fsys.Steps() < step {
					break // the fault came after the last step: all steps tried
				}
			}
		})
	}
}
