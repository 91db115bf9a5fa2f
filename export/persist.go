package export

import (
	"context"
	"fmt"
	"io"

	"github.com/cachecrypt/cachecrypt/dek"
	"github.com/cachecrypt/cachecrypt/rdb"
)

// FromRDB is a Source reading the encrypted persistence snapshot at path
// (rdb.Open) with the persistence disk's keyring: the usual source of an
// Export. Each segment is authenticated before its bytes are staged.
func FromRDB(path string, keys *dek.Keyring) Source { return rdbSource{path, keys} }

type rdbSource struct {
	path string
	keys *dek.Keyring
}

func (s rdbSource) Open(context.Context) (io.ReadCloser, Meta, error) {
	r, err := rdb.Open(s.path, s.keys)
	if err != nil {
		return nil, Meta{}, err
	}
	return r, Meta{Size: r.Size()}, nil
}

// ToRDB is a Destination writing an encrypted persistence snapshot at path
// (rdb.Create) with the persistence disk's keyring: the usual destination
// of an Import. The snapshot replaces path atomically, and only once the
// stream ended with every check passed; on any failure path keeps its old
// content.
func ToRDB(path string, keys *dek.Keyring, opts rdb.Options) Destination {
	return rdbDest{path, keys, opts}
}

type rdbDest struct {
	path string
	keys *dek.Keyring
	opts rdb.Options
}

func (d rdbDest) Put(_ context.Context, s *Stream) error {
	w, err := rdb.Create(d.path, d.keys, d.opts)
	if err != nil {
		return err
	}
	defer w.Close() // aborts unless committed
	if _, err := w.ReadFrom(s); err != nil {
		return err
	}
	if err := w.Commit(); err != nil {
		return fmt.Errorf("commit %s: %w", d.path, err)
	}
	return nil
}
