package cachecrypt

import (
	"os"
	"testing"
)

// TestMain keeps the platform keys the tests make out of the user's own
// store: every instance of this run (and of its child processes) keeps
// its MMK in a temporary store.
func TestMain(m *testing.M) {
	if os.Getenv(PlatformStoreEnv) != "" { // a child process of a crash test: its parent's store
		os.Exit(m.Run())
	}
	store, err := os.MkdirTemp("", "cachecrypt-platform-store-")
	if err != nil {
		panic(err)
	}
	os.Setenv(PlatformStoreEnv, store)
	os.Unsetenv("CREDENTIALS_DIRECTORY")
	code := m.Run()
	os.RemoveAll(store)
	os.Exit(code)
}
