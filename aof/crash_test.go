package aof

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const (
	envCrashDir  = "CACHECRYPT_AOF_CRASH_DIR"
	envCrashMode = "CACHECRYPT_AOF_CRASH_MODE"
	envCrashNext = "CACHECRYPT_AOF_CRASH_NEXT"
)

// record is the i-th record of the crash test: its number, padding whose
// length varies (sometimes 64 KiB, so a kill can land inside a write), and
// a newline.
func record(i int) []byte {
	pad := i % 97
	if i%101 == 0 {
		pad = 64 << 10
	}
	b := fmt.Appendf(nil, "r%d:", i)
	b = append(b, bytes.Repeat([]byte{byte('a' + i%26)}, pad)...)
	return append(b, '\n')
}

// tornRecord is the i-th record of the torn mode: every other one is
// 1 MiB, so that a kill often lands inside a write.
func tornRecord(i int) []byte {
	if i%2 == 1 {
		return record(i)
	}
	b := fmt.Appendf(nil, "r%d:", i)
	b = append(b, bytes.Repeat([]byte{byte('a' + i%26)}, 1<<20)...)
	return append(b, '\n')
}

// recordsOf returns the record function of a crash mode.
func recordsOf(mode string) func(int) []byte {
	if mode == "torn" {
		return tornRecord
	}
	return record
}

// TestHelperCrashChild is the child process of the crash tests: it appends
// numbered records with fsync always and prints each acknowledged number.
func TestHelperCrashChild(t *testing.T) {
	dir := os.Getenv(envCrashDir)
	if dir == "" {
		t.Skip("crash test child only")
	}
	next, _ := strconv.Atoi(os.Getenv(envCrashNext))
	keys := fileKeys(t, dir)
	mode := os.Getenv(envCrashMode)
	rec := recordsOf(mode)
	pol := Always
	if mode == "torn" {
		// Writes dominate: a kill lands inside one. A SIGKILL keeps what
		// was written, so every acknowledged record must come back.
		pol = No
	}
	l, err := Open(filepath.Join(dir, "aof"), keys, Options{Fsync: pol})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	out := bufio.NewWriter(os.Stdout)
	var mu sync.Mutex // orders appends against the start of a rewrite
	if mode == "rewrite" {
		go func() {
			for {
				mu.Lock()
				r, err := l.StartRewrite(BaseAOF)
				n := next
				mu.Unlock()
				if err != nil {
					fmt.Println("error", err)
					os.Exit(2)
				}
				for i := range n {
					r.Write(record(i))
				}
				if err := r.Commit(); err != nil {
					fmt.Println("error", err)
					os.Exit(2)
				}
			}
		}()
	}
	fmt.Fprintln(out, "ready")
	out.Flush()
	for {
		// next moves under mu: a rewrite's snapshot is exactly the
		// records appended before its StartRewrite.
		mu.Lock()
		err := l.Append(rec(next))
		n := next
		next++
		mu.Unlock()
		if err != nil {
			fmt.Println("error", err)
			os.Exit(2)
		}
		fmt.Fprintln(out, n)
		out.Flush()
	}
}

func TestCrashAppend(t *testing.T) { crashRounds(t, "append", 100) }

func TestCrashRewrite(t *testing.T) { crashRounds(t, "rewrite", 60) }

// TestCrashTornWrite kills a child in the middle of large writes: the
// reopen with default options cuts the torn tail and keeps every
// acknowledged record.
func TestCrashTornWrite(t *testing.T) { crashRounds(t, "torn", 40) }

// crashRounds kills a child appending records at random moments and checks
// after each reopen that every acknowledged record is there, in order,
// whole, and nothing else.
func crashRounds(t *testing.T, mode string, rounds int) {
	dir := t.TempDir()
	keys := fileKeys(t, dir)
	next, torn, total := 0, 0, 0
	for round := range rounds {
		if mode == "torn" {
			// Each round starts a fresh log: the test is the torn tail,
			// and replaying hundreds of MiB each round would be slow.
			require.NoError(t, os.RemoveAll(filepath.Join(dir, "aof")))
			next = 0
		}
		acked := runChild(t, dir, mode, next)
		// Default options, as a restart after a SIGKILL uses.
		l, err := Open(filepath.Join(dir, "aof"), keys, Options{})
		require.NoError(t, err, "round %d", round)
		if _, ok := l.Recovered(); ok {
			torn++
		}
		r, err := l.Replay()
		require.NoError(t, err)
		n := checkRecords(t, r, round, recordsOf(mode))
		r.Close()
		require.NoError(t, l.Close())
		require.GreaterOrEqual(t, n-1, acked, "round %d: record %d was acknowledged but is lost", round, acked)
		total += n - next
		next = n
	}
	t.Logf("%s: %d rounds, %d records, %d torn tails cut", mode, rounds, total, torn)
}

// runChild starts a child at record next, kills it 10-50 ms after it is
// ready and returns the last number it acknowledged (-1 for none).
func runChild(t *testing.T, dir, mode string, next int) int {
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), envCrashDir+"="+dir, envCrashMode+"="+mode, envCrashNext+"="+strconv.Itoa(next))
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	lines := make(chan string, 1<<16)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	acked := next - 1
	select {
	case l := <-lines:
		require.Equal(t, "ready", l, "child failed")
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatal("child did not start")
	}
	time.Sleep(time.Duration(10+rand.IntN(40)) * time.Millisecond)
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	for l := range lines {
		n, err := strconv.Atoi(l)
		require.NoError(t, err, "child said %q", l)
		require.Equal(t, acked+1, n)
		acked = n
	}
	cmd.Wait()
	return acked
}

// checkRecords reads records 0, 1, 2, ... from r and returns their count.
func checkRecords(t *testing.T, r io.Reader, round int, record func(int) []byte) int {
	br := bufio.NewReaderSize(r, 2<<20)
	n := 0
	for {
		line, err := br.ReadBytes('\n')
		if err == io.EOF {
			require.Empty(t, line, "round %d: partial record after record %d", round, n-1)
			return n
		}
		require.NoError(t, err)
		require.Equal(t, string(record(n)), string(line), "round %d: record %d", round, n)
		n++
	}
}
