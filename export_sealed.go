package cachecrypt

import (
	"context"

	"github.com/cachecrypt/cachecrypt/export"
	"github.com/cachecrypt/cachecrypt/kek"
)

// ExportSealed is Export with the snapshot sealed (export.Options.Seal,
// FORMAT.md "Sealed export"): dst receives the RDB encrypted under a fresh
// export DEK that k wraps, and only a holder of k can import it. A nil k
// seals under the instance's current KEK (its CMK, or its platform key).
// Any Seal in opts is replaced by k.
func (i *Instance) ExportSealed(ctx context.Context, dst export.Destination, k kek.Wrapper, opts *export.Options) (export.Info, error) {
	var o export.Options
	if opts != nil {
		o = *opts
	}
	o.Seal = k
	if k == nil {
		o.Seal = i.currentKEK()
	}
	return i.Export(ctx, dst, &o)
}

// ImportSealed imports a sealed export from src (export.Unseal), unwrapping
// its export DEK with k: one KEK call. A nil k tries the instance's current
// KEK, then its platform key, so an export sealed before a switch to a CMK
// still imports. With a key that did not seal it, the import fails with the
// key's error (kek.ErrKeyMismatch, kek.ErrUnwrap) and the snapshot is left
// as it was.
func (i *Instance) ImportSealed(ctx context.Context, src export.Source, k kek.Unwrapper, opts *export.Options) (export.Info, error) {
	if k == nil {
		k = kek.First(i.currentKEK(), i.mmk)
	}
	return i.Import(ctx, export.Unseal(src, k), opts)
}

// currentKEK returns the KEK the persistent disks are wrapped by now.
func (i *Instance) currentKEK() kek.KEK {
	i.mu.RLock()
	defer i.mu.RUnlock()
	return i.kek
}
