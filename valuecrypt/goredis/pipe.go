package goredis

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Pipelined queues the commands fn issues on a Pipe and sends them in one
// round trip (on a cluster, one per node). Values are sealed as they are
// queued and opened when their Value is read, after Pipelined returns. A
// missing key is not an error of Pipelined: its Value reports redis.Nil.
func (c *Client) Pipelined(ctx context.Context, fn func(p *Pipe) error) error {
	return c.pipelined(ctx, c.rdb.Pipelined, fn)
}

// TxPipelined is Pipelined wrapped in MULTI/EXEC.
func (c *Client) TxPipelined(ctx context.Context, fn func(p *Pipe) error) error {
	return c.pipelined(ctx, c.rdb.TxPipelined, fn)
}

func (c *Client) pipelined(ctx context.Context, run func(context.Context, func(redis.Pipeliner) error) ([]redis.Cmder, error), fn func(p *Pipe) error) error {
	pipe := &Pipe{c: c}
	_, err := run(ctx, func(p redis.Pipeliner) error {
		pipe.p = p
		return fn(pipe)
	})
	for _, b := range pipe.bufs {
		c.putBuf(b)
	}
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("goredis.Pipelined: %w", err)
	}
	return nil
}

// A Pipe queues sealed commands for Client.Pipelined. It is valid only
// inside the function given to Pipelined.
type Pipe struct {
	c    *Client
	p    redis.Pipeliner
	bufs []*[]byte // the sealed values queued, reused once the pipeline ran
}

// Set seals value for key and queues a SET, with an expiry when ttl is
// above zero.
func (p *Pipe) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	return p.c.set(ctx, p.p, p.buf(), key, value, ttl)
}

// HSet seals each field's value and queues an HSET of the hash key, and a
// PEXPIRE of it when ttl is above zero.
func (p *Pipe) HSet(ctx context.Context, key string, fields map[string][]byte, ttl time.Duration) error {
	if err := p.c.hset(ctx, p.p, p.buf(), key, fields, ttl, false); err != nil {
		return fmt.Errorf("goredis.Pipe.HSet: %w", err)
	}
	return nil
}

// buf returns a buffer for the sealed values of one queued command, taken
// back once the pipeline ran.
func (p *Pipe) buf() *[]byte {
	b := p.c.getBuf()
	p.bufs = append(p.bufs, b)
	return b
}

// Get queues a GET of key; read its result from the Value after
// Pipelined returns.
func (p *Pipe) Get(ctx context.Context, key string) *Value {
	stored, err := p.c.name(key)
	if err != nil {
		return &Value{err: fmt.Errorf("goredis.Pipe.Get: %w", err)}
	}
	return &Value{ctx: ctx, c: p.c, key: key, cmd: p.p.Get(ctx, stored)}
}

// HGet queues an HGET of field in the hash key.
func (p *Pipe) HGet(ctx context.Context, key, field string) *Value {
	stored, sf, err := p.c.fieldNames(key, field)
	if err != nil {
		return &Value{err: fmt.Errorf("goredis.Pipe.HGet: %w", err)}
	}
	return &Value{ctx: ctx, c: p.c, key: key, field: field, hash: true, cmd: p.p.HGet(ctx, stored, sf)}
}

// A Value is the pending result of a Pipe's Get or HGet.
type Value struct {
	ctx        context.Context
	c          *Client
	key, field string
	hash       bool
	cmd        *redis.StringCmd
	err        error // set when the command could not be queued
}

// Result opens the value once the pipeline ran: the plaintext, redis.Nil
// for a missing key or field, or the error of Client.Get or Client.HGet.
func (v *Value) Result() ([]byte, error) {
	if v.err != nil {
		return nil, v.err
	}
	if v.hash {
		return v.c.openField(v.ctx, v.key, v.field, v.cmd)
	}
	return v.c.openString(v.ctx, v.key, v.cmd)
}
