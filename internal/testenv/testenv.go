// Package testenv starts the real components that cachecrypt's tests run
// against (redis-server, SoftHSM2, Azurite) and enforces the project's rule
// on missing ones: when the CI environment variable is set, a test whose
// component is missing fails; elsewhere it skips with a message that says
// how to install it.
package testenv

import (
	"net"
	"os"
	"os/exec"
	"strconv"
	"testing"
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

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv.FreePort: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Short reports whether heavy component tests should be trimmed: set
// CACHECRYPT_SHORT=1 or pass -short.
func Short() bool {
	v, _ := strconv.ParseBool(os.Getenv("CACHECRYPT_SHORT"))
	return v || testing.Short()
}
