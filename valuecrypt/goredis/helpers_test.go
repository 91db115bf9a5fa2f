package goredis_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/cachecrypt/cachecrypt/internal/testenv"
	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/cachecrypt/cachecrypt/valuecrypt"
	"github.com/cachecrypt/cachecrypt/valuecrypt/goredis"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

var ctx = context.Background()

// server is a redis-server or a Redis Cluster started by the test, with a
// go-redis client on it.
type server struct {
	srv     *testenv.Redis        // a standalone server, or nil
	cluster *testenv.RedisCluster // a cluster, or nil
	rdb     redis.UniversalClient
}

// startRedis starts a standalone redis-server.
func startRedis(t *testing.T) *server {
	t.Helper()
	srv := testenv.StartRedis(t, t.TempDir())
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { rdb.Close() })
	return &server{srv: srv, rdb: rdb}
}

// startCluster starts a Redis Cluster of three primaries, each holding a
// third of the slots, and a ClusterClient on it.
func startCluster(t *testing.T) *server {
	t.Helper()
	cl := testenv.StartCluster(t, t.TempDir(), 3)
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs()})
	t.Cleanup(func() { rdb.Close() })
	return &server{cluster: cl, rdb: rdb}
}

// mmk returns a platform-managed key kept in a file of the test.
func mmk(t *testing.T) *kek.MMK {
	t.Helper()
	m, err := kek.LoadMMK(filepath.Join(t.TempDir(), "platform.key"))
	require.NoError(t, err)
	return m
}

// newClient creates a keyset in the server under the MMK and returns an
// adapter client with cfg.
func newClient(t *testing.T, s *server, cfg valuecrypt.Config) (*goredis.Client, *valuecrypt.Keyset) {
	t.Helper()
	c, ks, _ := newClientKEK(t, s, cfg)
	return c, ks
}

// newClientKEK is newClient, also returning the KEK.
func newClientKEK(t *testing.T, s *server, cfg valuecrypt.Config) (*goredis.Client, *valuecrypt.Keyset, *kek.MMK) {
	t.Helper()
	m := mmk(t)
	ks, err := valuecrypt.Create(ctx, goredis.Store(s.rdb, ""), m)
	require.NoError(t, err)
	t.Cleanup(func() { ks.Close() })
	return goredis.New(s.rdb, valuecrypt.NewCipher(ks, cfg)), ks, m
}

// storedName returns the name under which c stores the key or field name n:
// n itself, or its encryption when c's Config.EncryptNames is set.
func storedName(t *testing.T, c *goredis.Client, n string) string {
	t.Helper()
	if !c.Cipher().Config().EncryptNames {
		return n
	}
	e, err := c.Cipher().EncryptName(n)
	require.NoError(t, err)
	return e
}
