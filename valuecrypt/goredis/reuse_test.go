package goredis_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cachecrypt/cachecrypt/valuecrypt"
	"github.com/cachecrypt/cachecrypt/valuecrypt/goredis"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// laterSets is a redis.Cmdable that sends each SET only when flushed: a
// client of this kind must not see the buffer of a sealed value reused.
type laterSets struct {
	redis.Cmdable
	queued []func() error
}

func (l *laterSets) Set(ctx context.Context, key string, value any, ttl time.Duration) *redis.StatusCmd {
	l.queued = append(l.queued, func() error { return l.Cmdable.Set(ctx, key, value, ttl).Err() })
	return redis.NewStatusResult("OK", nil)
}

// TestSealedBuffers: values sealed one after another, sent directly, in
// pipelines, and through a Cmdable that sends them later, all arrive
// intact: no buffer is reused before its command was sent.
func TestSealedBuffers(t *testing.T) {
	s := startRedis(t)
	c, ks := newClient(t, s, valuecrypt.Config{})
	val := func(i int) []byte { return fmt.Appendf(nil, "value %d %0*d", i, i*100, 0) } // sizes differ
	for i := range 20 {
		require.NoError(t, c.Set(ctx, fmt.Sprint("d", i), val(i), 0))
		require.NoError(t, c.HSet(ctx, fmt.Sprint("dh", i), map[string][]byte{"a": val(i), "b": val(i + 1)}, 0))
	}
	require.NoError(t, c.Pipelined(ctx, func(p *goredis.Pipe) error {
		for i := range 20 {
			if err := p.Set(ctx, fmt.Sprint("p", i), val(i), 0); err != nil {
				return err
			}
			if err := p.HSet(ctx, fmt.Sprint("ph", i), map[string][]byte{"a": val(i), "b": val(i + 1)}, time.Hour); err != nil {
				return err
			}
		}
		return nil
	}))
	later := &laterSets{Cmdable: s.rdb}
	lc := goredis.New(later, c.Cipher())
	for i := range 20 {
		require.NoError(t, lc.Set(ctx, fmt.Sprint("l", i), val(i), 0))
	}
	for _, send := range later.queued {
		require.NoError(t, send())
	}
	for i := range 20 {
		for _, k := range []string{"d", "p", "l"} {
			got, err := c.Get(ctx, fmt.Sprint(k, i))
			require.NoError(t, err, "%s%d", k, i)
			require.Equal(t, val(i), got)
		}
		for _, k := range []string{"dh", "ph"} {
			got, err := c.HGetAll(ctx, fmt.Sprint(k, i))
			require.NoError(t, err, "%s%d", k, i)
			require.Equal(t, map[string][]byte{"a": val(i), "b": val(i + 1)}, got)
		}
	}
	require.EqualValues(t, 20+20*2+20+20*2+20, ks.Seals(1), "every value counted once")
}
