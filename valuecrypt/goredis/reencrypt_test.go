package goredis_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/cachecrypt/cachecrypt/valuecrypt"
	"github.com/cachecrypt/cachecrypt/valuecrypt/goredis"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// raceHook makes a writer win the race against Reencrypt deterministically:
// just before the first pipeline of compare-and-set scripts runs, it writes
// a newer value to some of the keys in it, through another client.
type raceHook struct {
	race func(ctx context.Context, keys []string)
	once sync.Once
}

func (h *raceHook) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *raceHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h *raceHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		var keys []string
		for _, c := range cmds {
			if a := c.Args(); len(a) > 3 && strings.EqualFold(fmt.Sprint(a[0]), "eval") {
				keys = append(keys, fmt.Sprint(a[3]))
			}
		}
		if len(keys) > 0 {
			h.once.Do(func() { h.race(ctx, keys) })
		}
		return next(ctx, cmds)
	}
}

// TestRotateWriteReadAll: write, rotate, write, and every value reads back,
// in this process and in another that has not seen the rotation.
func TestRotateWriteReadAll(t *testing.T) {
	s := startRedis(t)
	c, ks, m := newClientKEK(t, s, valuecrypt.Config{})
	for i := range 50 {
		require.NoError(t, c.Set(ctx, fmt.Sprint("before:", i), []byte(fmt.Sprint("b", i)), 0))
	}
	other, err := valuecrypt.Open(ctx, goredis.Store(s.rdb, ""), m)
	require.NoError(t, err)
	defer other.Close()
	id, err := ks.Rotate(ctx)
	require.NoError(t, err)
	for i := range 50 {
		require.NoError(t, c.Set(ctx, fmt.Sprint("after:", i), []byte(fmt.Sprint("a", i)), 0))
	}
	oc := goredis.New(s.rdb, valuecrypt.NewCipher(other, valuecrypt.Config{}))
	for _, cl := range []*goredis.Client{c, oc} {
		for i := range 50 {
			for _, k := range []string{fmt.Sprint("before:", i), fmt.Sprint("after:", i)} {
				v, err := cl.Get(ctx, k)
				require.NoError(t, err)
				require.Equal(t, string(k[0])+strconv.Itoa(i), string(v))
			}
		}
	}
	kid, _ := valuecrypt.KeyID([]byte(s.rdb.Get(ctx, "after:0").Val()))
	require.Equal(t, id, kid)
	kid, _ = valuecrypt.KeyID([]byte(s.rdb.Get(ctx, "before:0").Val()))
	require.EqualValues(t, 1, kid)
}

// TestReencryptRacingWriters rotates, then re-encrypts while two writers
// keep rewriting half of the keys and a hook makes a third writer win the
// race on keys Reencrypt is about to replace. Every value ends under the
// new key, and every key holds the last value written to it.
func TestReencryptRacingWriters(t *testing.T) {
	const n = 600
	s := startRedis(t)
	c, ks := newClient(t, s, valuecrypt.Config{})
	writerRDB := redis.NewClient(&redis.Options{Addr: s.srv.Addr()})
	defer writerRDB.Close()
	w := goredis.New(writerRDB, c.Cipher())

	var mu sync.Mutex
	want := map[string]string{} // last acknowledged value of each key
	set := func(cl *goredis.Client, key, v string) bool {
		if err := cl.Set(ctx, key, []byte(v), 0); err != nil {
			t.Errorf("set %s: %v", key, err) // t.Error: writers run in their own goroutines
			return false
		}
		mu.Lock()
		want[key] = v
		mu.Unlock()
		return true
	}
	for i := range n {
		set(c, fmt.Sprint("s:", i), fmt.Sprint("old-", i))
	}
	for i := range 50 {
		require.NoError(t, c.HSet(ctx, fmt.Sprint("h:", i), map[string][]byte{"a": []byte("A"), "b": []byte("B")}, 0))
	}
	primary, err := ks.Rotate(ctx)
	require.NoError(t, err)

	raced := 0
	hook := &raceHook{race: func(ctx context.Context, keys []string) {
		for _, k := range keys {
			if i, _ := strconv.Atoi(strings.TrimPrefix(k, "s:")); strings.HasPrefix(k, "s:") && i >= n/2 && raced < 5 {
				set(w, k, "raced-"+k)
				raced++
			}
		}
	}}
	s.rdb.AddHook(hook)

	done := make(chan struct{})
	var wg sync.WaitGroup
	for wr := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := 0; ; seq++ {
				for i := wr; i < n/2; i += 2 {
					select {
					case <-done:
						return
					default:
					}
					if !set(w, fmt.Sprint("s:", i), fmt.Sprintf("w%d-%d", wr, seq)) {
						return
					}
				}
			}
		}()
	}
	var progress []goredis.Progress
	p, err := c.Reencrypt(ctx, goredis.ReencryptOptions{Batch: 50, Progress: func(p goredis.Progress) { progress = append(progress, p) }})
	close(done)
	wg.Wait()
	require.NoError(t, err)
	require.Equal(t, 5, raced, "the hook found keys to race on")
	require.GreaterOrEqual(t, p.Raced, int64(5))
	require.Zero(t, p.Failed)
	require.EqualValues(t, n+50, p.Keys)
	require.Equal(t, int64(n+100), p.Rewritten+p.Current+p.Raced)
	require.Greater(t, len(progress), 1, "progress after every batch")
	require.Equal(t, p, progress[len(progress)-1])

	for key, v := range want {
		got, err := c.Get(ctx, key)
		require.NoError(t, err)
		require.Equal(t, v, string(got), "key %s lost its last write", key)
		id, _ := valuecrypt.KeyID([]byte(s.rdb.Get(ctx, key).Val()))
		require.Equal(t, primary, id, key)
	}
	for i := range 50 {
		all, err := c.HGetAll(ctx, fmt.Sprint("h:", i))
		require.NoError(t, err)
		require.Equal(t, map[string][]byte{"a": []byte("A"), "b": []byte("B")}, all)
		for _, raw := range s.rdb.HGetAll(ctx, fmt.Sprint("h:", i)).Val() {
			id, _ := valuecrypt.KeyID([]byte(raw))
			require.Equal(t, primary, id)
		}
	}
	again, err := c.Reencrypt(ctx, goredis.ReencryptOptions{})
	require.NoError(t, err)
	require.Zero(t, again.Rewritten)
	require.EqualValues(t, n+100, again.Current)
}

// TestReencryptMigratesPlaintext: in migration mode Reencrypt encrypts the
// values written before encryption, leaves other types and the keyset
// alone, and reports values that fail to open without touching them.
func TestReencryptMigratesPlaintext(t *testing.T) {
	for _, su := range setups {
		t.Run(su.name, func(t *testing.T) {
			s := su.start(t)
			c, ks := newClient(t, s, su.cfg)
			storedName := func(n string) string { return storedName(t, c, n) }
			require.NoError(t, s.rdb.Set(ctx, storedName("legacy:1"), "plain one", 0).Err())
			require.NoError(t, s.rdb.HSet(ctx, storedName("legacy:h"), storedName("f"), "plain field").Err())
			require.NoError(t, c.Set(ctx, "new", []byte("sealed"), 0))
			require.NoError(t, s.rdb.RPush(ctx, "a-list", "x").Err())
			keyset := s.rdb.Get(ctx, goredis.KeysetKey).Val()

			m := goredis.New(s.rdb, valuecrypt.NewCipher(ks, valuecrypt.Config{Context: su.cfg.Context, EncryptNames: su.cfg.EncryptNames, Migration: true}))
			p, err := m.Reencrypt(ctx, goredis.ReencryptOptions{})
			require.NoError(t, err)
			require.EqualValues(t, 2, p.Rewritten)
			require.EqualValues(t, 1, p.Current)
			require.Equal(t, keyset, s.rdb.Get(ctx, goredis.KeysetKey).Val(), "the keyset is never rewritten")

			v, err := c.Get(ctx, "legacy:1")
			require.NoError(t, err, "strict mode reads the converted value")
			require.Equal(t, "plain one", string(v))
			v, err = c.HGet(ctx, "legacy:h", "f")
			require.NoError(t, err)
			require.Equal(t, "plain field", string(v))

			// A value moved to another name fails to open: reported, kept.
			require.NoError(t, s.rdb.Set(ctx, storedName("moved"), s.rdb.Get(ctx, storedName("new")).Val(), 0).Err())
			_, err = ks.Rotate(ctx)
			require.NoError(t, err)
			moved := s.rdb.Get(ctx, storedName("moved")).Val()
			p, err = c.Reencrypt(ctx, goredis.ReencryptOptions{})
			require.ErrorIs(t, err, valuecrypt.ErrAuthentication)
			require.EqualValues(t, 1, p.Failed)
			require.EqualValues(t, 3, p.Rewritten)
			require.Equal(t, moved, s.rdb.Get(ctx, storedName("moved")).Val())
		})
	}
}
