package goredis

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/cachecrypt/cachecrypt/valuecrypt"
	"github.com/redis/go-redis/v9"
)

// ReencryptOptions tune Reencrypt. The zero value scans every key in
// batches of 100.
type ReencryptOptions struct {
	Match     string         // SCAN MATCH pattern; "*" when empty
	Batch     int            // SCAN COUNT and pipeline size; 100 when zero
	KeysetKey string         // the keyset's key, never touched; KeysetKey when empty
	Progress  func(Progress) // called after every batch, from one goroutine at a time
}

// Progress counts what Reencrypt did so far.
type Progress struct {
	Keys      int64 // string and hash keys scanned
	Rewritten int64 // values sealed again under the primary key
	Current   int64 // values already under the primary key
	Raced     int64 // values a concurrent writer replaced first: left as written
	Skipped   int64 // other types, names not encrypted by this keyset, values not sealed by valuecrypt
	Failed    int64 // values that failed to open: left untouched, reported in the error
}

// casString replaces the string KEYS[1] with ARGV[2], keeping its TTL, only
// while it still holds ARGV[1].
var casString = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
  return 1
end
return 0`)

// casField replaces field ARGV[1] of hash KEYS[1] with ARGV[3] only while it
// still holds ARGV[2].
var casField = redis.NewScript(`
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  return 1
end
return 0`)

// Reencrypt rewrites, online, every string and hash field value sealed
// under a key other than the keyset's primary (and, with
// Config.Migration, every value not yet encrypted) under the primary key.
// It SCANs in batches (every primary of a cluster), opens each stale value,
// seals it again and writes it with a compare-and-set script that replaces
// it only if it is still byte for byte the value read, keeping its TTL: a
// write that lands in between is never overwritten (Progress.Raced). Run
// it after every process has loaded the new primary key (Reload), or
// values they keep writing under the old one stay behind; a second run
// converts them. Values that fail to open are left as they are, counted in
// Progress.Failed and reported in the error.
func (c *Client) Reencrypt(ctx context.Context, opts ReencryptOptions) (Progress, error) {
	r := &reencryption{c: c, opts: opts}
	if r.opts.Match == "" {
		r.opts.Match = "*"
	}
	if r.opts.Batch <= 0 {
		r.opts.Batch = 100
	}
	if r.opts.KeysetKey == "" {
		r.opts.KeysetKey = KeysetKey
	}
	// Take up keys other processes added, so that no value is moved back
	// from a newer key to this process's older primary.
	if err := c.c.Keyset().Reload(ctx); err != nil {
		return Progress{}, fmt.Errorf("goredis.Reencrypt: %w", err)
	}
	var err error
	if cc, ok := c.rdb.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error { return r.node(ctx, node) })
	} else {
		err = r.node(ctx, c.rdb)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		return r.p, fmt.Errorf("goredis.Reencrypt: %w", err)
	}
	if r.p.Failed > 0 {
		return r.p, fmt.Errorf("goredis.Reencrypt: %d value(s) failed to open and were left as they are; first: %w", r.p.Failed, r.first)
	}
	return r.p, nil
}

type reencryption struct {
	c    *Client
	opts ReencryptOptions

	mu    sync.Mutex // guards p and first, and serializes Progress calls
	p     Progress
	first error
}

// node re-encrypts the keys of one server.
func (r *reencryption) node(ctx context.Context, node redis.Cmdable) error {
	var cursor uint64
	for {
		keys, next, err := node.Scan(ctx, cursor, r.opts.Match, int64(r.opts.Batch)).Result()
		if err != nil {
			return fmt.Errorf("scan: %w", err)
		}
		if err := r.batch(ctx, node, keys); err != nil {
			return err
		}
		if cursor = next; cursor == 0 {
			return nil
		}
	}
}

// item is one stored key of a batch and what was read of it.
type item struct {
	stored string
	typ    *redis.StatusCmd
	str    *redis.StringCmd
	hash   *redis.MapStringStringCmd
}

func (r *reencryption) batch(ctx context.Context, node redis.Cmdable, keys []string) error {
	var d Progress
	items := make([]*item, 0, len(keys))
	for _, k := range keys {
		if k == r.opts.KeysetKey {
			continue
		}
		items = append(items, &item{stored: k})
	}
	if _, err := node.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, it := range items {
			it.typ = p.Type(ctx, it.stored)
		}
		return nil
	}); err != nil {
		return fmt.Errorf("type: %w", err)
	}
	if _, err := node.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, it := range items {
			switch it.typ.Val() {
			case "string":
				it.str = p.Get(ctx, it.stored)
			case "hash":
				it.hash = p.HGetAll(ctx, it.stored)
			}
		}
		return nil
	}); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("read: %w", err)
	}
	var cas []*redis.Cmd
	var failures []error
	if _, err := node.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, it := range items {
			if it.str == nil && it.hash == nil {
				d.Skipped++
				continue
			}
			d.Keys++
			name, err := r.name(it.stored)
			if err != nil {
				d.Skipped++
				continue
			}
			if it.str != nil {
				cas, failures = r.value(ctx, p, &d, cas, failures, it.stored, name, it.str)
				continue
			}
			for sf, v := range it.hash.Val() {
				field, err := r.name(sf)
				if err != nil {
					d.Skipped++
					continue
				}
				cas, failures = r.field(ctx, p, &d, cas, failures, it.stored, name, sf, field, v)
			}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("rewrite: %w", err)
	}
	for _, cmd := range cas {
		if n, _ := cmd.Int(); n == 1 {
			d.Rewritten++
		} else {
			d.Raced++
		}
	}
	r.report(d, failures)
	return nil
}

func (r *reencryption) name(stored string) (string, error) {
	if !r.c.c.Config().EncryptNames {
		return stored, nil
	}
	return r.c.c.DecryptName(stored)
}

// value queues the compare-and-set of one stale string value.
func (r *reencryption) value(ctx context.Context, p redis.Pipeliner, d *Progress, cas []*redis.Cmd, failures []error, stored, name string, cmd *redis.StringCmd) ([]*redis.Cmd, []error) {
	v, err := cmd.Bytes()
	if err != nil { // expired or deleted since SCAN
		d.Raced++
		return cas, failures
	}
	sealed, ok, err := r.reseal(d, v, func(pt []byte) ([]byte, error) { return r.c.c.Seal(name, pt) },
		func() ([]byte, error) { return r.c.c.Open(ctx, name, v) })
	if err != nil {
		return cas, append(failures, err)
	}
	if ok {
		cas = append(cas, casString.Eval(ctx, p, []string{stored}, v, sealed))
	}
	return cas, failures
}

// field queues the compare-and-set of one stale hash field value.
func (r *reencryption) field(ctx context.Context, p redis.Pipeliner, d *Progress, cas []*redis.Cmd, failures []error, stored, name, sf, field, v string) ([]*redis.Cmd, []error) {
	raw := []byte(v)
	sealed, ok, err := r.reseal(d, raw, func(pt []byte) ([]byte, error) { return r.c.c.SealField(name, field, pt) },
		func() ([]byte, error) { return r.c.c.OpenField(ctx, name, field, raw) })
	if err != nil {
		return cas, append(failures, err)
	}
	if ok {
		cas = append(cas, casField.Eval(ctx, p, []string{stored}, sf, raw, sealed))
	}
	return cas, failures
}

// reseal opens a stale value and seals it again; ok is false when the
// value is current or not valuecrypt's.
func (r *reencryption) reseal(d *Progress, v []byte, seal func([]byte) ([]byte, error), open func() ([]byte, error)) (sealed []byte, ok bool, err error) {
	if !r.c.c.Stale(v) {
		if _, isOurs := valuecrypt.KeyID(v); isOurs {
			d.Current++
		} else {
			d.Skipped++
		}
		return nil, false, nil
	}
	pt, err := open()
	if err != nil && !(errors.Is(err, valuecrypt.ErrPlaintext) && pt != nil) {
		d.Failed++
		return nil, false, err
	}
	sealed, err = seal(pt)
	if err != nil {
		d.Failed++
		return nil, false, err
	}
	return sealed, true, nil
}

func (r *reencryption) report(d Progress, failures []error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.p.Keys += d.Keys
	r.p.Rewritten += d.Rewritten
	r.p.Current += d.Current
	r.p.Raced += d.Raced
	r.p.Skipped += d.Skipped
	r.p.Failed += d.Failed
	if r.first == nil && len(failures) > 0 {
		r.first = failures[0]
	}
	if r.opts.Progress != nil {
		r.opts.Progress(r.p)
	}
}
