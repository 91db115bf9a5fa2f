package main

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRunSmallFleet(t *testing.T) {
	require.NoError(t, run([]string{"-nodes", "10,20", "-max=false"}))
	require.NoError(t, run([]string{"-nodes", "50", "-limit", "20", "-budget", "30s"}), "bisection on a tiny vault")
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{{"-nodes", "0"}, {"-nodes", "10,x"}, {"-policies", "hope", "-nodes", "1"}, {"-limit", "0", "-nodes", "1"}} {
		assert.Error(t, run(args), "%q", args)
	}
}
