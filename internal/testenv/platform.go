package testenv

import (
	"os"
	"testing"
)

// platformStoreEnv is cachecrypt.PlatformStoreEnv (testenv cannot import
// the root package, whose tests import testenv).
const platformStoreEnv = "CACHECRYPT_PLATFORM_STORE"

// RunWithPlatformStore runs m with the platform keys of every instance it
// opens (and of the processes it starts) in a temporary store, so tests
// never write into the user's own ~/.config/cachecrypt. A store already
// set in the environment (a child process of a test) is kept. Call it
// from TestMain: os.Exit(testenv.RunWithPlatformStore(m)).
func RunWithPlatformStore(m *testing.M) int {
	if os.Getenv(platformStoreEnv) != "" {
		return m.Run()
	}
	store, err := os.MkdirTemp("", "cachecrypt-platform-store-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(store)
	os.Setenv(platformStoreEnv, store)
	os.Unsetenv("CREDENTIALS_DIRECTORY")
	return m.Run()
}
