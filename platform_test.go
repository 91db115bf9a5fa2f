package cachecrypt

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/cachecrypt/cachecrypt/aof"
	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/stretchr/testify/require"
)

const canary = "CANARY-7d1f0c2e-plaintext"

// canaryInstance makes an instance in dir with cfg holding the canary in a
// snapshot and in the AOF, and closes it.
func canaryInstance(t *testing.T, dir string, cfg Config) {
	t.Helper()
	i := open(t, dir, cfg)
	require.NoError(t, i.SaveSnapshot(writeCanary))
	log, err := i.OpenAOF(aof.Options{Fsync: aof.Always})
	require.NoError(t, err)
	require.NoError(t, log.Append([]byte("SET k "+canary+"\n")))
	require.NoError(t, log.Close())
	require.NoError(t, i.Close())
}

func writeCanary(w io.Writer) error {
	_, err := w.Write(bytes.Repeat([]byte(canary), 100))
	return err
}

// TestPlatformKeyInsideTheDataIsRefused: a platform key file or store
// inside the instance directory is refused unless a test opts in.
func TestPlatformKeyInsideTheDataIsRefused(t *testing.T) {
	dir := t.TempDir()
	inside := noProbe(Config{PlatformKeyFile: filepath.Join(dir, "persistence", "mmk.key")})
	_, err := Open(context.Background(), dir, inside)
	require.ErrorIs(t, err, ErrPlatformKey)
	require.ErrorContains(t, err, "platform key store")

	t.Setenv(PlatformStoreEnv, filepath.Join(dir, "os", "store"))
	_, err = Open(context.Background(), dir, noProbe(Config{}))
	require.ErrorIs(t, err, ErrPlatformKey)

	inside.PlatformKeyInData = true
	open(t, dir, inside)
}

// legacyInstance makes an instance as releases before the platform key
// store did: the MMK in DIR/platform/mmk.key, no instance id.
func legacyInstance(t *testing.T, dir string) {
	t.Helper()
	cfg := noProbe(Config{PlatformKeyFile: filepath.Join(dir, legacyPlatformKey), PlatformKeyInData: true})
	canaryInstance(t, dir, cfg)
	require.NoFileExists(t, filepath.Join(dir, instanceIDFile), "an explicit key file needs no instance id")
	states, err := filepath.Glob(filepath.Join(dir, legacyPlatformKey+".state-*"))
	require.NoError(t, err)
	for _, f := range states { // those releases kept no state record
		require.NoError(t, os.Remove(f))
	}
}

// TestLegacyPlatformKeyMovesToTheStore: an instance made by an earlier
// release opens; its key moves to the store and leaves the directory, with
// one event saying so.
func TestLegacyPlatformKeyMovesToTheStore(t *testing.T) {
	dir := t.TempDir()
	legacyInstance(t, dir)
	legacy, err := os.ReadFile(filepath.Join(dir, legacyPlatformKey))
	require.NoError(t, err)

	var moved []Event
	cfg := noProbe(Config{OnEvent: func(e Event) {
		if e.Kind == EventMigrated {
			moved = append(moved, e)
		}
	}})
	i := open(t, dir, cfg)
	require.Len(t, moved, 1)
	require.NoFileExists(t, filepath.Join(dir, legacyPlatformKey))
	require.NoDirExists(t, filepath.Join(dir, "platform"))
	stored, err := os.ReadFile(i.pkPath)
	require.NoError(t, err)
	require.Equal(t, legacy, stored)
	requireCanary(t, i)
	require.NoError(t, i.Close())

	moved = nil
	requireCanary(t, open(t, dir, cfg))
	require.Empty(t, moved, "moved once")
}

func requireCanary(t *testing.T, i *Instance) {
	t.Helper()
	got, _ := readSnapshot(t, i)
	require.Contains(t, got, canary)
	log, err := i.OpenAOF(aof.Options{})
	require.NoError(t, err)
	require.Equal(t, "SET k "+canary+"\n", replayAll(t, log))
	require.NoError(t, log.Close())
}

// TestLegacyPlatformKeyMoveCrashAtEveryStep kills the migration with
// SIGKILL after each of its steps; the next Open finishes it, and the data
// reads back.
func TestLegacyPlatformKeyMoveCrashAtEveryStep(t *testing.T) {
	if os.Getenv("CACHECRYPT_MIGRATE_CHILD") != "" {
		migrateChild(t)
		return
	}
	steps := []string{"platform: instance id", "platform: key copied", "platform: legacy key removed"}
	for _, step := range steps {
		t.Run(step, func(t *testing.T) {
			dir := t.TempDir()
			legacyInstance(t, dir)
			cmd := exec.Command(os.Args[0], "-test.run=^TestLegacyPlatformKeyMoveCrashAtEveryStep$")
			cmd.Env = append(os.Environ(), "CACHECRYPT_MIGRATE_CHILD=1", "CRASH_DIR="+dir, "CRASH_STEP="+step)
			out, err := cmd.CombinedOutput()
			require.ErrorContains(t, err, "killed", "%s", out)

			i := open(t, dir, noProbe(Config{}))
			require.NoFileExists(t, filepath.Join(dir, legacyPlatformKey))
			requireCanary(t, i)
		})
	}
}

func migrateChild(t *testing.T) {
	cfg := noProbe(Config{})
	cfg.stepHook = func(s string) {
		if s == os.Getenv("CRASH_STEP") {
			p, _ := os.FindProcess(os.Getpid())
			p.Kill()
			time.Sleep(time.Hour)
		}
	}
	_, err := Open(context.Background(), os.Getenv("CRASH_DIR"), cfg)
	t.Fatalf("the step %q was never reached (Open: %v)", os.Getenv("CRASH_STEP"), err)
}

// TestSystemdCredentialHoldsThePlatformKey: a service with the
// cachecrypt-mmk credential (systemd-creds) uses it and writes no key to
// the store.
func TestSystemdCredentialHoldsThePlatformKey(t *testing.T) {
	creds, store := t.TempDir(), t.TempDir()
	m, err := kek.NewMMK("mmk")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(creds, PlatformCredential), m.Keyset(), 0o400))
	t.Setenv("CREDENTIALS_DIRECTORY", creds)
	t.Setenv(PlatformStoreEnv, store)
	dir := t.TempDir()
	canaryInstance(t, dir, noProbe(Config{}))
	i := open(t, dir, noProbe(Config{}))
	require.Equal(t, filepath.Join(creds, PlatformCredential), i.pkPath)
	require.Equal(t, m.Descriptor().KeyID, i.Status()[0].KEK.KeyID, "the keyrings are wrapped by the credential's key")
	requireCanary(t, i)
	keys, err := filepath.Glob(filepath.Join(store, "instances", "*", platformKeyName))
	require.NoError(t, err)
	require.Empty(t, keys, "no key written to the store")
}
