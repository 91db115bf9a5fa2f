package valuecrypt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"

	"github.com/cachecrypt/cachecrypt/internal/atomicfile"
)

// FileStore returns a Store that keeps the keyset in the file at path,
// replaced atomically (write, fsync, rename, fsync the directory). Its
// compare-and-set holds within one process; processes that share the file
// must not rotate it at the same time. The file holds only the sealed,
// wrapped keyset. The go-redis adapter (package valuecrypt/goredis) offers
// a Store in the cache itself.
func FileStore(path string) Store { return &fileStore{path: path} }

type fileStore struct {
	path string
	mu   sync.Mutex // serializes Save's compare and replace
}

func (f *fileStore) Load(context.Context) ([]byte, error) {
	data, err := os.ReadFile(f.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no keyset file at %s; create one with valuecrypt.Create: %w", f.path, ErrKeysetMissing)
	}
	if err != nil {
		return nil, fmt.Errorf("read keyset file: %w", err)
	}
	return data, nil
}

func (f *fileStore) Save(_ context.Context, old, next []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	cur, err := os.ReadFile(f.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		cur = nil
	case err != nil:
		return fmt.Errorf("read keyset file: %w", err)
	}
	if (old == nil) != (cur == nil) || !bytes.Equal(cur, old) {
		return fmt.Errorf("keyset file %s changed since it was loaded: %w", f.path, ErrConflict)
	}
	if err := atomicfile.WriteFile(atomicfile.OS, f.path, next, 0o600); err != nil {
		return fmt.Errorf("write keyset file: %w", err)
	}
	return nil
}
