package goredis_test

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/cachecrypt/cachecrypt/internal/testenv"
	"github.com/cachecrypt/cachecrypt/valuecrypt"
	"github.com/cachecrypt/cachecrypt/valuecrypt/goredis"
	"github.com/stretchr/testify/require"
)

// TestClusterAcrossPrimaries: on a Redis Cluster of three primaries, every
// helper, directly and in a pipeline, round-trips values whose keys are
// spread over all three (checked on each node), and Reencrypt converts the
// values on every primary.
func TestClusterAcrossPrimaries(t *testing.T) {
	for _, names := range []bool{false, true} {
		t.Run("names="+strconv.FormatBool(names), func(t *testing.T) {
			s := startCluster(t)
			c, ks := newClient(t, s, valuecrypt.Config{Context: "db0", EncryptNames: names})
			owner := slotOwners(t, s.cluster)
			// spread returns three names of the form prefix:N whose stored
			// names live on three different primaries.
			spread := func(prefix string) []string {
				var out []string
				seen := map[int]bool{}
				for i := 0; len(out) < 3; i++ {
					require.Less(t, i, 1000, "no names on every primary")
					n := fmt.Sprintf("%s:%d", prefix, i)
					if node := owner(storedName(t, c, n)); !seen[node] {
						seen[node] = true
						out = append(out, n)
					}
				}
				return out
			}
			strs, hashes, pstrs, phashes := spread("s"), spread("h"), spread("p"), spread("ph")
			val := func(n string) []byte { return []byte("value of " + n) }
			fields := func(n string) map[string][]byte {
				return map[string][]byte{"f1": []byte(n + "/f1"), "f2": []byte(n + "/f2")}
			}

			for i, n := range strs {
				require.NoError(t, c.Set(ctx, n, val(n), time.Duration(i)*time.Hour))
			}
			for _, n := range hashes {
				require.NoError(t, c.HSet(ctx, n, fields(n), time.Hour))
			}
			require.NoError(t, c.Pipelined(ctx, func(p *goredis.Pipe) error {
				for _, n := range pstrs {
					if err := p.Set(ctx, n, val(n), time.Hour); err != nil {
						return err
					}
				}
				for _, n := range phashes {
					if err := p.HSet(ctx, n, fields(n), 0); err != nil {
						return err
					}
				}
				return nil
			}))

			// Each stored name is on the primary that owns its slot, and
			// each kind of write reached all three primaries.
			local := make([]map[string]bool, len(s.cluster.Nodes))
			for i, node := range s.cluster.Nodes {
				local[i] = map[string]bool{}
				for _, k := range node.MustDo(t, "KEYS", "*").([]any) {
					local[i][k.(string)] = true
				}
			}
			for _, group := range [][]string{strs, hashes, pstrs, phashes} {
				nodes := map[int]bool{}
				for _, n := range group {
					sn := storedName(t, c, n)
					require.True(t, local[owner(sn)][sn], "%s (stored as %s) is not on node %d", n, sn, owner(sn))
					nodes[owner(sn)] = true
				}
				require.Len(t, nodes, 3, "%v spread over all three primaries", group)
			}

			check := func(t *testing.T) {
				for _, n := range append(append([]string{}, strs...), pstrs...) {
					got, err := c.Get(ctx, n)
					require.NoError(t, err)
					require.Equal(t, val(n), got)
				}
				got, err := c.MGet(ctx, append([]string{"s:missing"}, strs...)...)
				require.NoError(t, err)
				require.Equal(t, [][]byte{nil, val(strs[0]), val(strs[1]), val(strs[2])}, got)
				for _, n := range append(append([]string{}, hashes...), phashes...) {
					all, err := c.HGetAll(ctx, n)
					require.NoError(t, err)
					require.Equal(t, fields(n), all)
					v, err := c.HGet(ctx, n, "f2")
					require.NoError(t, err)
					require.Equal(t, n+"/f2", string(v))
				}
				var gets, hgets []*goredis.Value
				require.NoError(t, c.Pipelined(ctx, func(p *goredis.Pipe) error {
					for _, n := range pstrs {
						gets = append(gets, p.Get(ctx, n))
					}
					for _, n := range phashes {
						hgets = append(hgets, p.HGet(ctx, n, "f1"))
					}
					return nil
				}))
				for i, g := range gets {
					v, err := g.Result()
					require.NoError(t, err)
					require.Equal(t, val(pstrs[i]), v)
				}
				for i, g := range hgets {
					v, err := g.Result()
					require.NoError(t, err)
					require.Equal(t, phashes[i]+"/f1", string(v))
				}
			}
			check(t)
			require.Equal(t, time.Duration(-1), s.rdb.TTL(ctx, storedName(t, c, strs[0])).Val())
			require.Greater(t, s.rdb.TTL(ctx, storedName(t, c, strs[2])).Val(), time.Hour)

			// Rotate, then re-encrypt on every primary.
			id, err := ks.Rotate(ctx)
			require.NoError(t, err)
			p, err := c.Reencrypt(ctx, goredis.ReencryptOptions{Batch: 2})
			require.NoError(t, err)
			require.EqualValues(t, 3+3*2+3+3*2, p.Rewritten)
			for _, n := range append(append([]string{}, strs...), pstrs...) {
				raw, err := s.rdb.Get(ctx, storedName(t, c, n)).Bytes()
				require.NoError(t, err)
				got, ok := valuecrypt.KeyID(raw)
				require.True(t, ok)
				require.Equal(t, id, got, "%s re-encrypted under the new key", n)
			}
			for _, n := range append(append([]string{}, hashes...), phashes...) {
				raw, err := s.rdb.HGetAll(ctx, storedName(t, c, n)).Result()
				require.NoError(t, err)
				require.Len(t, raw, 2)
				for _, v := range raw {
					got, ok := valuecrypt.KeyID([]byte(v))
					require.True(t, ok)
					require.Equal(t, id, got, "%s re-encrypted under the new key", n)
				}
			}
			check(t)
		})
	}
}

// slotOwners returns a function that gives the index in cl.Nodes of the
// primary that holds a key, from CLUSTER KEYSLOT and CLUSTER SLOTS.
func slotOwners(t *testing.T, cl *testenv.RedisCluster) func(key string) int {
	t.Helper()
	byPort := map[int64]int{}
	for i, n := range cl.Nodes {
		byPort[int64(n.Port)] = i
	}
	var owners [16384]int
	ranges := cl.Nodes[0].MustDo(t, "CLUSTER", "SLOTS").([]any)
	covered := 0
	for _, r := range ranges {
		r := r.([]any)
		start, end := r[0].(int64), r[1].(int64)
		node, ok := byPort[r[2].([]any)[1].(int64)]
		require.True(t, ok, "CLUSTER SLOTS names a node the test did not start: %v", r[2])
		for slot := start; slot <= end; slot++ {
			owners[slot] = node
			covered++
		}
	}
	require.Equal(t, 16384, covered)
	return func(key string) int {
		t.Helper()
		slot := cl.Nodes[0].MustDo(t, "CLUSTER", "KEYSLOT", key).(int64)
		return owners[slot]
	}
}
