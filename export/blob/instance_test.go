package blob_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cachecrypt/cachecrypt"
	"github.com/cachecrypt/cachecrypt/export"
	"github.com/cachecrypt/cachecrypt/export/blob"
	"github.com/cachecrypt/cachecrypt/osdisk"
	"github.com/cachecrypt/cachecrypt/rdb"
)

// TestInstanceExportImportNoPlaintext runs a snapshot of a real Redis
// through a cache Instance: saved encrypted on its persistence disk,
// exported to Azurite through its OS disk, imported back over the snapshot,
// then loaded into a fresh redis-server (DEBUG DIGEST equal). Every file
// under the instance and the OS temp dir is scanned for a canary value.
func TestInstanceExportImportNoPlaintext(t *testing.T) {
	cc := azurite(t)
	redisDir := filepath.Join(t.TempDir(), "redis")
	instDir := filepath.Join(t.TempDir(), "instance")
	osTemp := t.TempDir()
	t.Setenv("TMPDIR", osTemp)
	canary := "CANARY-instance-5b2e91c4-never-on-disk-in-plaintext"
	plain, digest := snapshot(t, redisDir, []string{"SET", "canary", canary})
	require.True(t, bytes.Contains(plain, []byte(canary)))

	ctx := context.Background()
	inst, err := cachecrypt.Open(ctx, instDir, cachecrypt.Config{ProbeInterval: -1})
	require.NoError(t, err)
	defer inst.Close()
	require.NoError(t, inst.SaveSnapshot(func(w io.Writer) error {
		_, err := w.Write(plain)
		return err
	}))
	persist, err := inst.Keyring(cachecrypt.DiskPersistence)
	require.NoError(t, err)
	osKeys, err := inst.Keyring(cachecrypt.DiskOS)
	require.NoError(t, err)
	scratch, err := osdisk.New(inst.DiskDir(cachecrypt.DiskOS), osKeys)
	require.NoError(t, err)
	defer scratch.Close()

	bb := cc.NewBlockBlobClient("instance/dump.rdb")
	info, err := export.Export(ctx, scratch, export.FromRDB(inst.SnapshotPath(), persist), blob.To(bb), nil)
	require.NoError(t, err)
	require.Equal(t, int64(len(plain)), info.Size)

	// Replace the snapshot with garbage, then restore it from the blob.
	require.NoError(t, inst.SaveSnapshot(func(w io.Writer) error {
		_, err := io.WriteString(w, "not the snapshot")
		return err
	}))
	_, err = export.Import(ctx, scratch, blob.From(bb.BlobClient()), export.ToRDB(inst.SnapshotPath(), persist, rdb.Options{}), nil)
	require.NoError(t, err)

	for _, dir := range []string{instDir, osTemp} {
		require.Zero(t, countHits(t, dir, canary), "plaintext canary under %s", dir)
	}
	require.GreaterOrEqual(t, countFiles(t, instDir), 4)
	ents, err := os.ReadDir(filepath.Join(inst.DiskDir(cachecrypt.DiskOS), osdisk.TempDir))
	require.NoError(t, err)
	require.Empty(t, ents, "staging files left on the OS disk")

	r, err := inst.OpenSnapshot()
	require.NoError(t, err)
	defer r.Close()
	back, err := io.ReadAll(r)
	require.NoError(t, err)
	require.True(t, bytes.Equal(plain, back), "restored snapshot differs")
	require.Equal(t, digest, loadDigest(t, back), "DEBUG DIGEST after export, import and load")
}
