// Package testenv starts the real components that cachecrypt's tests run
// against (redis-server, SoftHSM2, Azurite) and enforces the project's rule
// on missing ones: when the CI environment variable is set, a test whose
// component is missing fails; elsewhere it skips with a message that says
// how to install it.
package testenv

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

// InCI reports whether the CI environment variable is set.
func InCI() bool { return os.Getenv("CI") != "" }

// Missing fails the test under CI, or skips it elsewhere, because component
// is not installed; install says how to get it.
func Missing(t testing.TB, component, install string) {
	t.Helper()
	if InCI() {
		t.Fatalf("%s is required in CI but missing; %s (or run the README test command, which installs it)", component, install)
	}
	t.Skipf("%s not installed; %s, or run the README test command", component, install)
}

// LookPath returns the path of a program, or fails/skips the test through
// Missing when it is not installed.
func LookPath(t testing.TB, program, install string) string {
	t.Helper()
	p, err := exec.LookPath(program)
	if err != nil {
		Missing(t, program, install)
	}
	return p
}

// FreePort returns a TCP port on 127.0.0.1 that accepted a listener a
// moment ago. It is drawn at random from below the kernel's ephemeral range
// (net.ipv4.ip_local_port_range), which outgoing connections take their
// local ports from: a port from net.Listen(":0") is in that range, and any
// connection made on the machine before the server binds can take it.
// Two test processes can still draw the same port; StartRedis and
// StartAzurite then see their server fail to bind and start it again on
// another port, and check that the server answering is the one they
// started.
func FreePort(t testing.TB) int {
	t.Helper()
	low, high := serverPorts()
	for range 1000 {
		port := low + rand.IntN(high-low)
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err == nil {
			l.Close()
			return port
		}
	}
	t.Fatalf("testenv.FreePort: no free port in [%d, %d) after 1000 tries", low, high)
	return 0
}

// serverPorts returns the range FreePort draws from: the 10,000 ports below
// the ephemeral range, or above it when that range starts too low.
func serverPorts() (low, high int) {
	eLow, eHigh := 32768, 60999 // Linux's default
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		var l, h int
		if n, _ := fmt.Sscan(string(b), &l, &h); n == 2 && l > 0 && h >= l {
			eLow, eHigh = l, h
		}
	}
	if eLow-10000 >= 1024 {
		return eLow - 10000, eLow
	}
	return eHigh + 1, min(eHigh+1+10000, 65536)
}

// startAttempts bounds how often a server is started again after losing
// its port to another test process.
const startAttempts = 10

// onFreePort calls start with ports from FreePort until it returns
// anything but errPortTaken, and fails the test (named by fn) on an error.
func onFreePort[T any](t testing.TB, fn string, start func(port int) (T, error)) T {
	t.Helper()
	for range startAttempts {
		s, err := start(FreePort(t))
		if errors.Is(err, errPortTaken) {
			continue
		}
		if err != nil {
			t.Fatalf("testenv.%s: %v", fn, err)
		}
		return s
	}
	t.Fatalf("testenv.%s: another process took the port %d times in a row", fn, startAttempts)
	panic("unreachable")
}

// startTimeout guards against a server that neither answers nor exits.
const startTimeout = 60 * time.Second

// errPortTaken reports that a server exited because its port was taken
// between FreePort and its bind.
var errPortTaken = errors.New("port taken before the server bound it")

// Short reports whether heavy component tests should be trimmed: set
// CACHECRYPT_SHORT=1 or pass -short.
func Short() bool {
	v, _ := strconv.ParseBool(os.Getenv("CACHECRYPT_SHORT"))
	return v || testing.Short()
}

// fileSize returns the size of the file at path, or 0 if it cannot be read.
func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

// readFrom returns the file at path from offset on, or "" if it cannot be
// read.
func readFrom(path string, offset int64) string {
	b, err := os.ReadFile(path)
	if err != nil || offset > int64(len(b)) {
		return ""
	}
	return string(b[offset:])
}
