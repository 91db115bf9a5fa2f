package nvme_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"sync"
	"testing"

	"github.com/cachecrypt/cachecrypt/nvme"
)

// stamp fills a page with the writer and round that wrote it, so a reader
// can tell a whole page from a mix of two writes.
func stamp(p []byte, writer, round uint32) {
	for i := 0; i+8 <= len(p); i += 8 {
		binary.LittleEndian.PutUint32(p[i:], writer)
		binary.LittleEndian.PutUint32(p[i+4:], round)
	}
}

func whole(p []byte) bool {
	for i := 8; i+8 <= len(p); i += 8 {
		if !bytes.Equal(p[i:i+8], p[:8]) {
			return false
		}
	}
	return true
}

// TestConcurrentWriters runs writers on their own pages and on pages shared
// by all, with readers alongside, on a real file (run with -race). Every
// read must return a whole page, and at the end each private page holds its
// writer's last round.
func TestConcurrentWriters(t *testing.T) {
	const writers, rounds, shared = 8, 200, 4
	s, _ := openFile(t, writers+shared)
	ps := s.PageSize()
	var wg sync.WaitGroup
	errs := make(chan error, 2*writers)
	for w := range uint32(writers) {
		wg.Add(2)
		go func() { // writer
			defer wg.Done()
			p := make([]byte, ps)
			for r := range uint32(rounds) {
				stamp(p, w, r)
				if err := s.WritePage(int64(w), p); err != nil {
					errs <- err
					return
				}
				if err := s.WritePage(writers+int64(r%shared), p); err != nil {
					errs <- err
					return
				}
			}
		}()
		go func() { // reader of the shared pages
			defer wg.Done()
			p := make([]byte, ps)
			for r := range rounds {
				err := s.ReadPage(writers+int64(r%shared), p)
				if errors.Is(err, nvme.ErrNotWritten) {
					continue // not yet written
				}
				if err != nil {
					errs <- err
					return
				}
				if !whole(p) {
					errs <- errors.New("read a page mixing two writes")
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	p := make([]byte, ps)
	want := make([]byte, ps)
	for w := range uint32(writers) {
		if err := s.ReadPage(int64(w), p); err != nil {
			t.Fatal(err)
		}
		stamp(want, w, rounds-1)
		if !bytes.Equal(p, want) {
			t.Fatalf("page %d does not hold its writer's last round", w)
		}
	}
	for i := range int64(shared) {
		if err := s.ReadPage(writers+i, p); err != nil || !whole(p) {
			t.Fatalf("shared page %d: %v, whole %v", i, err, whole(p))
		}
	}
}

// TestCloseDuringWrites: Close waits for calls in flight; every call either
// succeeds or fails with ErrClosed.
func TestCloseDuringWrites(t *testing.T) {
	s, _ := openFile(t, 16)
	var wg sync.WaitGroup
	for w := range int64(4) {
		wg.Go(func() {
			p := make([]byte, s.PageSize())
			for {
				err := s.WritePage(w, p)
				if errors.Is(err, nvme.ErrClosed) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
}
