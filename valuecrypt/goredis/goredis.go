// Package goredis adapts valuecrypt to go-redis v9
// (github.com/redis/go-redis/v9): typed helpers for strings and hashes that
// seal values before they are sent and open them when they come back, with
// TTLs and pipelines, on a redis.Client or a redis.ClusterClient; a
// valuecrypt.Store that keeps the wrapped keyset in the cache itself; and
// Reencrypt, which rewrites values sealed under older keys online.
//
// Missing keys and fields give redis.Nil, as in go-redis; every other error
// is valuecrypt's (errors.Is with valuecrypt.ErrAuthentication and the
// rest) or the server's.
package goredis

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
	"unsafe"

	"github.com/cachecrypt/cachecrypt/valuecrypt"
	"github.com/redis/go-redis/v9"
)

// A Client stores values sealed by a valuecrypt.Cipher in a Redis server
// or cluster through go-redis. It is safe for concurrent use.
type Client struct {
	rdb     redis.Cmdable
	c       *valuecrypt.Cipher
	cluster bool // multi-key commands go slot by slot
	reuse   bool // rdb sends a command before it returns: buffers of sealed values can be reused
}

// New returns a Client that sends its commands through rdb (a
// *redis.Client, a *redis.ClusterClient, or any redis.UniversalClient) and
// seals values with c. With c's Config.EncryptNames, key and field names
// are stored encrypted too.
//
// With the clients of go-redis itself (*redis.Client, *redis.ClusterClient,
// *redis.Ring, *redis.Conn), the Client reuses the buffer of each sealed
// value once its command or pipeline has returned, so that sealing
// allocates nothing in steady state; a hook (redis.Hook) that keeps a
// command's arguments past its return sees them change, to other
// ciphertext. With any other redis.Cmdable, which might send later, every
// value gets its own buffer.
func New(rdb redis.Cmdable, c *valuecrypt.Cipher) *Client {
	cl := &Client{rdb: rdb, c: c}
	switch rdb.(type) {
	case *redis.ClusterClient:
		cl.cluster, cl.reuse = true, true
	case *redis.Client, *redis.Ring, *redis.Conn:
		cl.reuse = true
	}
	return cl
}

// Cipher returns the Cipher of the Client.
func (c *Client) Cipher() *valuecrypt.Cipher { return c.c }

// name returns the stored form of a key or field name.
func (c *Client) name(n string) (string, error) {
	if !c.c.Config().EncryptNames {
		return n, nil
	}
	return c.c.EncryptName(n)
}

// Set seals value for key and stores it with SET; a ttl above zero sets
// its expiry.
func (c *Client) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	buf := c.getBuf()
	defer c.putBuf(buf)
	return c.set(ctx, c.rdb, buf, key, value, ttl)
}

// set seals value into buf and queues or sends the SET on rdb; buf must
// not be reused before the command was sent.
func (c *Client) set(ctx context.Context, rdb redis.Cmdable, buf *[]byte, key string, value []byte, ttl time.Duration) error {
	stored, err := c.name(key)
	if err != nil {
		return fmt.Errorf("goredis.Set: %w", err)
	}
	sealed, err := c.c.AppendSeal((*buf)[:0], key, value)
	if err != nil {
		return fmt.Errorf("goredis.Set: %w", err)
	}
	*buf = sealed
	if err := rdb.Set(ctx, stored, sealed, ttl).Err(); err != nil {
		return fmt.Errorf("goredis.Set: key %q: %w", key, err)
	}
	return nil
}

// sealBufs holds buffers for sealed values between commands: a value is
// sealed into one, sent, and the buffer is reused once the command (or its
// pipeline) returned.
var sealBufs = sync.Pool{New: func() any { return new([]byte) }}

// maxPooled is the largest buffer kept for reuse.
const maxPooled = 64 << 10

// getBuf returns a buffer to seal values into, for one command.
func (c *Client) getBuf() *[]byte {
	if !c.reuse {
		return new([]byte)
	}
	return sealBufs.Get().(*[]byte)
}

// putBuf takes back a buffer from getBuf once its command was sent.
func (c *Client) putBuf(b *[]byte) {
	if c.reuse && cap(*b) <= maxPooled {
		*b = (*b)[:0]
		sealBufs.Put(b)
	}
}

// Get returns the value of key, or redis.Nil when it does not exist.
func (c *Client) Get(ctx context.Context, key string) ([]byte, error) {
	stored, err := c.name(key)
	if err != nil {
		return nil, fmt.Errorf("goredis.Get: %w", err)
	}
	return c.openString(ctx, key, c.rdb.Get(ctx, stored))
}

func (c *Client) openString(ctx context.Context, key string, cmd *redis.StringCmd) ([]byte, error) {
	v, err := cmd.Result()
	if errors.Is(err, redis.Nil) {
		return nil, redis.Nil
	}
	if err != nil {
		return nil, fmt.Errorf("goredis.Get: key %q: %w", key, err)
	}
	out, err := c.c.Open(ctx, key, view(v))
	if err != nil {
		return owned(out, v), fmt.Errorf("goredis.Get: %w", err)
	}
	return out, nil
}

// view returns the bytes of the reply s without copying them. Open only
// reads its input and returns new memory, except in migration mode, where
// it returns its input: owned copies that case.
func view(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// owned returns out, copied when it is the reply s itself.
func owned(out []byte, s string) []byte {
	if len(out) > 0 && unsafe.SliceData(out) == unsafe.StringData(s) {
		return []byte(s)
	}
	return out
}

// MGet returns the values of keys, in order, with nil for a key that does
// not exist. On a cluster it sends one GET per key in a pipeline, so keys
// need not share a slot. A value that fails to open is nil too, and its
// error, naming the key, is joined into the returned error; with
// Config.Migration a plaintext value is returned and flagged there with
// valuecrypt.ErrPlaintext.
func (c *Client) MGet(ctx context.Context, keys ...string) ([][]byte, error) {
	stored := make([]string, len(keys))
	for i, k := range keys {
		var err error
		if stored[i], err = c.name(k); err != nil {
			return nil, fmt.Errorf("goredis.MGet: %w", err)
		}
	}
	raw, err := c.mget(ctx, stored)
	if err != nil {
		return nil, fmt.Errorf("goredis.MGet: %w", err)
	}
	out := make([][]byte, len(keys))
	var errs []error
	for i, v := range raw {
		s, ok := v.(string)
		if !ok {
			continue
		}
		if out[i], err = c.c.Open(ctx, keys[i], view(s)); err != nil {
			out[i] = owned(out[i], s)
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return out, fmt.Errorf("goredis.MGet: %w", err)
	}
	return out, nil
}

func (c *Client) mget(ctx context.Context, stored []string) ([]any, error) {
	if !c.cluster {
		return c.rdb.MGet(ctx, stored...).Result()
	}
	cmds := make([]*redis.StringCmd, len(stored))
	_, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range stored {
			cmds[i] = p.Get(ctx, k)
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, err
	}
	out := make([]any, len(stored))
	for i, cmd := range cmds {
		if v, err := cmd.Result(); err == nil {
			out[i] = v
		}
	}
	return out, nil
}

// HSet seals each value for its field of the hash key and stores them with
// HSET; a ttl above zero sets the expiry of the whole hash, in the same
// transaction.
func (c *Client) HSet(ctx context.Context, key string, fields map[string][]byte, ttl time.Duration) error {
	buf := c.getBuf()
	defer c.putBuf(buf)
	if err := c.hset(ctx, c.rdb, buf, key, fields, ttl, true); err != nil {
		return fmt.Errorf("goredis.HSet: %w", err)
	}
	return nil
}

// hset seals the fields into buf and queues or sends the HSET on rdb; buf
// must not be reused before the command was sent.
func (c *Client) hset(ctx context.Context, rdb redis.Cmdable, buf *[]byte, key string, fields map[string][]byte, ttl time.Duration, tx bool) error {
	stored, err := c.name(key)
	if err != nil {
		return err
	}
	args := make([]any, 0, 2*len(fields))
	sealed := (*buf)[:0]
	for f, v := range fields {
		sf, err := c.name(f)
		if err != nil {
			return err
		}
		// A value sealed earlier stays valid when sealed grows: it keeps
		// the old array.
		start := len(sealed)
		if sealed, err = c.c.AppendSealField(sealed, key, f, v); err != nil {
			return err
		}
		args = append(args, sf, sealed[start:len(sealed):len(sealed)])
	}
	*buf = sealed
	if ttl <= 0 {
		return rdb.HSet(ctx, stored, args...).Err()
	}
	queue := func(p redis.Pipeliner) error {
		p.HSet(ctx, stored, args...)
		p.PExpire(ctx, stored, ttl)
		return nil
	}
	if !tx {
		queue(rdb.(redis.Pipeliner))
		return nil
	}
	if _, err := rdb.TxPipelined(ctx, queue); err != nil {
		return fmt.Errorf("key %q: %w", key, err)
	}
	return nil
}

// HGet returns the value of field in the hash key, or redis.Nil.
func (c *Client) HGet(ctx context.Context, key, field string) ([]byte, error) {
	stored, sf, err := c.fieldNames(key, field)
	if err != nil {
		return nil, fmt.Errorf("goredis.HGet: %w", err)
	}
	return c.openField(ctx, key, field, c.rdb.HGet(ctx, stored, sf))
}

func (c *Client) fieldNames(key, field string) (string, string, error) {
	stored, err := c.name(key)
	if err != nil {
		return "", "", err
	}
	sf, err := c.name(field)
	return stored, sf, err
}

func (c *Client) openField(ctx context.Context, key, field string, cmd *redis.StringCmd) ([]byte, error) {
	v, err := cmd.Result()
	if errors.Is(err, redis.Nil) {
		return nil, redis.Nil
	}
	if err != nil {
		return nil, fmt.Errorf("goredis.HGet: key %q: %w", key, err)
	}
	out, err := c.c.OpenField(ctx, key, field, view(v))
	if err != nil {
		return owned(out, v), fmt.Errorf("goredis.HGet: %w", err)
	}
	return out, nil
}

// HGetAll returns every field of the hash key (an empty map when it does
// not exist). A field that fails to open is left out and its error joined
// into the returned error, as in MGet.
func (c *Client) HGetAll(ctx context.Context, key string) (map[string][]byte, error) {
	stored, err := c.name(key)
	if err != nil {
		return nil, fmt.Errorf("goredis.HGetAll: %w", err)
	}
	raw, err := c.rdb.HGetAll(ctx, stored).Result()
	if err != nil {
		return nil, fmt.Errorf("goredis.HGetAll: key %q: %w", key, err)
	}
	out := make(map[string][]byte, len(raw))
	var errs []error
	for sf, v := range raw {
		f := sf
		if c.c.Config().EncryptNames {
			if f, err = c.c.DecryptName(sf); err != nil {
				errs = append(errs, fmt.Errorf("key %q: field name: %w", key, err))
				continue
			}
		}
		pt, err := c.c.OpenField(ctx, key, f, view(v))
		if pt != nil {
			out[f] = owned(pt, v)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return out, fmt.Errorf("goredis.HGetAll: %w", err)
	}
	return out, nil
}
