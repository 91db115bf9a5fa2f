package testenv

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"
)

// AzuriteInstall says how to install Azurite (pinned in testenv/azurite).
const AzuriteInstall = "install it with: apt-get install -y nodejs npm && npm ci --prefix testenv/azurite"

// Azurite's well-known development account (public, documented by Microsoft).
const (
	AzuriteAccount = "devstoreaccount1"
	AzuriteKey     = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

// Azurite is the blob service of an Azurite emulator started by a test on
// 127.0.0.1, storing its data in a temporary directory. It is stopped when
// the test ends.
type Azurite struct {
	Endpoint string // blob service URL: http://127.0.0.1:PORT/devstoreaccount1/
	Account  string // AzuriteAccount
	Key      string // AzuriteKey, base64
	Dir      string // where Azurite keeps blobs and its metadata
	cmd      *exec.Cmd
}

// AzuriteMain returns the path of Azurite's blob server script in the
// repository's testenv/azurite/node_modules, or "" if it is not installed.
func AzuriteMain() string {
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	p := filepath.Join(root, "testenv", "azurite", "node_modules", "azurite", "dist", "src", "blob", "main.js")
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
}

// StartAzurite starts Azurite's blob service and waits until it accepts
// connections. Under CI a missing node or Azurite fails the test.
func StartAzurite(t testing.TB) *Azurite {
	t.Helper()
	node := LookPath(t, "node", AzuriteInstall)
	main := AzuriteMain()
	if main == "" {
		Missing(t, "Azurite (testenv/azurite/node_modules)", AzuriteInstall)
	}
	dir := t.TempDir()
	port := FreePort(t)
	cmd := exec.Command(node, main, "--blobHost", "127.0.0.1", "--blobPort", strconv.Itoa(port),
		"--location", dir, "--skipApiVersionCheck", "--disableTelemetry", "--silent")
	logf, err := os.Create(filepath.Join(dir, "azurite.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("testenv.StartAzurite: %v", err)
	}
	a := &Azurite{
		Endpoint: fmt.Sprintf("http://127.0.0.1:%d/%s/", port, AzuriteAccount),
		Account:  AzuriteAccount, Key: AzuriteKey, Dir: dir, cmd: cmd,
	}
	t.Cleanup(func() { a.stop(); logf.Close() })
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			c.Close()
			return a
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logf.Name())
			t.Fatalf("testenv.StartAzurite: Azurite did not listen on port %d; log:\n%s", port, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop ends the Azurite process (by its PID) and waits for it.
func (a *Azurite) stop() {
	if a.cmd.Process == nil || a.cmd.ProcessState != nil {
		return
	}
	a.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { a.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		a.cmd.Process.Kill()
		<-done
	}
}
