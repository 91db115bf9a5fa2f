//go:build cgo

package pkcs11_test

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"fmt"
	"testing"

	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/cachecrypt/cachecrypt/kek/pkcs11"
)

// BenchmarkUnwrap measures one Unwrap of a 32-byte DEK inside SoftHSM2
// (RSA-OAEP-SHA1, the only OAEP SoftHSM2 2.6 does), next to the same RSA
// decryption in Go's crypto/rsa as the baseline. Run GOMAXPROCS=1 and
// GOMAXPROCS=2 in separate processes to compare cores; the Parallel
// variants show the session pool's scaling. SoftHSM's RSA runs in C on
// threads GOMAXPROCS does not bound, so the GOMAXPROCS=1 parallel figures
// can use both cores.
//
// Recorded 2026-11-26, 2-core VM under load average ~9 (other builds
// running), SoftHSM 2.6.1, go test -bench . -count 6, median ns/op:
//
//	                         GOMAXPROCS=1   GOMAXPROCS=2
//	RSA-2048 softhsm            1 220 151      1 119 729
//	RSA-2048 softhsm-parallel   1 999 546      1 016 216
//	RSA-2048 go crypto/rsa      2 397 136      1 707 046   (baseline)
//	RSA-3072 softhsm            4 980 248      4 793 043
//	RSA-3072 softhsm-parallel  12 508 700      3 160 216
//	RSA-3072 go crypto/rsa      7 992 062      3 427 439   (baseline)
//	Wrap RSA-3072 (software)      648 728        372 086
//
// An unwrap is made once per disk open, never on the data path.
func BenchmarkUnwrap(b *testing.B) {
	h := newToken(b)
	for i, bits := range []int{2048, 3072} {
		k := generate(b, h, fmt.Sprintf("bench-%d", bits), []byte{byte(i + 1)}, bits, pkcs11.WithOAEPHash(crypto.SHA1))
		dek := randomDEK(b)
		w, err := k.Wrap(ctx, dek)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("RSA-%d/softhsm", bits), func(b *testing.B) {
			for b.Loop() {
				if _, err := k.Unwrap(ctx, w); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("RSA-%d/softhsm-parallel", bits), func(b *testing.B) {
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := k.Unwrap(ctx, w); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
		priv, err := rsa.GenerateKey(rand.Reader, bits)
		if err != nil {
			b.Fatal(err)
		}
		ct, _ := rsa.EncryptOAEP(sha1.New(), rand.Reader, &priv.PublicKey, dek, nil)
		b.Run(fmt.Sprintf("RSA-%d/go-crypto-rsa-baseline", bits), func(b *testing.B) {
			for b.Loop() {
				if _, err := rsa.DecryptOAEP(sha1.New(), nil, priv, ct, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkWrap measures Wrap, which runs in software with the public key.
func BenchmarkWrap(b *testing.B) {
	h := newToken(b)
	k := generate(b, h, "bench", []byte{1}, 3072, pkcs11.WithOAEPHash(crypto.SHA1))
	dek := randomDEK(b)
	var w kek.Wrapped
	for b.Loop() {
		w, _ = k.Wrap(ctx, dek)
	}
	_ = w
}
