package valuecrypt_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/cachecrypt/cachecrypt/kek/kektest"
	"github.com/cachecrypt/cachecrypt/valuecrypt"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var ctx = context.Background()

// countingStore counts the loads of a Store.
type countingStore struct {
	valuecrypt.Store
	loads atomic.Int64
}

func (s *countingStore) Load(ctx context.Context) ([]byte, error) {
	s.loads.Add(1)
	return s.Store.Load(ctx)
}

func newKeyset(t *testing.T) (*valuecrypt.Keyset, *countingStore, *kektest.KEK) {
	t.Helper()
	s := &countingStore{Store: valuecrypt.FileStore(filepath.Join(t.TempDir(), "keyset"))}
	k := kektest.New("app")
	ks, err := valuecrypt.Create(ctx, s, k)
	require.NoError(t, err)
	t.Cleanup(func() { ks.Close() })
	return ks, s, k
}

func TestSealOpenRoundTrip(t *testing.T) {
	ks, _, k := newKeyset(t)
	c := valuecrypt.NewCipher(ks, valuecrypt.Config{Context: "db0"})
	calls := k.Calls()
	for _, pt := range [][]byte{{}, []byte("x"), bytes.Repeat([]byte("value"), 1000)} {
		v, err := c.Seal("user:1", pt)
		require.NoError(t, err)
		require.Len(t, v, len(pt)+valuecrypt.Overhead)
		got, err := c.Open(ctx, "user:1", v)
		require.NoError(t, err)
		require.Equal(t, pt, got)

		f, err := c.SealField("user:1", "name", pt)
		require.NoError(t, err)
		got, err = c.OpenField(ctx, "user:1", "name", f)
		require.NoError(t, err)
		require.Equal(t, pt, got)
	}
	require.Equal(t, calls, k.Calls(), "sealing and opening values makes no KEK call")
}

// TestBoundToNameFieldAndContext moves a value to every other place it
// could be put: each fails with ErrAuthentication and no plaintext.
func TestBoundToNameFieldAndContext(t *testing.T) {
	ks, _, _ := newKeyset(t)
	c := valuecrypt.NewCipher(ks, valuecrypt.Config{Context: "tenant-a"})
	other := valuecrypt.NewCipher(ks, valuecrypt.Config{Context: "tenant-b"})
	v, err := c.Seal("k", []byte("secret"))
	require.NoError(t, err)
	f, err := c.SealField("k", "f", []byte("secret"))
	require.NoError(t, err)

	for name, open := range map[string]func() ([]byte, error){
		"other key":          func() ([]byte, error) { return c.Open(ctx, "k2", v) },
		"other context":      func() ([]byte, error) { return other.Open(ctx, "k", v) },
		"string as field":    func() ([]byte, error) { return c.OpenField(ctx, "k", "", v) },
		"field as string":    func() ([]byte, error) { return c.Open(ctx, "k", f) },
		"other field":        func() ([]byte, error) { return c.OpenField(ctx, "k", "g", f) },
		"other hash":         func() ([]byte, error) { return c.OpenField(ctx, "k2", "f", f) },
		"field other tenant": func() ([]byte, error) { return other.OpenField(ctx, "k", "f", f) },
		// "k"+"" vs ""+"k": the lengths are bound, not just the bytes.
		"name/field boundary": func() ([]byte, error) { return c.OpenField(ctx, "", "k", f) },
	} {
		pt, err := open()
		require.ErrorIs(t, err, valuecrypt.ErrAuthentication, name)
		require.Nil(t, pt, name)
	}
}

// TestAnotherKeyset: a value of another application's keyset, with the same
// key id, fails to authenticate.
func TestAnotherKeyset(t *testing.T) {
	a, _, _ := newKeyset(t)
	b, _, _ := newKeyset(t)
	v, err := valuecrypt.NewCipher(a, valuecrypt.Config{}).Seal("k", []byte("secret"))
	require.NoError(t, err)
	_, err = valuecrypt.NewCipher(b, valuecrypt.Config{}).Open(ctx, "k", v)
	require.ErrorIs(t, err, valuecrypt.ErrAuthentication)
}

func TestTruncatedAndAltered(t *testing.T) {
	ks, _, _ := newKeyset(t)
	c := valuecrypt.NewCipher(ks, valuecrypt.Config{Migration: true})
	v, err := c.Seal("k", []byte("the secret value"))
	require.NoError(t, err)
	for n := 1; n < len(v); n++ {
		pt, err := c.Open(ctx, "k", v[:n])
		require.ErrorIs(t, err, valuecrypt.ErrAuthentication, "truncated to %d", n)
		require.Nil(t, pt)
	}
	for i := range v {
		for _, bit := range []byte{0x01, 0x80} {
			bad := bytes.Clone(v)
			bad[i] ^= bit
			pt, err := c.Open(ctx, "k", bad)
			require.Error(t, err, "byte %d ^ %#x", i, bit)
			if errors.Is(err, valuecrypt.ErrPlaintext) {
				// The version byte no longer marks a ciphertext: migration
				// mode hands back the bytes as read, flagged, never a
				// decryption.
				require.Equal(t, bad, pt)
				continue
			}
			require.Nil(t, pt, "byte %d ^ %#x: %v", i, bit, err)
		}
	}
}

func TestPlaintextRefusedUnlessMigration(t *testing.T) {
	ks, _, _ := newKeyset(t)
	legacy := []byte(`{"user":"alice"}`)
	pt, err := valuecrypt.NewCipher(ks, valuecrypt.Config{}).Open(ctx, "k", legacy)
	require.ErrorIs(t, err, valuecrypt.ErrPlaintext)
	require.Nil(t, pt)

	m := valuecrypt.NewCipher(ks, valuecrypt.Config{Migration: true})
	pt, err = m.Open(ctx, "k", legacy)
	require.ErrorIs(t, err, valuecrypt.ErrPlaintext)
	require.Equal(t, legacy, pt)
	require.True(t, m.Stale(legacy))

	// A binary legacy value whose first byte is one valuecrypt reserves is
	// never returned as plaintext.
	for _, first := range []byte{0xC0, 0xC1, 0xF5, 0xFF} {
		pt, err = m.Open(ctx, "k", append([]byte{first}, legacy...))
		require.Error(t, err)
		require.NotErrorIs(t, err, valuecrypt.ErrPlaintext)
		require.Nil(t, pt)
	}
}

// TestRotationAcrossProcesses: a second Keyset on the same store (another
// process) opens values sealed under a key it has not seen by reloading the
// keyset once, with no KEK call; an id it can never know fails after one
// reload; an old id it lacks fails without any.
func TestRotationAcrossProcesses(t *testing.T) {
	ks, s, k := newKeyset(t)
	c := valuecrypt.NewCipher(ks, valuecrypt.Config{})
	other, err := valuecrypt.Open(ctx, s, k)
	require.NoError(t, err)
	defer other.Close()
	oc := valuecrypt.NewCipher(other, valuecrypt.Config{})

	v1, err := c.Seal("a", []byte("one"))
	require.NoError(t, err)
	id, err := ks.Rotate(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 2, id)
	v2, err := c.Seal("b", []byte("two"))
	require.NoError(t, err)
	require.Equal(t, []uint32{1, 2}, ids(t, v1, v2))

	calls, loads := k.Calls(), s.loads.Load()
	got, err := oc.Open(ctx, "b", v2)
	require.NoError(t, err)
	require.Equal(t, "two", string(got))
	require.Equal(t, loads+1, s.loads.Load(), "one reload")
	require.Equal(t, calls, k.Calls(), "reload without a KEK call")
	got, err = oc.Open(ctx, "a", v1)
	require.NoError(t, err)
	require.Equal(t, "one", string(got))
	primary, all := other.KeyIDs()
	require.EqualValues(t, 2, primary)
	require.Equal(t, []uint32{1, 2}, all)

	future := bytes.Clone(v2)
	binary.BigEndian.PutUint32(future[1:], 9)
	loads = s.loads.Load()
	_, err = oc.Open(ctx, "b", future)
	require.ErrorIs(t, err, valuecrypt.ErrUnknownKey)
	require.Equal(t, loads+1, s.loads.Load(), "exactly one reload for an unknown newer key")

	// A Keyset rotated by the other process, then rotated here: the
	// compare-and-set sees the conflict and rotates on top of it.
	_, err = other.Rotate(ctx)
	require.NoError(t, err)
	id, err = ks.Rotate(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 4, id)
	require.Equal(t, calls, k.Calls())
}

func ids(t *testing.T, vs ...[]byte) []uint32 {
	var out []uint32
	for _, v := range vs {
		id, ok := valuecrypt.KeyID(v)
		require.True(t, ok)
		out = append(out, id)
	}
	return out
}

func TestOpenMakesOneKEKCall(t *testing.T) {
	_, s, k := newKeyset(t)
	before := k.Unwraps()
	ks, err := valuecrypt.Open(ctx, s, k)
	require.NoError(t, err)
	defer ks.Close()
	require.Equal(t, before+1, k.Unwraps())
	require.NoError(t, ks.Reload(ctx))
	require.Equal(t, before+1, k.Unwraps(), "reloading an unchanged keyset makes no KEK call")
}

func TestKeysetErrors(t *testing.T) {
	ks, s, k := newKeyset(t)
	_, err := valuecrypt.Create(ctx, s, k)
	require.ErrorIs(t, err, valuecrypt.ErrKeysetExists)

	_, err = valuecrypt.Open(ctx, valuecrypt.FileStore(filepath.Join(t.TempDir(), "none")), k)
	require.ErrorIs(t, err, valuecrypt.ErrKeysetMissing)

	_, err = valuecrypt.Open(ctx, s, kektest.New("other"))
	require.ErrorIs(t, err, kek.ErrKeyMismatch)

	k.FailWith(kek.ErrRevoked)
	_, err = valuecrypt.Open(ctx, s, k)
	require.ErrorIs(t, err, kek.ErrRevoked)
	k.FailWith(nil)

	require.NoError(t, ks.Close())
	_, err = valuecrypt.NewCipher(ks, valuecrypt.Config{}).Seal("k", nil)
	require.ErrorIs(t, err, valuecrypt.ErrClosed)
	_, err = ks.Rotate(ctx)
	require.ErrorIs(t, err, valuecrypt.ErrClosed)
}

// TestDamagedKeyset flips every bit position class of every byte of the
// stored keyset and truncates it at every length: each open fails, with
// ErrKeysetCorrupt or the KEK's refusal, never with a usable keyset.
func TestDamagedKeyset(t *testing.T) {
	_, s, k := newKeyset(t)
	good, err := s.Load(ctx)
	require.NoError(t, err)
	check := func(data []byte, what string) {
		t.Helper()
		_, err := valuecrypt.Open(ctx, memStore(data), k)
		require.Error(t, err, what)
		if !errors.Is(err, valuecrypt.ErrKeysetCorrupt) && !errors.Is(err, kek.ErrUnwrap) && !errors.Is(err, kek.ErrKeyMismatch) {
			t.Fatalf("%s: unexpected error %v", what, err)
		}
	}
	for n := range len(good) {
		check(good[:n], "truncated")
	}
	for i := range good {
		bad := bytes.Clone(good)
		bad[i] ^= 0x04
		check(bad, "flipped")
	}
}

type memStore []byte

func (m memStore) Load(context.Context) ([]byte, error) { return m, nil }
func (m memStore) Save(context.Context, []byte, []byte) error {
	return errors.New("read-only")
}

func TestRewrap(t *testing.T) {
	ks, s, k := newKeyset(t)
	c := valuecrypt.NewCipher(ks, valuecrypt.Config{})
	v, err := c.Seal("k", []byte("kept"))
	require.NoError(t, err)
	next := kektest.New("next")
	require.NoError(t, ks.Rewrap(ctx, next))
	require.EqualValues(t, 1, next.Wraps())
	_, err = valuecrypt.Open(ctx, s, k)
	require.ErrorIs(t, err, kek.ErrKeyMismatch, "the old KEK no longer opens it")
	again, err := valuecrypt.Open(ctx, s, next)
	require.NoError(t, err)
	defer again.Close()
	got, err := valuecrypt.NewCipher(again, valuecrypt.Config{}).Open(ctx, "k", v)
	require.NoError(t, err)
	require.Equal(t, "kept", string(got))
}

func TestEncryptName(t *testing.T) {
	ks, _, _ := newKeyset(t)
	c := valuecrypt.NewCipher(ks, valuecrypt.Config{Context: "a"})
	n1, err := c.EncryptName("user:1")
	require.NoError(t, err)
	n2, err := c.EncryptName("user:1")
	require.NoError(t, err)
	require.Equal(t, n1, n2, "deterministic: equal names stay equal")
	require.NotContains(t, n1, "user")
	back, err := c.DecryptName(n1)
	require.NoError(t, err)
	require.Equal(t, "user:1", back)
	n3, err := c.EncryptName("user:2")
	require.NoError(t, err)
	require.NotEqual(t, n1, n3)

	other := valuecrypt.NewCipher(ks, valuecrypt.Config{Context: "b"})
	_, err = other.DecryptName(n1)
	require.ErrorIs(t, err, valuecrypt.ErrAuthentication)
	_, err = c.DecryptName("not-an-encrypted-name")
	require.ErrorIs(t, err, valuecrypt.ErrAuthentication)

	_, err = ks.Rotate(ctx)
	require.NoError(t, err)
	n4, err := c.EncryptName("user:1")
	require.NoError(t, err)
	require.Equal(t, n1, n4, "rotation keeps the name key")
}

func FuzzOpen(f *testing.F) {
	s := valuecrypt.FileStore(filepath.Join(f.TempDir(), "keyset"))
	ks, err := valuecrypt.Create(ctx, s, kektest.New("fuzz"))
	require.NoError(f, err)
	c := valuecrypt.NewCipher(ks, valuecrypt.Config{})
	good, err := c.Seal("k", []byte("fuzz"))
	require.NoError(f, err)
	f.Add(good)
	f.Add([]byte{0xC1})
	f.Add([]byte("plain"))
	f.Fuzz(func(t *testing.T, v []byte) {
		pt, err := c.Open(ctx, "k", v)
		if err == nil && (!bytes.Equal(v, good) || string(pt) != "fuzz") {
			t.Fatalf("Open accepted a value it never sealed: %x", v)
		}
		if err != nil && pt != nil {
			t.Fatalf("Open returned bytes with error %v", err)
		}
	})
}

// TestConcurrentUnknownKeyOneReload: many goroutines meeting a value under
// a key their keyset has not seen yet cause one reload between them.
func TestConcurrentUnknownKeyOneReload(t *testing.T) {
	ks, s, k := newKeyset(t)
	other, err := valuecrypt.Open(ctx, s, k)
	require.NoError(t, err)
	defer other.Close()
	_, err = ks.Rotate(ctx)
	require.NoError(t, err)
	v, err := valuecrypt.NewCipher(ks, valuecrypt.Config{}).Seal("k", []byte("new"))
	require.NoError(t, err)
	oc := valuecrypt.NewCipher(other, valuecrypt.Config{})
	loads := s.loads.Load()
	errs := make(chan error, 16)
	for range 16 {
		go func() {
			_, err := oc.Open(ctx, "k", v)
			errs <- err
		}()
	}
	for range 16 {
		require.NoError(t, <-errs)
	}
	require.Equal(t, loads+1, s.loads.Load())
}

// TestSealCount: every seal under a key is counted, per key, across
// rotations and reloads; opens are not.
func TestSealCount(t *testing.T) {
	ks, s, k := newKeyset(t)
	c := valuecrypt.NewCipher(ks, valuecrypt.Config{})
	var sealed [][]byte
	for i := range 4 {
		v, err := c.Seal(fmt.Sprint("k", i), []byte("v"))
		require.NoError(t, err)
		sealed = append(sealed, v)
	}
	_, err := c.SealField("h", "f", []byte("v"))
	require.NoError(t, err)
	buf, err := c.AppendSeal(nil, "a", []byte("v"))
	require.NoError(t, err)
	_, err = c.AppendSealField(buf, "h", "g", []byte("v"))
	require.NoError(t, err)
	for i, v := range sealed {
		_, err := c.Open(ctx, fmt.Sprint("k", i), v)
		require.NoError(t, err)
	}
	require.EqualValues(t, 7, ks.Seals(1))
	require.Zero(t, ks.Seals(2), "a key the keyset does not hold")

	// Another process rotates; this one takes the key up on Reload and
	// keeps its count of key 1.
	other, err := valuecrypt.Open(ctx, s, k)
	require.NoError(t, err)
	defer other.Close()
	id, err := other.Rotate(ctx)
	require.NoError(t, err)
	require.Zero(t, other.Seals(1), "counts are per process")
	require.NoError(t, ks.Reload(ctx))
	_, err = c.Seal("k", []byte("v"))
	require.NoError(t, err)
	require.EqualValues(t, 7, ks.Seals(1))
	require.EqualValues(t, 1, ks.Seals(id))
}

// TestRotateAfter: RotationDue turns true, and the notification comes
// exactly once per key, when the count of seals under the primary key
// reaches the threshold, even with concurrent sealers; a rotation starts
// the count again for the new key.
func TestRotateAfter(t *testing.T) {
	ks, _, _ := newKeyset(t)
	c := valuecrypt.NewCipher(ks, valuecrypt.Config{})
	type note struct {
		id    uint32
		seals uint64
	}
	notes := make(chan note, 10)
	ks.SetRotateAfter(100, func(id uint32, seals uint64) { notes <- note{id, seals} })

	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 24 {
				_, err := c.Seal("k", []byte("v"))
				assert.NoError(t, err)
			}
		})
	}
	wg.Wait()
	require.EqualValues(t, 96, ks.Seals(1))
	require.False(t, ks.RotationDue())
	require.Empty(t, notes)

	for range 10 {
		wg.Go(func() {
			_, err := c.Seal("k", []byte("v"))
			assert.NoError(t, err)
		})
	}
	wg.Wait()
	require.True(t, ks.RotationDue())
	n := <-notes
	require.EqualValues(t, 1, n.id)
	require.True(t, n.seals >= 100 && n.seals <= 106, "notified by a seal past the threshold: %d", n.seals)
	require.Empty(t, notes, "notified once")

	id, err := ks.Rotate(ctx)
	require.NoError(t, err)
	require.False(t, ks.RotationDue(), "the new primary key starts at zero")
	ks.SetRotateAfter(2, func(id uint32, seals uint64) { notes <- note{id, seals} })
	for range 3 {
		_, err := c.Seal("k", []byte("v"))
		require.NoError(t, err)
	}
	require.True(t, ks.RotationDue())
	require.Equal(t, note{id, 2}, <-notes)
	require.Empty(t, notes)
}

// TestAppendSeal: AppendSeal and AppendSealField append after what dst
// holds, in its spare capacity without allocating, or in a new array when
// it has too little; what they append opens like Seal's values.
func TestAppendSeal(t *testing.T) {
	ks, _, _ := newKeyset(t)
	c := valuecrypt.NewCipher(ks, valuecrypt.Config{Context: "db0"})
	buf := append(make([]byte, 0, 4096), "prefix"...)
	out, err := c.AppendSeal(buf, "k", []byte("value"))
	require.NoError(t, err)
	require.Len(t, out, len("prefix")+len("value")+valuecrypt.Overhead)
	require.Equal(t, "prefix", string(out[:6]))
	require.Same(t, &buf[:1][0], &out[0], "sealed in dst's capacity")
	got, err := c.Open(ctx, "k", out[6:])
	require.NoError(t, err)
	require.Equal(t, "value", string(got))

	out2, err := c.AppendSealField(out, "k", "f", []byte("field value"))
	require.NoError(t, err)
	require.Equal(t, out, out2[:len(out)], "earlier bytes kept")
	got, err = c.OpenField(ctx, "k", "f", out2[len(out):])
	require.NoError(t, err)
	require.Equal(t, "field value", string(got))

	pt := bytes.Repeat([]byte("v"), 1024)
	require.Zero(t, testing.AllocsPerRun(100, func() {
		if _, err := c.AppendSeal(buf[:0], "k", pt); err != nil {
			t.Fatal(err)
		}
	}), "no allocation with capacity to spare")

	small, err := c.AppendSeal([]byte("x"), "k", pt)
	require.NoError(t, err)
	require.Equal(t, byte('x'), small[0])
	got, err = c.Open(ctx, "k", small[1:])
	require.NoError(t, err)
	require.Equal(t, pt, got)
}
