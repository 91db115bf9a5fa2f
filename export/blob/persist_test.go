package blob_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cachecrypt/cachecrypt/dek"
	"github.com/cachecrypt/cachecrypt/export"
	"github.com/cachecrypt/cachecrypt/internal/atomicfile"
	"github.com/cachecrypt/cachecrypt/internal/stream"
)

// Persistence RDB helpers: TEMPORARY, until package rdb lands.

const rdbPurpose = "rdb"

func writePersistRDB(t *testing.T, keys *dek.Keyring, path string, plain []byte) {
	t.Helper()
	require.NoError(t, persistDest{keys, path}.put(bytes.NewReader(plain)))
}

type persistReader struct {
	*stream.Reader
	f *os.File
}

func (p persistReader) Close() error { return p.f.Close() }

func openPersistRDB(t *testing.T, keys *dek.Keyring, path string) io.Reader {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	st, _ := f.Stat()
	r, err := stream.NewReader(f, st.Size(), keys, rdbPurpose)
	require.NoError(t, err)
	return persistReader{r, f}
}

func readPersistRDB(t *testing.T, keys *dek.Keyring, path string) []byte {
	t.Helper()
	r := openPersistRDB(t, keys, path)
	defer r.(io.Closer).Close()
	b, err := io.ReadAll(r)
	require.NoError(t, err)
	return b
}

type persistDest struct {
	keys *dek.Keyring
	path string
}

func (d persistDest) Put(_ context.Context, s *export.Stream) error { return d.put(s) }

func (d persistDest) put(r io.Reader) error {
	p, err := atomicfile.Create(atomicfile.OS, d.path, 0o600)
	if err != nil {
		return err
	}
	w, err := stream.NewWriter(p, d.keys, rdbPurpose, stream.Options{})
	if err == nil {
		_, err = w.ReadFrom(r)
	}
	if err == nil {
		err = w.Close()
	}
	if err != nil {
		p.Abort()
		return err
	}
	return p.Commit()
}
