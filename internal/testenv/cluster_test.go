package testenv

import (
	"strings"
	"testing"
)

// StartCluster forms a cluster of three primaries that each hold a range of
// the slots and see one another.
func TestStartCluster(t *testing.T) {
	c := StartCluster(t, t.TempDir(), 3)
	for _, n := range c.Nodes {
		nodes, _ := n.MustDo(t, "CLUSTER", "NODES").(string)
		if got := strings.Count(nodes, "master"); got != 3 {
			t.Fatalf("node %s knows %d primaries, want 3:\n%s", n.Addr(), got, nodes)
		}
		slots, _ := n.MustDo(t, "CLUSTER", "SLOTS").([]any)
		if len(slots) != 3 {
			t.Fatalf("node %s: CLUSTER SLOTS has %d ranges, want 3", n.Addr(), len(slots))
		}
	}
}
