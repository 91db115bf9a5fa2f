package vault_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/cachecrypt/cachecrypt/dek"
	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/cachecrypt/cachecrypt/kek/kektest"
	"github.com/cachecrypt/cachecrypt/vault"
)

// BenchmarkKeyringOpen measures opening a persistence disk's keyring: one
// Unwrap. Baselines in the same run: an in-memory KEK (the limit: file read
// and keyring authentication only) and the MMK. The Key Vault KEK runs
// against the emulator over TLS with 0, 20 and 100 ms of added vault
// latency.
func BenchmarkKeyringOpen(b *testing.B) {
	ctx := context.Background()
	run := func(b *testing.B, k kek.KEK) {
		path := filepath.Join(b.TempDir(), "disk.keyring")
		kr, err := dek.Create(ctx, path, "bench-disk", k)
		if err != nil {
			b.Fatal(err)
		}
		kr.Close()
		for b.Loop() {
			kr, err := dek.Open(ctx, path, k)
			if err != nil {
				b.Fatal(err)
			}
			kr.Close()
		}
	}
	b.Run("baseline=memory", func(b *testing.B) { run(b, kektest.New("bench")) })
	b.Run("baseline=mmk", func(b *testing.B) {
		m, err := kek.NewMMK("bench")
		if err != nil {
			b.Fatal(err)
		}
		run(b, m)
	})
	for _, lat := range []time.Duration{0, 20 * time.Millisecond, 100 * time.Millisecond} {
		b.Run("keyvault/latency="+lat.String(), func(b *testing.B) {
			e := newEnv(b)
			k := e.kek(b, vault.Config{})
			e.srv.SetLatency(lat)
			run(b, k)
		})
	}
}
