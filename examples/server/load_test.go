package main

import (
	"encoding/csv"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cachecrypt/cachecrypt/internal/testenv"
)

var updateReadme = flag.Bool("update-readme", false, "write the redis-benchmark figures into README.md")

// benchmarkArgs starts redis-benchmark against addr: 50 clients sending SET
// with 64-byte values over 100k random keys, as many as n requests.
func benchmarkCmd(bin, addr string, n int, extra ...string) *exec.Cmd {
	host, port, _ := strings.Cut(addr, ":")
	args := []string{"-h", host, "-p", port, "-t", "set", "-n", strconv.Itoa(n), "-c", "50",
		"-r", "100000", "-d", "64"}
	return exec.Command(bin, append(args, extra...)...)
}

// TestKillUnderLoadKeepsAcknowledgedWrites runs the server binary with
// appendfsync always under redis-benchmark load and a client that records
// every SET the server acknowledged, kills the server with SIGKILL, restarts
// it on the same directory, and checks that every acknowledged key is there
// with its value. Two rounds, the second on top of the first's data.
func TestKillUnderLoadKeepsAcknowledgedWrites(t *testing.T) {
	benchBin := testenv.LookPath(t, "redis-benchmark", testenv.RedisInstall)
	bin := buildServer(t)
	dir := t.TempDir()
	acked := map[string]string{}
	for round := range 2 {
		p := startProc(t, bin, dir, "-appendfsync", "always")
		load := benchmarkCmd(benchBin, p.addr, 10_000_000, "-q")
		require.NoError(t, load.Start())

		var n atomic.Int64
		done := make(chan map[string]string, 1)
		go func() { done <- writeUntilError(p.addr, round, &n) }()
		deadline := time.Now().Add(30 * time.Second)
		time.Sleep(500 * time.Millisecond)
		for n.Load() < 300 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		require.NoError(t, p.cmd.Process.Signal(syscall.SIGKILL))
		<-p.done
		got := <-done
		load.Process.Kill()
		load.Wait()
		require.GreaterOrEqual(t, len(got), 300, "round %d: the writer got too few acknowledgements before the kill", round)
		for k, v := range got {
			acked[k] = v
		}

		p = startProc(t, bin, dir, "-appendfsync", "always")
		c := dial(t, p.addr)
		size := c.must(t, "DBSIZE").(int64)
		require.Greater(t, size, int64(len(acked)), "redis-benchmark's keys are missing: was there load?")
		missing := 0
		for k, v := range acked {
			if g, err := c.do("GET", k); err != nil || g != v {
				missing++
				if missing < 5 {
					t.Errorf("round %d: acknowledged %s=%s, after restart %v (%v)", round, k, v, g, err)
				}
			}
		}
		require.Zero(t, missing, "round %d: %d of %d acknowledged writes lost", round, missing, len(acked))
		t.Logf("round %d: %d acknowledged writes (total %d) all present after SIGKILL; %d keys", round, len(got), len(acked), size)
		p.stop(t)
	}
}

// writeUntilError sends SET k_i v_i until the connection fails and returns
// the pairs the server acknowledged with +OK.
func writeUntilError(addr string, round int, n *atomic.Int64) map[string]string {
	acked := map[string]string{}
	c, err := dialNoT(addr)
	if err != nil {
		return acked
	}
	defer c.c.Close()
	for i := 0; ; i++ {
		k, v := fmt.Sprintf("k_%d_%d", round, i), fmt.Sprintf("v_%d_%d", round, i)
		r, err := c.do("SET", k, v)
		if err != nil || r != "OK" {
			return acked
		}
		acked[k] = v
		n.Add(1)
	}
}

// TestRedisBenchmarkRatio measures SET throughput with redis-benchmark
// against the server with the encrypted AOF and against the same server with
// a plaintext AOF, both appendfsync everysec, alternating in one run. It
// records the figures (t.Log, and README.md with -update-readme); it does
// not fail on them: the machine is shared and noisy.
func TestRedisBenchmarkRatio(t *testing.T) {
	benchBin := testenv.LookPath(t, "redis-benchmark", testenv.RedisInstall)
	bin := buildServer(t)
	const n = 40000
	rounds := 5
	if testenv.Short() {
		rounds = 1
	}
	rps := map[string][]float64{}
	cpu := map[string][]float64{} // server CPU time per request, microseconds: less sensitive to a busy machine
	for range rounds {
		for _, mode := range []string{"plaintext", "encrypted"} {
			args := []string{"-appendfsync", "everysec"}
			if mode == "plaintext" {
				args = append(args, "-plain-aof")
			}
			p := startProc(t, bin, t.TempDir(), args...)
			out, err := benchmarkCmd(benchBin, p.addr, n, "--csv").Output()
			require.NoError(t, err)
			v, err := parseCSV(out)
			require.NoError(t, err, "redis-benchmark output:\n%s", out)
			rps[mode] = append(rps[mode], v)
			p.stop(t)
			used := p.cmd.ProcessState.UserTime() + p.cmd.ProcessState.SystemTime()
			cpu[mode] = append(cpu[mode], float64(used.Microseconds())/n)
		}
	}
	plain, enc := median(rps["plaintext"]), median(rps["encrypted"])
	var pairs []float64 // each encrypted run against the plaintext run just before it
	for i := range rps["encrypted"] {
		pairs = append(pairs, rps["encrypted"][i]/rps["plaintext"][i])
	}
	ratio := median(pairs)
	t.Logf("redis-benchmark SET, %d requests, 50 clients, 64-byte values, appendfsync everysec, median of %d alternating runs:", n, rounds)
	t.Logf("  plaintext AOF: %.0f requests/s %v", plain, rps["plaintext"])
	t.Logf("  encrypted AOF: %.0f requests/s %v", enc, rps["encrypted"])
	cpuPlain, cpuEnc := median(cpu["plaintext"]), median(cpu["encrypted"])
	t.Logf("  server CPU per request: plaintext %.1f us, encrypted %.1f us (%.2fx)", cpuPlain, cpuEnc, cpuEnc/cpuPlain)
	t.Logf("  ratio encrypted/plaintext: %.2fx, median of the paired runs' ratios %.2f (target >= 0.90x)", ratio, pairs)
	if *updateReadme {
		fig := fmt.Sprintf("| plaintext AOF, requests/s (median of %d) | %.0f |\n", rounds, plain) +
			fmt.Sprintf("| encrypted AOF, requests/s (median of %d) | %.0f |\n", rounds, enc) +
			fmt.Sprintf("| encrypted / plaintext, ratio of the medians | **%.2fx** |\n", enc/plain) +
			fmt.Sprintf("| encrypted / plaintext, median of the paired runs' ratios %.2f | **%.2fx** |\n", pairs, ratio) +
			fmt.Sprintf("| server CPU time per request, plaintext / encrypted | %.1f us / %.1f us (%.2fx) |\n", cpuPlain, cpuEnc, cpuEnc/cpuPlain)
		writeFigure(t, "README.md", fig)
	}
}

func parseCSV(out []byte) (float64, error) {
	recs, err := csv.NewReader(strings.NewReader(string(out))).ReadAll()
	if err != nil {
		return 0, err
	}
	for _, r := range recs {
		if len(r) > 1 && r[0] == "SET" {
			return strconv.ParseFloat(r[1], 64)
		}
	}
	return 0, fmt.Errorf("no SET line")
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

var figureRE = regexp.MustCompile(`(?s)(<!-- benchmark:begin -->\n).*?(<!-- benchmark:end -->)`)

// writeFigure replaces the text between the benchmark markers of a file.
func writeFigure(t *testing.T, path, fig string) {
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.True(t, figureRE.Match(b), "%s has no benchmark markers", path)
	load, _ := os.ReadFile("/proc/loadavg")
	stamp := fmt.Sprintf("| measured | %s, %d cores, load average %s, GOMAXPROCS=%s, `go test ./examples/server -run TestRedisBenchmarkRatio -v -args -update-readme` |\n|---|---|\n",
		time.Now().UTC().Format("2006-01-02"), runtime.NumCPU(), strings.Fields(string(load) + " ?")[0], orDefault(os.Getenv("GOMAXPROCS"), "all cores"))
	b = figureRE.ReplaceAll(b, []byte("${1}"+stamp+fig+"${2}"))
	require.NoError(t, os.WriteFile(path, b, 0o644))
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}
