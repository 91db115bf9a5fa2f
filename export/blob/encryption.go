package blob

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"unsafe"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
)

// ErrCustomerKey: the blob is encrypted under a customer-provided key and
// none was given, or another key was given, or a key was given for a blob
// written without one. Nothing was downloaded.
var ErrCustomerKey = errors.New("blob: wrong or missing customer-provided key")

// MetaCPKSHA256 is the metadata key under which Destination.Put records the
// SHA-256 (base64, as the service's x-ms-encryption-key-sha256) of the
// customer-provided key the blob was written with. It is no secret: the
// service returns the same value with the blob.
const MetaCPKSHA256 = "cpksha256"

// CustomerKey is a customer-provided AES-256 key (CPK) for Azure Blob
// Storage: the service encrypts the blob with it and keeps only its
// SHA-256, so every read must send the key again. Whoever has read access
// to the blob and the key can read the data, and nobody without the key
// can, the storage account's operators included.
//
// The key is held in the only form the SDK takes, base64 text, in memory
// this value owns: Close zeroes it. Copies the HTTP stack made while
// sending requests are outside its reach. String, GoString and LogValue
// show only the key's SHA-256, so a CustomerKey is safe to log by mistake.
type CustomerKey struct {
	b64  []byte // base64 of the key; cleared by Close
	sha  string // base64 SHA-256 of the key
	info blob.CPKInfo
}

// NewCustomerKey returns a CustomerKey holding a copy of key, which must be
// 32 bytes. The caller should clear its own copy.
func NewCustomerKey(key []byte) (*CustomerKey, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("blob.NewCustomerKey: a customer-provided key is 32 bytes (AES-256), got %d", len(key))
	}
	k := &CustomerKey{b64: make([]byte, base64.StdEncoding.EncodedLen(32))}
	base64.StdEncoding.Encode(k.b64, key)
	sum := sha256.Sum256(key)
	k.sha = base64.StdEncoding.EncodeToString(sum[:])
	// The SDK takes the key as a *string. This string shares k.b64's
	// bytes, so Close zeroes the only copy this package made.
	enc := unsafe.String(&k.b64[0], len(k.b64))
	alg := blob.EncryptionAlgorithmTypeAES256
	k.info = blob.CPKInfo{EncryptionKey: &enc, EncryptionKeySHA256: &k.sha, EncryptionAlgorithm: &alg}
	return k, nil
}

// ParseCustomerKey reads a key given as 32 raw bytes or as their base64
// (surrounding white space ignored), as a key file or an environment
// variable holds it. b is cleared.
func ParseCustomerKey(b []byte) (*CustomerKey, error) {
	defer clear(b)
	if len(b) == 32 {
		return NewCustomerKey(b)
	}
	t := bytes.TrimSpace(b)
	raw := make([]byte, base64.StdEncoding.DecodedLen(len(t)))
	defer clear(raw)
	n, err := base64.StdEncoding.Decode(raw, t)
	if err != nil || n != 32 {
		return nil, fmt.Errorf("blob.ParseCustomerKey: want 32 raw bytes or their base64 (44 characters), got %d bytes that are neither; create one with: head -c 32 /dev/urandom > key", len(b))
	}
	return NewCustomerKey(raw[:n])
}

// ReadCustomerKey reads a key file: 32 raw bytes, or their base64.
func ReadCustomerKey(path string) (*CustomerKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("blob.ReadCustomerKey: %w", err)
	}
	k, err := ParseCustomerKey(b)
	if err != nil {
		return nil, fmt.Errorf("blob.ReadCustomerKey: %s: %w", path, err)
	}
	return k, nil
}

// SHA256 returns the base64 SHA-256 of the key, as the service records it.
func (k *CustomerKey) SHA256() string { return k.sha }

// String names the key by its SHA-256, never by its bytes.
func (k *CustomerKey) String() string { return "customer-provided key sha256:" + k.sha }

// GoString is String, so %#v prints no key either.
func (k *CustomerKey) GoString() string { return k.String() }

// LogValue is String, for log/slog.
func (k *CustomerKey) LogValue() slog.Value { return slog.StringValue(k.String()) }

// Close zeroes the key. Call it once every transfer using the key has
// returned; requests made after Close carry a zeroed key and fail.
func (k *CustomerKey) Close() { clear(k.b64) }

// cpk returns the SDK's options for k, nil for no key.
func (k *CustomerKey) cpk() *blob.CPKInfo {
	if k == nil {
		return nil
	}
	return &k.info
}

// scope returns the SDK's options for an encryption scope, nil for none.
func scope(name string) *blob.CPKScopeInfo {
	if name == "" {
		return nil
	}
	return &blob.CPKScopeInfo{EncryptionScope: &name}
}

// checkCustomerKey compares the key given for a download with what the
// service (x-ms-encryption-key-sha256, srv) and the export's metadata
// (md) say the blob was written with.
func checkCustomerKey(k *CustomerKey, srv *string, md string) error {
	recorded := md
	if srv != nil && *srv != "" {
		recorded = *srv
	}
	switch {
	case k == nil && recorded != "":
		return fmt.Errorf("the blob is encrypted under a customer-provided key (sha256:%s); give that key (Source.CustomerKey): %w", recorded, ErrCustomerKey)
	case k == nil:
		return nil
	case recorded == "":
		return fmt.Errorf("a customer-provided key was given, but the blob was not written under one; import it without the key: %w", ErrCustomerKey)
	case (srv != nil && *srv != "" && *srv != k.sha) || (md != "" && md != k.sha):
		return fmt.Errorf("the blob is encrypted under the customer-provided key sha256:%s, not the one given (sha256:%s): %w", recorded, k.sha, ErrCustomerKey)
	}
	return nil
}

// keyError marks the service's refusals that come from the customer key.
func keyError(err error) error {
	var re *azcore.ResponseError
	if bloberror.HasCode(err, bloberror.BlobUsesCustomerSpecifiedEncryption) ||
		(errors.As(err, &re) && (strings.Contains(re.ErrorCode, "CustomerSpecifiedEncryption") || strings.Contains(re.ErrorCode, "EncryptionKey"))) {
		return errors.Join(err, fmt.Errorf("the service refused the customer-provided key given, or its absence: give the key the blob was written with: %w", ErrCustomerKey))
	}
	return err
}
