package bench

import (
	"os"
	"testing"

	"github.com/cachecrypt/cachecrypt/internal/testenv"
)

// TestMain keeps the platform keys the benchmarks make out of the user's
// own store.
func TestMain(m *testing.M) { os.Exit(testenv.RunWithPlatformStore(m)) }
