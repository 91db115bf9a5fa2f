package kek

import (
	"context"
	"errors"
	"fmt"
)

// First returns an Unwrapper that tries each of us in order and returns
// the first success. An Unwrapper answering ErrKeyMismatch (the wrapped key
// is not its) is skipped; any other error stops the search, so a revoked or
// unreachable key is reported, not hidden behind the next candidate.
func First(us ...Unwrapper) Unwrapper { return first(us) }

type first []Unwrapper

func (f first) Unwrap(ctx context.Context, w Wrapped) ([]byte, error) {
	for _, u := range f {
		if u == nil {
			continue
		}
		key, err := u.Unwrap(ctx, w)
		if !errors.Is(err, ErrKeyMismatch) {
			return key, err
		}
	}
	return nil, fmt.Errorf("kek: no configured key-encryption key holds %s; supply it (for a switch interrupted by a crash, pass the previous key too): %w", w.Descriptor, ErrKeyMismatch)
}
