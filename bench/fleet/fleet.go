// Package fleet simulates a fleet of cache nodes restarting at once against
// one Azure Key Vault that throttles RSA operations, to show how long it
// takes until every disk is open, how many KEK calls and 429s that costs,
// and how many nodes one vault can serve within a restart budget.
//
// Every simulated disk opens a real keyring with dek.Open; only the KEK is
// simulated: its Unwrap goes through a model of the vault's throttling
// (Limits) and of the client's retry policy (Policy) on a virtual clock
// (Clock), so ten thousand nodes simulate in seconds. bench/README.md
// ("Fleet simulation") states the model and the limits assumed.
package fleet

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"time"

	"github.com/cachecrypt/cachecrypt/dek"
	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/cachecrypt/cachecrypt/kek/kektest"
)

// Policy is how a client retries after a 429.
type Policy string

// Retry policies.
const (
	// RetryAfter waits exactly the Retry-After the vault sent: what the
	// Azure SDK's retry policy does (no jitter), so every throttled node
	// comes back in the same second.
	RetryAfter Policy = "retry-after"
	// FullJitter ignores Retry-After and sleeps a uniformly random time in
	// [0, min(Cap, Base·2^attempt)] (exponential backoff, "full jitter").
	FullJitter Policy = "full-jitter"
	// RetryAfterJitter waits the Retry-After plus a full-jitter delay: it
	// honours the vault and spreads the retries.
	RetryAfterJitter Policy = "retry-after+jitter"
)

// Policies lists every policy, for flags and reports.
var Policies = []Policy{RetryAfter, FullJitter, RetryAfterJitter}

// Config is one simulation.
type Config struct {
	Nodes        int           // cache nodes restarting
	DisksPerNode int           // customer-managed keyrings each node opens (one Unwrap each)
	Spread       time.Duration // node start times uniform in [0, Spread); 0: all at once
	Vault        Limits
	Policy       Policy
	Base, Cap    time.Duration // exponential backoff: first ceiling and largest ceiling
	Deadline     time.Duration // a disk still closed at this virtual time counts as failed
	Seed         uint64
}

// DefaultConfig is a restart of nodes at once with two CMK keyrings each
// (persistence disk, OS disk; the NVMe flash is MMK only and never calls
// the vault) against an RSA-HSM 2048 key with today's documented limit.
func DefaultConfig(nodes int) Config {
	return Config{
		Nodes:        nodes,
		DisksPerNode: 2,
		Vault:        Limits{Name: "RSA-HSM 2048", Ops: 2000, Window: 10 * time.Second, Latency: 30 * time.Millisecond, RejectLatency: 10 * time.Millisecond},
		Policy:       RetryAfterJitter,
		Base:         time.Second,
		Cap:          32 * time.Second,
		Deadline:     time.Hour,
		Seed:         1,
	}
}

// Result is what one simulation measured. Times are virtual.
type Result struct {
	Config
	AllOpen        time.Duration // from the first start until the last disk opened (Deadline if some never did)
	NodeP50        time.Duration // median restart of a node: from its start until every disk of it is open
	NodeP99        time.Duration
	WithinBudget   int   // nodes whose restart took at most the budget passed to Run
	Failed         int   // disks still closed at Deadline
	KEKCalls       int64 // Unwrap calls made by dek.Open (keyring opens)
	Requests       int64 // requests the vault received, 429s included
	Throttled      int64 // 429 answers
	Wall           time.Duration
	KEKCallsPerKey float64 // KEKCalls / disks: 1 when every keyring open costs one Unwrap
}

// RequestsPerNode is the vault requests (429s included) per node.
func (r Result) RequestsPerNode() float64 { return float64(r.Requests) / float64(r.Nodes) }

// KEKCallsPerNode is the Unwrap calls per node.
func (r Result) KEKCallsPerNode() float64 { return float64(r.KEKCalls) / float64(r.Nodes) }

// Validate reports a configuration that cannot be simulated.
func (c Config) Validate() error {
	switch {
	case c.Nodes < 1 || c.DisksPerNode < 1:
		return fmt.Errorf("fleet: need at least one node and one disk per node, got %d nodes, %d disks", c.Nodes, c.DisksPerNode)
	case c.Vault.Ops < 1 || c.Vault.Window <= 0:
		return fmt.Errorf("fleet: vault limit %d operations per %s: both must be positive", c.Vault.Ops, c.Vault.Window)
	case !slices.Contains(Policies, c.Policy):
		return fmt.Errorf("fleet: unknown policy %q; use one of %v", c.Policy, Policies)
	case c.Base <= 0 || c.Cap < c.Base || c.Deadline <= 0:
		return fmt.Errorf("fleet: backoff base %s, cap %s, deadline %s: want 0 < base <= cap and a positive deadline", c.Base, c.Cap, c.Deadline)
	}
	return nil
}

// Keyrings creates one keyring file per disk of a node under dir, wrapped
// by k; every simulated node opens these same files (dek.Open only reads).
func Keyrings(ctx context.Context, dir string, disks int, k kek.Wrapper) ([]string, error) {
	paths := make([]string, disks)
	for i := range paths {
		paths[i] = filepath.Join(dir, fmt.Sprintf("disk%d.keyring", i))
		kr, err := dek.Create(ctx, paths[i], fmt.Sprintf("disk%d", i), k)
		if err != nil {
			return nil, fmt.Errorf("fleet.Keyrings: %w", err)
		}
		kr.Close()
	}
	return paths, nil
}

// A Fleet holds the keyrings and the vault's key that simulations open.
type Fleet struct {
	key   *kektest.KEK
	paths []string
	dir   string
}

// New creates keyrings for disks disks per node in a temporary directory.
// Close removes them.
func New(ctx context.Context, disks int) (*Fleet, error) {
	dir, err := os.MkdirTemp("", "cachecrypt-fleet-")
	if err != nil {
		return nil, fmt.Errorf("fleet.New: %w", err)
	}
	key := kektest.New("vault-key")
	paths, err := Keyrings(ctx, dir, disks, key)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return &Fleet{key: key, paths: paths, dir: dir}, nil
}

// Close removes the keyring files.
func (f *Fleet) Close() error { return os.RemoveAll(f.dir) }

// Run simulates one restart of the whole fleet. budget is the restart
// budget WithinBudget counts against. cfg.DisksPerNode must not exceed the
// disks the Fleet was created with.
func (f *Fleet) Run(ctx context.Context, cfg Config, budget time.Duration) (Result, error) {
	if err := cfg.Validate(); err != nil {
		return Result{}, err
	}
	if cfg.DisksPerNode > len(f.paths) {
		return Result{}, fmt.Errorf("fleet.Run: %d disks per node, but the fleet has %d keyrings", cfg.DisksPerNode, len(f.paths))
	}
	start := time.Now()
	s := &sim{cfg: cfg, clock: NewClock(), vault: newVault(cfg.Vault), inner: f.key}
	opened := make([]time.Duration, cfg.Nodes*cfg.DisksPerNode) // virtual time each disk opened, -1: never
	starts := make([]time.Duration, cfg.Nodes)
	var firstErr atomic.Pointer[error]
	for n := range cfg.Nodes {
		delay := time.Duration(0)
		if cfg.Spread > 0 {
			delay = time.Duration(rand.New(rand.NewPCG(cfg.Seed, uint64(n)<<1)).Int64N(int64(cfg.Spread))) // even streams: start times
		}
		starts[n] = delay
		for d := range cfg.DisksPerNode {
			i := n*cfg.DisksPerNode + d
			u := &throttledKEK{sim: s, rng: rand.New(rand.NewPCG(cfg.Seed, uint64(i)<<1|1))} // odd streams: jitter
			s.clock.Go(func() {
				s.clock.Sleep(delay)
				kr, err := dek.Open(ctx, f.paths[d], u)
				if err != nil {
					opened[i] = -1
					if !errors.Is(err, kek.ErrUnavailable) {
						firstErr.CompareAndSwap(nil, &err)
					}
					return
				}
				kr.Close()
				opened[i] = s.clock.Now()
			})
		}
	}
	s.clock.Wait()
	if p := firstErr.Load(); p != nil {
		return Result{}, fmt.Errorf("fleet.Run: %w", *p)
	}
	res := Result{Config: cfg, KEKCalls: s.kekCalls.Load(), Requests: s.requests.Load(), Throttled: s.throttled.Load(), Wall: time.Since(start)}
	res.KEKCallsPerKey = float64(res.KEKCalls) / float64(len(opened))
	// ready: from a node's start until every disk of it is open; Deadline
	// if one never opened.
	ready := make([]time.Duration, cfg.Nodes)
	failed := make([]bool, cfg.Nodes)
	for i, t := range opened {
		n := i / cfg.DisksPerNode
		if t < 0 {
			res.Failed++
			failed[n] = true
			t = cfg.Deadline
		}
		res.AllOpen = max(res.AllOpen, t)
		ready[n] = max(ready[n], t-starts[n])
	}
	for n, t := range ready {
		if t <= budget && !failed[n] {
			res.WithinBudget++
		}
	}
	slices.Sort(ready)
	res.NodeP50 = ready[len(ready)/2]
	res.NodeP99 = ready[(len(ready)*99)/100]
	return res, nil
}

// sim is the shared state of one simulation.
type sim struct {
	cfg                           Config
	clock                         *Clock
	vault                         *vault
	inner                         kek.Unwrapper
	kekCalls, requests, throttled atomic.Int64
}

// throttledKEK is the Unwrapper one disk's dek.Open sees: every attempt is
// a vault request that may be throttled, and retries follow the policy.
// One per disk, so its random source needs no lock.
type throttledKEK struct {
	sim *sim
	rng *rand.Rand
}

func (t *throttledKEK) Unwrap(ctx context.Context, w kek.Wrapped) ([]byte, error) {
	s := t.sim
	s.kekCalls.Add(1)
	for attempt := 0; ; attempt++ {
		s.requests.Add(1)
		ok, retryAfter := s.vault.try(s.clock.Now())
		if ok {
			s.clock.Sleep(s.cfg.Vault.Latency)
			return s.inner.Unwrap(ctx, w)
		}
		s.throttled.Add(1)
		s.clock.Sleep(s.cfg.Vault.RejectLatency + t.backoff(attempt, retryAfter))
		if s.clock.Now() >= s.cfg.Deadline {
			return nil, fmt.Errorf("fleet: vault still throttling after %d attempts: %w", attempt+1, kek.ErrUnavailable)
		}
	}
}

// backoff is the wait before the next attempt after a 429.
func (t *throttledKEK) backoff(attempt int, retryAfter time.Duration) time.Duration {
	cfg := t.sim.cfg
	ceiling := cfg.Cap
	if attempt < 30 && cfg.Base<<attempt < cfg.Cap {
		ceiling = cfg.Base << attempt
	}
	jitter := time.Duration(t.rng.Int64N(int64(ceiling) + 1))
	switch cfg.Policy {
	case FullJitter:
		return jitter
	case RetryAfterJitter:
		return retryAfter + jitter
	}
	return retryAfter
}

// MaxNodes finds, by bisection between 1 and hi nodes, the largest fleet
// whose every node has all its disks open within budget under cfg (its
// Nodes is ignored). It returns hi if hi nodes make it.
func (f *Fleet) MaxNodes(ctx context.Context, cfg Config, budget time.Duration, hi int) (int, error) {
	fits := func(n int) (bool, error) {
		c := cfg
		c.Nodes = n
		r, err := f.Run(ctx, c, budget)
		return err == nil && r.WithinBudget == n, err
	}
	lo := 0 // largest known to fit (0: none)
	for lo < hi {
		mid := lo + (hi-lo+1)/2
		ok, err := fits(mid)
		if err != nil {
			return 0, err
		}
		if ok {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return lo, nil
}

// Capacity is the analytic bound: nodes whose disks one vault can open in
// budget at its sustained rate, if no request were wasted.
func Capacity(lim Limits, disksPerNode int, budget time.Duration) int {
	windows := float64(budget) / float64(lim.Window)
	return int(float64(lim.Ops)*windows) / disksPerNode
}
