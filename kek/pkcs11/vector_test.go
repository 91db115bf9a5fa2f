//go:build cgo

package pkcs11_test

import (
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"hash"
	"math/big"
	"os"
	"testing"

	"github.com/cachecrypt/cachecrypt/internal/testenv"
	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/cachecrypt/cachecrypt/kek/pkcs11"
	p11 "github.com/miekg/pkcs11"
	"github.com/stretchr/testify/require"
)

// vector is testdata/vector-v1.json: wrapped keys that every later version
// of this package must still unwrap (see FORMAT.md, "PKCS#11 wrapped key").
type vector struct {
	PrivateKey string `json:"private_key"`
	Token      string `json:"token"`
	Object     string `json:"object"`
	ID         string `json:"id"`
	DEK        string `json:"dek"`
	Wrapped    []struct {
		Kind       string `json:"kind"`
		KeyID      string `json:"key_id"`
		Algorithm  string `json:"algorithm"`
		Ciphertext string `json:"ciphertext"`
	} `json:"wrapped"`
}

func loadVector(t *testing.T) (vector, *rsa.PrivateKey) {
	b, err := os.ReadFile("testdata/vector-v1.json")
	require.NoError(t, err)
	var v vector
	require.NoError(t, json.Unmarshal(b, &v))
	pemBytes, err := os.ReadFile("testdata/" + v.PrivateKey)
	require.NoError(t, err)
	block, _ := pem.Decode(pemBytes)
	require.NotNil(t, block)
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	require.NoError(t, err)
	return v, key.(*rsa.PrivateKey)
}

func unhex(t *testing.T, s string) []byte {
	b, err := hex.DecodeString(s)
	require.NoError(t, err)
	return b
}

// TestVectorSoftware checks the committed ciphertexts against the format
// alone: RSA-OAEP with the recorded hash, MGF1 with the same hash, no label.
func TestVectorSoftware(t *testing.T) {
	v, priv := loadVector(t)
	require.Len(t, v.Wrapped, 2)
	for _, w := range v.Wrapped {
		var h hash.Hash
		switch w.Algorithm {
		case pkcs11.AlgorithmOAEPSHA1:
			h = sha1.New()
		case pkcs11.AlgorithmOAEPSHA256:
			h = sha256.New()
		default:
			t.Fatalf("unknown algorithm %q", w.Algorithm)
		}
		got, err := rsa.DecryptOAEP(h, nil, priv, unhex(t, w.Ciphertext), nil)
		require.NoError(t, err, w.Algorithm)
		require.Equal(t, unhex(t, v.DEK), got)
	}
}

// TestVectorToken imports the vector's test-only private key into a SoftHSM
// token (sensitive, non-extractable), opens it by URI and unwraps the
// committed wrapped keys: the key id must match the committed one exactly.
func TestVectorToken(t *testing.T) {
	v, priv := loadVector(t)
	h := testenv.StartSoftHSM(t, v.Token)
	importKey(t, h, v.Object, unhex(t, v.ID), priv)

	k, err := pkcs11.Open(ctx, h.URI(v.Object, unhex(t, v.ID)))
	require.NoError(t, err)
	defer k.Close()
	for _, w := range v.Wrapped {
		wrapped := kek.Wrapped{
			Descriptor: kek.Descriptor{Kind: kek.Kind(w.Kind), KeyID: w.KeyID, Algorithm: w.Algorithm},
			Ciphertext: unhex(t, w.Ciphertext),
		}
		require.Equal(t, w.KeyID, k.Descriptor().KeyID, "the key id format changed")
		got, err := k.Unwrap(ctx, wrapped)
		if w.Algorithm == pkcs11.AlgorithmOAEPSHA256 && errors.Is(err, pkcs11.ErrMechanism) {
			continue // SoftHSM2 2.6 does no SHA-256 OAEP; TestVectorSoftware checks it
		}
		require.NoError(t, err, w.Algorithm)
		require.Equal(t, unhex(t, v.DEK), got)
	}
}

// importKey creates the RSA key pair in the token through the raw PKCS#11
// API. It loads and unloads the module before crypto11 loads it.
func importKey(t *testing.T, h *testenv.SoftHSM, label string, id []byte, priv *rsa.PrivateKey) {
	importKeyAttrs(t, h, label, id, priv, true, false)
}

func importKeyAttrs(t *testing.T, h *testenv.SoftHSM, label string, id []byte, priv *rsa.PrivateKey, sensitive, extractable bool) {
	importKeyWith(t, h, label, id, priv, sensitive, extractable, true)
}

func importKeyWith(t *testing.T, h *testenv.SoftHSM, label string, id []byte, priv *rsa.PrivateKey, sensitive, extractable, decrypt bool) {
	m := p11.New(h.Module)
	require.NotNil(t, m)
	require.NoError(t, m.Initialize())
	defer func() { m.Finalize(); m.Destroy() }()
	slots, err := m.GetSlotList(true)
	require.NoError(t, err)
	slot := -1
	for _, s := range slots {
		info, err := m.GetTokenInfo(s)
		require.NoError(t, err)
		if info.Label == h.Label {
			slot = int(s)
		}
	}
	require.NotEqual(t, -1, slot)
	sess, err := m.OpenSession(uint(slot), p11.CKF_SERIAL_SESSION|p11.CKF_RW_SESSION)
	require.NoError(t, err)
	defer m.CloseSession(sess)
	require.NoError(t, m.Login(sess, p11.CKU_USER, pin(t, h)))
	defer m.Logout(sess)
	e := big.NewInt(int64(priv.E)).Bytes()
	common := []*p11.Attribute{
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_RSA),
		p11.NewAttribute(p11.CKA_TOKEN, true),
		p11.NewAttribute(p11.CKA_LABEL, label),
		p11.NewAttribute(p11.CKA_ID, id),
		p11.NewAttribute(p11.CKA_MODULUS, priv.N.Bytes()),
		p11.NewAttribute(p11.CKA_PUBLIC_EXPONENT, e),
	}
	_, err = m.CreateObject(sess, append([]*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PUBLIC_KEY),
		p11.NewAttribute(p11.CKA_ENCRYPT, true),
	}, common...))
	require.NoError(t, err)
	_, err = m.CreateObject(sess, append([]*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_PRIVATE_KEY),
		p11.NewAttribute(p11.CKA_PRIVATE, true),
		p11.NewAttribute(p11.CKA_SENSITIVE, sensitive),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, extractable),
		p11.NewAttribute(p11.CKA_DECRYPT, decrypt),
		p11.NewAttribute(p11.CKA_PRIVATE_EXPONENT, priv.D.Bytes()),
		p11.NewAttribute(p11.CKA_PRIME_1, priv.Primes[0].Bytes()),
		p11.NewAttribute(p11.CKA_PRIME_2, priv.Primes[1].Bytes()),
		p11.NewAttribute(p11.CKA_EXPONENT_1, priv.Precomputed.Dp.Bytes()),
		p11.NewAttribute(p11.CKA_EXPONENT_2, priv.Precomputed.Dq.Bytes()),
		p11.NewAttribute(p11.CKA_COEFFICIENT, priv.Precomputed.Qinv.Bytes()),
	}, common...))
	require.NoError(t, err)
}
