package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
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
	exited   chan struct{} // closed once cmd has exited
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
	a := onFreePort(t, "StartAzurite", func(port int) (*Azurite, error) { return startAzurite(node, main, t.TempDir(), port) })
	t.Cleanup(a.stop)
	return a
}

// startAzurite starts Azurite's blob service on port and waits until it
// says it listens: a connection alone could reach another test's Azurite on
// the same port. It returns errPortTaken when Azurite exited because it
// could not bind.
func startAzurite(node, main, dir string, port int) (*Azurite, error) {
	cmd := exec.Command(node, main, "--blobHost", "127.0.0.1", "--blobPort", strconv.Itoa(port),
		"--location", dir, "--skipApiVersionCheck", "--disableTelemetry", "--silent")
	logPath := filepath.Join(dir, "azurite.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	a := &Azurite{
		Endpoint: fmt.Sprintf("http://127.0.0.1:%d/%s/", port, AzuriteAccount),
		Account:  AzuriteAccount, Key: AzuriteKey, Dir: dir, cmd: cmd, exited: make(chan struct{}),
	}
	go func() { cmd.Wait(); logf.Close(); close(a.exited) }()
	ready := fmt.Sprintf("successfully listens on http://127.0.0.1:%d", port)
	deadline := time.Now().Add(startTimeout) // only a guard against a hang: exits are seen at once
	for !strings.Contains(readFrom(logPath, 0), ready) {
		select {
		case <-a.exited:
			log := readFrom(logPath, 0)
			if strings.Contains(log, "EADDRINUSE") {
				return nil, errPortTaken
			}
			return nil, fmt.Errorf("azurite on port %d exited (%v) before listening; log:\n%s", port, cmd.ProcessState, log)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			a.stop()
			return nil, fmt.Errorf("azurite did not listen on port %d in %v; log:\n%s", port, startTimeout, readFrom(logPath, 0))
		}
	}
	return a, nil
}

// stop ends the Azurite process (by its PID) and waits for it.
func (a *Azurite) stop() {
	select {
	case <-a.exited:
		return
	default:
	}
	a.cmd.Process.Signal(os.Interrupt)
	select {
	case <-a.exited:
	case <-time.After(5 * time.Second):
		a.cmd.Process.Kill()
		<-a.exited
	}
}
