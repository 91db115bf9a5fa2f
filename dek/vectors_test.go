package dek_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/cachecrypt/cachecrypt/dek"
	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "create the keyring format 2 vector under testdata/ (never for a committed vector)")

const (
	keyringV1Dir = "../testdata/keyring-v1"
	keyringV2Dir = "../testdata/keyring-v2"
)

// keyringV1Vector is testdata/keyring-v1/vector.json.
type keyringV1Vector struct {
	Keyring   string `json:"keyring_file"`
	MMKKeyset string `json:"mmk_keyset_file"`
	MMKName   string `json:"mmk_name"`
	DiskID    string `json:"disk_id"`
	DEKHex    string `json:"dek_hex"`
}

// keyringV2Vector is testdata/keyring-v2/vector.json.
type keyringV2Vector struct {
	Comment    string            `json:"comment"`
	Keyring    string            `json:"keyring_file"`
	MMKKeyset  string            `json:"mmk_keyset_file"`
	MMKName    string            `json:"mmk_name"`
	DiskID     string            `json:"disk_id"`
	Active     uint32            `json:"active"`
	Generation uint64            `json:"generation"`
	DigestHex  string            `json:"sha256_hex"`
	DEKHex     map[string]string `json:"dek_hex"` // DEK version (decimal) -> DEK
}

// keyringV1 returns the committed format 1 keyring and its MMK.
func keyringV1(t *testing.T) ([]byte, *kek.MMK) {
	t.Helper()
	var v keyringV1Vector
	readJSON(t, filepath.Join(keyringV1Dir, "vector.json"), &v)
	mmk, err := kek.ParseMMK(v.MMKName, readVector(t, keyringV1Dir, v.MMKKeyset))
	require.NoError(t, err)
	return readVector(t, keyringV1Dir, v.Keyring), mmk
}

// TestVectorV1 opens the committed format 1 keyring, checks that its DEK
// is the committed one, and that its next change rewrites it in format 2
// with every DEK intact.
func TestVectorV1(t *testing.T) {
	ctx := context.Background()
	var v keyringV1Vector
	readJSON(t, filepath.Join(keyringV1Dir, "vector.json"), &v)
	b, mmk := keyringV1(t)
	kr, err := decodeKeyring(b)
	require.NoError(t, err)
	require.Equal(t, uint16(1), kr.Format)
	_, deks, err := kr.open(ctx, mmk)
	require.NoError(t, err)
	require.Equal(t, v.DEKHex, hex.EncodeToString(deks[1]), "independent decoder")

	path := filepath.Join(t.TempDir(), "keyring")
	require.NoError(t, os.WriteFile(path, b, 0o600))
	r, err := dek.Open(ctx, path, mmk)
	require.NoError(t, err)
	defer r.Close()
	require.Equal(t, sha256.Sum256(b), r.Digest())
	require.Equal(t, kr.Generation, r.Generation())
	want := derive(t, deks[1], v.DiskID, 1)
	require.Equal(t, want, fileKey(t, r, 1), "dek.Open agrees with the vector")

	_, err = r.RotateDEK()
	require.NoError(t, err)
	now, err := os.ReadFile(path)
	require.NoError(t, err)
	kr2, err := decodeKeyring(now)
	require.NoError(t, err)
	require.Equal(t, uint16(2), kr2.Format, "the next change writes format 2")
	require.Equal(t, kr.Generation+1, kr2.Generation)
	require.Equal(t, kr2.Generation, r.Generation())
	require.Equal(t, sha256.Sum256(now), r.Digest())
	_, deks2, err := kr2.open(ctx, mmk)
	require.NoError(t, err)
	require.Equal(t, deks[1], deks2[1], "DEK 1 survives the upgrade")
	r2, err := dek.Open(ctx, path, mmk)
	require.NoError(t, err)
	defer r2.Close()
	require.Equal(t, want, fileKey(t, r2, 1))
}

// TestVectorV2 pins format 2: the independent decoder opens the committed
// vector to the committed DEKs, and dek.Open agrees, with the committed
// generation and digest.
func TestVectorV2(t *testing.T) {
	if *update {
		generateV2(t)
	}
	ctx := context.Background()
	var v keyringV2Vector
	readJSON(t, filepath.Join(keyringV2Dir, "vector.json"), &v)
	mmk, err := kek.ParseMMK(v.MMKName, readVector(t, keyringV2Dir, v.MMKKeyset))
	require.NoError(t, err)
	b := readVector(t, keyringV2Dir, v.Keyring)
	require.Equal(t, v.DigestHex, hex.EncodeToString(func() []byte { s := sha256.Sum256(b); return s[:] }()))

	kr, err := decodeKeyring(b)
	require.NoError(t, err)
	require.Equal(t, uint16(2), kr.Format)
	require.Equal(t, v.DiskID, kr.DiskID)
	require.Equal(t, v.Generation, kr.Generation)
	require.Equal(t, v.Active, kr.Active)
	require.Len(t, kr.Entries, len(v.DEKHex))
	require.NotEqual(t, kr.Entries[0].Nonce, kr.Entries[1].Nonce)
	_, deks, err := kr.open(ctx, mmk)
	require.NoError(t, err)
	got := map[string]string{}
	for ver, d := range deks {
		got[jsonVersion(ver)] = hex.EncodeToString(d)
	}
	require.Equal(t, v.DEKHex, got, "independent decoder")

	path := filepath.Join(t.TempDir(), "keyring")
	require.NoError(t, os.WriteFile(path, b, 0o600))
	r, err := dek.Open(ctx, path, mmk)
	require.NoError(t, err)
	defer r.Close()
	require.Equal(t, v.Generation, r.Generation())
	require.Equal(t, v.DigestHex, hex.EncodeToString(func() []byte { s := r.Digest(); return s[:] }()))
	require.Equal(t, v.Active, r.Active())
	for ver, d := range deks {
		require.Equal(t, derive(t, d, v.DiskID, ver), fileKey(t, r, ver), "dek.Open agrees on DEK %d", ver)
	}
	re, err := dek.Marshal(b)
	require.NoError(t, err)
	require.Equal(t, b, re)
}

// generateV2 writes the format 2 vector: a keyring of two DEK versions
// (Create, then RotateDEK) wrapped by a fresh test MMK.
func generateV2(t *testing.T) {
	ctx := context.Background()
	require.NoError(t, os.MkdirAll(keyringV2Dir, 0o755))
	v := keyringV2Vector{
		Comment: "A format 2 keyring of disk vector-disk with DEK versions 1 and 2 (Create, then RotateDEK), wrapped by the MMK keyset mmk.keyset (binary Tink keyset, TEST ONLY). dek_hex maps each DEK version to its DEK; sha256_hex is the SHA-256 of the keyring file (Keyring.Digest).",
		Keyring: "keyring", MMKKeyset: "mmk.keyset", MMKName: "cachecrypt-test-vector", DiskID: "vector-disk",
	}
	mmk, err := kek.NewMMK(v.MMKName)
	require.NoError(t, err)
	path := filepath.Join(keyringV2Dir, v.Keyring)
	os.Remove(path)
	r, err := dek.Create(ctx, path, v.DiskID, mmk)
	require.NoError(t, err)
	defer r.Close()
	v.Active, err = r.RotateDEK()
	require.NoError(t, err)
	v.Generation = r.Generation()
	d := r.Digest()
	v.DigestHex = hex.EncodeToString(d[:])
	kr, err := decodeKeyring(readVector(t, keyringV2Dir, v.Keyring))
	require.NoError(t, err)
	_, deks, err := kr.open(ctx, mmk)
	require.NoError(t, err)
	v.DEKHex = map[string]string{}
	for ver, d := range deks {
		v.DEKHex[jsonVersion(ver)] = hex.EncodeToString(d)
	}
	require.NoError(t, os.WriteFile(filepath.Join(keyringV2Dir, v.MMKKeyset), mmk.Keyset(), 0o600))
	j, err := json.MarshalIndent(v, "", "  ")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(keyringV2Dir, "vector.json"), append(j, '\n'), 0o644))
}

func jsonVersion(v uint32) string { return strconv.FormatUint(uint64(v), 10) }

// derive is the file key FORMAT.md specifies for a raw DEK, with the salt
// and purpose fileKey uses.
func derive(t *testing.T, d []byte, diskID string, v uint32) []byte {
	t.Helper()
	fk, err := dek.DeriveFileKey(d, diskID, v, "rdb", salt)
	require.NoError(t, err)
	return fk
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, v))
}

func readVector(t *testing.T, dir, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	require.NoError(t, err)
	return b
}
