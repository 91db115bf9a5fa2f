package aof

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cachecrypt/cachecrypt/internal/atomicfile"
	"github.com/cachecrypt/cachecrypt/internal/testenv"
	"github.com/stretchr/testify/require"
)

// noSyncFS is the operating system without fsync: the framing test cuts
// and fixes a part thousands of times, and what a cut loses does not
// depend on durability.
type noSyncFS struct{ atomicfile.FS }

type noSyncFile struct{ atomicfile.File }

func (noSyncFile) Sync() error { return nil }

func (f noSyncFS) CreateExcl(name string, perm os.FileMode) (atomicfile.File, error) {
	file, err := f.FS.CreateExcl(name, perm)
	return noSyncFile{file}, err
}

func (f noSyncFS) OpenFile(name string, flag int, perm os.FileMode) (atomicfile.File, error) {
	file, err := f.FS.OpenFile(name, flag, perm)
	return noSyncFile{file}, err
}

func (noSyncFS) SyncDir(string) error { return nil }

// commandEnds returns the offset after each whole command of a plain AOF.
func commandEnds(t *testing.T, b []byte) []int {
	r := bufio.NewReader(bytes.NewReader(b))
	var ends []int
	off := 0
	for {
		cmd, err := readCommand(r, nil)
		if len(cmd) == 0 {
			return ends
		}
		require.NoError(t, err, "plain AOF at offset %d", off)
		off += len(cmd)
		ends = append(ends, off)
	}
}

// kept counts the whole commands in the first n bytes.
func kept(ends []int, n int) int {
	k := 0
	for k < len(ends) && ends[k] <= n {
		k++
	}
	return k
}

// frameSpan is a frame of a part: where it lies in the file and which
// plaintext bytes of the part it holds.
type frameSpan struct {
	off, end     int64 // in the file
	ptOff, ptEnd int   // in the part's plaintext
}

func frameSpans(t *testing.T, path string) ([]frameSpan, int64) {
	offs, b := frames(t, path)
	var spans []frameSpan
	pt := 0
	for _, off := range offs {
		n := int64(binary.BigEndian.Uint32(b[off:]))
		s := frameSpan{off: off, end: off + frameHdrSize + n, ptOff: pt, ptEnd: pt + int(n) - tagSize}
		spans = append(spans, s)
		pt = s.ptEnd
	}
	return spans, int64(len(b))
}

// redisCheckAOFFix runs the real redis-check-aof --fix on the first n
// bytes of the plain part and returns the size it leaves.
func redisCheckAOFFix(t *testing.T, tool string, plain []byte, n int) int {
	p := filepath.Join(t.TempDir(), "appendonly.aof.1.incr.aof")
	require.NoError(t, os.WriteFile(p, plain[:n], 0o600))
	c := exec.Command(tool, "--fix", p)
	c.Stdin = strings.NewReader("y\n")
	out, err := c.CombinedOutput()
	require.NoError(t, err, "redis-check-aof --fix at %d: %s", n, out)
	st, err := os.Stat(p)
	require.NoError(t, err)
	return int(st.Size())
}

// TestImportFramingAgainstRedisCheckAOF imports a real Redis AOF and cuts
// the imported open part at every byte of its last 4 KiB, as a crash
// would. After Fix, the decrypted log ends on a command boundary, passes
// redis-check-aof, and has lost at most the other commands of one frame
// more than redis-check-aof --fix loses on the plain file cut at the same
// logical point. A cut in a frame's payload corresponds to the plaintext
// cut at the same byte; in its header, to the cut before the frame; in
// its tag, to the cut before the frame's last plaintext byte.
func TestImportFramingAgainstRedisCheckAOF(t *testing.T) {
	checkAOF := testenv.LookPath(t, "redis-check-aof", testenv.RedisInstall)
	work := t.TempDir()
	srv := testenv.StartRedis(t, filepath.Join(work, "redis"), "appendonly yes")
	for i := range 1000 {
		val := func(n int) string { return strings.Repeat(string(rune('a'+i%26)), n) }
		switch {
		case i%50 == 7:
			srv.MustDo(t, "SET", fmt.Sprintf("big:%d", i), val(5000+i*7%7000))
		case i%3 == 0:
			srv.MustDo(t, "RPUSH", fmt.Sprintf("list:%d", i%10), val(10+i%50), val(1+i%200), val(i%7))
		default:
			srv.MustDo(t, "SET", fmt.Sprintf("k:%d", i), val(i*37%400))
		}
	}
	srv.Stop()

	keys := newKeys(t)
	enc := filepath.Join(work, "enc")
	require.NoError(t, Import(filepath.Join(srv.Dir, "appendonlydir"), enc, keys, Options{}))
	m, err := loadManifest(enc, "appendonly.aof", keys)
	require.NoError(t, err)
	name := m.last().Name
	plain, err := os.ReadFile(filepath.Join(srv.Dir, "appendonlydir", name))
	require.NoError(t, err)
	ends := commandEnds(t, plain)
	require.GreaterOrEqual(t, len(ends), 1000)
	require.Equal(t, len(plain), ends[len(ends)-1])
	spans, size := frameSpans(t, filepath.Join(enc, name))
	for _, s := range spans {
		// Every frame ends on a command boundary and holds about 4 KiB,
		// or one larger command.
		require.True(t, slices.Contains(ends, s.ptEnd), "frame at offset %d ends at plaintext %d, not on a command boundary", s.off, s.ptEnd)
		if s.ptEnd-s.ptOff > importFrame {
			require.Equal(t, 1, kept(ends, s.ptEnd)-kept(ends, s.ptOff), "a frame over 4 KiB holds one command")
		}
	}
	encPart, err := os.ReadFile(filepath.Join(enc, name))
	require.NoError(t, err)

	dir := filepath.Join(work, "cut")
	require.NoError(t, os.CopyFS(dir, os.DirFS(enc)))
	opts := Options{FS: noSyncFS{atomicfile.OS}}
	type result struct{ ours, theirs int }
	byCut := map[int64]result{}
	exported := map[int64]int{} // fixed size -> commands in the decrypted part
	theirs := map[int][2]int{}  // commands kept before the plain cut -> [cut, size left by redis-check-aof]
	lastIn := map[int]int{}     // commands kept before the plain cut -> the last cut seen
	for cut := size - 4096; cut < size; cut++ {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), encPart[:cut], 0o600))
		rep, err := Fix(dir, keys, opts)
		require.NoError(t, err, "cut at %d", cut)
		fixed := cut
		if rep.Damage != nil {
			fixed = rep.Damage.Offset
		}
		// The plaintext point of the cut, and the frame it falls in.
		var span frameSpan
		for _, s := range spans {
			if s.off <= cut && cut < s.end {
				span = s
			}
		}
		p := span.ptOff + int(cut-span.off-frameHdrSize)
		switch {
		case cut-span.off <= frameHdrSize:
			p = span.ptOff
		case p >= span.ptEnd:
			p = span.ptEnd - 1
		}
		if _, ok := exported[fixed]; !ok {
			exported[fixed] = exportAndCheck(t, checkAOF, dir, keys, name, plain)
		}
		// redis-check-aof --fix keeps the whole commands before the cut:
		// run it once per command the cut falls in (and again at the
		// last cut point there, below) and use that.
		k := kept(ends, p)
		if _, ok := theirs[k]; !ok {
			theirs[k] = [2]int{p, redisCheckAOFFix(t, checkAOF, plain, p)}
		}
		lastIn[k] = p
		lostTheirs := len(ends) - kept(ends, theirs[k][1])
		lostOurs := len(ends) - exported[fixed]
		inFrame := kept(ends, span.ptEnd) - kept(ends, span.ptOff)
		require.LessOrEqual(t, lostOurs, lostTheirs+inFrame-1, "cut at %d (plaintext %d): ours lost %d, redis-check-aof %d, %d commands in the frame", cut, p, lostOurs, lostTheirs, inFrame)
		byCut[cut] = result{lostOurs, lostTheirs}
	}

	for k, p := range lastIn {
		if r := theirs[k]; p != r[0] {
			require.Equal(t, r[1], redisCheckAOFFix(t, checkAOF, plain, p), "redis-check-aof --fix at %d and %d", r[0], p)
		}
	}

	// The summary: commands lost per bucket of cut positions.
	var tbl strings.Builder
	fmt.Fprintf(&tbl, "%d commands, %d bytes plain, part of %d bytes in %d frames; cuts at every byte of the last 4096\n", len(ends), len(plain), size, len(spans))
	fmt.Fprintf(&tbl, "%-22s %-24s %-24s\n", "cut (bytes from end)", "lost ours min/avg/max", "lost redis-check-aof --fix")
	for from := int64(4096); from > 0; from -= 512 {
		var n, sumO, sumT, minO, maxO, minT, maxT int
		minO, minT = 1<<30, 1<<30
		for cut := size - from; cut < size-from+512; cut++ {
			r := byCut[cut]
			n++
			sumO, sumT = sumO+r.ours, sumT+r.theirs
			minO, maxO = min(minO, r.ours), max(maxO, r.ours)
			minT, maxT = min(minT, r.theirs), max(maxT, r.theirs)
		}
		fmt.Fprintf(&tbl, "%-22s %-24s %-24s\n", fmt.Sprintf("%d..%d", from, from-511),
			fmt.Sprintf("%d/%.1f/%d", minO, float64(sumO)/float64(n), maxO),
			fmt.Sprintf("%d/%.1f/%d", minT, float64(sumT)/float64(n), maxT))
	}
	t.Logf("import framing against redis-check-aof --fix:\n%s", tbl.String())
}

// exportAndCheck decrypts the fixed log, checks that the part holds a
// prefix of the plain part ending on a command boundary and that
// redis-check-aof accepts the directory, and returns the commands it
// holds.
func exportAndCheck(t *testing.T, tool, dir string, keys Keys, name string, plain []byte) int {
	out := filepath.Join(t.TempDir(), "appendonlydir")
	require.NoError(t, Export(dir, out, keys, Options{Strict: true, FS: noSyncFS{atomicfile.OS}}))
	b, err := os.ReadFile(filepath.Join(out, name))
	require.NoError(t, err)
	require.True(t, bytes.HasPrefix(plain, b), "the decrypted part is a prefix of the plain one")
	ends := commandEnds(t, b)
	if len(b) > 0 {
		require.Equal(t, len(b), ends[len(ends)-1], "the decrypted part ends on a command boundary")
	}
	res, err := exec.Command(tool, filepath.Join(out, "appendonly.aof.manifest")).CombinedOutput()
	require.NoError(t, err, "redis-check-aof: %s", res)
	require.Contains(t, string(res), "is valid", "redis-check-aof: %s", res)
	return len(ends)
}
