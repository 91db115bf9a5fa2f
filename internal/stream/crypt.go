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
// by up to conc-1 pool goroutines, and blocks, never spins, while it waits.
//
// A batch is cut into one contiguous share per participant, each share
// with its own claim word on its own cache line. A participant claims the
// units of its own share one at a time, then steals what is left of the
// others' shares, so a helper that the scheduler starts late costs nothing:
// the caller and the other helpers have taken its units meanwhile. Claims
// therefore touch a shared cache line only while stealing, at the end of a
// batch, and a participant adds the count of units it finished to the
// batch's done counter once, when it runs out of work. The participant
// whose addition completes the batch wakes the caller, which blocks on a
// channel for the tail (at most one unit per helper in flight); a helper
// with nothing left goes back to sleep on the pool's channel. Nothing
// waits by spinning, so a stream never costs more CPU than the sealing it
// does plus a few wake-ups per batch.
//
// The pool's goroutines are shared by every stream of the process, so a
// Reader needs no Close and nothing is started per batch.
type crypter struct {
	aead  cipher.AEAD
	ad    []byte
	units []unit // one per segment of a batch
	conc  int

	// Batch parameters, written by the caller before the shares are
	// published (the atomic stores of their claim words order them).
	open bool
	src  io.ReaderAt // open: if set, each unit's ciphertext is read first

	gen      uint64        // batch generation, owned by the caller
	shares   []share       // one per participant of the batch
	done     atomic.Int64  // units finished in this batch
	finished chan struct{} // receives once per batch when a helper completes it
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
	genMask  = 1<<(64-2*unitBits) - 1
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
	c := &crypter{aead: aead, ad: ad, units: make([]unit, batch), conc: conc}
	if conc > 1 {
		c.shares = make([]share, min(conc, batch))
		c.finished = make(chan struct{}, 1)
		startWorkers(conc - 1)
	}
	return c
}

// do seals or opens c.units[:n] and returns when all are done; src, if not
// nil, is where the units' ciphertexts are read from first.
func (c *crypter) do(n int, open bool, src io.ReaderAt) {
	c.open, c.src = open, src
	parts := min(c.conc, n, len(c.shares))
	if parts <= 1 {
		for i := range n {
			c.process(i)
		}
		return
	}
	c.gen = (c.gen + 1) & genMask
	c.done.Store(0)
	for p := range parts {
		lo, hi := uint64(p*n/parts), uint64((p+1)*n/parts)
		c.shares[p].state.Store(c.gen<<(2*unitBits) | lo<<unitBits | hi)
	}
	for p := 1; p < parts; p++ {
		select {
		case work <- job{c, c.gen, n, p, parts}:
		default: // every pool goroutine is busy: the others steal this share
		}
	}
	if k := c.run(c.gen, 0, parts); k > 0 && c.done.Add(k) == int64(n) {
		return // the caller finished the batch: no helper will signal
	}
	<-c.finished
}

// run processes units of batch gen, its own share first, then the others'
// in turn, until none is left to claim, and returns how many it processed.
func (c *crypter) run(gen uint64, own, parts int) int64 {
	var k int64
	for i := range parts {
		s := &c.shares[(own+i)%parts]
		for {
			u, ok := s.claim(gen)
			if !ok {
				break
			}
			c.process(u)
			k++
		}
	}
	return k
}

// help is a pool goroutine's part in batch j.gen. One that arrives after
// the batch is over finds nothing to claim and touches nothing.
func (c *crypter) help(j job) {
	k := c.run(j.gen, j.share, j.parts)
	if k > 0 && c.done.Add(k) == int64(j.n) {
		c.finished <- struct{}{}
	}
}

// process seals or opens unit i. When opening from a source, the segment
// is read just before it is opened, in parallel with the other units, and
// is still in cache when decrypted.
func (c *crypter) process(i int) {
	u := &c.units[i]
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
	c     *crypter
	gen   uint64
	n     int // units in the batch
	share int // the share to start with
	parts int // shares in the batch
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
				j.c.help(j)
			}
		}()
	}
}
