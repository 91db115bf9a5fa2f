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
// by up to conc-1 pool goroutines. Units are claimed one at a time from a
// shared counter, so the caller never waits for a helper to wake up: if a
// helper starts late, the caller has already taken its share, and a helper
// that starts after its batch is over finds nothing to claim and leaves.
//
// The pool's goroutines are shared by every stream of the process, so a
// Reader needs no Close and nothing is started per batch.
type crypter struct {
	aead  cipher.AEAD
	ad    []byte
	units []unit // one per segment of a batch
	conc  int

	// Batch parameters, written by the caller before state is published.
	open bool
	src  io.ReaderAt // open: if set, each unit's ciphertext is read first

	gen      uint64        // batch generation, owned by the caller
	state    atomic.Uint64 // gen<<44 | n<<22 | next
	done     atomic.Int64  // units finished in this batch
	active   atomic.Int32  // pool helpers inside help
	finished chan struct{} // receives once per batch when done reaches n
}

const (
	unitBits = 22
	unitMask = 1<<unitBits - 1
	genMask  = 1<<(64-2*unitBits) - 1
)

func newCrypter(aead cipher.AEAD, ad []byte, batch, conc int) *crypter {
	c := &crypter{aead: aead, ad: ad, units: make([]unit, batch), conc: conc, finished: make(chan struct{}, 1)}
	if conc > 1 {
		startWorkers(conc - 1)
	}
	return c
}

// do seals or opens c.units[:n] and returns when all are done; src, if not
// nil, is where the units' ciphertexts are read from first.
func (c *crypter) do(n int, open bool, src io.ReaderAt) {
	c.open, c.src = open, src
	helpers := min(c.conc, n) - 1
	if helpers <= 0 {
		for i := range n {
			c.process(i)
		}
		return
	}
	c.gen = (c.gen + 1) & genMask
	c.done.Store(0)
	c.state.Store(c.gen<<(2*unitBits) | uint64(n)<<unitBits)
	// Helpers still lingering from the last batch join this one at once;
	// wake pool goroutines only for the rest.
	for range helpers - int(c.active.Load()) {
		select {
		case work <- job{c, c.gen}:
		default: // every pool goroutine is busy: the caller does the work
		}
	}
	c.help(c.gen, false)
	// The tail: at most one unit per helper is still being processed.
	// Spin briefly rather than sleep, so no wake-up latency is paid.
	for i := 0; i < spins && c.done.Load() < int64(n); i++ {
		spin()
	}
	<-c.finished
}

// spins bounds the busy-waiting of the caller for the batch's tail and of a
// helper for the next batch, before they block: some tens of microseconds.
const spins = 1 << 14

// spin waits a moment without yielding the processor. runtime.Gosched
// would put the spinning goroutine on the global run queue, where the other
// processor's scheduler may pick it up: the caller and a helper then take
// turns on one processor while the other sits idle, and the batch runs at
// the speed of one core.
func spin() {
	for range 32 {
		spinSink.Add(0)
	}
}

var spinSink atomic.Int32

// help claims and processes units of batch gen until none is left. A pool
// helper that did some work then lingers briefly for the next batch of the
// same crypter, so a Writer or Reader streaming batch after batch keeps
// its helpers awake instead of waking them through the scheduler each time.
func (c *crypter) help(gen uint64, linger bool) {
	if linger {
		c.active.Add(1)
		defer c.active.Add(-1)
	}
	worked := false
	for idle := 0; ; {
		s := c.state.Load()
		g, n, next := s>>(2*unitBits), s>>unitBits&unitMask, s&unitMask
		if g != gen || next >= n {
			if g != gen && next < n && linger {
				gen = g // a newer batch: join it
				continue
			}
			if !linger || !worked || idle >= spins {
				return
			}
			idle++
			spin()
			continue
		}
		if !c.state.CompareAndSwap(s, s+1) {
			continue
		}
		idle, worked = 0, true
		c.process(int(next))
		if c.done.Add(1) == int64(n) {
			c.finished <- struct{}{}
		}
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
	c   *crypter
	gen uint64
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
				j.c.help(j.gen, true)
			}
		}()
	}
}
