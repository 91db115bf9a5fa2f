// Benchmarks of client-side value encryption (package valuecrypt and its
// go-redis adapter). Names follow the harness convention (README.md):
// impl=cachecrypt is valuecrypt; impl=plain is the same go-redis traffic
// with unencrypted values against the same redis-server (loopback), and
// impl=rawgcm is the bare AES-256-GCM seal or open of the same value with a
// random nonce, the limit of a per-value AEAD. The .../paired benchmarks run
// a baseline and cachecrypt in alternating batches in one loop and report
// the median per-batch ratio ("vs-rawgcm", "vs-plain"): the figure to quote
// on a shared machine, where separate sub-benchmarks see different load.
package bench

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cachecrypt/cachecrypt/internal/testenv"
	"github.com/cachecrypt/cachecrypt/kek/kektest"
	"github.com/cachecrypt/cachecrypt/valuecrypt"
	"github.com/cachecrypt/cachecrypt/valuecrypt/goredis"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

const valueSize = 1024

func benchCipher(b *testing.B) *valuecrypt.Cipher {
	ks, err := valuecrypt.Create(context.Background(), valuecrypt.FileStore(filepath.Join(b.TempDir(), "keyset")), kektest.New("bench"))
	require.NoError(b, err)
	b.Cleanup(func() { ks.Close() })
	return valuecrypt.NewCipher(ks, valuecrypt.Config{Context: "db0"})
}

// BenchmarkValueSeal: sealing and opening one 1 KiB value, against the bare
// AEAD on the same bytes.
func BenchmarkValueSeal(b *testing.B) {
	ctx := context.Background()
	c := benchCipher(b)
	key := make([]byte, 32)
	rand.Read(key)
	block, _ := aes.NewCipher(key)
	gcm, _ := cipher.NewGCM(block)
	pt := make([]byte, valueSize)
	rand.Read(pt)
	const name = "user:1234567"
	sealed, err := c.Seal(name, pt)
	require.NoError(b, err)
	nonce := make([]byte, gcm.NonceSize())
	rand.Read(nonce)
	raw := gcm.Seal(nil, nonce, pt, nil)

	b.Run("op=seal/size=1KiB/impl=cachecrypt", func(b *testing.B) {
		b.SetBytes(valueSize)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.Seal(name, pt); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("op=seal/size=1KiB/impl=rawgcm", func(b *testing.B) {
		b.SetBytes(valueSize)
		b.ReportAllocs()
		for b.Loop() {
			out := make([]byte, gcm.NonceSize(), gcm.NonceSize()+valueSize+gcm.Overhead())
			rand.Read(out)
			gcm.Seal(out, out, pt, nil)
		}
	})
	b.Run("op=open/size=1KiB/impl=cachecrypt", func(b *testing.B) {
		b.SetBytes(valueSize)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.Open(ctx, name, sealed); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("op=open/size=1KiB/impl=rawgcm", func(b *testing.B) {
		b.SetBytes(valueSize)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := gcm.Open(make([]byte, 0, valueSize), nonce, raw, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("op=seal/size=1KiB/paired", func(b *testing.B) {
		paired(b, 64, "rawgcm", func(int) error {
			out := make([]byte, gcm.NonceSize(), gcm.NonceSize()+valueSize+gcm.Overhead())
			rand.Read(out)
			gcm.Seal(out, out, pt, nil)
			return nil
		}, func(int) error {
			_, err := c.Seal(name, pt)
			return err
		})
	})
	b.Run("op=open/size=1KiB/paired", func(b *testing.B) {
		paired(b, 64, "rawgcm", func(int) error {
			_, err := gcm.Open(make([]byte, 0, valueSize), nonce, raw, nil)
			return err
		}, func(int) error {
			_, err := c.Open(ctx, name, sealed)
			return err
		})
	})
}

// paired measures the baseline and cachecrypt in alternating batches of
// batch operations (the order flipped every batch), so that both see the
// same load on a shared machine. It reports the medians over the batches
// of each one's ns/op and of the per-batch throughput ratio
// cachecrypt/baseline ("vs-<baseline>"): a batch the machine took the CPU
// away from moves a median little, where it moves a sum much. op gets the
// index of the operation.
func paired(b *testing.B, batch int, baseline string, base, ours func(i int) error) {
	var tBase, tOurs, ratio []float64
	run := func(op func(int) error, i int) float64 {
		t0 := time.Now()
		for j := range batch {
			if err := op(i*batch + j); err != nil {
				b.Fatal(err)
			}
		}
		return float64(time.Since(t0).Nanoseconds()) / float64(batch)
	}
	for i := 0; b.Loop(); i++ {
		var tb, to float64
		if i%2 == 0 {
			tb = run(base, i)
			to = run(ours, i)
		} else {
			to = run(ours, i)
			tb = run(base, i)
		}
		tBase, tOurs, ratio = append(tBase, tb), append(tOurs, to), append(ratio, tb/to)
	}
	b.ReportMetric(median(tBase), baseline+"-ns/op")
	b.ReportMetric(median(tOurs), "cachecrypt-ns/op")
	b.ReportMetric(median(ratio), "vs-"+baseline)
}

func median(x []float64) float64 {
	slices.Sort(x)
	return x[len(x)/2]
}

// BenchmarkValueGoRedis: go-redis GET and SET of 1 KiB values over loopback
// to a redis-server the benchmark starts, one command per round trip
// (pipeline=1) and 16 per pipeline, encrypted (impl=cachecrypt) and plain.
// MB/s counts plaintext bytes; each op is one round trip.
func BenchmarkValueGoRedis(b *testing.B) {
	ctx := context.Background()
	srv := testenv.StartRedis(b, b.TempDir())
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), PoolSize: 4})
	b.Cleanup(func() { rdb.Close() })
	c := goredis.New(rdb, benchCipher(b))
	const keys = 1024
	val := make([]byte, valueSize)
	rand.Read(val)
	names := make([]string, keys)
	for i := range names {
		names[i] = fmt.Sprintf("user:%07d", i)
		require.NoError(b, c.Set(ctx, "enc:"+names[i], val, 0))
		require.NoError(b, rdb.Set(ctx, "plain:"+names[i], val, 0).Err())
	}
	type ops struct {
		set func(key string) error
		get func(key string) error
		// pipeSet and pipeGet queue one command on a pipeline.
		pipeSet func(p any, key string) error
		pipeGet func(p any, key string) func() error
		run     func(fn func(p any) error) error
	}
	impls := map[string]ops{
		"plain": {
			set: func(k string) error { return rdb.Set(ctx, "plain:"+k, val, 0).Err() },
			get: func(k string) error { _, err := rdb.Get(ctx, "plain:"+k).Bytes(); return err },
			pipeSet: func(p any, k string) error {
				p.(redis.Pipeliner).Set(ctx, "plain:"+k, val, 0)
				return nil
			},
			pipeGet: func(p any, k string) func() error {
				cmd := p.(redis.Pipeliner).Get(ctx, "plain:"+k)
				return func() error { _, err := cmd.Bytes(); return err }
			},
			run: func(fn func(p any) error) error {
				_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error { return fn(p) })
				return err
			},
		},
		"cachecrypt": {
			set: func(k string) error { return c.Set(ctx, "enc:"+k, val, 0) },
			get: func(k string) error { _, err := c.Get(ctx, "enc:"+k); return err },
			pipeSet: func(p any, k string) error {
				return p.(*goredis.Pipe).Set(ctx, "enc:"+k, val, 0)
			},
			pipeGet: func(p any, k string) func() error {
				v := p.(*goredis.Pipe).Get(ctx, "enc:"+k)
				return func() error { _, err := v.Result(); return err }
			},
			run: func(fn func(p any) error) error {
				return c.Pipelined(ctx, func(p *goredis.Pipe) error { return fn(p) })
			},
		},
	}
	// Each configuration runs plain then encrypted, back to back, so that the
	// pair sees the same load on a shared machine.
	for _, op := range []string{"set", "get"} {
		for _, impl := range []string{"plain", "cachecrypt"} {
			o := impls[impl]
			b.Run(fmt.Sprintf("op=%s/pipeline=1/impl=%s", op, impl), func(b *testing.B) {
				f := o.get
				if op == "set" {
					f = o.set
				}
				b.SetBytes(valueSize)
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					if err := f(names[i%keys]); err != nil {
						b.Fatal(err)
					}
					i++
				}
			})
		}
		for _, impl := range []string{"plain", "cachecrypt"} {
			o := impls[impl]
			b.Run(fmt.Sprintf("op=%s/pipeline=16/impl=%s", op, impl), func(b *testing.B) {
				b.SetBytes(16 * valueSize)
				b.ReportAllocs()
				i := 0
				results := make([]func() error, 0, 16)
				for b.Loop() {
					results = results[:0]
					err := o.run(func(p any) error {
						for range 16 {
							k := names[i%keys]
							i++
							if op == "set" {
								if err := o.pipeSet(p, k); err != nil {
									return err
								}
								continue
							}
							results = append(results, o.pipeGet(p, k))
						}
						return nil
					})
					if err != nil {
						b.Fatal(err)
					}
					for _, r := range results {
						if err := r(); err != nil {
							b.Fatal(err)
						}
					}
				}
			})
		}
	}
	// The same operations, plain and encrypted in alternating batches: see
	// paired.
	for _, op := range []string{"set", "get"} {
		one := func(o ops) func(i int) error {
			if op == "set" {
				return func(i int) error { return o.set(names[i%keys]) }
			}
			return func(i int) error { return o.get(names[i%keys]) }
		}
		b.Run(fmt.Sprintf("op=%s/pipeline=1/paired", op), func(b *testing.B) {
			paired(b, 8, "plain", one(impls["plain"]), one(impls["cachecrypt"]))
		})
		pipe := func(o ops) func(i int) error {
			results := make([]func() error, 0, 16)
			return func(i int) error {
				results = results[:0]
				err := o.run(func(p any) error {
					for j := range 16 {
						k := names[(16*i+j)%keys]
						if op == "set" {
							if err := o.pipeSet(p, k); err != nil {
								return err
							}
							continue
						}
						results = append(results, o.pipeGet(p, k))
					}
					return nil
				})
				for _, r := range results {
					err = errors.Join(err, r())
				}
				return err
			}
		}
		b.Run(fmt.Sprintf("op=%s/pipeline=16/paired", op), func(b *testing.B) {
			paired(b, 4, "plain", pipe(impls["plain"]), pipe(impls["cachecrypt"]))
		})
	}
}
