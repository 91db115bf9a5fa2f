package testenv

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
)

// A second redis-server on a port another one holds is refused as
// errPortTaken: the first server's PONG is not taken for its own.
func TestStartRedisOnATakenPort(t *testing.T) {
	first := StartRedis(t, filepath.Join(t.TempDir(), "first"))
	bin := LookPath(t, "redis-server", RedisInstall)
	s, err := startRedis(bin, t.TempDir(), first.Port, nil)
	if s != nil {
		s.Stop()
	}
	if !errors.Is(err, errPortTaken) {
		t.Fatalf("startRedis on port %d held by another redis-server: got %v, want errPortTaken", first.Port, err)
	}
	if v := first.MustDo(t, "PING"); v != "PONG" {
		t.Fatalf("first server: PING answered %v", v)
	}
}

// Azurite on a port that something else listens on is refused as
// errPortTaken, although a connection to the port succeeds.
func TestStartAzuriteOnATakenPort(t *testing.T) {
	node := LookPath(t, "node", AzuriteInstall)
	main := AzuriteMain()
	if main == "" {
		Missing(t, "Azurite (testenv/azurite/node_modules)", AzuriteInstall)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	a, err := startAzurite(node, main, t.TempDir(), port)
	if a != nil {
		a.stop()
	}
	if !errors.Is(err, errPortTaken) {
		t.Fatalf("startAzurite on a held port: got %v, want errPortTaken", err)
	}
}

// FreePort draws from outside the kernel's ephemeral range, so no outgoing
// connection can hold the port it returns.
func TestFreePortOutsideEphemeralRange(t *testing.T) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		Missing(t, "/proc/sys/net/ipv4/ip_local_port_range", "run the tests on Linux")
	}
	var low, high int
	if _, err := fmt.Sscan(string(b), &low, &high); err != nil {
		t.Fatalf("ip_local_port_range %q: %v", b, err)
	}
	for range 100 {
		if p := FreePort(t); p >= low && p <= high {
			t.Fatalf("FreePort = %d, inside the ephemeral range %d-%d", p, low, high)
		}
	}
}
