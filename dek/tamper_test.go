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

// TestTamperKeyring damages a keyring file of the current format (2) in
// each way the format must catch and checks Open fails with the exact
// sentinel.
func TestTamperKeyring(t *testing.T) {
	ctx := context.Background()
	k := kektest.New("a")
	_, path := newKeyring(t, k)
	good, err := os.ReadFile(path)
	require.NoError(t, err)
	_, otherPath := newKeyring(t, k) // same KEK, another keyring
	other, err := os.ReadFile(otherPath)
	require.NoError(t, err)
	l := layoutOf(t, good)
	require.Equal(t, uint16(2), l.format)
	n := len(good)
	relabelled := clone(good)
	relabelled[9] = 1 // a v2 body read as v1

	cases := []tamperCase{
		{"magic", flip(good, 0), dek.ErrFormat},
		{"format version", flip(good, 9), dek.ErrVersion},
		{"format version 2 relabelled 1", relabelled, dek.ErrFormat},
		{"disk id byte", flip(good, 12), dek.ErrAuthentication},
		{"generation", flip(good, 20), dek.ErrAuthentication},
		{"last MAC byte", flip(good, n-1), dek.ErrAuthentication},
		{"first MAC byte", flip(good, n-32), dek.ErrAuthentication},
		{"entry nonce", flip(good, l.entry+12), dek.ErrAuthentication},
		{"sealed DEK", flip(good, n-40), dek.ErrAuthentication},
		{"empty file", nil, dek.ErrTruncated},
		{"truncated header", good[:10], dek.ErrTruncated},
		{"truncated MAC", good[:n-1], dek.ErrTruncated},
		{"truncated mid entries", good[:n-40], dek.ErrTruncated},
		{"appended byte", append(clone(good), 0), dek.ErrFormat},
		{"DEK entries of another keyring", splice(good, other, l.entry, n-32), dek.ErrAuthentication},
		{"entry nonce of another keyring", splice(good, other, l.entry+12, l.entry+24), dek.ErrAuthentication},
		{"wrapped key of another keyring", splice(good, other, l.wrapped, l.wrapped+l.wrappedLen), dek.ErrAuthentication},
	}
	runTamper(t, k, good, cases)

	t.Run("wrong KEK", func(t *testing.T) {
		_, err := dek.Open(ctx, path, kektest.New("other"))
		require.ErrorIs(t, err, kek.ErrKeyMismatch)
	})
	t.Run("same name, other key material", func(t *testing.T) {
		_, err := dek.Open(ctx, path, kektest.New("a"))
		require.ErrorIs(t, err, kek.ErrUnwrap)
	})
}

// TestTamperKeyringV1 damages the committed format 1 vector, which this
// build still opens, and checks each damage is caught as in format 2.
func TestTamperKeyringV1(t *testing.T) {
	good, mmk := keyringV1(t)
	l := layoutOf(t, good)
	require.Equal(t, uint16(1), l.format)
	n := len(good)
	cases := []tamperCase{
		{"magic", flip(good, 0), dek.ErrFormat},
		{"format version", flip(good, 9), dek.ErrVersion},
		{"disk id byte", flip(good, 12), dek.ErrAuthentication},
		{"generation", flip(good, 29), dek.ErrAuthentication},
		{"last MAC byte", flip(good, n-1), dek.ErrAuthentication},
		{"first MAC byte", flip(good, n-32), dek.ErrAuthentication},
		{"entry created", flip(good, l.entry+11), dek.ErrAuthentication},
		{"sealed DEK", flip(good, n-40), dek.ErrAuthentication},
		{"wrapped key", flip(good, l.wrapped+l.wrappedLen-1), kek.ErrUnwrap},
		{"truncated header", good[:10], dek.ErrTruncated},
		{"truncated MAC", good[:n-1], dek.ErrTruncated},
		{"truncated mid entries", good[:n-40], dek.ErrTruncated},
		{"appended byte", append(clone(good), 0), dek.ErrFormat},
	}
	runTamper(t, mmk, good, cases)
}

type tamperCase struct {
	name string
	data []byte
	want error
}

// runTamper opens each case with u and expects its error, then checks that
// every single-bit flip anywhere in good is caught by a documented error.
func runTamper(t *testing.T, u kek.Unwrapper, good []byte, cases []tamperCase) {
	ctx := context.Background()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "keyring")
			require.NoError(t, os.WriteFile(p, c.data, 0o600))
			r, err := dek.Open(ctx, p, u)
			require.ErrorIs(t, err, c.want)
			require.Nil(t, r)
			require.Contains(t, err.Error(), p, "error names the file")
		})
	}
	p := filepath.Join(t.TempDir(), "keyring")
	for i := range good {
		require.NoError(t, os.WriteFile(p, flip(good, i), 0o600))
		_, err := dek.Open(ctx, p, u)
		require.Truef(t, isDocumented(err), "flip at byte %d gave %v", i, err)
	}
}

// keyLayout locates the fields a tamper case aims at in a keyring with one
// DEK entry.
type keyLayout struct {
	format              uint16
	wrapped, wrappedLen int // offset and length of wrapped_krk's bytes
	entry               int // offset of the single entry
}

func layoutOf(t *testing.T, b []byte) keyLayout {
	t.Helper()
	kr, err := decodeKeyring(b)
	require.NoError(t, err)
	require.Len(t, kr.Entries, 1)
	entrySize := 4 + 8 + 48
	if kr.Format == 2 {
		entrySize += 12
	}
	// The entry is followed only by the MAC; before it stand the active
	// version (4), the entry count (2) and the wrapped key.
	l := keyLayout{format: kr.Format, entry: len(b) - 32 - entrySize, wrappedLen: len(kr.Wrapped.Ciphertext)}
	l.wrapped = l.entry - 6 - l.wrappedLen
	return l
}

func flip(b []byte, i int) []byte { c := clone(b); c[i] ^= 0x01; return c }

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

func clone(b []byte) []byte { return append([]byte(nil), b...) }

// FuzzParseKeyring checks that parsing never panics and that the format is
// not malleable: whatever parses serializes back to the very same bytes, in
// format 1 and in format 2.
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
	if v1, err := os.ReadFile(filepath.Join(keyringV1Dir, "keyring")); err == nil {
		f.Add(v1)
	}
	if v2, err := os.ReadFile(filepath.Join(keyringV2Dir, "keyring")); err == nil {
		f.Add(v2)
	}
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
