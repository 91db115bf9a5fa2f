package fleet

import (
	"sync"
	"time"
)

// Limits is the throttling model of one Key Vault: at most Ops RSA key
// operations (wrapkey, unwrapkey) in any Window (a sliding window); beyond
// it the vault answers 429 Too Many Requests with a Retry-After of the
// whole seconds until a slot frees, as Key Vault sends it.
type Limits struct {
	Name   string        // what the limit stands for, such as "RSA-HSM 2048"
	Ops    int           // operations allowed per Window
	Window time.Duration // 10 s for Key Vault

	Latency       time.Duration // round trip of an accepted operation
	RejectLatency time.Duration // round trip of a 429

	// CountRejected makes 429 answers count against the limit too, as
	// Key Vault's throttling guidance once said (today it says they do
	// not): a client that keeps retrying then keeps the window full.
	CountRejected bool
}

// vault applies Limits on a virtual clock.
type vault struct {
	lim      Limits
	mu       sync.Mutex
	accepted []time.Duration // ring of the last lim.Ops acceptance times
	head     int             // oldest entry once the ring is full
}

func newVault(lim Limits) *vault {
	return &vault{lim: lim, accepted: make([]time.Duration, 0, lim.Ops)}
}

// try admits one operation at now, or returns the Retry-After of a 429.
func (v *vault) try(now time.Duration) (ok bool, retryAfter time.Duration) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.accepted) < v.lim.Ops {
		v.accepted = append(v.accepted, now)
		return true, 0
	}
	oldest := v.accepted[v.head]
	if free := oldest + v.lim.Window; free > now {
		wait := (free - now + time.Second - 1).Truncate(time.Second) // whole seconds, rounded up
		if v.lim.CountRejected {
			v.record(now)
		}
		return false, max(wait, time.Second)
	}
	v.record(now)
	return true, 0
}

// record replaces the oldest entry of the full ring with now.
func (v *vault) record(now time.Duration) {
	v.accepted[v.head] = now
	v.head = (v.head + 1) % len(v.accepted)
}
