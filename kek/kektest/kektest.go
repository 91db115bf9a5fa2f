// Package kektest provides an in-memory KEK for tests: it counts its calls,
// can rotate its key version, and can be made to fail with any error, so a
// test can prove how many KEK calls a code path makes and how it reacts to
// an unavailable or revoked key.
package kektest

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/cachecrypt/cachecrypt/kek"
)

// KEK is an in-memory AES-256-GCM key-encryption key with versions. It is
// safe for concurrent use.
type KEK struct {
	name string

	wraps, unwraps atomic.Int64

	mu       sync.Mutex
	versions []cipher.AEAD // version v is versions[v-1]
	failWith error
}

// New returns a test KEK with one key version.
func New(name string) *KEK {
	k := &KEK{name: name}
	k.Rotate()
	return k
}

// Rotate adds a key version and makes it the one Wrap uses.
func (k *KEK) Rotate() kek.Descriptor {
	key := make([]byte, 32)
	rand.Read(key)
	block, _ := aes.NewCipher(key)
	g, _ := cipher.NewGCM(block)
	k.mu.Lock()
	defer k.mu.Unlock()
	k.versions = append(k.versions, g)
	return k.descriptor(len(k.versions))
}

func (k *KEK) descriptor(v int) kek.Descriptor {
	return kek.Descriptor{Kind: kek.KindTest, KeyID: fmt.Sprintf("test/%s/v%d", k.name, v), Algorithm: "A256GCM"}
}

// Descriptor returns the descriptor of the version Wrap uses.
func (k *KEK) Descriptor() kek.Descriptor {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.descriptor(len(k.versions))
}

// FailWith makes every later call fail with err (wrapped); nil restores
// normal operation.
func (k *KEK) FailWith(err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.failWith = err
}

// Wraps returns how many times Wrap was called.
func (k *KEK) Wraps() int64 { return k.wraps.Load() }

// Unwraps returns how many times Unwrap was called.
func (k *KEK) Unwraps() int64 { return k.unwraps.Load() }

// Calls returns Wraps plus Unwraps.
func (k *KEK) Calls() int64 { return k.Wraps() + k.Unwraps() }

// Wrap implements kek.Wrapper.
func (k *KEK) Wrap(ctx context.Context, key []byte) (kek.Wrapped, error) {
	k.wraps.Add(1)
	if err := ctx.Err(); err != nil {
		return kek.Wrapped{}, fmt.Errorf("kektest.Wrap: %w: %w", kek.ErrUnavailable, err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.failWith != nil {
		return kek.Wrapped{}, fmt.Errorf("kektest.Wrap: %w", k.failWith)
	}
	v := len(k.versions)
	nonce := make([]byte, 12)
	rand.Read(nonce)
	d := k.descriptor(v)
	ct := k.versions[v-1].Seal(nonce, nonce, key, []byte(d.KeyID))
	return kek.Wrapped{Descriptor: d, Ciphertext: ct}, nil
}

// Unwrap implements kek.Unwrapper.
func (k *KEK) Unwrap(ctx context.Context, w kek.Wrapped) ([]byte, error) {
	k.unwraps.Add(1)
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("kektest.Unwrap: %w: %w", kek.ErrUnavailable, err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.failWith != nil {
		return nil, fmt.Errorf("kektest.Unwrap: %w", k.failWith)
	}
	var v int
	if _, err := fmt.Sscanf(w.KeyID, "test/"+k.name+"/v%d", &v); err != nil || w.Kind != kek.KindTest || v < 1 || v > len(k.versions) || w.KeyID != k.descriptor(v).KeyID {
		return nil, fmt.Errorf("kektest.Unwrap: %s is not a version of test key %q: %w", w.Descriptor, k.name, kek.ErrKeyMismatch)
	}
	if len(w.Ciphertext) < 12 {
		return nil, fmt.Errorf("kektest.Unwrap: %w", kek.ErrUnwrap)
	}
	key, err := k.versions[v-1].Open(nil, w.Ciphertext[:12], w.Ciphertext[12:], []byte(w.KeyID))
	if err != nil {
		return nil, fmt.Errorf("kektest.Unwrap: %w", kek.ErrUnwrap)
	}
	return key, nil
}
