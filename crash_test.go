package cachecrypt

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cachecrypt/cachecrypt/aof"
	"github.com/cachecrypt/cachecrypt/internal/atomicfile"
	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/stretchr/testify/require"
)

var crashRounds = flag.Int("crashrounds", 20, "how many SIGKILL rounds TestCrashDuringMaintenance runs (200 for a release)")

// TestCrashDuringMaintenance runs the soak's load (appends under fsync
// always, snapshots, rewrites, scheduled rotation with retirement,
// Reencrypt, RefreshKEK, SetEncryption) in a child process and kills it
// with SIGKILL after a random number of acknowledged writes, round after
// round on one instance. Each time the instance reopens with default
// options, holds every write the child acknowledged before it died, and
// has no temporary file left.
func TestCrashDuringMaintenance(t *testing.T) {
	if os.Getenv("CACHECRYPT_MAINT_CHILD") != "" {
		maintenanceChild(t)
		return
	}
	dir := t.TempDir()
	otherPath := filepath.Join(t.TempDir(), "other.key")
	other, err := kek.LoadMMK(otherPath)
	require.NoError(t, err)
	seed := rand.Uint64()
	rng := rand.New(rand.NewPCG(seed, 0))
	t.Logf("seed %d, %d rounds", seed, *crashRounds)
	a := newAcked()
	for round := range *crashRounds {
		killAfter := 1 + rng.IntN(400)
		lines := runAndKill(t, dir, otherPath, killAfter)
		for _, l := range lines {
			a.record(l)
		}
		cfg := soakConfig(&clock{now: time.Now()}, other)
		inst, err := Open(context.Background(), dir, cfg)
		require.NoError(t, err, "round %d: Open with default options", round)
		log, err := inst.OpenAOF(aof.Options{})
		require.NoError(t, err, "round %d: OpenAOF with default options", round)
		a.verify(t, inst, log)
		require.Empty(t, temporaryFiles(t, dir), "round %d: no temporary file is left after Open", round)
		require.NoError(t, log.Close())
		require.NoError(t, inst.Close())
	}
	t.Logf("acknowledged and found after %d kills: records %v, last snapshot %d", *crashRounds, a.records, a.snapshot)
}

// runAndKill starts the child on dir, kills it with SIGKILL once it has
// acknowledged killAfter writes, and returns every acknowledgement it made.
func runAndKill(t *testing.T, dir, otherPath string, killAfter int) []string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashDuringMaintenance$")
	cmd.Env = append(os.Environ(), "CACHECRYPT_MAINT_CHILD=1", "CRASH_DIR="+dir, "CRASH_OTHER="+otherPath, "CRASH_TMP="+t.TempDir())
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	var lines []string
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		l, ok := strings.CutPrefix(sc.Text(), "ACK ")
		if !ok {
			continue
		}
		lines = append(lines, l)
		if len(lines) == killAfter {
			cmd.Process.Signal(syscall.SIGKILL)
		}
	}
	cmd.Process.Signal(syscall.SIGKILL) // if it stopped acknowledging early
	err = cmd.Wait()
	require.ErrorContains(t, err, "killed", "the child must die by SIGKILL: %s", stderr.String())
	return lines
}

// maintenanceChild runs the soak's load on CRASH_DIR until it is killed,
// printing one line per acknowledged write. It continues the sequence
// numbers and snapshot numbers where the instance stands.
func maintenanceChild(t *testing.T) {
	other, err := kek.LoadMMK(os.Getenv("CRASH_OTHER"))
	require.NoError(t, err)
	clk := &clock{now: time.Now()}
	i, err := Open(context.Background(), os.Getenv("CRASH_DIR"), soakConfig(clk, other))
	require.NoError(t, err)
	log, err := i.OpenAOF(aof.Options{Fsync: aof.Always})
	require.NoError(t, err)
	var mu sync.Mutex
	s := &soak{inst: i, log: log, other: other, clock: clk, tmp: os.Getenv("CRASH_TMP"), ack: func(f string, args ...any) {
		mu.Lock()
		fmt.Fprintf(os.Stdout, "ACK "+f+"\n", args...)
		mu.Unlock()
	}}
	s.next, s.nextSnap = resumePoint(t, i, log)
	err = s.run(context.Background())
	t.Fatalf("the load stopped before the kill: %v", err)
}

// resumePoint returns the next sequence number of each appender and the
// next snapshot number, from what the instance holds.
func resumePoint(t *testing.T, i *Instance, log *AOF) ([soakAppenders]int64, int64) {
	var next [soakAppenders]int64
	r, err := log.Replay()
	require.NoError(t, err)
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var w int
		var n int64
		fmt.Sscanf(sc.Text(), "rec %d %d", &w, &n)
		next[w] = n + 1
	}
	r.Close()
	snap, err := i.OpenSnapshot()
	if err != nil {
		return next, 0
	}
	defer snap.Close()
	b, err := io.ReadAll(snap)
	require.NoError(t, err)
	n, err := parseSoakBody(b)
	require.NoError(t, err)
	return next, n + 1
}

// temporaryFiles lists the temporary files under dir.
func temporaryFiles(t *testing.T, dir string) []string {
	var found []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && atomicfile.IsTemp(d.Name()) {
			found = append(found, p)
		}
		return err
	})
	require.NoError(t, err)
	return found
}
