//go:build cgo

package pkcs11_test

import (
	"context"
	"fmt"
	"log"

	"github.com/cachecrypt/cachecrypt/dek"
	"github.com/cachecrypt/cachecrypt/kek/pkcs11"
)

// A key pair is created once, when the HSM is provisioned. The URI names the
// token, the key, the module and the file holding the PIN; the PIN itself
// is never in the URI. (This example needs an HSM, so it only compiles.)
func ExampleGenerateKey() {
	uri := "pkcs11:token=cache;object=persistence-kek;id=%01" +
		"?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/cachecrypt/hsm.pin"
	k, err := pkcs11.GenerateKey(context.Background(), uri, 3072)
	if err != nil {
		log.Fatal(err) // pkcs11.ErrKeyExists if it was already provisioned
	}
	defer k.Close()
	fmt.Println(k.Descriptor())
}

// A disk's keyring is wrapped by the HSM key; a later process reopens it
// with nothing but the URI and the token.
func ExampleOpen() {
	ctx := context.Background()
	k, err := pkcs11.Open(ctx, "pkcs11:token=cache;object=persistence-kek;id=%01"+
		"?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=env:CACHECRYPT_HSM_PIN")
	if err != nil {
		log.Fatal(err)
	}
	defer k.Close()
	kr, err := dek.Open(ctx, "/var/lib/cache/persistence.keyring", k) // one Unwrap in the token
	if err != nil {
		log.Fatal(err)
	}
	defer kr.Close()
	fmt.Println("active DEK version", kr.Active())
}
