package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cachecrypt/cachecrypt/internal/testenv"
)

func TestClient(t *testing.T) {
	srv := testenv.StartRedis(t, t.TempDir())
	keyFile := filepath.Join(t.TempDir(), "platform.key")
	for run1 := range 2 { // the second run opens the keyset the first stored
		var out bytes.Buffer
		if err := run(&out, srv.Addr(), keyFile); err != nil {
			t.Fatalf("run %d: %v\n%s", run1, err, out.String())
		}
		for _, want := range []string{
			"GET session:42 through valuecrypt: alice, admin, token=s3cr3t",
			"email=alice@example.com plan=gold",
			"plaintext visible: false",
			"GET session:43: authentication failed: true",
			"re-encrypted 3 value(s), 0 already current",
			"GET session:42 after rotation: alice, admin, token=s3cr3t",
		} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("run %d: output lacks %q:\n%s", run1, want, out.String())
			}
		}
	}
}
