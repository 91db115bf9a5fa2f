package dek_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/cachecrypt/cachecrypt/dek"
	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/cachecrypt/cachecrypt/kek/kektest"
	"github.com/stretchr/testify/require"
)

// TestTamperKeyring damages a keyring file in each way the format must
// catch and checks Open fails with the exact sentinel.
func TestTamperKeyring(t *testing.T) {
	ctx := context.Background()
	k := kektest.New("a")
	_, path := newKeyring(t, k)
	good, err := os.ReadFile(path)
	require.NoError(t, err)
	n := len(good)
	_, otherPath := newKeyring(t, k) // same KEK, another keyring
	other, err := os.ReadFile(otherPath)
	require.NoError(t, err)

	flip := func(i int) []byte { b := clone(good); b[i] ^= 0x01; return b }
	cases := []struct {
		name string
		data []byte
		want error
	}{
		{"magic", flip(0), dek.ErrFormat},
		{"format version", flip(9), dek.ErrVersion},
		{"disk id byte", flip(12), dek.ErrAuthentication},
		{"generation", flip(20), dek.ErrAuthentication},
		{"last MAC byte", flip(n - 1), dek.ErrAuthentication},
		{"first MAC byte", flip(n - 32), dek.ErrAuthentication},
		{"sealed DEK", flip(n - 40), dek.ErrAuthentication},
		{"empty file", nil, dek.ErrTruncated},
		{"truncated header", good[:10], dek.ErrTruncated},
		{"truncated MAC", good[:n-1], dek.ErrTruncated},
		{"truncated mid entries", good[:n-40], dek.ErrTruncated},
		{"appended byte", append(clone(good), 0), dek.ErrFormat},
		{"DEK entries of another keyring", splice(good, other, entriesAt(n), n-32), dek.ErrAuthentication},
		{"wrapped key of another keyring", splice(good, other, entriesAt(n)-6-60, entriesAt(n)-6), dek.ErrAuthentication},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "keyring")
			require.NoError(t, os.WriteFile(p, c.data, 0o600))
			r, err := dek.Open(ctx, p, k)
			require.ErrorIs(t, err, c.want)
			require.Nil(t, r)
			require.Contains(t, err.Error(), p, "error names the file")
		})
	}

	// Every single-bit flip anywhere must be caught by one of the
	// documented errors.
	for i := range good {
		p := filepath.Join(t.TempDir(), "keyring")
		require.NoError(t, os.WriteFile(p, flip(i), 0o600))
		_, err := dek.Open(ctx, p, k)
		require.Truef(t, isDocumented(err), "flip at byte %d gave %v", i, err)
	}

	t.Run("wrong KEK", func(t *testing.T) {
		_, err := dek.Open(ctx, path, kektest.New("other"))
		require.ErrorIs(t, err, kek.ErrKeyMismatch)
	})
	t.Run("same name, other key material", func(t *testing.T) {
		_, err := dek.Open(ctx, path, kektest.New("a"))
		require.ErrorIs(t, err, kek.ErrUnwrap)
	})
}

func isDocumented(err error) bool {
	for _, e := range []error{dek.ErrAuthentication, dek.ErrFormat, dek.ErrTruncated, dek.ErrVersion, kek.ErrKeyMismatch, kek.ErrUnwrap} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// splice returns a with bytes [from, to) taken from b, another keyring of
// the same layout under the same test KEK.
func splice(a, b []byte, from, to int) []byte {
	out := clone(a)
	copy(out[from:to], b[from:to])
	return out
}

// entriesAt is where the single DEK entry of an n-byte keyring starts: it
// is followed only by the 32-byte MAC. Before it stand the active version
// (4), the entry count (2) and, before those, a test KEK's 60-byte wrapped key.
func entriesAt(n int) int { return n - 32 - 60 }

func clone(b []byte) []byte { return append([]byte(nil), b...) }

func FuzzParseKeyring(f *testing.F) {
	k := kektest.New("a")
	path := filepath.Join(f.TempDir(), "keyring")
	r, err := dek.Create(context.Background(), path, "disk-1", k)
	if err != nil {
		f.Fatal(err)
	}
	r.RotateDEK()
	r.Close()
	good, _ := os.ReadFile(path)
	f.Add(good)
	f.Add(good[:20])
	f.Fuzz(func(t *testing.T, data []byte) {
		re, err := dek.Marshal(data)
		if err != nil {
			return
		}
		if string(re) != string(data) {
			t.Fatalf("parse then marshal changed the keyring:\n%x\n%x", data, re)
		}
	})
}
