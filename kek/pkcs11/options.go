package pkcs11

import (
	"crypto"
	"fmt"
)

// Wrapping algorithms recorded in Descriptor.Algorithm.
const (
	AlgorithmOAEPSHA256 = "RSA-OAEP-SHA256" // RSA-OAEP, SHA-256 and MGF1-SHA-256, empty label
	AlgorithmOAEPSHA1   = "RSA-OAEP-SHA1"   // RSA-OAEP, SHA-1 and MGF1-SHA-1, empty label
)

// hashOf returns the OAEP hash of a recorded algorithm.
func hashOf(alg string) (crypto.Hash, bool) {
	switch alg {
	case AlgorithmOAEPSHA256:
		return crypto.SHA256, true
	case AlgorithmOAEPSHA1:
		return crypto.SHA1, true
	}
	return 0, false
}

func algorithmOf(h crypto.Hash) string {
	if h == crypto.SHA1 {
		return AlgorithmOAEPSHA1
	}
	return AlgorithmOAEPSHA256
}

// An Option configures Open and GenerateKey.
type Option func(*options) error

type options struct {
	hash        crypto.Hash // 0: probe the token
	maxSessions int
}

// WithOAEPHash fixes the OAEP hash Wrap uses (crypto.SHA256 or crypto.SHA1)
// instead of probing the token. Unwrap still uses the hash recorded in each
// wrapped key.
func WithOAEPHash(h crypto.Hash) Option {
	return func(o *options) error {
		if h != crypto.SHA256 && h != crypto.SHA1 {
			return fmt.Errorf("OAEP hash %v is not supported; use crypto.SHA256 or crypto.SHA1", h)
		}
		o.hash = h
		return nil
	}
}

// WithMaxSessions bounds the sessions the KEK opens on the token (at least
// 2; default: crypto11's default, capped by the token). Use it when other
// applications share the token.
func WithMaxSessions(n int) Option {
	return func(o *options) error {
		if n < 2 {
			return fmt.Errorf("max sessions %d must be at least 2", n)
		}
		o.maxSessions = n
		return nil
	}
}

func parse(uri string, opts []Option) (*URI, options, error) {
	var o options
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, o, err
		}
	}
	u, err := ParseURI(uri)
	if err != nil {
		return nil, o, err
	}
	switch {
	case u.Token == "" && u.Serial == "":
		return nil, o, fmt.Errorf("%s names no token; add token=<label> or serial=<serial>", u)
	case u.Token != "" && u.Serial != "":
		return nil, o, fmt.Errorf("%s names the token by both label and serial; keep one", u)
	case u.Object == "" && len(u.ID) == 0:
		return nil, o, fmt.Errorf("%s names no key; add object=<label> and/or id=<%%-encoded id>", u)
	case u.ModulePath == "":
		return nil, o, fmt.Errorf("%s names no module; add ?module-path=/path/to/module.so", u)
	}
	return u, o, nil
}

func (u *URI) tokenName() string {
	if u.Token != "" {
		return fmt.Sprintf("%q", u.Token)
	}
	return fmt.Sprintf("with serial %q", u.Serial)
}

// fingerprintSep introduces the public key fingerprint in a key id, and
// maxKeyID is the longest key id a keyring descriptor holds.
const (
	fingerprintSep = ";x-spki-sha256="
	maxKeyID       = 4096
)

// MinBits is the smallest RSA key Validate accepts.
const MinBits = 2048
