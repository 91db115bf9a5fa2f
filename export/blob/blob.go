// Package blob connects package export to Azure Blob Storage through the
// official azblob SDK: To sends an exported RDB to a block blob, From reads
// one back for an import.
//
// It is a package of its own so that importing export, rdb, aof or osdisk
// never pulls in the Azure SDK and its dependency tree.
//
// Who can read an export depends on how it was written:
//
//   - by default the blob is a plain RDB under the storage account's own
//     encryption at rest (Microsoft-managed, or the account's customer-managed
//     key), as with the managed service's export; optionally under an
//     encryption scope (Destination.EncryptionScope), a named key of the
//     account. Anyone with read access to the blob reads the RDB.
//   - with a customer-provided key (Destination.CustomerKey, CPK) the service
//     encrypts the blob with a key sent with every request and keeps only
//     its SHA-256: reading needs blob access and the key.
//   - a sealed export (export.Options.Seal) is ciphertext before it leaves
//     the instance: only a holder of the KEK that sealed it can read it,
//     whatever the storage account's settings (which still apply on top).
//
// The metadata of a plain export records the RDB's SHA-256 (key "sha256",
// hex) and CRC-64 (key "crc64"); an import through From checks the data
// against the SHA-256, and the RDB against its own CRC-64 trailer. A sealed
// export records neither (nothing derived from the plaintext leaves the
// instance), only "format" = "cachecrypt-sealed-1"; a CPK export records the
// key's SHA-256 ("cpksha256").
package blob

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"

	"github.com/cachecrypt/cachecrypt/export"
)

// Metadata keys written by Destination.Put and checked by Source.Open.
const (
	MetaSHA256 = "sha256"
	MetaCRC64  = "crc64"
	MetaFormat = "format" // "cachecrypt-sealed-1" on a sealed export
)

// FormatSealed is the MetaFormat value of a sealed export.
const FormatSealed = "cachecrypt-sealed-1"

// Defaults for Destination.
const (
	DefaultBlockSize   = 8 << 20
	DefaultConcurrency = 4
)

type blobHTTPHeaders = blob.HTTPHeaders

// Destination uploads an export to a block blob: it stages blocks of
// BlockSize, Concurrency at a time, as the stream arrives, and commits the
// block list (with the sha256 and crc64 metadata) only once the stream
// ended with io.EOF, that is after every staged segment authenticated and
// the RDB's CRC-64 checked. A failed or cancelled export leaves the previous
// blob (if any) untouched; the blocks it staged stay uncommitted, invisible,
// and the service discards them after a week.
type Destination struct {
	Client      *blockblob.Client
	BlockSize   int64              // 0 means DefaultBlockSize (8 MiB)
	Concurrency int                // 0 means DefaultConcurrency (4)
	Metadata    map[string]*string // extra metadata; the sha256, crc64, format and cpksha256 keys are set by Put
	// EncryptionScope, if set, names the storage account's encryption scope
	// that every block and the commit are written under
	// (x-ms-encryption-scope). Readers need nothing more than blob access.
	EncryptionScope string
	// CustomerKey, if set, has the service encrypt every block and the
	// commit under this customer-provided key (x-ms-encryption-key and its
	// SHA-256). Reading the blob then needs the same key. Put does not
	// close it.
	CustomerKey *CustomerKey
}

// To returns a Destination for the block blob c with the default block size
// and concurrency.
func To(c *blockblob.Client) *Destination { return &Destination{Client: c} }

// Put implements export.Destination. It is safe for concurrent use on
// distinct blobs.
func (d *Destination) Put(ctx context.Context, s *export.Stream) error {
	if d.EncryptionScope != "" && d.CustomerKey != nil {
		return fmt.Errorf("blob.Destination.Put: %s: set an encryption scope or a customer-provided key, not both: the service accepts one per blob", redact(d.Client.URL()))
	}
	ids, err := d.upload(ctx, s)
	if err != nil {
		return fmt.Errorf("blob.Destination.Put: upload to %s: %w", redact(d.Client.URL()), err)
	}
	md := make(map[string]*string, len(d.Metadata)+3)
	for k, v := range d.Metadata {
		md[k] = v
	}
	if s.Sealed() {
		f := FormatSealed
		md[MetaFormat] = &f
	} else {
		info := s.Info()
		sum := hex.EncodeToString(info.SHA256[:])
		crc := fmt.Sprintf("%016x", info.CRC64)
		md[MetaSHA256], md[MetaCRC64] = &sum, &crc
	}
	if d.CustomerKey != nil {
		sha := d.CustomerKey.SHA256()
		md[MetaCPKSHA256] = &sha
	}
	if err := d.commit(ctx, ids, md, "application/octet-stream"); err != nil {
		return fmt.Errorf("blob.Destination.Put: commit %d blocks to %s: %w", len(ids), redact(d.Client.URL()), err)
	}
	return nil
}

// Source downloads a blob for an import. If the blob carries the sha256
// metadata an export wrote, the import fails with export.ErrDigest unless
// the data matches it.
type Source struct {
	Client *blob.Client
	// Retries is how many times a broken download resumes; 0 means 3.
	Retries int32
	// CustomerKey is the customer-provided key the blob was written with,
	// sent with every download request. Open refuses with ErrCustomerKey,
	// before any byte is returned, a key other than the one the service or
	// the export's metadata records, a missing key, or a key for a blob
	// written without one. Open does not close it.
	CustomerKey *CustomerKey
}

// From returns a Source for the blob c.
func From(c *blob.Client) *Source { return &Source{Client: c} }

// Open implements export.Source.
func (s *Source) Open(ctx context.Context) (io.ReadCloser, export.Meta, error) {
	resp, err := s.Client.DownloadStream(ctx, &blob.DownloadStreamOptions{CPKInfo: s.CustomerKey.cpk()})
	if err != nil {
		return nil, export.Meta{}, fmt.Errorf("blob.Source.Open: download %s: %w", redact(s.Client.URL()), keyError(err))
	}
	if err := checkCustomerKey(s.CustomerKey, resp.EncryptionKeySHA256, lookup(resp.Metadata, MetaCPKSHA256)); err != nil {
		resp.Body.Close()
		return nil, export.Meta{}, fmt.Errorf("blob.Source.Open: %s: %w", redact(s.Client.URL()), err)
	}
	m := export.Meta{Size: -1}
	if resp.ContentLength != nil {
		m.Size = *resp.ContentLength
	}
	if v := lookup(resp.Metadata, MetaSHA256); v != "" {
		sum, err := hex.DecodeString(v)
		if err != nil || len(sum) != 32 {
			resp.Body.Close()
			return nil, m, fmt.Errorf("blob.Source.Open: %s: metadata %s=%q is not a hex SHA-256; remove it or correct it: %w", redact(s.Client.URL()), MetaSHA256, v, export.ErrDigest)
		}
		m.SHA256 = sum
	}
	retries := s.Retries
	if retries == 0 {
		retries = 3
	}
	return resp.NewRetryReader(ctx, &blob.RetryReaderOptions{MaxRetries: retries}), m, nil
}

// redact drops a URL's query, where a SAS token would be, for messages.
func redact(u string) string {
	base, _, _ := strings.Cut(u, "?")
	return base
}

// lookup finds a metadata value whatever the case of its key: the service
// returns keys as sent, the SDK as HTTP canonicalises them.
func lookup(md map[string]*string, key string) string {
	for k, v := range md {
		if strings.EqualFold(k, key) && v != nil {
			return *v
		}
	}
	return ""
}

// SHA256 returns the SHA-256 an export recorded in a blob's metadata, as
// returned by GetProperties, or "" if there is none.
func SHA256(md map[string]*string) string { return lookup(md, MetaSHA256) }

// CRC64 returns the CRC-64 an export recorded in a blob's metadata.
func CRC64(md map[string]*string) (uint64, bool) {
	v, err := strconv.ParseUint(lookup(md, MetaCRC64), 16, 64)
	return v, err == nil
}
