package main

import (
	"os"
	"testing"

	"github.com/cachecrypt/cachecrypt/internal/testenv"
)

// TestMain keeps the platform keys the tests make out of the user's own
// store.
func TestMain(m *testing.M) { os.Exit(testenv.RunWithPlatformStore(m)) }
