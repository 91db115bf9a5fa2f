package blob_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/stretchr/testify/require"

	"github.com/cachecrypt/cachecrypt/dek"
	"github.com/cachecrypt/cachecrypt/export"
	"github.com/cachecrypt/cachecrypt/export/blob"
	"github.com/cachecrypt/cachecrypt/export/exporttest"
	"github.com/cachecrypt/cachecrypt/internal/testenv"
	"github.com/cachecrypt/cachecrypt/kek/kektest"
	"github.com/cachecrypt/cachecrypt/osdisk"
	"github.com/cachecrypt/cachecrypt/rdb"
)

// azurite starts Azurite and returns a fresh container.
func azurite(t *testing.T) *container.Client {
	t.Helper()
	cc, _ := azuriteAt(t)
	return cc
}

// azuriteAt starts Azurite and returns a fresh container and the Azurite
// (whose Dir holds the stored blobs).
func azuriteAt(t *testing.T) (*container.Client, *testenv.Azurite) {
	t.Helper()
	a := testenv.StartAzurite(t)
	cred, err := azblob.NewSharedKeyCredential(a.Account, a.Key)
	require.NoError(t, err)
	svc, err := azblob.NewClientWithSharedKeyCredential(a.Endpoint, cred, nil)
	require.NoError(t, err)
	_, err = svc.CreateContainer(context.Background(), "exports", nil)
	require.NoError(t, err)
	return svc.ServiceClient().NewContainerClient("exports"), a
}

// instance is the part of a cache instance an export touches: an encrypted
// persistence disk holding the RDB and the encrypted OS disk for staging.
type instance struct {
	root    string
	persist *dek.Keyring
	scratch *osdisk.Disk
}

func newInstance(t *testing.T, root string) *instance {
	t.Helper()
	ctx := context.Background()
	k := kektest.New("mmk")
	require.NoError(t, os.MkdirAll(filepath.Join(root, "persist"), 0o700))
	persist, err := dek.Create(ctx, filepath.Join(root, "persist", "keyring"), "persist-disk", k)
	require.NoError(t, err)
	scratch, err := osdisk.Create(ctx, filepath.Join(root, "os"), "os-disk", k)
	require.NoError(t, err)
	t.Cleanup(func() { scratch.Close(); persist.Close() })
	return &instance{root: root, persist: persist, scratch: scratch}
}

func (in *instance) rdbPath(name string) string { return filepath.Join(in.root, "persist", name) }

// writeRDB stores a plain RDB as the instance's encrypted snapshot name.
func (in *instance) writeRDB(t *testing.T, name string, plain []byte) {
	t.Helper()
	_, err := rdb.Encrypt(in.rdbPath(name), bytes.NewReader(plain), in.persist)
	require.NoError(t, err)
}

// readRDB decrypts the encrypted snapshot at path.
func (in *instance) readRDB(t *testing.T, path string) []byte {
	t.Helper()
	var b bytes.Buffer
	_, err := rdb.Decrypt(&b, path, in.persist)
	require.NoError(t, err)
	return b.Bytes()
}

// snapshot fills a real Redis, saves it and returns the plain RDB and the
// dataset's DEBUG DIGEST. The server's directory is removed afterwards.
func snapshot(t *testing.T, dir string, extra ...[]string) ([]byte, string) {
	t.Helper()
	r := testenv.StartRedis(t, dir)
	r.MustDo(t, "DEBUG", "POPULATE", "30000", "key", "100")
	r.MustDo(t, "HSET", "hash", "a", "1", "b", "2")
	r.MustDo(t, "ZADD", "zset", "1", "x", "2.5", "y")
	for _, cmd := range extra {
		r.MustDo(t, cmd...)
	}
	digest := r.Digest(t)
	plain, err := os.ReadFile(r.Save(t))
	require.NoError(t, err)
	r.Stop()
	require.NoError(t, os.RemoveAll(dir))
	return plain, digest
}

// loadDigest starts a fresh redis-server on the plain RDB and returns its
// DEBUG DIGEST.
func loadDigest(t *testing.T, plain []byte) string {
	t.Helper()
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "dump.rdb"), plain, 0o600))
	return testenv.StartRedis(t, dir).Digest(t)
}

func TestRoundTripThroughAzuriteDigestEqual(t *testing.T) {
	cc := azurite(t)
	ctx := context.Background()
	plain, digest := snapshot(t, filepath.Join(t.TempDir(), "redis"))
	in := newInstance(t, t.TempDir())
	in.writeRDB(t, "dump.rdb", plain)

	bb := cc.NewBlockBlobClient("backups/dump.rdb")
	info, err := export.Export(ctx, in.scratch, export.FromRDB(in.rdbPath("dump.rdb"), in.persist), &blob.Destination{Client: bb, BlockSize: 1 << 20, Concurrency: 3}, nil)
	require.NoError(t, err)
	require.Equal(t, sha256.Sum256(plain), info.SHA256)

	props, err := bb.GetProperties(ctx, nil)
	require.NoError(t, err)
	require.Equal(t, hex.EncodeToString(info.SHA256[:]), blob.SHA256(props.Metadata))
	crc, ok := blob.CRC64(props.Metadata)
	require.True(t, ok)
	require.Equal(t, info.CRC64, crc)
	require.Equal(t, int64(len(plain)), *props.ContentLength)

	imported := in.rdbPath("imported.rdb")
	info2, err := export.Import(ctx, in.scratch, blob.From(bb.BlobClient()), export.ToRDB(imported, in.persist, rdb.Options{}), nil)
	require.NoError(t, err)
	require.Equal(t, info, info2)

	back := in.readRDB(t, imported)
	require.True(t, bytes.Equal(plain, back), "imported RDB differs")
	require.Equal(t, digest, loadDigest(t, back), "DEBUG DIGEST after export, import and load")
	requireNoStaging(t, in.scratch)
}

// TestNoPlaintextOnDisk runs an export and an import with a canary value
// and scans every file of the instance and of the OS temp directory.
func TestNoPlaintextOnDisk(t *testing.T) {
	cc := azurite(t) // Azurite's own directory holds the exported plaintext: not scanned
	redisDir := filepath.Join(t.TempDir(), "redis")
	exported := filepath.Join(t.TempDir(), "exported.rdb") // plaintext destination: not scanned
	root := t.TempDir()
	osTemp := t.TempDir()
	t.Setenv("TMPDIR", osTemp) // anything that spills to the OS temp dir lands here
	canary := "CANARY-8d1f0e7b-plaintext-must-never-reach-disk"
	plain, _ := snapshot(t, redisDir, []string{"SET", "canary-key", canary})
	require.True(t, bytes.Contains(plain, []byte(canary)), "canary not stored verbatim in the RDB")

	ctx := context.Background()
	in := newInstance(t, root)
	in.writeRDB(t, "dump.rdb", plain)
	plain = nil

	bb := cc.NewBlockBlobClient("canary.rdb")
	_, err := export.Export(ctx, in.scratch, export.FromRDB(in.rdbPath("dump.rdb"), in.persist), blob.To(bb), nil)
	require.NoError(t, err)
	_, err = export.Export(ctx, in.scratch, export.FromRDB(in.rdbPath("dump.rdb"), in.persist), export.ToFile(exported), nil)
	require.NoError(t, err)
	_, err = export.Import(ctx, in.scratch, blob.From(bb.BlobClient()), export.ToRDB(in.rdbPath("imported.rdb"), in.persist, rdb.Options{}), nil)
	require.NoError(t, err)
	_, err = export.Import(ctx, in.scratch, export.FromFile(exported), export.ToRDB(in.rdbPath("imported2.rdb"), in.persist, rdb.Options{}), nil)
	require.NoError(t, err)

	// The scan must be able to see the canary: the plaintext destination holds it.
	require.Equal(t, 1, countHits(t, filepath.Dir(exported), canary))
	files := 0
	for _, dir := range []string{root, osTemp} {
		files += countFiles(t, dir)
		require.Zero(t, countHits(t, dir, canary), "plaintext canary found under %s", dir)
	}
	require.GreaterOrEqual(t, files, 5, "scan saw too few files to mean anything")
	// And the imported copies do decrypt to the canary.
	require.True(t, bytes.Contains(in.readRDB(t, in.rdbPath("imported.rdb")), []byte(canary)))
}

// countHits returns how many files under dir contain s.
func countHits(t *testing.T, dir, s string) int {
	t.Helper()
	hits := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if bytes.Contains(b, []byte(s)) {
			t.Logf("canary in %s", p)
			hits++
		}
		return nil
	})
	require.NoError(t, err)
	return hits
}

func countFiles(t *testing.T, dir string) int {
	n := 0
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			n++
		}
		return nil
	})
	return n
}

func requireNoStaging(t *testing.T, d *osdisk.Disk) {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(d.Dir(), osdisk.TempDir))
	require.NoError(t, err)
	require.Empty(t, ents, "staging file left behind")
}

func TestTamperedStagingCommitsNoBlob(t *testing.T) {
	cc := azurite(t)
	ctx := context.Background()
	plain, _ := snapshot(t, filepath.Join(t.TempDir(), "redis"))
	in := newInstance(t, t.TempDir())
	dst := &blob.Destination{Client: cc.NewBlockBlobClient("t.rdb"), BlockSize: 1 << 20, Concurrency: 2}

	// No blob before: none after.
	staged := make(chan struct{})
	_, err := export.Export(ctx, in.scratch, export.FromReader(bytes.NewReader(plain)), exporttest.TamperDest{T: t, Scratch: in.scratch, Next: dst, Staged: staged}, exporttest.StagedOptions(staged))
	require.ErrorIs(t, err, export.ErrAuthentication)
	_, err = dst.Client.GetProperties(ctx, nil)
	require.True(t, bloberror.HasCode(err, bloberror.BlobNotFound), "a blob was committed: %v", err)
	requireNoStaging(t, in.scratch)

	// An earlier export stays intact.
	first, err := export.Export(ctx, in.scratch, export.FromReader(bytes.NewReader(plain)), dst, nil)
	require.NoError(t, err)
	other, _ := snapshot(t, filepath.Join(t.TempDir(), "redis2"), []string{"SET", "other", "value"})
	staged = make(chan struct{})
	_, err = export.Export(ctx, in.scratch, export.FromReader(bytes.NewReader(other)), exporttest.TamperDest{T: t, Scratch: in.scratch, Next: dst, Staged: staged}, exporttest.StagedOptions(staged))
	require.ErrorIs(t, err, export.ErrAuthentication)
	require.Equal(t, plain, download(t, dst.Client))
	props, err := dst.Client.GetProperties(ctx, nil)
	require.NoError(t, err)
	require.Equal(t, hex.EncodeToString(first.SHA256[:]), blob.SHA256(props.Metadata))
}

func TestCancelledUploadCommitsNothing(t *testing.T) {
	cc := azurite(t)
	plain, _ := snapshot(t, filepath.Join(t.TempDir(), "redis"))
	in := newInstance(t, t.TempDir())
	bb := cc.NewBlockBlobClient("cancel.rdb")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	require.Greater(t, len(plain), 512<<10)
	opts := &export.Options{ProgressEvery: 64 << 10, Progress: func(p export.Progress) {
		if p.Phase == export.Sending && p.Done >= 256<<10 {
			cancel()
		}
	}}
	_, err := export.Export(ctx, in.scratch, export.FromReader(bytes.NewReader(plain)), &blob.Destination{Client: bb, BlockSize: 1 << 20, Concurrency: 1}, opts)
	require.ErrorIs(t, err, context.Canceled)
	_, err = bb.GetProperties(context.Background(), nil)
	require.True(t, bloberror.HasCode(err, bloberror.BlobNotFound), "a blob was committed: %v", err)
	requireNoStaging(t, in.scratch)
}

func TestImportChecksBlob(t *testing.T) {
	cc := azurite(t)
	ctx := context.Background()
	plain, _ := snapshot(t, filepath.Join(t.TempDir(), "redis"))
	in := newInstance(t, t.TempDir())
	zero := hex.EncodeToString(make([]byte, 32))
	junk := "not-hex"
	cases := []struct {
		name string
		data []byte
		md   map[string]*string
		want error
		msg  string
	}{
		{"not an RDB", []byte("{\"json\": \"document\"}"), nil, export.ErrNotRDB, "REDIS"},
		{"sha256 metadata mismatch", plain, map[string]*string{"sha256": &zero}, export.ErrDigest, "SHA-256"},
		{"sha256 metadata not hex", plain, map[string]*string{"sha256": &junk}, export.ErrDigest, "not a hex SHA-256"},
		{"truncated RDB", plain[:len(plain)/2], nil, export.ErrNotRDB, "truncated"},
		{"damaged RDB", damaged(plain), nil, export.ErrChecksum, "CRC-64"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			bb := cc.NewBlockBlobClient(tc.name)
			_, err := bb.UploadBuffer(ctx, tc.data, &blockblob.UploadBufferOptions{Metadata: tc.md})
			require.NoError(t, err)
			target := in.rdbPath("refused.rdb")
			_, err = export.Import(ctx, in.scratch, blob.From(bb.BlobClient()), export.ToRDB(target, in.persist, rdb.Options{}), nil)
			require.ErrorIs(t, err, tc.want)
			require.ErrorContains(t, err, "export.Import")
			require.ErrorContains(t, err, tc.msg)
			require.NoFileExists(t, target)
			requireNoStaging(t, in.scratch)
		})
	}
}

func damaged(b []byte) []byte {
	b = bytes.Clone(b)
	b[len(b)/3] ^= 0x20
	return b
}

func download(t *testing.T, bb *blockblob.Client) []byte {
	t.Helper()
	resp, err := bb.DownloadStream(context.Background(), nil)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return b
}
