//go:build cgo

package pkcs11

import (
	"context"
	"fmt"

	"github.com/ThalesGroup/crypto11"
)

// GenerateKey creates an RSA key pair of 2048, 3072 or 4096 bits in the token
// named by uri, labelled with the URI's object and id (both required), and
// opens a KEK on it. The private key is generated sensitive and
// non-extractable and may only decrypt; the public key may only encrypt.
//
// GenerateKey refuses with ErrKeyExists when a private or secret key with the
// same label and id is already in the token. The check and the generation
// are not atomic: do not run two GenerateKey calls for one key at once. It is
// meant for provisioning, examples and tests.
func GenerateKey(ctx context.Context, uri string, bits int, opts ...Option) (*KEK, error) {
	k, err := generate(ctx, uri, bits, opts)
	if err != nil {
		return nil, fmt.Errorf("pkcs11.GenerateKey: %w", err)
	}
	return k, nil
}

func generate(ctx context.Context, uri string, bits int, opts []Option) (*KEK, error) {
	if bits != 2048 && bits != 3072 && bits != 4096 {
		return nil, fmt.Errorf("RSA key size %d is not supported; use 2048, 3072 or 4096", bits)
	}
	u, o, err := parse(uri, opts)
	if err != nil {
		return nil, err
	}
	if u.Object == "" || len(u.ID) == 0 {
		return nil, fmt.Errorf("%s must give both object= and id= for a new key", u.path())
	}
	if n := len(u.path()) + len(fingerprintSep) + 32; n > maxKeyID {
		return nil, fmt.Errorf("the key id would be %d bytes, more than %d; use a shorter token or key label", n, maxKeyID)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c11, err := login(u, o)
	if err != nil {
		return nil, err
	}
	k, err := generateIn(c11, u, o, bits)
	if err != nil {
		c11.Close()
		return nil, err
	}
	return k, nil
}

// generateIn creates the pair and builds the KEK on the same login.
func generateIn(c11 *session, u *URI, o options, bits int) (*KEK, error) {
	if err := refuseExisting(c11.Context, u); err != nil {
		return nil, err
	}
	if err := generatePair(c11.Context, u, bits); err != nil {
		return nil, err
	}
	key, err := findKey(c11.Context, u)
	if err != nil {
		return nil, err
	}
	return newKEK(&conn{ctx: c11, key: key}, u, o)
}

// refuseExisting fails if a private or secret key has the label and id of u.
func refuseExisting(c11 *crypto11.Context, u *URI) error {
	privs, err := c11.FindPrivateKeys(u.ID, []byte(u.Object))
	if err != nil {
		return fmt.Errorf("search for %s: %w", u.path(), classify(err))
	}
	secrets, err := c11.FindKeys(u.ID, []byte(u.Object))
	if err != nil {
		return fmt.Errorf("search for %s: %w", u.path(), classify(err))
	}
	if n := len(privs) + len(secrets); n > 0 {
		return fmt.Errorf("%s: pick another object= or id=, or use the existing key with pkcs11.Open: %w", u.path(), ErrKeyExists)
	}
	return nil
}

func generatePair(c11 *crypto11.Context, u *URI, bits int) error {
	pub, err := crypto11.NewAttributeSetWithIDAndLabel(u.ID, []byte(u.Object))
	if err != nil {
		return err
	}
	priv := pub.Copy()
	pub.AddIfNotPresent(mustAttrs(
		crypto11.CkaEncrypt, true,
		crypto11.CkaVerify, false,
		crypto11.CkaWrap, false,
	))
	priv.AddIfNotPresent(mustAttrs(
		crypto11.CkaPrivate, true,
		crypto11.CkaSensitive, true,
		crypto11.CkaExtractable, false,
		crypto11.CkaDecrypt, true,
		crypto11.CkaSign, false,
		crypto11.CkaUnwrap, false,
	))
	if _, err := c11.GenerateRSAKeyPairWithAttributes(pub, priv, bits); err != nil {
		return fmt.Errorf("generate RSA-%d key pair %s: %w", bits, u.path(), classify(err))
	}
	return nil
}

func mustAttrs(kv ...any) []*crypto11.Attribute {
	var out []*crypto11.Attribute
	for i := 0; i < len(kv); i += 2 {
		a, err := crypto11.NewAttribute(kv[i].(crypto11.AttributeType), kv[i+1])
		if err != nil {
			panic(err)
		}
		out = append(out, a)
	}
	return out
}
