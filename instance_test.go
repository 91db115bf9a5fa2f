package cachecrypt

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/cachecrypt/cachecrypt/kek/kektest"
	"github.com/cachecrypt/cachecrypt/nvme"
	"github.com/stretchr/testify/require"
)

var salt = bytes.Repeat([]byte{1}, 32)

func noProbe(c Config) Config { c.ProbeInterval = -1; return c }

func open(t *testing.T, dir string, cfg Config) *Instance {
	t.Helper()
	i, err := Open(context.Background(), dir, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { i.Close() })
	return i
}

func fileKeys(t *testing.T, i *Instance) [][]byte {
	t.Helper()
	var out [][]byte
	for _, name := range []string{DiskPersistence, DiskOS} {
		r, err := i.Keyring(name)
		require.NoError(t, err)
		fk, err := r.FileKey(1, "rdb", salt)
		require.NoError(t, err)
		out = append(out, fk)
	}
	return out
}

func TestOpenDefaultsToMMKWithNoSetup(t *testing.T) {
	dir := t.TempDir()
	i := open(t, dir, noProbe(Config{}))
	rows := i.Status()
	require.Len(t, rows, 3)
	for _, r := range rows {
		require.Equal(t, "MMK", r.Key)
		require.Equal(t, kek.KindMMK, r.KEK.Kind)
		require.Equal(t, uint32(1), r.DEKVersion)
	}
	keys := fileKeys(t, i)
	require.NotEqual(t, keys[0], keys[1], "each disk has its own DEK")
	i.Close()

	again := open(t, dir, noProbe(Config{}))
	require.Equal(t, keys, fileKeys(t, again))
}

func TestFlashTierStatusShowsEphemeralNVMe(t *testing.T) {
	i := open(t, t.TempDir(), noProbe(Config{Tier: FlashOptimized}))
	rows := i.Status()
	require.Len(t, rows, 4)
	require.Equal(t, "ephemeral (MMK only)", rows[3].Key)
	var b bytes.Buffer
	require.NoError(t, WriteStatus(&b, rows))
	require.Contains(t, b.String(), "transient NVMe flash")
}

func TestSwitchMMKToCMKAndBack(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	cmk := kektest.New("cmk")
	i := open(t, dir, noProbe(Config{}))
	before := fileKeys(t, i)

	require.NoError(t, i.SetEncryption(ctx, CustomerManaged(cmk)))
	require.Equal(t, int64(2), cmk.Wraps(), "one Wrap per disk: O(disks), not O(data)")
	for _, r := range i.Status() {
		require.Equal(t, "CMK", r.Key)
		require.Equal(t, cmk.Descriptor(), r.KEK)
	}
	require.Equal(t, before, fileKeys(t, i), "data keys unchanged: data stays readable")

	other := kektest.New("cmk2")
	require.NoError(t, i.SetEncryption(ctx, CustomerManaged(other)))
	require.NoError(t, i.SetEncryption(ctx, MMK))
	require.Equal(t, "MMK", i.Status()[0].Key)
	i.Close()

	// Reopened with the MMK alone: no CMK is needed any more.
	again := open(t, dir, noProbe(Config{}))
	require.Equal(t, before, fileKeys(t, again))
}

func TestDataPathMakesNoKEKCalls(t *testing.T) {
	cmk := kektest.New("cmk")
	i := open(t, t.TempDir(), noProbe(Config{Encryption: CustomerManaged(cmk)}))
	calls := cmk.Calls()
	for range 1000 {
		fileKeys(t, i)
	}
	require.NoError(t, i.RotateDEK())
	require.Equal(t, calls, cmk.Calls())
}

// failingWrap fails every Wrap after the first n.
type failingWrap struct {
	kek.KEK
	n     int32
	calls atomic.Int32
}

func (f *failingWrap) Wrap(ctx context.Context, key []byte) (kek.Wrapped, error) {
	if f.calls.Add(1) > f.n {
		return kek.Wrapped{}, fmt.Errorf("injected: %w", kek.ErrUnavailable)
	}
	return f.KEK.Wrap(ctx, key)
}

func TestFailedSwitchRollsBack(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	i := open(t, dir, noProbe(Config{}))
	before := fileKeys(t, i)
	bad := &failingWrap{KEK: kektest.New("cmk"), n: 1}
	err := i.SetEncryption(ctx, CustomerManaged(bad))
	require.ErrorIs(t, err, kek.ErrUnavailable)
	for _, r := range i.Status() {
		require.Equal(t, "MMK", r.Key, "the first disk was rolled back")
	}
	i.Close()
	again := open(t, dir, noProbe(Config{}))
	require.Equal(t, before, fileKeys(t, again))
}

type invalidKEK struct{ kek.KEK }

func (invalidKEK) Validate(context.Context) error {
	return &kek.PrerequisiteError{Key: "k", Failed: []kek.Check{{Name: "purge protection", Problem: "off", Fix: "enable purge protection"}}}
}

func TestPrerequisitesCheckedOnOpenAndSwitch(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	_, err := Open(ctx, dir, noProbe(Config{Encryption: CustomerManaged(invalidKEK{kektest.New("x")})}))
	require.ErrorIs(t, err, ErrPrerequisite)
	require.ErrorContains(t, err, "enable purge protection")
	i := open(t, dir, noProbe(Config{}))
	err = i.SetEncryption(ctx, CustomerManaged(invalidKEK{kektest.New("x")}))
	require.ErrorIs(t, err, ErrPrerequisite)
	require.Equal(t, "MMK", i.Status()[0].Key)
}

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func TestRevocationFailsClosedAfterGraceAndRestores(t *testing.T) {
	ctx := context.Background()
	cmk := kektest.New("cmk")
	clk := &clock{now: time.Unix(1e9, 0)}
	var events []EventKind
	cfg := noProbe(Config{Encryption: CustomerManaged(cmk), RevocationGrace: 5 * time.Minute,
		OnEvent: func(e Event) { events = append(events, e.Kind) }})
	cfg.now = clk.Now
	i := open(t, t.TempDir(), cfg)
	before := fileKeys(t, i)

	cmk.FailWith(kek.ErrUnavailable)
	require.ErrorIs(t, i.Probe(ctx), kek.ErrUnavailable)
	clk.Add(4 * time.Minute)
	require.Error(t, i.Probe(ctx))
	require.Equal(t, before, fileKeys(t, i), "transient failure inside the grace period keeps serving")

	cmk.FailWith(kek.ErrRevoked)
	clk.Add(2 * time.Minute)
	require.ErrorIs(t, i.Probe(ctx), kek.ErrRevoked)
	r, _ := i.Keyring(DiskPersistence)
	_, err := r.FileKey(1, "rdb", salt)
	require.ErrorIs(t, err, ErrRevoked, "failed closed: keys zeroed")
	require.ErrorIs(t, i.RotateDEK(), ErrRevoked)
	require.Error(t, i.Status()[0].Err)

	cmk.FailWith(nil)
	require.NoError(t, i.Probe(ctx))
	require.Equal(t, before, fileKeys(t, i), "access returned: nothing lost")
	require.Contains(t, events, EventRevoked)
	require.Contains(t, events, EventRestored)
}

func TestProbeLoopRuns(t *testing.T) {
	cmk := kektest.New("cmk")
	i := open(t, t.TempDir(), Config{Encryption: CustomerManaged(cmk), ProbeInterval: 10 * time.Millisecond})
	require.Eventually(t, func() bool { return cmk.Unwraps() > 4 }, 5*time.Second, 5*time.Millisecond)
	require.NoError(t, i.Close())
}

// TestSwitchCrashAtEveryStep kills a child process (SIGKILL) at each step of
// a switch from the MMK to a second, file-backed key, then reopens the
// instance once with the old setting and once with the new: both converge,
// and the data keys are unchanged.
func TestSwitchCrashAtEveryStep(t *testing.T) {
	if os.Getenv("CACHECRYPT_CRASH_CHILD") != "" {
		crashChild(t)
		return
	}
	for step := 1; step <= 3; step++ {
		for _, reopenWith := range []string{"old", "new"} {
			t.Run(fmt.Sprintf("step%d-%s", step, reopenWith), func(t *testing.T) {
				dir := t.TempDir()
				second := filepath.Join(t.TempDir(), "second.key")
				i := open(t, dir, noProbe(Config{}))
				before := fileKeys(t, i)
				i.Close()

				cmd := exec.Command(os.Args[0], "-test.run=^TestSwitchCrashAtEveryStep$")
				cmd.Env = append(os.Environ(), "CACHECRYPT_CRASH_CHILD=1", "CRASH_DIR="+dir,
					"CRASH_KEY="+second, "CRASH_STEP="+strconv.Itoa(step))
				out, err := cmd.CombinedOutput()
				require.Error(t, err, "child must die by SIGKILL: %s", out)
				require.Contains(t, err.Error(), "killed", "%s", out)

				cfg := noProbe(Config{})
				cmk, err := kek.LoadMMK(second)
				require.NoError(t, err)
				if reopenWith == "new" {
					cfg.Encryption = CustomerManaged(cmk)
				} else {
					cfg.Previous = []kek.Unwrapper{cmk}
				}
				again := open(t, dir, cfg)
				require.Equal(t, before, fileKeys(t, again))
				want := "mmk/mmk/"
				if reopenWith == "new" {
					want = "mmk/second/"
				}
				for _, r := range again.Status() {
					require.Contains(t, r.KEK.KeyID, want, "every disk converged")
				}
			})
		}
	}
}

func crashChild(t *testing.T) {
	step, _ := strconv.Atoi(os.Getenv("CRASH_STEP"))
	cmk, err := kek.LoadMMK(os.Getenv("CRASH_KEY"))
	require.NoError(t, err)
	n := 0
	cfg := noProbe(Config{})
	cfg.stepHook = func(string) {
		n++
		if n == step {
			p, _ := os.FindProcess(os.Getpid())
			p.Kill()
			time.Sleep(time.Hour)
		}
	}
	i, err := Open(context.Background(), os.Getenv("CRASH_DIR"), cfg)
	require.NoError(t, err)
	require.NoError(t, i.SetEncryption(context.Background(), CustomerManaged(cmk)))
	i.step("done")
	time.Sleep(time.Hour)
}

func TestFlashTierSpillsToEncryptedNVMe(t *testing.T) {
	dir := t.TempDir()
	i := open(t, dir, noProbe(Config{Tier: FlashOptimized, Flash: nvme.Options{Pages: 64}}))
	sp := nvme.NewSpill(i.Flash())
	require.NoError(t, sp.Put("cold:1", []byte("a cold value")))
	got, err := sp.Get("cold:1")
	require.NoError(t, err)
	require.Equal(t, []byte("a cold value"), got)
	raw, err := os.ReadFile(filepath.Join(dir, DiskNVMe, "pages"))
	require.NoError(t, err)
	require.NotContains(t, string(raw), "a cold value")
	i.Close()

	// A restart: the page key died with the instance.
	again := open(t, dir, noProbe(Config{Tier: FlashOptimized, Flash: nvme.Options{Pages: 64}}))
	err = again.Flash().ReadPage(0, make([]byte, again.Flash().PageSize()))
	require.ErrorIs(t, err, nvme.ErrNotWritten)
}

func TestFlashRefusesCMK(t *testing.T) {
	_, err := Open(context.Background(), t.TempDir(), noProbe(Config{Tier: FlashOptimized,
		Flash: nvme.Options{Pages: 16, KEK: kektest.New("cmk")}}))
	require.ErrorIs(t, err, ErrUnsupported)
	require.ErrorContains(t, err, "ephemeral")

	i := open(t, t.TempDir(), noProbe(Config{Tier: Balanced}))
	require.Nil(t, i.Flash(), "no NVMe disk outside the Flash tier")
}
