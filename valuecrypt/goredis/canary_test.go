package goredis_test

import (
	"bytes"
	"crypto/rand"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/cachecrypt/cachecrypt/internal/testenv"
	"github.com/cachecrypt/cachecrypt/valuecrypt"
	"github.com/cachecrypt/cachecrypt/valuecrypt/goredis"
	"github.com/stretchr/testify/require"
)

// TestNoPlaintextInCache writes an incompressible canary through every
// helper, then reads every key back with redis-cli GET (or HGETALL) and
// DUMP, and scans an uncompressed RDB snapshot: the canary appears nowhere.
// A control key written in clear shows that each scan finds the canary when
// it is there.
func TestNoPlaintextInCache(t *testing.T) {
	cli := testenv.LookPath(t, "redis-cli", testenv.RedisInstall)
	for _, names := range []bool{false, true} {
		t.Run("names="+strconv.FormatBool(names), func(t *testing.T) {
			s := startRedis(t)
			c, _ := newClient(t, s, valuecrypt.Config{EncryptNames: names})
			canary := make([]byte, 64)
			rand.Read(canary)
			value := append([]byte("canary:"), canary...)
			run := func(args ...string) []byte {
				t.Helper()
				out, err := exec.Command(cli, append([]string{"-p", strconv.Itoa(s.srv.Port), "--raw"}, args...)...).Output()
				require.NoError(t, err)
				return out
			}

			require.NoError(t, s.rdb.Set(ctx, "control", value, 0).Err())
			require.True(t, bytes.Contains(run("GET", "control"), canary), "control: GET")
			require.True(t, bytes.Contains(run("DUMP", "control"), canary), "control: DUMP")
			s.srv.MustDo(t, "CONFIG", "SET", "rdbcompression", "no")
			rdb, err := os.ReadFile(s.srv.Save(t))
			require.NoError(t, err)
			require.True(t, bytes.Contains(rdb, canary), "control: RDB")
			require.NoError(t, s.rdb.Del(ctx, "control").Err())

			require.NoError(t, c.Set(ctx, "s", value, 0))
			require.NoError(t, c.Set(ctx, "s-ttl", value, time.Hour))
			require.NoError(t, c.HSet(ctx, "h", map[string][]byte{"f": value}, time.Hour))
			require.NoError(t, c.Pipelined(ctx, func(p *goredis.Pipe) error {
				if err := p.Set(ctx, "p", value, 0); err != nil {
					return err
				}
				return p.HSet(ctx, "ph", map[string][]byte{"f": value}, 0)
			}))
			if names { // names are hidden only when encrypted
				require.NoError(t, c.Set(ctx, string(value), []byte("key name"), 0))
				require.NoError(t, c.HSet(ctx, "h", map[string][]byte{string(value): []byte("field name")}, 0))
			}
			keys, err := s.rdb.Keys(ctx, "*").Result()
			require.NoError(t, err)
			require.Len(t, keys, map[bool]int{false: 6, true: 7}[names], "5 written keys and the keyset")
			for _, k := range keys {
				require.False(t, bytes.Contains([]byte(k), canary), "key name")
				read := "GET"
				if s.rdb.Type(ctx, k).Val() == "hash" {
					read = "HGETALL"
				}
				require.False(t, bytes.Contains(run(read, k), canary), "%s %q", read, k)
				require.False(t, bytes.Contains(run("DUMP", k), canary), "DUMP %q", k)
			}
			rdb, err = os.ReadFile(s.srv.Save(t))
			require.NoError(t, err)
			require.False(t, bytes.Contains(rdb, canary), "RDB snapshot")

			got, err := c.Get(ctx, "s")
			require.NoError(t, err)
			require.Equal(t, value, got)
		})
	}
}
