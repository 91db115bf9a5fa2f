//go:build cgo

package pkcs11

import (
	"context"
	"fmt"

	"github.com/ThalesGroup/crypto11"
	"github.com/cachecrypt/cachecrypt/kek"
)

// Validate runs the prerequisite checks of a customer-managed HSM key: RSA of
// at least MinBits, private key sensitive, never extractable, and allowed to
// decrypt. It returns nil, or a *kek.PrerequisiteError (matching
// kek.ErrPrerequisite) listing every failed check with its fix. Keys made
// by GenerateKey pass. Safe for concurrent use.
func (k *KEK) Validate(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("pkcs11.KEK.Validate: %w", err)
	}
	c, err := k.connection()
	if err != nil {
		return fmt.Errorf("pkcs11.KEK.Validate: %w", err)
	}
	attrs, err := c.ctx.GetAttributes(c.key, []crypto11.AttributeType{
		crypto11.CkaSensitive, crypto11.CkaExtractable, crypto11.CkaDecrypt})
	if err != nil {
		return fmt.Errorf("pkcs11.KEK.Validate: read attributes of %s: %w", k.keyID, classify(err))
	}
	is := func(a crypto11.AttributeType) bool {
		v := attrs[a]
		return v != nil && len(v.Value) == 1 && v.Value[0] != 0
	}
	var failed []kek.Check
	if bits := k.pub.N.BitLen(); bits < MinBits {
		failed = append(failed, kek.Check{Name: "key size",
			Problem: fmt.Sprintf("RSA-%d is below %d bits", bits, MinBits),
			Fix:     "generate an RSA key of 2048, 3072 or 4096 bits (pkcs11.GenerateKey) and rewrap"})
	}
	if !is(crypto11.CkaSensitive) {
		failed = append(failed, kek.Check{Name: "sensitive",
			Problem: "the private key has CKA_SENSITIVE false: its value can be read from the token",
			Fix:     "generate a new key with CKA_SENSITIVE true (pkcs11.GenerateKey does) and rewrap"})
	}
	if is(crypto11.CkaExtractable) {
		failed = append(failed, kek.Check{Name: "extractable",
			Problem: "the private key has CKA_EXTRACTABLE true: it can be exported from the token",
			Fix:     "generate a new key with CKA_EXTRACTABLE false (pkcs11.GenerateKey does) and rewrap"})
	}
	if !is(crypto11.CkaDecrypt) {
		failed = append(failed, kek.Check{Name: "decrypt",
			Problem: "the private key has CKA_DECRYPT false: the token will refuse every unwrap",
			Fix:     "set CKA_DECRYPT true on the key, or generate one with pkcs11.GenerateKey"})
	}
	if len(failed) > 0 {
		return &kek.PrerequisiteError{Key: k.keyID, Failed: failed}
	}
	return nil
}
