package stream

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"io"
	"sync"
	"sync/atomic"
)

// newAEAD derives the stream's key and builds its AES-256-GCM, clearing the
// key bytes once the cipher holds them.
func newAEAD(keys Keys, h Header) (cipher.AEAD, error) {
	key, err := keys.FileKey(h.DEKVersion, h.Purpose, h.Salt[:])
	if err != nil {
		return nil, err
	}
	defer clear(key)
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// unit is one segment to seal or open. Its nonce lives here, not on the
// stack, so passing it to the AEAD interface allocates nothing.
type unit struct {
	nonce [12]byte
	src   []byte // plaintext to seal, or ciphertext to open
	dst   []byte // output; len 0, capacity for the result
	off   int64  // open: where src is read from, when the task has a source
	ok    bool   // open: authenticated
	err   error  // open: reading src failed
}

// setNonce writes the STREAM nonce: 7 zero bytes, the index (u32 BE) and
// the last-segment flag.
func (u *unit) setNonce(index uint32, last bool) {
	binary.BigEndian.PutUint32(u.nonce[7:11], index)
	u.nonce[11] = 0
	if last {
		u.nonce[11] = 1
	}
}

// crypter seals or opens batches of units on the calling goroutine helped
// by up to conc-1 pool goroutines, without any goroutine waiting by
// spinning.
//
// A batch is cut into one contiguous share per participant, each share
// with its own claim word on its own cache lines. A participant claims the
// units of its own share one at a time, then steals what is left of the
// others' shares, so a helper that the scheduler starts late costs nothing:
// the caller and the other helpers have taken its units meanwhile. Claims
// therefore touch a shared cache line only while stealing, at the end of a
// batch, and a participant adds the count of units it finished to the
// batch's done counter once, when it runs out of work there. The helper
// whose addition completes a batch signals the batch's channel.
//
// Batches are pipelined when the caller has the next one ready (a Writer
// given a large p): there are two slots, and the caller publishes batch
// b+1 before it waits for batch b. Helpers work on the older published
// batch first, then the newer, and sleep on the pool's channel only when
// neither has a unit left to claim; the caller, once batch b has no unit
// left to claim, processes units of b+1 one at a time until b's last
// in-flight units are done (a load of b's done counter between units, not
// a spin: the caller does real work meanwhile), writes b out and publishes
// b+2. So within a large write no helper is put to sleep and woken again
// between batches, and no core idles through a batch's tail; only the end
// of a write waits, blocked on a channel.
//
// The pool's goroutines are shared by every stream of the process, so a
// Reader needs no Close and nothing is started per batch.
type crypter struct {
	aead  cipher.AEAD
	ad    []byte
	units []unit // the units of slot cur, to be filled by the caller
	conc  int

	// Batch parameters, written by the caller before a batch is published
	// (the atomic stores of the claim words and of slot.info order them).
	open bool
	src  io.ReaderAt // open: if set, each unit's ciphertext is read first

	slots  [2]slot
	active atomic.Int32 // pool helpers inside help for this crypter
	cur    int          // the slot the caller fills next
	gen    uint64       // generation of the latest batch, owned by the caller
}

// slot holds one batch in flight.
type slot struct {
	units    []unit
	shares   []share       // one per participant
	info     atomic.Uint64 // the batch: gen<<32 | parts<<unitBits | n
	done     atomic.Int64  // units finished, as added by participants
	finished chan struct{} // receives once per batch if a helper completes it

	// Owned by the caller.
	n     int64
	mine  int64 // units the caller processed and has not added to done
	ended bool  // the batch is known to be done (and its signal consumed)
}

// share is one participant's slice of a batch: its claim word alone on a
// cache line (two, against adjacent-line prefetch), so participants
// claiming from their own shares never contend.
type share struct {
	state atomic.Uint64 // gen<<(2*unitBits) | next<<unitBits | end
	_     [120]byte
}

const (
	unitBits = 20 // a batch holds at most 256*1024 units
	unitMask = 1<<unitBits - 1
	// partsMask is for a batch's participant count in slot.info.
	partsMask = 1<<11 - 1
	genMask   = 1<<(64-2*unitBits) - 1
)

// claim takes the next unit of the share for batch gen, if one is left.
func (s *share) claim(gen uint64) (int, bool) {
	for {
		v := s.state.Load()
		next, end := v>>unitBits&unitMask, v&unitMask
		if v>>(2*unitBits) != gen || next >= end {
			return 0, false
		}
		if s.state.CompareAndSwap(v, v+1<<unitBits) {
			return int(next), true
		}
	}
}

func newCrypter(aead cipher.AEAD, ad []byte, batch, conc int) *crypter {
	c := &crypter{aead: aead, ad: ad, conc: conc}
	nslots := 1
	if conc > 1 {
		nslots = 2
		startWorkers(conc - 1)
	}
	for i := range nslots {
		sl := &c.slots[i]
		sl.units = make([]unit, batch)
		sl.ended = true
		if conc > 1 {
			sl.shares = make([]share, min(conc, batch))
			sl.finished = make(chan struct{}, 1)
		}
	}
	c.units = c.slots[0].units
	return c
}

// parallel reports whether a batch of n units is worth handing out.
func (c *crypter) parallel(n int) bool { return min(c.conc, n) > 1 }

// do seals or opens c.units[:n] and returns when all are done; src, if not
// nil, is where the units' ciphertexts are read from first. Nothing else
// may be in flight.
func (c *crypter) do(n int, open bool, src io.ReaderAt) {
	c.open, c.src = open, src
	if !c.parallel(n) {
		c.inline(n)
		return
	}
	s := c.cur
	c.publish(n)
	c.finish(s)
	c.cur, c.units = s, c.slots[s].units // the caller reads the results here
}

// inline processes c.units[:n] on the calling goroutine.
func (c *crypter) inline(n int) {
	for i := range n {
		c.process(&c.units[i])
	}
}

// publish hands c.units[:n] (slot cur) out as a new batch, wakes helpers
// for it, and makes the other slot current. The batch in the other slot,
// if any, must be finished.
func (c *crypter) publish(n int) {
	sl := &c.slots[c.cur]
	parts := min(c.conc, n, len(sl.shares))
	c.gen = (c.gen + 1) & genMask
	sl.done.Store(0)
	sl.n, sl.mine, sl.ended = int64(n), 0, false
	for p := range parts {
		lo, hi := uint64(p*n/parts), uint64((p+1)*n/parts)
		sl.shares[p].state.Store(c.gen<<(2*unitBits) | lo<<unitBits | hi)
	}
	sl.info.Store(c.gen<<32 | uint64(parts)<<unitBits | uint64(n))
	// Helpers still at work on the other batch move on to this one by
	// themselves: wake pool goroutines only for the rest.
	for p := 1; p < parts-int(c.active.Load()); p++ {
		select {
		case work <- job{c, p}:
		default: // every pool goroutine is busy: the others steal this share
		}
	}
	if c.slots[1].units != nil {
		c.cur ^= 1
	}
	c.units = c.slots[c.cur].units
}

// finish takes part in the batch in slot s until it is done: it claims
// what is left of it, then (while helpers finish their last units of it)
// units of the batch in the other slot if one is published, and blocks
// only when there is nothing left to claim.
func (c *crypter) finish(s int) {
	sl := &c.slots[s]
	if sl.ended {
		return
	}
	sl.mine += c.runAll(sl, 0)
	c.add(sl, sl.mine)
	other := &c.slots[s^1]
	for !sl.ended && sl.done.Load() < sl.n && !other.ended && other.shares != nil {
		if !c.runOne(other) {
			break
		}
		other.mine++
	}
	if !sl.ended {
		<-sl.finished
		sl.ended = true
	}
}

// add adds k units the caller processed in sl to its done counter; if that
// completes the batch, no helper will signal it.
func (c *crypter) add(sl *slot, k int64) {
	sl.mine = 0
	if k > 0 && sl.done.Add(k) == sl.n {
		sl.ended = true
	}
}

// runAll processes units of the caller's batch in sl until none is left
// to claim, starting with share own, and returns how many it processed.
func (c *crypter) runAll(sl *slot, own int) int64 {
	info := sl.info.Load()
	return c.run(sl, info>>32, own, int(info>>unitBits&partsMask))
}

// run processes units of batch gen in sl until none is left to claim,
// share own first, then the others' in turn, and returns how many it
// processed.
func (c *crypter) run(sl *slot, gen uint64, own, parts int) int64 {
	var k int64
	for i := range parts {
		s := &sl.shares[(own+i)%parts]
		for {
			u, ok := s.claim(gen)
			if !ok {
				break
			}
			c.process(&sl.units[u])
			k++
		}
	}
	return k
}

// runOne processes one unit of the caller's batch in sl, if one is left
// to claim.
func (c *crypter) runOne(sl *slot) bool {
	info := sl.info.Load()
	gen, parts := info>>32, int(info>>unitBits&partsMask)
	for i := range parts {
		if u, ok := sl.shares[i].claim(gen); ok {
			c.process(&sl.units[u])
			return true
		}
	}
	return false
}

// help is a pool goroutine's part in the crypter's batches: it works on
// the older published batch, then the newer, and again, until neither has
// a unit left to claim. One that arrives after its batch is over finds
// nothing to claim and touches nothing.
func (c *crypter) help(home int) {
	c.active.Add(1)
	for {
		for c.helpOnce(home) {
		}
		c.active.Add(-1)
		// A batch published while this helper still counted as active
		// woke nobody for it: look once more before leaving.
		if !c.claimable() {
			return
		}
		c.active.Add(1)
	}
}

// helpOnce works on the older published batch, then the newer, until
// neither has a unit left to claim, and reports whether it processed any.
func (c *crypter) helpOnce(home int) bool {
	a, b := &c.slots[0], &c.slots[1]
	if b.info.Load()>>32 == (a.info.Load()>>32-1)&genMask {
		a, b = b, a // b is older
	}
	return c.helpIn(a, home) || c.helpIn(b, home)
}

// claimable reports whether a published batch has a unit left to claim.
func (c *crypter) claimable() bool {
	for i := range c.slots {
		sl := &c.slots[i]
		info := sl.info.Load()
		gen, parts := info>>32, int(info>>unitBits&partsMask)
		for p := range parts {
			v := sl.shares[p].state.Load()
			if v>>(2*unitBits) == gen && v>>unitBits&unitMask < v&unitMask {
				return true
			}
		}
	}
	return false
}

// helpIn is help in one slot. It reports whether it processed a unit.
func (c *crypter) helpIn(sl *slot, home int) bool {
	info := sl.info.Load()
	parts, n := int(info>>unitBits&partsMask), int64(info&unitMask)
	if parts == 0 {
		return false
	}
	k := c.run(sl, info>>32, home%parts, parts)
	if k > 0 && sl.done.Add(k) == n {
		sl.finished <- struct{}{}
	}
	return k > 0
}

// process seals or opens unit i. When opening from a source, the segment
// is read just before it is opened, in parallel with the other units, and
// is still in cache when decrypted.
func (c *crypter) process(u *unit) {
	if c.src != nil {
		u.ok, u.err = false, nil
		if n, err := c.src.ReadAt(u.src, u.off); n < len(u.src) {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			u.err = err
			return
		}
	}
	if !c.open {
		c.aead.Seal(u.dst, u.nonce[:], u.src, c.ad)
		return
	}
	_, err := c.aead.Open(u.dst, u.nonce[:], u.src, c.ad)
	u.ok = err == nil
	if !u.ok {
		clear(u.dst[:cap(u.dst)])
	}
}

type job struct {
	c    *crypter
	home int // the share a helper starts with
}

var (
	work        = make(chan job, 256)
	workersMu   sync.Mutex
	workerCount int
)

// startWorkers makes sure at least n pool goroutines run. They live for the
// life of the process, idle on a channel when no stream is working.
func startWorkers(n int) {
	workersMu.Lock()
	defer workersMu.Unlock()
	for ; workerCount < n; workerCount++ {
		go func() {
			for j := range work {
				j.c.help(j.home)
			}
		}()
	}
}
