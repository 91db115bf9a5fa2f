package aof

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/cachecrypt/cachecrypt/internal/testenv"
	"github.com/stretchr/testify/require"
)

// TestRedisRoundTrip drives a real redis-server 7 (multi-part AOF, default
// settings) with redis-benchmark, encrypts its appendonlydir and exports it
// back: the files are byte-identical, redis-check-aof accepts them, and a
// redis-server restarted on them has the same DEBUG DIGEST. Commands
// appended through this package load too.
func TestRedisRoundTrip(t *testing.T) {
	bench := testenv.LookPath(t, "redis-benchmark", testenv.RedisInstall)
	checkAOF := testenv.LookPath(t, "redis-check-aof", testenv.RedisInstall)
	work := t.TempDir()
	srv := testenv.StartRedis(t, filepath.Join(work, "r1"), "appendonly yes")
	n := "20000"
	if testenv.Short() {
		n = "3000"
	}
	runBench := func() {
		out, err := exec.Command(bench, "-p", strconv.Itoa(srv.Port), "-t", "set,lpush,incr", "-n", n, "-r", "10000", "-q").CombinedOutput()
		require.NoError(t, err, "%s", out)
	}
	runBench()
	srv.MustDo(t, "BGREWRITEAOF")
	srv.WaitRewrite(t)
	runBench() // lands in the incremental part after the rewrite's base
	digest := srv.Digest(t)
	srv.Stop()

	keys := newKeys(t)
	plain := filepath.Join(srv.Dir, "appendonlydir")
	enc := filepath.Join(work, "enc")
	require.NoError(t, Import(plain, enc, keys, Options{}))
	// Nothing of the plaintext is left in the encrypted parts.
	incr, err := os.ReadFile(filepath.Join(plain, "appendonly.aof.2.incr.aof"))
	require.NoError(t, err)
	require.Contains(t, string(incr), "mylist", "the plain incremental part should hold the benchmark's writes")
	assertNoPlaintext(t, enc, "mylist")
	rep, err := Check(enc, keys, Options{})
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(rep.Parts), 2)

	out := filepath.Join(work, "r2", "appendonlydir")
	require.NoError(t, Export(enc, out, keys, Options{}))
	requireSameFiles(t, plain, out)

	res, err := exec.Command(checkAOF, filepath.Join(out, "appendonly.aof.manifest")).CombinedOutput()
	require.NoError(t, err, "redis-check-aof: %s", res)
	require.Contains(t, string(res), "is valid")

	srv2 := testenv.StartRedis(t, filepath.Join(work, "r2"), "appendonly yes")
	require.Equal(t, digest, srv2.Digest(t))
	srv2.Stop()

	// Append through the encrypted log, export again: Redis sees the write.
	l, err := Open(enc, keys, Options{Fsync: Always})
	require.NoError(t, err)
	require.NoError(t, l.Append([]byte("*3\r\n$3\r\nSET\r\n$9\r\ncc:extra1\r\n$2\r\nok\r\n")))
	require.NoError(t, l.Close())
	out3 := filepath.Join(work, "r3", "appendonlydir")
	require.NoError(t, Export(enc, out3, keys, Options{}))
	srv3 := testenv.StartRedis(t, filepath.Join(work, "r3"), "appendonly yes")
	require.Equal(t, "ok", srv3.MustDo(t, "GET", "cc:extra1"))
}

func requireSameFiles(t *testing.T, a, b string) {
	t.Helper()
	ea, err := os.ReadDir(a)
	require.NoError(t, err)
	eb, err := os.ReadDir(b)
	require.NoError(t, err)
	var na, nb []string
	for _, e := range ea {
		na = append(na, e.Name())
	}
	for _, e := range eb {
		nb = append(nb, e.Name())
	}
	require.Equal(t, na, nb)
	for _, n := range na {
		x, err := os.ReadFile(filepath.Join(a, n))
		require.NoError(t, err)
		y, err := os.ReadFile(filepath.Join(b, n))
		require.NoError(t, err)
		require.True(t, string(x) == string(y), "%s differs after import+export (%d vs %d bytes)", n, len(x), len(y))
	}
}

func assertNoPlaintext(t *testing.T, dir, needle string) {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		b, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		require.NotContains(t, string(b), needle, "%s holds plaintext", e.Name())
	}
}
