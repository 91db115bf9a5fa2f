// Package exporttest helps test export destinations: it damages an
// export's encrypted staging between the staging pass and the sending pass,
// so a test can prove that a destination commits nothing that failed
// authentication.
package exporttest

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/cachecrypt/cachecrypt/export"
	"github.com/cachecrypt/cachecrypt/osdisk"
)

// StagedOptions returns export options that close staged once the staging
// pass reports its end.
func StagedOptions(staged chan struct{}) *export.Options {
	var once sync.Once
	return &export.Options{Progress: func(p export.Progress) {
		if p.Phase == export.Staging && p.Done > 0 && p.Done == p.Total {
			once.Do(func() { close(staged) })
		}
	}}
}

// TamperDest is a Destination that waits for the staging to end (Staged,
// closed by StagedOptions), flips one bit three quarters into the single
// staging file of Scratch, then hands the stream to Next.
type TamperDest struct {
	T       testing.TB
	Scratch *osdisk.Disk
	Next    export.Destination
	Staged  chan struct{}
}

// Put implements export.Destination.
func (d TamperDest) Put(ctx context.Context, s *export.Stream) error {
	<-d.Staged
	dir := filepath.Join(d.Scratch.Dir(), osdisk.TempDir)
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) != 1 {
		d.T.Fatalf("exporttest: want one staging file in %s, have %d (%v)", dir, len(ents), err)
	}
	f, err := os.OpenFile(filepath.Join(dir, ents[0].Name()), os.O_RDWR, 0)
	if err != nil {
		d.T.Fatalf("exporttest: %v", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		d.T.Fatalf("exporttest: %v", err)
	}
	b, off := []byte{0}, st.Size()*3/4
	if _, err := f.ReadAt(b, off); err != nil {
		d.T.Fatalf("exporttest: %v", err)
	}
	b[0] ^= 1
	if _, err := f.WriteAt(b, off); err != nil {
		d.T.Fatalf("exporttest: %v", err)
	}
	return d.Next.Put(ctx, s)
}
