package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// RedisCluster is a Redis Cluster of primaries without replicas, started by
// a test on 127.0.0.1, each node in its own directory. It is stopped when
// the test ends.
type RedisCluster struct {
	Nodes []*Redis
}

// Addrs returns the host:port of every node.
func (c *RedisCluster) Addrs() []string {
	out := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		out[i] = n.Addr()
	}
	return out
}

// clusterTimeout guards against a cluster that never forms; a loaded
// machine forms one in seconds.
const clusterTimeout = 2 * time.Minute

// StartCluster starts n redis-server processes (n >= 3, the least
// redis-cli accepts) with cluster mode on, each on free client and bus
// ports under dir, assigns the 16384 slots evenly among them with
// redis-cli --cluster create, and returns once every node reports
// cluster_state:ok and knows all n nodes and every slot.
func StartCluster(t testing.TB, dir string, n int) *RedisCluster {
	t.Helper()
	bin := LookPath(t, "redis-server", RedisInstall)
	cli := LookPath(t, "redis-cli", RedisInstall)
	c := &RedisCluster{}
	for i := range n {
		nodeDir := filepath.Join(dir, fmt.Sprintf("node-%d", i))
		if err := os.MkdirAll(nodeDir, 0o755); err != nil {
			t.Fatal(err)
		}
		// The bus port defaults to the client port + 10000, which can fall
		// in the kernel's ephemeral range: draw it as a free port too.
		node := onFreePort(t, "StartCluster", func(port int) (*Redis, error) {
			return startRedis(bin, nodeDir, port, []string{"cluster-enabled yes", "cluster-config-file nodes.conf",
				fmt.Sprintf("cluster-port %d", FreePort(t)), "cluster-node-timeout 60000"})
		})
		t.Cleanup(node.Stop)
		c.Nodes = append(c.Nodes, node)
	}
	ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
	defer cancel()
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	out, err := exec.CommandContext(ctx, cli, append(args, "--cluster-replicas", "0", "--cluster-yes")...).CombinedOutput()
	if err != nil {
		t.Fatalf("testenv.StartCluster: redis-cli --cluster create: %v\n%s", err, out)
	}
	for _, node := range c.Nodes {
		c.waitReady(t, node, n)
	}
	return c
}

// waitReady polls CLUSTER INFO on node until it reports the cluster ok,
// with every slot assigned and n nodes known.
func (c *RedisCluster) waitReady(t testing.TB, node *Redis, n int) {
	t.Helper()
	want := []string{"cluster_state:ok", "cluster_slots_assigned:16384", "cluster_slots_ok:16384",
		fmt.Sprintf("cluster_known_nodes:%d", n), fmt.Sprintf("cluster_size:%d", n)}
	var info string
	for deadline := time.Now().Add(clusterTimeout); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		info, _ = node.MustDo(t, "CLUSTER", "INFO").(string)
		if hasLines(info, want) {
			return
		}
	}
	t.Fatalf("testenv.StartCluster: node %s did not see the cluster form in %v:\n%s", node.Addr(), clusterTimeout, info)
}

// hasLines reports whether every line of want is a line of info.
func hasLines(info string, want []string) bool {
	lines := strings.Split(strings.ReplaceAll(info, "\r\n", "\n"), "\n")
	for _, w := range want {
		found := false
		for _, l := range lines {
			found = found || l == w
		}
		if !found {
			return false
		}
	}
	return true
}
