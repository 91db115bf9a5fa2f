package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// SoftHSMInstall says how to install SoftHSM2.
const SoftHSMInstall = "install it with: apt-get install -y softhsm2"

// softHSMModules are the places Debian and Ubuntu install the SoftHSM2
// PKCS#11 module.
var softHSMModules = []string{
	"/usr/lib/softhsm/libsofthsm2.so",
	"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/local/lib/softhsm/libsofthsm2.so",
}

// SoftHSMModule returns the path of the SoftHSM2 PKCS#11 module, or fails or
// skips the test through Missing. SOFTHSM2_MODULE overrides the search.
func SoftHSMModule(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("SOFTHSM2_MODULE"); p != "" {
		return p
	}
	for _, p := range softHSMModules {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	Missing(t, "SoftHSM2 (libsofthsm2.so)", SoftHSMInstall)
	return ""
}

// SoftHSM is a SoftHSM2 configuration private to one test: its own token
// directory and configuration file, selected through SOFTHSM2_CONF, with one
// initialised token whose user PIN is in a file.
//
// SoftHSM reads SOFTHSM2_CONF when the module is initialised, and a process
// loads a module once, so tests that use SoftHSM must not run in parallel,
// and must close every PKCS#11 context they open before they end.
type SoftHSM struct {
	Module   string // path of libsofthsm2.so
	Conf     string // the configuration file; SOFTHSM2_CONF points to it
	TokenDir string // directories.tokendir
	Label    string // label of the initialised token
	PINFile  string // file holding the user PIN (mode 0600, no newline)

	dir   string
	util  string
	pin   string
	soPIN string
}

// StartSoftHSM writes a SoftHSM2 configuration in a temporary directory, points
// SOFTHSM2_CONF at it for the rest of the test (t.Setenv, so the test cannot
// be parallel), and initialises one token labelled label.
func StartSoftHSM(t testing.TB, label string) *SoftHSM {
	t.Helper()
	// Not t.TempDir: its path holds the test's name, and SoftHSM's config
	// parser cuts a value at the first '=', which sub-test names such as
	// "kek=pkcs11" contain.
	dir, err := os.MkdirTemp("", "softhsm-")
	if err != nil {
		t.Fatalf("testenv.StartSoftHSM: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	h := &SoftHSM{
		Module: SoftHSMModule(t),
		util:   LookPath(t, "softhsm2-util", SoftHSMInstall),
		dir:    dir,
		Label:  label,
		pin:    randomPIN(),
		soPIN:  randomPIN(),
	}
	h.TokenDir = filepath.Join(h.dir, "tokens")
	h.Conf = filepath.Join(h.dir, "softhsm2.conf")
	h.PINFile = filepath.Join(h.dir, "user.pin")
	if err := os.Mkdir(h.TokenDir, 0o700); err != nil {
		t.Fatalf("testenv.StartSoftHSM: %v", err)
	}
	conf := fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", h.TokenDir)
	if err := os.WriteFile(h.Conf, []byte(conf), 0o600); err != nil {
		t.Fatalf("testenv.StartSoftHSM: %v", err)
	}
	if err := os.WriteFile(h.PINFile, []byte(h.pin), 0o600); err != nil {
		t.Fatalf("testenv.StartSoftHSM: %v", err)
	}
	t.Setenv("SOFTHSM2_CONF", h.Conf)
	h.InitToken(t, label)
	return h
}

// InitToken initialises one more token, with the same PINs, in the next free
// slot of this configuration.
//
// softhsm2-util reads PINs only from its arguments or a terminal, so the
// throwaway PINs of this test-only token appear in the tool's argv.
func (h *SoftHSM) InitToken(t testing.TB, label string) {
	t.Helper()
	h.run(t, "--init-token", "--free", "--label", label, "--so-pin", h.soPIN, "--pin", h.pin)
}

// DeleteToken removes the token with this label, as if it were pulled out.
func (h *SoftHSM) DeleteToken(t testing.TB, label string) {
	t.Helper()
	h.run(t, "--delete-token", "--token", label)
}

func (h *SoftHSM) run(t testing.TB, args ...string) {
	t.Helper()
	cmd := exec.Command(h.util, args...)
	cmd.Env = append(os.Environ(), "SOFTHSM2_CONF="+h.Conf)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("testenv: softhsm2-util %s: %v\n%s", args[0], err, out)
	}
}

// WritePINFile writes pin to a new file in the test's directory and returns
// its path, for tests of a wrong PIN.
func (h *SoftHSM) WritePINFile(t testing.TB, name, pin string) string {
	t.Helper()
	p := filepath.Join(h.dir, name)
	if err := os.WriteFile(p, []byte(pin), 0o600); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return p
}

// URI returns an RFC 7512 PKCS#11 URI for the key pair with this label and
// id in the test token, naming the module and the PIN file.
func (h *SoftHSM) URI(object string, id []byte) string {
	var b strings.Builder
	b.WriteString("pkcs11:token=" + url.PathEscape(h.Label))
	if object != "" {
		b.WriteString(";object=" + url.PathEscape(object))
	}
	if len(id) > 0 {
		b.WriteString(";id=")
		for _, c := range id {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	b.WriteString("?module-path=" + h.Module + "&pin-source=file:" + h.PINFile)
	return b.String()
}

func randomPIN() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// pkcs11SpyModules are the places Debian installs OpenSC's pkcs11-spy, a
// PKCS#11 module that logs every call and forwards it to the real module.
var pkcs11SpyModules = []string{
	"/usr/lib/x86_64-linux-gnu/pkcs11-spy.so",
	"/usr/lib/aarch64-linux-gnu/pkcs11-spy.so",
	"/usr/lib/x86_64-linux-gnu/pkcs11/pkcs11-spy.so",
}

// SpyURI is URI with module-path pointing at OpenSC's pkcs11-spy in front
// of SoftHSM, so a test can count the PKCS#11 calls (such as C_Login) a
// client makes. It returns the URI and the spy's log file. The spy logs PINs:
// use it only with this test's throwaway token.
func (h *SoftHSM) SpyURI(t testing.TB, object string, id []byte) (uri, log string) {
	t.Helper()
	spy := ""
	for _, p := range pkcs11SpyModules {
		if _, err := os.Stat(p); err == nil {
			spy = p
			break
		}
	}
	if spy == "" {
		Missing(t, "pkcs11-spy (OpenSC)", "install it with: apt-get install -y opensc-pkcs11")
	}
	log = filepath.Join(h.dir, "pkcs11-spy.log")
	t.Setenv("PKCS11SPY", h.Module)
	t.Setenv("PKCS11SPY_OUTPUT", log)
	return strings.Replace(h.URI(object, id), "module-path="+h.Module, "module-path="+spy, 1), log
}

// CountCalls returns how many times the spy log records a call to fn, such
// as "C_Login".
func CountCalls(t testing.TB, log, fn string) int {
	t.Helper()
	b, err := os.ReadFile(log)
	if err != nil && !os.IsNotExist(err) {
		t.Fatalf("testenv.CountCalls: %v", err)
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[1] == fn {
			n++
		}
	}
	return n
}
