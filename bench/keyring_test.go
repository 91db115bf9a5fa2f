// Benchmarks of the keyring (package dek): opening a disk's keyring with
// each kind of KEK, and the cached-DEK path every file takes (FileKey).
// Names follow the harness convention (bench/README.md): impl=cachecrypt is
// the keyring, impl=unwrap-only is the bare KEK call a keyring open cannot
// avoid (its limit), impl=hkdf is the bare HKDF derivation FileKey wraps.
// kekcalls/op is the number of KEK calls per operation.
package bench

import (
	"context"
	"crypto"
	"crypto/rand"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
	"github.com/cachecrypt/cachecrypt/dek"
	"github.com/cachecrypt/cachecrypt/internal/testenv"
	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/cachecrypt/cachecrypt/kek/kektest"
	"github.com/cachecrypt/cachecrypt/kek/pkcs11"
	"github.com/cachecrypt/cachecrypt/vault"
	"github.com/cachecrypt/cachecrypt/vault/vaulttest"
	"github.com/stretchr/testify/require"
)

// countingUnwrapper counts the KEK calls of any Unwrapper, such as an MMK
// (kektest.KEK counts its own).
type countingUnwrapper struct {
	kek.Unwrapper
	calls atomic.Int64
}

func (c *countingUnwrapper) Unwrap(ctx context.Context, w kek.Wrapped) ([]byte, error) {
	c.calls.Add(1)
	return c.Unwrapper.Unwrap(ctx, w)
}

// keyringKEK is one KEK kind under benchmark.
type keyringKEK struct {
	name string
	// setup returns the KEK, keeping any key file in dir.
	setup func(tb testing.TB, dir string) kek.KEK
}

// benchHSM is the SoftHSM2 token of the running BenchmarkKeyringOpen. It
// is started by the parent benchmark: testenv.StartSoftHSM names its
// directory after the test, and SoftHSM's configuration parser cuts a
// token directory at the first '=' that sub-benchmark names carry.
var benchHSM func() *testenv.SoftHSM

var keyringKEKs = []keyringKEK{
	{"mmk", func(tb testing.TB, dir string) kek.KEK {
		m, err := kek.LoadMMK(filepath.Join(dir, "platform.key"))
		require.NoError(tb, err)
		return m
	}},
	{"test", func(testing.TB, string) kek.KEK { return kektest.New("bench") }},
	{"keyvault/latency=0s", keyVaultKEK(0)},
	{"keyvault/latency=20ms", keyVaultKEK(20 * time.Millisecond)},
	{"softhsm-rsa2048", softHSMKEK(2048)},
	{"softhsm-rsa3072", softHSMKEK(3072)},
}

// keyVaultKEK returns a setup for the Key Vault KEK (package vault, on the
// official azkeys client) against the in-process emulator over TLS, with
// latency added to every answer of the vault.
func keyVaultKEK(latency time.Duration) func(testing.TB, string) kek.KEK {
	return func(tb testing.TB, _ string) kek.KEK {
		srv := vaulttest.NewServer(tb)
		srv.Grant("admin", vaulttest.AllPermissions...)
		srv.Grant("cache", vaulttest.CryptoServiceEncryptionUser...)
		url := srv.VaultURL("bench")
		admin, err := azkeys.NewClient(url, srv.Credential("admin"), srv.ClientOptions())
		require.NoError(tb, err)
		_, err = admin.CreateKey(context.Background(), "cmk", azkeys.CreateKeyParameters{Kty: to.Ptr(azkeys.KeyTypeRSA)}, nil)
		require.NoError(tb, err)
		k, err := vault.New(vault.Config{VaultURL: url, KeyName: "cmk", Credential: srv.Credential("cache"), ClientOptions: srv.ClientOptions()})
		require.NoError(tb, err)
		srv.SetLatency(latency)
		return k
	}
}

// softHSMKEK returns a setup for an RSA key of bits in a private SoftHSM2
// token (package kek/pkcs11). SoftHSM2 2.6 supports OAEP with SHA-1 only.
var hsmKeys atomic.Int64

func softHSMKEK(bits int) func(testing.TB, string) kek.KEK {
	return func(tb testing.TB, _ string) kek.KEK {
		h := benchHSM()
		n := hsmKeys.Add(1)
		k, err := pkcs11.GenerateKey(context.Background(), h.URI(fmt.Sprintf("bench-kek-%d", n), []byte{byte(n)}), bits, pkcs11.WithOAEPHash(crypto.SHA1))
		if errors.Is(err, kek.ErrUnsupported) {
			testenv.Missing(tb, "PKCS#11 support (cgo build)", "build with CGO_ENABLED=1 and a C compiler")
		}
		require.NoError(tb, err)
		tb.Cleanup(func() { k.Close() })
		return k
	}
}

// keyringFile creates a keyring with versions DEK versions and returns its
// path.
func keyringFile(tb testing.TB, dir string, k kek.Wrapper, versions int) string {
	path := filepath.Join(dir, "disk.keyring")
	kr, err := dek.Create(context.Background(), path, "bench-disk", k)
	require.NoError(tb, err)
	for range versions - 1 {
		_, err := kr.RotateDEK()
		require.NoError(tb, err)
	}
	require.NoError(tb, kr.Close())
	return path
}

// BenchmarkKeyringOpen measures dek.Open (read, one Unwrap, authenticate,
// unseal every DEK version) per KEK kind, beside the bare Unwrap.
func BenchmarkKeyringOpen(b *testing.B) {
	ctx := context.Background()
	benchHSM = sync.OnceValue(func() *testenv.SoftHSM { return testenv.StartSoftHSM(b, "cachecrypt-bench") })
	for _, kk := range keyringKEKs {
		b.Run("kek="+kk.name+"/impl=cachecrypt", func(b *testing.B) {
			dir := b.TempDir()
			k := kk.setup(b, dir)
			path := keyringFile(b, dir, k, 4)
			u := &countingUnwrapper{Unwrapper: k}
			b.ReportAllocs()
			for b.Loop() {
				kr, err := dek.Open(ctx, path, u)
				if err != nil {
					b.Fatal(err)
				}
				kr.Close()
			}
			b.ReportMetric(float64(u.calls.Load())/float64(b.N), "kekcalls/op")
		})
		b.Run("kek="+kk.name+"/impl=unwrap-only", func(b *testing.B) {
			k := kk.setup(b, b.TempDir())
			w, err := k.Wrap(ctx, make([]byte, dek.KeySize))
			require.NoError(b, err)
			b.ReportAllocs()
			for b.Loop() {
				key, err := k.Unwrap(ctx, w)
				if err != nil {
					b.Fatal(err)
				}
				clear(key)
			}
			b.ReportMetric(1, "kekcalls/op")
		})
	}
	// A cold restart with the platform key: load the MMK key file, then
	// open the keyring.
	b.Run("kek=mmk-cold/impl=cachecrypt", func(b *testing.B) {
		dir := b.TempDir()
		keyFile := filepath.Join(dir, "platform.key")
		m, err := kek.LoadMMK(keyFile)
		require.NoError(b, err)
		path := keyringFile(b, dir, m, 4)
		b.ReportAllocs()
		for b.Loop() {
			m, err := kek.LoadMMK(keyFile)
			if err != nil {
				b.Fatal(err)
			}
			kr, err := dek.Open(ctx, path, m)
			if err != nil {
				b.Fatal(err)
			}
			kr.Close()
		}
		b.ReportMetric(1, "kekcalls/op")
	})
}

// BenchmarkFileKey measures the cached-DEK path: the per-file key every
// stream, AOF part or page store derives when it opens, against the bare
// HKDF it wraps. It makes no KEK call (TestFileKeyMakesNoKEKCalls proves
// it). The parallel variants show the keyring's read lock under contention.
func BenchmarkFileKey(b *testing.B) {
	k := kektest.New("bench")
	kr, err := dek.Create(context.Background(), filepath.Join(b.TempDir(), "disk.keyring"), "bench-disk", k)
	require.NoError(b, err)
	defer kr.Close()
	raw := make([]byte, dek.KeySize)
	rand.Read(raw)
	salt := make([]byte, 32)
	rand.Read(salt)
	derive := map[string]func() ([]byte, error){
		"cachecrypt": func() ([]byte, error) { return kr.FileKey(1, "rdb", salt) },
		"hkdf":       func() ([]byte, error) { return dek.DeriveFileKey(raw, "bench-disk", 1, "rdb", salt) },
	}
	for _, impl := range []string{"cachecrypt", "hkdf"} {
		f := derive[impl]
		b.Run("serial/impl="+impl, func(b *testing.B) {
			calls := k.Calls()
			b.ReportAllocs()
			for b.Loop() {
				key, err := f()
				if err != nil {
					b.Fatal(err)
				}
				clear(key)
			}
			b.ReportMetric(float64(k.Calls()-calls)/float64(b.N), "kekcalls/op")
		})
		b.Run("parallel/impl="+impl, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					key, err := f()
					if err != nil {
						panic(err)
					}
					clear(key)
				}
			})
		})
	}
}

// TestKeyringOpenOneUnwrap: opening a keyring costs exactly one KEK call
// whatever the number of DEK versions, and the cached-DEK path none.
func TestKeyringOpenOneUnwrap(t *testing.T) {
	for _, versions := range []int{1, 4, 16} {
		k := kektest.New("bench")
		path := keyringFile(t, t.TempDir(), k, versions)
		require.Equal(t, int64(1), k.Wraps(), "Create wraps once; RotateDEK never")
		kr, err := dek.Open(context.Background(), path, k)
		require.NoError(t, err)
		require.Equal(t, int64(1), k.Unwraps(), "%d DEK versions: one Unwrap", versions)
		require.Equal(t, uint32(versions), kr.Active())
		require.NoError(t, kr.Close())
	}
}

// TestFileKeyMakesNoKEKCalls: FileKey, for every version and purpose, and
// DEK rotation make no KEK call once the keyring is open.
func TestFileKeyMakesNoKEKCalls(t *testing.T) {
	k := kektest.New("bench")
	path := keyringFile(t, t.TempDir(), k, 1)
	kr, err := dek.Open(context.Background(), path, k)
	require.NoError(t, err)
	defer kr.Close()
	before := k.Calls()
	salt := make([]byte, 16)
	for i := range 1000 {
		salt[0] = byte(i)
		key, err := kr.FileKey(kr.Active(), []string{"rdb", "aof", "nvme"}[i%3], salt)
		require.NoError(t, err)
		require.Len(t, key, dek.KeySize)
	}
	v, err := kr.RotateDEK()
	require.NoError(t, err)
	_, err = kr.FileKey(v, "rdb", salt)
	require.NoError(t, err)
	_, err = kr.FileKey(1, "rdb", salt)
	require.NoError(t, err, "older versions keep deriving after rotation")
	require.Equal(t, before, k.Calls(), "the hot path and DEK rotation must make zero KEK calls")

	// The counter is live: a keyring open is one call more.
	_, err = dek.Open(context.Background(), path, k)
	require.NoError(t, err)
	require.Equal(t, before+1, k.Calls())
}
