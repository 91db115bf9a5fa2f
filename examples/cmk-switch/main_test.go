package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestCMKSwitch(t *testing.T) {
	var out bytes.Buffer
	if err := run(&out, t.TempDir()); err != nil {
		t.Fatalf("cmk-switch: %v\n%s", err, out.String())
	}
	for _, want := range []string{"switched online to the Key Vault CMK", "contoso.vault.azure.net/keys/cache-cmk/", "CMK", "none lost: true"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}
