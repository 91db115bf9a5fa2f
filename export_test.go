package cachecrypt_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/cachecrypt/cachecrypt"
	"github.com/cachecrypt/cachecrypt/export"
	"github.com/cachecrypt/cachecrypt/export/blob"
	"github.com/cachecrypt/cachecrypt/internal/testenv"
	"github.com/stretchr/testify/require"
)

// TestExportImportThroughInstanceLeavesNoPlaintext writes a canary into a
// real Redis, snapshots it into the instance, exports it to Azurite, imports
// it back, loads the import into a fresh redis-server (DEBUG DIGEST equal),
// and scans every byte under the instance and the OS temp dir: the canary
// appears nowhere but in the export's destination.
func TestExportImportThroughInstanceLeavesNoPlaintext(t *testing.T) {
	ctx := context.Background()
	canary := "canary-" + rand.Text() // incompressible: the RDB keeps it verbatim
	src := testenv.StartRedis(t, t.TempDir())
	src.MustDo(t, "DEBUG", "POPULATE", "20000")
	src.MustDo(t, "SET", "secret", canary)
	digest := src.Digest(t)
	dump, err := os.ReadFile(src.Save(t))
	require.NoError(t, err)

	az := testenv.StartAzurite(t)
	cred, err := azblob.NewSharedKeyCredential(az.Account, az.Key)
	require.NoError(t, err)
	svc, err := azblob.NewClientWithSharedKeyCredential(az.Endpoint, cred, nil)
	require.NoError(t, err)
	_, err = svc.CreateContainer(ctx, "exports", nil)
	require.NoError(t, err)
	bb := svc.ServiceClient().NewContainerClient("exports").NewBlockBlobClient("dump.rdb")

	dir := t.TempDir()
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	inst, err := cachecrypt.Open(ctx, dir, cachecrypt.Config{ProbeInterval: -1})
	require.NoError(t, err)
	defer inst.Close()
	_, err = inst.Import(ctx, export.FromReader(bytes.NewReader(dump)), nil)
	require.NoError(t, err)
	info, err := inst.Export(ctx, blob.To(bb), nil)
	require.NoError(t, err)
	require.Equal(t, int64(len(dump)), info.Size)

	// Import the blob back, then load the decrypted snapshot into Redis.
	require.NoError(t, os.Remove(inst.SnapshotPath()))
	_, err = inst.Import(ctx, blob.From(svc.ServiceClient().NewContainerClient("exports").NewBlobClient("dump.rdb")), nil)
	require.NoError(t, err)
	restored := t.TempDir()
	var plain bytes.Buffer
	_, err = inst.Export(ctx, export.ToWriter(&plain), nil)
	require.NoError(t, err)
	require.Equal(t, dump, plain.Bytes())
	require.True(t, bytes.Contains(plain.Bytes(), []byte(canary)), "the scan below would see the canary if it were on disk")
	require.NoError(t, os.WriteFile(filepath.Join(restored, "dump.rdb"), plain.Bytes(), 0o600))
	dst := testenv.StartRedis(t, restored)
	require.Equal(t, digest, dst.Digest(t))
	require.Equal(t, canary, dst.MustDo(t, "GET", "secret"))

	for _, root := range []string{dir, tmp} {
		filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			require.NoError(t, err)
			if d.Type().IsRegular() {
				b, err := os.ReadFile(path)
				require.NoError(t, err)
				require.False(t, bytes.Contains(b, []byte(canary)), "plaintext canary in %s", path)
			}
			return nil
		})
	}
}
