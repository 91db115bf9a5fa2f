package stream

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"io"
	"sync"
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

// task is the share of a batch one goroutine works on.
type task struct {
	aead  cipher.AEAD
	ad    []byte
	units []unit
	open  bool
	src   io.ReaderAt // open: if set, each unit's ciphertext is read first
	wg    *sync.WaitGroup
}

// run seals or opens the task's units. When opening from a source, each
// segment is read just before it is opened, while the reads of other tasks
// run in parallel, and its ciphertext is still in cache when decrypted.
func (t *task) run() {
	for i := range t.units {
		u := &t.units[i]
		if t.src != nil {
			u.ok, u.err = false, nil
			if n, err := t.src.ReadAt(u.src, u.off); n < len(u.src) {
				if err == nil || err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				u.err = err
				continue
			}
		}
		if t.open {
			_, err := t.aead.Open(u.dst, u.nonce[:], u.src, t.ad)
			u.ok = err == nil
			if !u.ok {
				clear(u.dst[:cap(u.dst)])
			}
		} else {
			t.aead.Seal(u.dst, u.nonce[:], u.src, t.ad)
		}
	}
}

// crypter runs batches of units over a fixed number of goroutines. Its
// goroutines come from a pool shared by every stream of the process, so a
// Reader needs no Close and nothing is started per batch.
type crypter struct {
	aead  cipher.AEAD
	ad    []byte
	units []unit // one per segment of a batch
	tasks []task
	wg    sync.WaitGroup
}

func newCrypter(aead cipher.AEAD, ad []byte, batch, conc int) *crypter {
	c := &crypter{aead: aead, ad: ad, units: make([]unit, batch), tasks: make([]task, conc)}
	if conc > 1 {
		startWorkers(conc - 1)
	}
	return c
}

// do seals or opens c.units[:n] and returns when all are done; src, if not
// nil, is where the units' ciphertexts are read from first. With one task,
// or one unit, it runs on the calling goroutine.
func (c *crypter) do(n int, open bool, src io.ReaderAt) {
	conc := min(len(c.tasks), n)
	if conc <= 1 {
		t := task{aead: c.aead, ad: c.ad, units: c.units[:n], open: open, src: src}
		t.run()
		return
	}
	per, extra := n/conc, n%conc
	start := 0
	for i := range conc {
		k := per
		if i < extra {
			k++
		}
		c.tasks[i] = task{aead: c.aead, ad: c.ad, units: c.units[start : start+k], open: open, src: src, wg: &c.wg}
		start += k
	}
	c.wg.Add(conc - 1)
	for i := 1; i < conc; i++ {
		work <- &c.tasks[i]
	}
	c.tasks[0].run()
	c.wg.Wait()
}

var (
	work        = make(chan *task, 256)
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
			for t := range work {
				t.run()
				t.wg.Done()
			}
		}()
	}
}
