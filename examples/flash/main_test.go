package main

import (
	"bytes"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cachecrypt/cachecrypt/kek"
)

func TestRun(t *testing.T) {
	var out bytes.Buffer
	file := filepath.Join(t.TempDir(), "flash.img")
	if err := run([]string{"-file", file, "-keys", "300", "-hot", "20"}, &out); err != nil {
		t.Fatal(err)
	}
	want := "reads: 20 from RAM, 280 from flash, all verified"
	if !strings.Contains(out.String(), want) {
		t.Fatalf("output %q does not contain %q", out.String(), want)
	}
	// A second run on the same file is a new session: it starts empty and works.
	out.Reset()
	if err := run([]string{"-file", file, "-keys", "300", "-hot", "20"}, &out); err != nil {
		t.Fatal(err)
	}
}

func TestRunRefusesCMK(t *testing.T) {
	err := run([]string{"-cmk"}, new(bytes.Buffer))
	if !errors.Is(err, kek.ErrUnsupported) {
		t.Fatalf("run -cmk = %v; want kek.ErrUnsupported", err)
	}
}
