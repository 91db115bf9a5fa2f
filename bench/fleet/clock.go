package fleet

import (
	"container/heap"
	"sync"
	"time"
)

// Clock is a virtual clock for goroutines: it runs them one at a time, time
// stands still while one is working, and jumps to the next wake-up as soon
// as every one of them sleeps. A simulated minute of retries then costs only
// the CPU time of the work done in it. Start goroutines with Go, wait with
// Sleep, and call Wait once to let them run to completion: until then time
// stands still, so goroutines started early cannot run ahead of the ones
// started late.
//
// Every goroutine that calls Sleep must have been started with Go; a
// goroutine blocking on anything but Sleep or real work (a channel another
// sleeper would fill) deadlocks the clock.
type Clock struct {
	mu      sync.Mutex
	now     time.Duration
	active  int // goroutines started with Go that are not sleeping, plus 1 until Wait
	seq     uint64
	sleeper sleepers
	idle    chan struct{} // closed when no goroutine is left
}

// NewClock returns a clock at virtual time zero.
func NewClock() *Clock { return &Clock{idle: make(chan struct{}), active: 1} }

// Now returns the virtual time since the clock started.
func (c *Clock) Now() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Go runs f in a goroutine that the clock waits for. The goroutine starts
// when the clock schedules it, after those started before it.
func (c *Clock) Go(f func()) {
	ch := make(chan struct{})
	c.mu.Lock()
	c.push(c.now, ch)
	c.mu.Unlock()
	go func() {
		<-ch
		defer c.exit()
		f()
	}()
}

// push queues a wake-up at at; the caller holds c.mu.
func (c *Clock) push(at time.Duration, wake chan struct{}) {
	heap.Push(&c.sleeper, sleeper{at: at, seq: c.seq, wake: wake})
	c.seq++
}

// Sleep blocks the calling goroutine for d of virtual time.
func (c *Clock) Sleep(d time.Duration) {
	ch := make(chan struct{})
	c.mu.Lock()
	c.push(c.now+max(d, 0), ch)
	c.active--
	c.advance()
	c.mu.Unlock()
	<-ch
}

// Wait lets virtual time run, blocks until every goroutine started with Go
// has returned, and returns the virtual time then. Call it once.
func (c *Clock) Wait() time.Duration {
	c.mu.Lock()
	c.active-- // the creator's hold
	c.advance()
	c.mu.Unlock()
	<-c.idle
	return c.Now()
}

func (c *Clock) exit() {
	c.mu.Lock()
	c.active--
	c.advance()
	c.mu.Unlock()
}

// advance wakes the next goroutine once nobody is active: the earliest
// wake-up, first queued first, moving time to it. Goroutines run one at a
// time, so a simulation with seeded randomness is reproducible. The caller
// holds c.mu.
func (c *Clock) advance() {
	if c.active > 0 {
		return
	}
	if len(c.sleeper) == 0 {
		select {
		case <-c.idle:
		default:
			close(c.idle)
		}
		return
	}
	s := heap.Pop(&c.sleeper).(sleeper)
	c.now = s.at
	c.active++
	close(s.wake)
}

type sleeper struct {
	at   time.Duration
	seq  uint64
	wake chan struct{}
}

type sleepers []sleeper

func (h sleepers) Len() int { return len(h) }
func (h sleepers) Less(i, j int) bool {
	return h[i].at < h[j].at || h[i].at == h[j].at && h[i].seq < h[j].seq
}
func (h sleepers) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *sleepers) Push(x any)   { *h = append(*h, x.(sleeper)) }
func (h *sleepers) Pop() any {
	old := *h
	s := old[len(old)-1]
	*h = old[:len(old)-1]
	return s
}
