package blob_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"
	"github.com/stretchr/testify/require"

	"github.com/cachecrypt/cachecrypt/export"
	"github.com/cachecrypt/cachecrypt/export/blob"
	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/cachecrypt/cachecrypt/rdb"
)

// The Done-when test of sealed exports: a real redis-server's snapshot is
// exported sealed under a KEK the first instance does not use for its disks,
// stored in Azurite, and imported into a second instance that has that KEK;
// its DEBUG DIGEST after a restore equals the source's. The wrong KEK fails
// with the key's error and writes nothing, and neither the stored blob nor
// anything under Azurite's directory holds the canary.
func TestSealedExportThroughAzurite(t *testing.T) {
	cc, az := azuriteAt(t)
	ctx := context.Background()
	canary := "CANARY-5b0c2e11-sealed-export-must-hide-it"
	plain, digest := snapshot(t, filepath.Join(t.TempDir(), "redis"), []string{"SET", "canary-key", canary})
	require.True(t, bytes.Contains(plain, []byte(canary)))
	backup, err := kek.NewMMK("backup-kek")
	require.NoError(t, err)

	src := newInstance(t, t.TempDir())
	src.writeRDB(t, "dump.rdb", plain)
	bb := cc.NewBlockBlobClient("sealed/dump.ccsealed")
	info, err := export.Export(ctx, src.scratch, export.FromRDB(src.rdbPath("dump.rdb"), src.persist), blob.To(bb), &export.Options{Seal: backup})
	require.NoError(t, err)
	require.Equal(t, sha256.Sum256(plain), info.SHA256)
	requireNoStaging(t, src.scratch)

	stored := download(t, bb)
	require.True(t, bytes.HasPrefix(stored, []byte(export.SealedMagic)))
	require.False(t, bytes.Contains(stored, []byte(canary)), "canary in the stored blob")
	require.Zero(t, countHits(t, az.Dir, canary), "canary under Azurite's directory")
	require.Positive(t, countFiles(t, az.Dir))
	props, err := bb.GetProperties(ctx, nil)
	require.NoError(t, err)
	require.Empty(t, blob.SHA256(props.Metadata), "a sealed export records no digest of its plaintext")
	_, hasCRC := blob.CRC64(props.Metadata)
	require.False(t, hasCRC)

	// The wrong KEK: the key's error, nothing written, nothing staged.
	dst := newInstance(t, t.TempDir())
	target := dst.rdbPath("dump.rdb")
	for _, tc := range []struct {
		k    kek.Unwrapper
		want error
	}{
		{mustMMK(t, "another-kek"), kek.ErrKeyMismatch},
		{mustMMK(t, "backup-kek"), kek.ErrKeyMismatch}, // same name, another keyset: known by its keyset
	} {
		_, err = export.Import(ctx, dst.scratch, export.Unseal(blob.From(bb.BlobClient()), tc.k), export.ToRDB(target, dst.persist, rdb.Options{}), nil)
		require.ErrorIs(t, err, tc.want)
		require.NoFileExists(t, target)
		requireNoStaging(t, dst.scratch)
	}
	// A plain import of it: refused, pointing at Unseal.
	_, err = export.Import(ctx, dst.scratch, blob.From(bb.BlobClient()), export.ToRDB(target, dst.persist, rdb.Options{}), nil)
	require.ErrorIs(t, err, export.ErrNotRDB)
	require.ErrorContains(t, err, "Unseal")
	require.NoFileExists(t, target)

	// The right KEK.
	info2, err := export.Import(ctx, dst.scratch, export.Unseal(blob.From(bb.BlobClient()), backup), export.ToRDB(target, dst.persist, rdb.Options{}), nil)
	require.NoError(t, err)
	require.Equal(t, info, info2)
	back := dst.readRDB(t, target)
	require.True(t, bytes.Equal(plain, back))
	require.Equal(t, digest, loadDigest(t, back), "DEBUG DIGEST after a sealed export, import and restore")
	requireNoStaging(t, dst.scratch)
}

func mustMMK(t *testing.T, name string) *kek.MMK {
	t.Helper()
	m, err := kek.NewMMK(name)
	require.NoError(t, err)
	return m
}

// cpkHeaders are the request headers of a customer-provided key.
var cpkHeaders = []string{"x-ms-encryption-key", "x-ms-encryption-key-sha256", "x-ms-encryption-algorithm"}

// recorder is a per-retry pipeline policy that records every request the
// SDK sends: method, comp query parameter and headers.
//
// Azurite does not model customer-provided keys (in its strict mode it
// answers 500 FeatureNotSupported to x-ms-encryption-key) and accepts but
// ignores encryption scopes. So these tests assert the exact headers of
// every upload and download request here, and, when strip is set, remove
// the CPK headers after recording them so that Azurite stores the blob.
// The clients authenticate with a SAS (in the URL), which does not sign
// headers, so removing them does not break the request's signature.
type recorder struct {
	strip bool
	mu    sync.Mutex
	reqs  []recorded
}

type recorded struct {
	method, comp string
	h            map[string]string // by lower-case name
}

func (r *recorder) Do(req *policy.Request) (*http.Response, error) {
	raw := req.Raw()
	// The SDK sets x-ms-* headers by their lower-case names, straight into
	// the map: read and remove them by name, whatever the case.
	h := map[string]string{}
	for k, v := range raw.Header {
		h[strings.ToLower(k)] = strings.Join(v, ",")
	}
	r.mu.Lock()
	r.reqs = append(r.reqs, recorded{raw.Method, raw.URL.Query().Get("comp"), h})
	r.mu.Unlock()
	if r.strip {
		for k := range raw.Header {
			if slices.Contains(cpkHeaders, strings.ToLower(k)) {
				delete(raw.Header, k)
			}
		}
	}
	return req.Next()
}

// take returns the requests recorded since the last take.
func (r *recorder) take() []recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.reqs
	r.reqs = nil
	return out
}

// recordingBlob returns a client of the blob name in cc, authenticated by a
// container SAS, whose requests rec records.
func recordingBlob(t *testing.T, cc *container.Client, name string, rec *recorder) *blockblob.Client {
	t.Helper()
	u, err := cc.GetSASURL(sas.ContainerPermissions{Read: true, Add: true, Create: true, Write: true}, time.Now().Add(24*time.Hour), nil)
	require.NoError(t, err)
	base, query, _ := strings.Cut(u, "?")
	c, err := blockblob.NewClientWithNoCredential(base+"/"+name+"?"+query, &blockblob.ClientOptions{ClientOptions: azcore.ClientOptions{
		PerRetryPolicies: []policy.Policy{rec},
	}})
	require.NoError(t, err)
	return c
}

// requireHeaders checks that every request has each header with its exact
// value, and that there was at least one request of each kind in kinds
// ("block", "blocklist", "GET").
func requireHeaders(t *testing.T, reqs []recorded, want map[string]string, kinds ...string) {
	t.Helper()
	seen := map[string]int{}
	for _, r := range reqs {
		kind := r.comp
		if r.method == http.MethodGet {
			kind = "GET"
		}
		seen[kind]++
		for h, v := range want {
			require.Equal(t, v, r.h[h], "%s %s: header %s", r.method, kind, h)
		}
	}
	for _, k := range kinds {
		require.Positive(t, seen[k], "no %s request recorded (saw %v)", k, seen)
	}
}

func newKey(t *testing.T) ([]byte, *blob.CustomerKey) {
	t.Helper()
	raw := make([]byte, 32)
	rand.Read(raw)
	k, err := blob.NewCustomerKey(bytes.Clone(raw))
	require.NoError(t, err)
	t.Cleanup(k.Close)
	return raw, k
}

func cpkWant(raw []byte) map[string]string {
	sum := sha256.Sum256(raw)
	return map[string]string{
		"x-ms-encryption-key":        base64.StdEncoding.EncodeToString(raw),
		"x-ms-encryption-key-sha256": base64.StdEncoding.EncodeToString(sum[:]),
		"x-ms-encryption-algorithm":  "AES256",
		"x-ms-encryption-scope":      "",
	}
}

func TestCustomerKeyHeadersAndRefusals(t *testing.T) {
	cc := azurite(t)
	ctx := context.Background()
	plain, _ := snapshot(t, filepath.Join(t.TempDir(), "redis"))
	in := newInstance(t, t.TempDir())
	rec := &recorder{strip: true}
	bb := recordingBlob(t, cc, "cpk/dump.rdb", rec)
	raw, key := newKey(t)

	// Several blocks, each with the key; the commit too.
	dst := &blob.Destination{Client: bb, BlockSize: 256 << 10, Concurrency: 2, CustomerKey: key}
	_, err := export.Export(ctx, in.scratch, export.FromReader(bytes.NewReader(plain)), dst, nil)
	require.NoError(t, err)
	reqs := rec.take()
	requireHeaders(t, reqs, cpkWant(raw), "block", "blocklist")
	require.Greater(t, len(reqs), 3)

	// The right key: every download request carries it; the RDB comes back.
	target := in.rdbPath("imported.rdb")
	src := &blob.Source{Client: bb.BlobClient(), CustomerKey: key}
	_, err = export.Import(ctx, in.scratch, src, export.ToRDB(target, in.persist, rdb.Options{}), nil)
	require.NoError(t, err)
	requireHeaders(t, rec.take(), cpkWant(raw), "GET")
	require.True(t, bytes.Equal(plain, in.readRDB(t, target)))

	// A wrong key, no key: refused before a byte is written or staged.
	wrongRaw, wrong := newKey(t)
	refused := in.rdbPath("refused.rdb")
	for _, tc := range []struct {
		name string
		key  *blob.CustomerKey
		msg  string
	}{
		{"wrong key", wrong, "not the one given"},
		{"no key", nil, "give that key"},
	} {
		_, err = export.Import(ctx, in.scratch, &blob.Source{Client: bb.BlobClient(), CustomerKey: tc.key}, export.ToRDB(refused, in.persist, rdb.Options{}), nil)
		require.ErrorIs(t, err, blob.ErrCustomerKey, tc.name)
		require.ErrorContains(t, err, tc.msg)
		require.NotContains(t, err.Error(), base64.StdEncoding.EncodeToString(wrongRaw), "the key in an error")
		require.NotContains(t, err.Error(), "sig=", "the SAS token in an error")
		require.NoFileExists(t, refused)
		requireNoStaging(t, in.scratch)
	}
	wantWrong := cpkWant(wrongRaw)
	delete(wantWrong, "x-ms-encryption-scope")
	reqs = rec.take()
	requireHeaders(t, reqs[:1], wantWrong, "GET")

	// A key for a blob written without one.
	plainBlob := recordingBlob(t, cc, "plain/dump.rdb", rec)
	_, err = export.Export(ctx, in.scratch, export.FromReader(bytes.NewReader(plain)), blob.To(plainBlob), nil)
	require.NoError(t, err)
	_, err = export.Import(ctx, in.scratch, &blob.Source{Client: plainBlob.BlobClient(), CustomerKey: key}, export.ToRDB(refused, in.persist, rdb.Options{}), nil)
	require.ErrorIs(t, err, blob.ErrCustomerKey)
	require.NoFileExists(t, refused)

	// Scope and key together: refused before any request.
	rec.take()
	_, err = export.Export(ctx, in.scratch, export.FromReader(bytes.NewReader(plain)), &blob.Destination{Client: bb, CustomerKey: key, EncryptionScope: "s"}, nil)
	require.ErrorContains(t, err, "not both")
	for _, r := range rec.take() {
		require.NotEqual(t, http.MethodPut, r.method, "a block was sent")
	}
}

func TestEncryptionScopeHeaders(t *testing.T) {
	cc := azurite(t)
	ctx := context.Background()
	plain, digest := snapshot(t, filepath.Join(t.TempDir(), "redis"))
	in := newInstance(t, t.TempDir())
	rec := &recorder{}
	bb := recordingBlob(t, cc, "scoped/dump.rdb", rec)
	dst := &blob.Destination{Client: bb, BlockSize: 256 << 10, Concurrency: 2, EncryptionScope: "cache-exports"}
	_, err := export.Export(ctx, in.scratch, export.FromRDB(in.rdbPathWith(t, plain), in.persist), dst, nil)
	require.NoError(t, err)
	requireHeaders(t, rec.take(), map[string]string{
		"x-ms-encryption-scope": "cache-exports",
		"x-ms-encryption-key":   "",
	}, "block", "blocklist")

	// Azurite accepts the scope (and ignores it): the blob reads back.
	target := in.rdbPath("imported.rdb")
	_, err = export.Import(ctx, in.scratch, blob.From(bb.BlobClient()), export.ToRDB(target, in.persist, rdb.Options{}), nil)
	require.NoError(t, err)
	requireHeaders(t, rec.take(), map[string]string{"x-ms-encryption-key": ""}, "GET")
	require.Equal(t, digest, loadDigest(t, in.readRDB(t, target)))
}

// rdbPathWith stores plain as the instance's snapshot and returns its path.
func (in *instance) rdbPathWith(t *testing.T, plain []byte) string {
	in.writeRDB(t, "dump.rdb", plain)
	return in.rdbPath("dump.rdb")
}

// TestCustomerKeyNeverPrinted: the formatting verbs and slog show only the
// key's SHA-256.
func TestCustomerKeyNeverPrinted(t *testing.T) {
	raw, k := newKey(t)
	b64 := base64.StdEncoding.EncodeToString(raw)
	var logged bytes.Buffer
	slog.New(slog.NewTextHandler(&logged, nil)).Info("key", "k", k)
	for _, s := range []string{fmt.Sprint(k), fmt.Sprintf("%v %+v %#v %s", k, k, k, k), logged.String()} {
		require.NotContains(t, s, b64)
		require.Contains(t, s, k.SHA256())
	}
	// Parsing: raw bytes, base64 with a newline, and junk.
	k2, err := blob.ParseCustomerKey([]byte(b64 + "\n"))
	require.NoError(t, err)
	require.Equal(t, k.SHA256(), k2.SHA256())
	k3, err := blob.ParseCustomerKey(bytes.Clone(raw))
	require.NoError(t, err)
	require.Equal(t, k.SHA256(), k3.SHA256())
	_, err = blob.ParseCustomerKey([]byte("too short"))
	require.ErrorContains(t, err, "32 raw bytes")
	_, err = blob.NewCustomerKey(make([]byte, 16))
	require.ErrorContains(t, err, "32 bytes")
}
