package goredis_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/cachecrypt/cachecrypt/valuecrypt"
	"github.com/cachecrypt/cachecrypt/valuecrypt/goredis"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// setups are the clients every round-trip test runs on.
var setups = []struct {
	name  string
	start func(*testing.T) *server
	cfg   valuecrypt.Config
}{
	{"client", startRedis, valuecrypt.Config{Context: "db0"}},
	{"client/names", startRedis, valuecrypt.Config{Context: "db0", EncryptNames: true}},
	{"cluster", startCluster, valuecrypt.Config{Context: "db0"}},
	{"cluster/names", startCluster, valuecrypt.Config{Context: "db0", EncryptNames: true}},
}

// TestRoundTrip runs every helper, directly and in pipelines, against a
// real server and checks each value, each TTL and each miss.
func TestRoundTrip(t *testing.T) {
	for _, su := range setups {
		t.Run(su.name, func(t *testing.T) {
			s := su.start(t)
			c, _ := newClient(t, s, su.cfg)
			stored := func(n string) string { return storedName(t, c, n) }

			require.NoError(t, c.Set(ctx, "s:1", []byte("one"), 0))
			require.NoError(t, c.Set(ctx, "s:2", []byte("two"), time.Hour))
			require.NoError(t, c.Set(ctx, "s:empty", nil, 0))
			got, err := c.Get(ctx, "s:1")
			require.NoError(t, err)
			require.Equal(t, "one", string(got))
			got, err = c.Get(ctx, "s:empty")
			require.NoError(t, err)
			require.Empty(t, got)
			_, err = c.Get(ctx, "s:missing")
			require.ErrorIs(t, err, redis.Nil)
			require.Equal(t, time.Duration(-1), s.rdb.TTL(ctx, stored("s:1")).Val())
			require.Greater(t, s.rdb.TTL(ctx, stored("s:2")).Val(), time.Duration(0))

			// The keys hash to different slots: on a cluster MGET would
			// answer CROSSSLOT.
			vals, err := c.MGet(ctx, "s:2", "s:missing", "s:1")
			require.NoError(t, err)
			require.Equal(t, [][]byte{[]byte("two"), nil, []byte("one")}, vals)

			fields := map[string][]byte{"name": []byte("alice"), "email": []byte("a@example.com")}
			require.NoError(t, c.HSet(ctx, "h:1", fields, 0))
			require.NoError(t, c.HSet(ctx, "h:2", fields, time.Hour))
			v, err := c.HGet(ctx, "h:1", "email")
			require.NoError(t, err)
			require.Equal(t, "a@example.com", string(v))
			_, err = c.HGet(ctx, "h:1", "missing")
			require.ErrorIs(t, err, redis.Nil)
			all, err := c.HGetAll(ctx, "h:2")
			require.NoError(t, err)
			require.Equal(t, fields, all)
			require.Greater(t, s.rdb.TTL(ctx, stored("h:2")).Val(), time.Duration(0))
			require.Equal(t, time.Duration(-1), s.rdb.TTL(ctx, stored("h:1")).Val())
			all, err = c.HGetAll(ctx, "h:missing")
			require.NoError(t, err)
			require.Empty(t, all)

			variants := []func(func(*goredis.Pipe) error) error{
				func(fn func(*goredis.Pipe) error) error { return c.Pipelined(ctx, fn) },
			}
			if _, cluster := s.rdb.(*redis.ClusterClient); !cluster {
				// A transaction on a cluster must keep to one slot.
				variants = append(variants, func(fn func(*goredis.Pipe) error) error { return c.TxPipelined(ctx, fn) })
			}
			for _, pipelined := range variants {
				require.NoError(t, pipelined(func(p *goredis.Pipe) error {
					for i := range 10 {
						if err := p.Set(ctx, fmt.Sprintf("p:%d", i), []byte(fmt.Sprint("pv", i)), time.Hour); err != nil {
							return err
						}
					}
					return p.HSet(ctx, "ph", map[string][]byte{"f": []byte("pf")}, time.Hour)
				}))
				var gets []*goredis.Value
				var hget, miss, hmiss *goredis.Value
				require.NoError(t, pipelined(func(p *goredis.Pipe) error {
					for i := range 10 {
						gets = append(gets, p.Get(ctx, fmt.Sprintf("p:%d", i)))
					}
					hget, miss, hmiss = p.HGet(ctx, "ph", "f"), p.Get(ctx, "p:missing"), p.HGet(ctx, "ph", "nope")
					return nil
				}))
				for i, g := range gets {
					v, err := g.Result()
					require.NoError(t, err)
					require.Equal(t, fmt.Sprint("pv", i), string(v))
				}
				v, err := hget.Result()
				require.NoError(t, err)
				require.Equal(t, "pf", string(v))
				_, err = miss.Result()
				require.ErrorIs(t, err, redis.Nil)
				_, err = hmiss.Result()
				require.ErrorIs(t, err, redis.Nil)
				require.Greater(t, s.rdb.TTL(ctx, stored("p:3")).Val(), time.Duration(0))
				require.Greater(t, s.rdb.TTL(ctx, stored("ph")).Val(), time.Duration(0))
			}
			if su.cfg.EncryptNames {
				keys, err := s.rdb.Keys(ctx, "*").Result()
				require.NoError(t, err)
				for _, k := range keys {
					if k == goredis.KeysetKey {
						continue
					}
					require.NotContains(t, k, ":", "a plaintext name reached the server")
				}
			}
		})
	}
}

// TestMovedValuesFail: a value moved with RENAME, copied with COPY, moved to
// another field, or read under another context fails with
// ErrAuthentication.
func TestMovedValuesFail(t *testing.T) {
	s := startRedis(t)
	c, ks := newClient(t, s, valuecrypt.Config{Context: "tenant-a"})
	require.NoError(t, c.Set(ctx, "a", []byte("secret"), 0))
	require.NoError(t, c.HSet(ctx, "h", map[string][]byte{"f": []byte("secret")}, 0))

	require.NoError(t, s.rdb.Rename(ctx, "a", "renamed").Err())
	_, err := c.Get(ctx, "renamed")
	require.ErrorIs(t, err, valuecrypt.ErrAuthentication)

	require.NoError(t, s.rdb.Copy(ctx, "renamed", "a", 0, false).Err())
	require.NoError(t, s.rdb.Copy(ctx, "renamed", "copied", 0, false).Err())
	_, err = c.Get(ctx, "copied")
	require.ErrorIs(t, err, valuecrypt.ErrAuthentication)
	got, err := c.Get(ctx, "a")
	require.NoError(t, err, "copied back to its own name, it opens again")
	require.Equal(t, "secret", string(got))

	require.NoError(t, s.rdb.Copy(ctx, "h", "h2", 0, false).Err())
	_, err = c.HGet(ctx, "h2", "f")
	require.ErrorIs(t, err, valuecrypt.ErrAuthentication)
	all, err := c.HGetAll(ctx, "h2")
	require.ErrorIs(t, err, valuecrypt.ErrAuthentication)
	require.Empty(t, all)
	raw := s.rdb.HGet(ctx, "h", "f").Val()
	require.NoError(t, s.rdb.HSet(ctx, "h", "g", raw).Err())
	_, err = c.HGet(ctx, "h", "g")
	require.ErrorIs(t, err, valuecrypt.ErrAuthentication)

	other := goredis.New(s.rdb, valuecrypt.NewCipher(ks, valuecrypt.Config{Context: "tenant-b"}))
	_, err = other.Get(ctx, "a")
	require.ErrorIs(t, err, valuecrypt.ErrAuthentication)

	vals, err := c.MGet(ctx, "a", "copied")
	require.ErrorIs(t, err, valuecrypt.ErrAuthentication)
	require.Contains(t, err.Error(), `"copied"`)
	require.Equal(t, [][]byte{[]byte("secret"), nil}, vals)
}

// TestTamperedInCache: values cut or altered in the server fail; a value
// from before encryption is refused, or read and flagged in migration mode.
func TestTamperedInCache(t *testing.T) {
	s := startRedis(t)
	c, ks := newClient(t, s, valuecrypt.Config{})
	require.NoError(t, c.Set(ctx, "k", []byte("secret value"), 0))
	raw := s.rdb.Get(ctx, "k").Val()
	require.NoError(t, s.rdb.SetRange(ctx, "k", int64(len(raw)-1), "\x00").Err())
	_, err := c.Get(ctx, "k")
	require.ErrorIs(t, err, valuecrypt.ErrAuthentication)
	require.NoError(t, s.rdb.Set(ctx, "k", raw[:len(raw)-3], 0).Err())
	_, err = c.Get(ctx, "k")
	require.ErrorIs(t, err, valuecrypt.ErrAuthentication)

	require.NoError(t, s.rdb.Set(ctx, "legacy", "written before encryption", 0).Err())
	v, err := c.Get(ctx, "legacy")
	require.ErrorIs(t, err, valuecrypt.ErrPlaintext)
	require.Nil(t, v)
	m := goredis.New(s.rdb, valuecrypt.NewCipher(ks, valuecrypt.Config{Migration: true}))
	v, err = m.Get(ctx, "legacy")
	require.ErrorIs(t, err, valuecrypt.ErrPlaintext)
	require.Equal(t, "written before encryption", string(v))
	vals, err := m.MGet(ctx, "legacy")
	require.True(t, errors.Is(err, valuecrypt.ErrPlaintext))
	require.Equal(t, "written before encryption", string(vals[0]))
}
