package valuecrypt

import (
	"bytes"
	"context"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/tink-crypto/tink-go/v2/daead/subtle"
)

// A Store keeps the stored form of a keyset: the keyset sealed under a
// keyset key, and that key wrapped by a KEK. Nothing a Store sees is secret
// without the KEK. Implementations must be safe for concurrent use.
type Store interface {
	// Load returns the stored keyset, or an error matching
	// ErrKeysetMissing when none is stored.
	Load(ctx context.Context) ([]byte, error)

	// Save replaces the stored keyset old with next in one atomic step,
	// and fails with an error matching ErrConflict, changing nothing, when
	// the stored keyset is no longer old. An old of nil means that no
	// keyset may be stored yet.
	Save(ctx context.Context, old, next []byte) error
}

// A Keyset holds the keys of an application's values: a primary key that
// seals new values and the older keys that still open values written before
// a rotation, plus one key for deterministic name encryption. It is stored
// sealed in a Store and wrapped by a KEK; opening it costs one KEK call, and
// sealing and opening values cost none.
//
// A Keyset is safe for concurrent use. Close it when done: it zeroes the
// key bytes it holds.
type Keyset struct {
	store  Store
	unwrap kek.Unwrapper

	mu     sync.Mutex            // serializes Reload, Rotate, Rewrap and Close
	sk     []byte                // keyset key (unwrapped); guarded by mu
	env    envelope              // guarded by mu
	stored []byte                // the stored form last loaded or saved; guarded by mu
	body   *keysetBody           // the secret keys, for re-sealing; guarded by mu
	counts map[uint32]*sealCount // seals per key id, kept across reloads; guarded by mu

	state atomic.Pointer[keyState] // nil once closed

	rotateAfter atomic.Uint64                             // see SetRotateAfter
	notify      atomic.Pointer[func(id uint32, n uint64)] // see SetRotateAfter
	sealLimit   uint64                                    // SealLimit; lowered only by the package's tests
}

// newKeyset returns a Keyset with no keys yet and the default limits.
func newKeyset(s Store, u kek.Unwrapper) *Keyset {
	ks := &Keyset{store: s, unwrap: u, counts: make(map[uint32]*sealCount), sealLimit: SealLimit}
	ks.rotateAfter.Store(DefaultRotateAfter)
	return ks
}

// keyState is an immutable snapshot of the keys, read without locks.
type keyState struct {
	primary *valueKey
	byID    map[uint32]*valueKey
	maxID   uint32
	names   *subtle.AESSIV
	nameKey []byte // the AES-SIV key the names instance points into
}

type valueKey struct {
	id    uint32
	aead  cipher.AEAD
	seals *sealCount
}

// sealCount counts the values this process sealed under one key.
type sealCount struct {
	n        atomic.Uint64
	notified atomic.Bool // the rotate-after notification was sent
}

// Create makes a new keyset with one key, wraps it with k (one KEK call) and
// stores it in s. It fails with an error matching ErrKeysetExists when s
// already holds a keyset: open that one with Open instead.
func Create(ctx context.Context, s Store, k kek.KEK) (*Keyset, error) {
	body := &keysetBody{primary: 1, nameKey: randomKey(nameKeySize), keys: []rawKey{{id: 1, key: randomKey(valueKeySize)}}}
	sk := randomKey(valueKeySize)
	w, err := k.Wrap(ctx, sk)
	if err != nil {
		clear(sk)
		body.wipe()
		return nil, fmt.Errorf("valuecrypt.Create: wrap the keyset key: %w", err)
	}
	ks := newKeyset(s, k)
	ks.sk, ks.env = sk, envelope{generation: 1, wrapped: w}
	data := ks.env.seal(sk, body)
	if err := s.Save(ctx, nil, data); err != nil {
		clear(sk)
		body.wipe()
		if errors.Is(err, ErrConflict) {
			return nil, fmt.Errorf("valuecrypt.Create: a keyset is already stored; open it with Open: %w", errors.Join(ErrKeysetExists, err))
		}
		return nil, fmt.Errorf("valuecrypt.Create: %w", err)
	}
	ks.install(data, body)
	return ks, nil
}

// Open loads the keyset stored in s and unwraps its keyset key with u: one
// KEK call. It fails with an error matching ErrKeysetMissing when s holds
// none (create one with Create), ErrKeysetCorrupt when the stored keyset is
// damaged, or the KEK's error (kek.ErrUnavailable, kek.ErrRevoked,
// kek.ErrKeyMismatch, kek.ErrUnwrap).
func Open(ctx context.Context, s Store, u kek.Unwrapper) (*Keyset, error) {
	data, err := s.Load(ctx)
	if err != nil {
		return nil, fmt.Errorf("valuecrypt.Open: %w", err)
	}
	ks := newKeyset(s, u)
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if err := ks.loadLocked(ctx, data); err != nil {
		return nil, fmt.Errorf("valuecrypt.Open: %w", err)
	}
	return ks, nil
}

// loadLocked installs the stored keyset data. It unwraps the keyset key
// only when the wrapped key differs from the one already held.
func (ks *Keyset) loadLocked(ctx context.Context, data []byte) error {
	env, ad, nonce, sealed, err := parseEnvelope(data)
	if err != nil {
		return fmt.Errorf("%w: %v; restore the keyset from a backup, or create a new one (values under the old one are lost)", ErrKeysetCorrupt, err)
	}
	if ks.body != nil && env.generation < ks.env.generation {
		return fmt.Errorf("%w: stored keyset generation %d is older than the loaded generation %d (rolled back?); restore the newest keyset", ErrKeysetCorrupt, env.generation, ks.env.generation)
	}
	sk := ks.sk
	if sk == nil || env.wrapped.Descriptor != ks.env.wrapped.Descriptor || !bytes.Equal(env.wrapped.Ciphertext, ks.env.wrapped.Ciphertext) {
		if ks.unwrap == nil {
			return fmt.Errorf("%w: the stored keyset was rewrapped; open it again with Open", kek.ErrKeyMismatch)
		}
		if sk, err = ks.unwrap.Unwrap(ctx, env.wrapped); err != nil {
			return fmt.Errorf("unwrap the keyset key (%s): %w", env.wrapped.Descriptor, err)
		}
		if len(sk) != valueKeySize {
			clear(sk)
			return fmt.Errorf("%w: keyset key unwrapped to %d bytes, want %d", ErrKeysetCorrupt, len(sk), valueKeySize)
		}
	}
	body, err := openBody(sk, ad, nonce, sealed)
	if err != nil {
		if !bytes.Equal(sk, ks.sk) {
			clear(sk)
		}
		return fmt.Errorf("%w: %v; restore the keyset from a backup", ErrKeysetCorrupt, err)
	}
	if ks.sk != nil && !bytes.Equal(sk, ks.sk) {
		clear(ks.sk)
	}
	ks.sk, ks.env = sk, env
	ks.install(data, body)
	return nil
}

// install makes body the current keys; the caller holds mu or owns ks.
func (ks *Keyset) install(data []byte, body *keysetBody) {
	st := &keyState{byID: make(map[uint32]*valueKey, len(body.keys)), nameKey: bytes.Clone(body.nameKey)}
	for _, k := range body.keys {
		cnt := ks.counts[k.id]
		if cnt == nil {
			cnt = new(sealCount)
			ks.counts[k.id] = cnt
		}
		vk := &valueKey{id: k.id, aead: gcm(k.key), seals: cnt}
		st.byID[k.id] = vk
		st.maxID = max(st.maxID, k.id)
	}
	st.primary = st.byID[body.primary]
	names, err := subtle.NewAESSIV(st.nameKey)
	if err != nil {
		panic("valuecrypt: " + err.Error())
	}
	st.names = names
	old := ks.state.Swap(st)
	if ks.body != nil {
		ks.body.wipe()
	}
	_ = old // its name key may still be in use by a concurrent call
	ks.body, ks.stored = body, bytes.Clone(data)
}

// Reload reads the stored keyset again and takes up keys another process
// added. It makes no KEK call unless the keyset was rewrapped. Open of a
// value under an unknown, newer key id calls it once by itself.
func (ks *Keyset) Reload(ctx context.Context) error {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if ks.state.Load() == nil {
		return fmt.Errorf("valuecrypt.Keyset.Reload: %w", ErrClosed)
	}
	if err := ks.reloadLocked(ctx); err != nil {
		return fmt.Errorf("valuecrypt.Keyset.Reload: %w", err)
	}
	return nil
}

func (ks *Keyset) reloadLocked(ctx context.Context) error {
	data, err := ks.store.Load(ctx)
	if err != nil {
		return err
	}
	if bytes.Equal(data, ks.stored) {
		return nil
	}
	return ks.loadLocked(ctx, data)
}

// Rotate adds a new key and makes it the primary: values sealed from now on
// use it, and values sealed under older keys still open. It saves the
// keyset with a compare-and-set and makes no KEK call. Other processes take
// the new key up on their next Reload, or by themselves when they first
// open a value sealed under it. It returns the new key id.
func (ks *Keyset) Rotate(ctx context.Context) (uint32, error) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	for range 5 {
		st := ks.state.Load()
		if st == nil {
			return 0, fmt.Errorf("valuecrypt.Keyset.Rotate: %w", ErrClosed)
		}
		id := st.maxID + 1
		if id == 0 || len(ks.body.keys) >= maxKeys {
			return 0, fmt.Errorf("valuecrypt.Keyset.Rotate: the keyset holds %d keys, the most it can; retire old keys first", len(ks.body.keys))
		}
		next := &keysetBody{primary: id, nameKey: bytes.Clone(ks.body.nameKey)}
		for _, k := range ks.body.keys {
			next.keys = append(next.keys, rawKey{id: k.id, key: bytes.Clone(k.key)})
		}
		next.keys = append(next.keys, rawKey{id: id, key: randomKey(valueKeySize)})
		err := ks.saveLocked(ctx, ks.sk, ks.env.wrapped, next)
		if err == nil {
			return id, nil
		}
		next.wipe()
		if !errors.Is(err, ErrConflict) {
			return 0, fmt.Errorf("valuecrypt.Keyset.Rotate: %w", err)
		}
		if err := ks.reloadLocked(ctx); err != nil {
			return 0, fmt.Errorf("valuecrypt.Keyset.Rotate: %w", err)
		}
	}
	return 0, fmt.Errorf("valuecrypt.Keyset.Rotate: the stored keyset kept changing; retry: %w", ErrConflict)
}

// Rewrap wraps the keyset under a new keyset key with w (one KEK call), to
// move the keyset to another KEK or to a new version of its KEK. Processes
// that already opened the keyset need the Unwrapper of w to Reload it.
func (ks *Keyset) Rewrap(ctx context.Context, w kek.KEK) error {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if ks.state.Load() == nil {
		return fmt.Errorf("valuecrypt.Keyset.Rewrap: %w", ErrClosed)
	}
	sk := randomKey(valueKeySize)
	wrapped, err := w.Wrap(ctx, sk)
	if err != nil {
		clear(sk)
		return fmt.Errorf("valuecrypt.Keyset.Rewrap: %w", err)
	}
	next := &keysetBody{primary: ks.body.primary, nameKey: bytes.Clone(ks.body.nameKey)}
	for _, k := range ks.body.keys {
		next.keys = append(next.keys, rawKey{id: k.id, key: bytes.Clone(k.key)})
	}
	old := ks.sk
	if err := ks.saveLocked(ctx, sk, wrapped, next); err != nil {
		clear(sk)
		next.wipe()
		return fmt.Errorf("valuecrypt.Keyset.Rewrap: %w", err)
	}
	clear(old)
	ks.unwrap = w
	return nil
}

// saveLocked seals next under sk, stores it in place of the loaded keyset
// and installs it.
func (ks *Keyset) saveLocked(ctx context.Context, sk []byte, w kek.Wrapped, next *keysetBody) error {
	env := envelope{generation: ks.env.generation + 1, wrapped: w}
	data := env.seal(sk, next)
	if err := ks.store.Save(ctx, ks.stored, data); err != nil {
		return err
	}
	ks.sk, ks.env = sk, env
	ks.install(data, next)
	return nil
}

// KeyIDs returns the primary key id and every key id the keyset holds, in
// increasing order.
func (ks *Keyset) KeyIDs() (primary uint32, all []uint32) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	st := ks.state.Load()
	if st == nil {
		return 0, nil
	}
	for _, k := range ks.body.keys {
		all = append(all, k.id)
	}
	return st.primary.id, all
}

// Close zeroes the key bytes the keyset holds. Seal and Open fail with
// ErrClosed afterwards; Close must not race calls still in progress.
func (ks *Keyset) Close() error {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	st := ks.state.Swap(nil)
	if st == nil {
		return nil
	}
	clear(st.nameKey)
	clear(ks.sk)
	ks.sk = nil
	ks.body.wipe()
	return nil
}

// DefaultRotateAfter is the number of values one process seals under one
// key after which RotationDue reports true, unless SetRotateAfter changes
// it: half of SealLimit.
const DefaultRotateAfter = 1 << 31

// SealLimit is the most values one process seals under one key: 2^32, the
// bound NIST SP 800-38D sets for AES-GCM with random 96-bit nonces. Past
// it, Seal fails with ErrSealLimit until the keyset is rotated.
const SealLimit = 1 << 32

// Seals returns how many values this process has sealed under key id since
// it created or opened the keyset, or 0 for an id the keyset does not
// hold. The count is kept in memory, per process: other processes sealing
// under the same key are not counted, nor are earlier runs.
func (ks *Keyset) Seals(id uint32) uint64 {
	st := ks.state.Load()
	if st == nil || st.byID[id] == nil {
		return 0
	}
	return st.byID[id].seals.n.Load()
}

// RotationDue reports whether this process has sealed at least the
// rotate-after threshold of values (DefaultRotateAfter, or as set by
// SetRotateAfter) under the current primary key: time to call Rotate.
func (ks *Keyset) RotationDue() bool {
	st := ks.state.Load()
	return st != nil && st.primary.seals.n.Load() >= ks.rotateAfter.Load()
}

// SetRotateAfter sets the number of values this process seals under one
// key after which RotationDue reports true, and notify, if not nil, is
// called once for that key, from a Seal that takes the count to the
// threshold or past it, with the key id and the count. notify must not block the Seal: to rotate from
// it, start a goroutine that calls Rotate. Set n well below SealLimit, by
// at least the number of values the application's other processes seal
// under a key meanwhile; n above SealLimit counts as SealLimit.
func (ks *Keyset) SetRotateAfter(n uint64, notify func(id uint32, seals uint64)) {
	if notify == nil {
		ks.notify.Store(nil)
	} else {
		ks.notify.Store(&notify)
	}
	ks.rotateAfter.Store(min(n, ks.sealLimit))
}

// count counts a seal under k; past SealLimit it refuses it.
func (ks *Keyset) count(k *valueKey) error {
	n := k.seals.n.Add(1)
	if n < ks.rotateAfter.Load() {
		return nil
	}
	if n > ks.sealLimit {
		k.seals.n.Add(^uint64(0))
		return fmt.Errorf("%w: key %d sealed %d values in this process; rotate the keyset (Keyset.Rotate)", ErrSealLimit, k.id, ks.sealLimit)
	}
	if fn := ks.notify.Load(); fn != nil && k.seals.notified.CompareAndSwap(false, true) {
		(*fn)(k.id, n)
	}
	return nil
}

// lookup returns the key with this id, reloading the keyset once when the
// id is newer than every key held.
func (ks *Keyset) lookup(ctx context.Context, id uint32) (*valueKey, error) {
	st := ks.state.Load()
	if st == nil {
		return nil, ErrClosed
	}
	if st.primary.id == id {
		return st.primary, nil
	}
	if k := st.byID[id]; k != nil {
		return k, nil
	}
	if id <= st.maxID {
		return nil, fmt.Errorf("%w: key id %d was retired or never existed (the keyset holds keys up to %d)", ErrUnknownKey, id, st.maxID)
	}
	if k, err := ks.reloadFor(ctx, id); k != nil || err != nil {
		return k, err
	}
	return nil, fmt.Errorf("%w: key id %d is not in the stored keyset either; was the value written by another application or keyset?", ErrUnknownKey, id)
}

// reloadFor reloads the keyset for key id, unless a concurrent reload
// already brought it in.
func (ks *Keyset) reloadFor(ctx context.Context, id uint32) (*valueKey, error) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	st := ks.state.Load()
	if st == nil {
		return nil, ErrClosed
	}
	if k := st.byID[id]; k != nil {
		return k, nil
	}
	if err := ks.reloadLocked(ctx); err != nil {
		return nil, fmt.Errorf("%w: key id %d is newer than this process's keyset, and reloading it failed: %w", ErrUnknownKey, id, err)
	}
	if st = ks.state.Load(); st.byID[id] != nil {
		return st.byID[id], nil
	}
	return nil, nil
}

func randomKey(n int) []byte {
	k := make([]byte, n)
	rand.Read(k)
	return k
}
