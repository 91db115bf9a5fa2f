package blob

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"
)

// TestCustomerKeyCloseZeroes: the base64 key the SDK is handed is the
// memory Close clears, so no copy made by this package outlives Close.
func TestCustomerKeyCloseZeroes(t *testing.T) {
	raw := bytes.Repeat([]byte{0xab}, 32)
	k, err := NewCustomerKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := *k.cpk().EncryptionKey, base64.StdEncoding.EncodeToString(raw); got != want {
		t.Fatalf("key sent %q, want %q", got, want)
	}
	k.Close()
	if got := *k.cpk().EncryptionKey; got != strings.Repeat("\x00", 44) {
		t.Fatalf("after Close the key sent is %q, want 44 zero bytes", got)
	}
}
