package fleet

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestClockSleepsInVirtualTime(t *testing.T) {
	c := NewClock()
	var mu sync.Mutex
	var order []int
	for i, d := range []time.Duration{3 * time.Hour, time.Hour, 2 * time.Hour} {
		c.Go(func() {
			c.Sleep(d)
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			c.Sleep(time.Minute)
		})
	}
	start := time.Now()
	end := c.Wait()
	assert.Less(t, time.Since(start), 5*time.Second, "virtual hours must not take real time")
	assert.Equal(t, 3*time.Hour+time.Minute, end)
	assert.Equal(t, []int{1, 2, 0}, order, "sleepers wake in virtual-time order")
}

func TestClockStandsStillWhileWorking(t *testing.T) {
	c := NewClock()
	var sawNow atomic.Int64
	c.Go(func() { c.Sleep(time.Second) })
	c.Go(func() {
		time.Sleep(50 * time.Millisecond) // real work: the clock must not advance meanwhile
		sawNow.Store(int64(c.Now()))
	})
	c.Wait()
	assert.Equal(t, int64(0), sawNow.Load())
}

func TestClockHoldsUntilWait(t *testing.T) {
	c := NewClock()
	var first atomic.Int64
	c.Go(func() { c.Sleep(time.Second); first.Store(int64(c.Now())) })
	time.Sleep(20 * time.Millisecond) // the first goroutine sleeps before the second starts
	c.Go(func() { c.Sleep(time.Second) })
	assert.Equal(t, time.Second, c.Wait(), "both sleeps started at zero: time must not move before Wait")
	assert.Equal(t, int64(time.Second), first.Load())
}

func TestVaultLimitAndRetryAfter(t *testing.T) {
	v := newVault(Limits{Ops: 3, Window: 10 * time.Second})
	for i := range 3 {
		ok, _ := v.try(time.Duration(i) * time.Second)
		require.True(t, ok, "op %d is within the limit", i)
	}
	ok, ra := v.try(2500 * time.Millisecond)
	require.False(t, ok, "the 4th op inside the window is throttled")
	assert.Equal(t, 8*time.Second, ra, "oldest op (t=0) leaves at 10 s: 7.5 s rounded up to whole seconds")
	ok, _ = v.try(10 * time.Second)
	assert.True(t, ok, "a slot frees when the oldest op leaves the window")
	ok, ra = v.try(10 * time.Second)
	assert.False(t, ok)
	assert.Equal(t, time.Second, ra, "the next slot frees at 11 s")
}

func newFleet(t *testing.T, disks int) *Fleet {
	f, err := New(context.Background(), disks)
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	return f
}

func TestUnderTheLimitNoThrottling(t *testing.T) {
	f := newFleet(t, 3)
	cfg := DefaultConfig(500)
	cfg.DisksPerNode = 3
	r, err := f.Run(context.Background(), cfg, time.Minute)
	require.NoError(t, err)
	assert.Equal(t, int64(1500), r.KEKCalls, "one Unwrap per keyring open")
	assert.Equal(t, 1.0, r.KEKCallsPerKey)
	assert.Equal(t, int64(0), r.Throttled)
	assert.Equal(t, int64(1500), r.Requests)
	assert.Equal(t, cfg.Vault.Latency, r.AllOpen, "1,500 ops fit the 2,000 per 10 s: one round trip")
	assert.Equal(t, 500, r.WithinBudget)
	assert.Zero(t, r.Failed)
}

func TestOverTheLimitEveryPolicy(t *testing.T) {
	f := newFleet(t, 2)
	for _, p := range Policies {
		t.Run(string(p), func(t *testing.T) {
			cfg := DefaultConfig(5000) // 10,000 disks against 2,000 ops per 10 s
			cfg.Policy = p
			r, err := f.Run(context.Background(), cfg, time.Minute)
			require.NoError(t, err)
			assert.Equal(t, int64(10000), r.KEKCalls, "retries happen inside the KEK: still one Unwrap per keyring")
			assert.Positive(t, r.Throttled)
			assert.Equal(t, r.KEKCalls+r.Throttled, r.Requests, "every request is a success or a 429")
			assert.GreaterOrEqual(t, r.AllOpen, 40*time.Second, "10,000 ops need at least four more 10 s windows")
			assert.Zero(t, r.Failed)
			assert.Less(t, r.Wall, 30*time.Second, "the virtual clock keeps the simulation fast")
		})
	}
}

// TestHerdHonouringRetryAfter checks the model against arithmetic: 10,000
// disks at once against 2,000 ops per 10 s, every client waiting exactly
// the Retry-After: 8,000 + 6,000 + 4,000 + 2,000 429s, done in the fifth
// window.
func TestHerdHonouringRetryAfter(t *testing.T) {
	f := newFleet(t, 2)
	cfg := DefaultConfig(5000)
	cfg.Policy = RetryAfter
	r, err := f.Run(context.Background(), cfg, time.Minute)
	require.NoError(t, err)
	assert.Equal(t, int64(20000), r.Throttled)
	assert.Greater(t, r.AllOpen, 40*time.Second)
	assert.Less(t, r.AllOpen, 41*time.Second)
}

// TestIgnoringRetryAfterStarvesWhen429sCount: when 429s count against the
// limit (the vault's older guidance), clients that retry on their own
// schedule keep the window full; honouring Retry-After does not.
func TestIgnoringRetryAfterStarvesWhen429sCount(t *testing.T) {
	f := newFleet(t, 2)
	cfg := DefaultConfig(3000)
	cfg.Vault.CountRejected = true
	cfg.Deadline = 10 * time.Minute
	honour, err := f.Run(context.Background(), cfg, time.Minute)
	require.NoError(t, err)
	assert.Zero(t, honour.Failed)
	assert.Equal(t, 3000, honour.WithinBudget)

	cfg.Policy = FullJitter
	ignore, err := f.Run(context.Background(), cfg, time.Minute)
	require.NoError(t, err)
	assert.Greater(t, ignore.Throttled, 10*honour.Throttled)
	assert.Less(t, ignore.WithinBudget, honour.WithinBudget)
}

func TestMaxNodesNearCapacity(t *testing.T) {
	f := newFleet(t, 2)
	cfg := DefaultConfig(0)
	cfg.Vault.Ops = 100 // small vault: quick bisection
	budget := time.Minute
	bound := Capacity(cfg.Vault, 2, budget)
	require.Equal(t, 300, bound)
	n, err := f.MaxNodes(context.Background(), cfg, budget, 2*bound)
	require.NoError(t, err)
	assert.LessOrEqual(t, n, bound, "no policy beats the vault's sustained rate")
	assert.GreaterOrEqual(t, n, bound/2, "retry-after+jitter should use at least half of it")
}

// TestSpreadStartsCountFromEachNode: a node's restart time runs from its
// own start, and spreading starts under the limit avoids every 429.
func TestSpreadStartsCountFromEachNode(t *testing.T) {
	f := newFleet(t, 2)
	cfg := DefaultConfig(3000) // 6,000 disks: three windows' worth
	cfg.Spread = 40 * time.Second
	r, err := f.Run(context.Background(), cfg, time.Second)
	require.NoError(t, err)
	assert.Greater(t, r.AllOpen, 30*time.Second, "the last node starts late")
	assert.Less(t, r.Throttled, int64(600), "150 disks per second against 200 per second: few 429s")
	assert.Greater(t, r.WithinBudget, 2500, "most nodes open within a second of their own start")
}

func TestReproducible(t *testing.T) {
	f := newFleet(t, 2)
	cfg := DefaultConfig(4000)
	cfg.Policy = RetryAfterJitter
	a, err := f.Run(context.Background(), cfg, time.Minute)
	require.NoError(t, err)
	b, err := f.Run(context.Background(), cfg, time.Minute)
	require.NoError(t, err)
	a.Wall, b.Wall = 0, 0
	assert.Equal(t, a, b, "same seed, same result")
	cfg.Seed++
	c, err := f.Run(context.Background(), cfg, time.Minute)
	require.NoError(t, err)
	assert.NotEqual(t, a.NodeP50, c.NodeP50, "another seed draws other jitter")
}

func TestValidate(t *testing.T) {
	f := newFleet(t, 1)
	for name, mutate := range map[string]func(*Config){
		"no nodes":       func(c *Config) { c.Nodes = 0 },
		"too many disks": func(c *Config) { c.DisksPerNode = 2 },
		"bad policy":     func(c *Config) { c.Policy = "hope" },
		"no limit":       func(c *Config) { c.Vault.Ops = 0 },
		"cap < base":     func(c *Config) { c.Cap = time.Millisecond },
	} {
		cfg := DefaultConfig(1)
		cfg.DisksPerNode = 1
		mutate(&cfg)
		_, err := f.Run(context.Background(), cfg, time.Minute)
		assert.Error(t, err, name)
	}
}
