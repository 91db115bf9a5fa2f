package export

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/cachecrypt/cachecrypt/rdb"
)

// checker is an io.Writer that checks a plain RDB as it streams by, with
// rdb.CheckPlain running in its own goroutine (so the CRC-64 overlaps the
// rest of the send), and computes the SHA-256 of the whole file.
type checker struct {
	sha  hash.Hash
	n    int64
	pw   *io.PipeWriter
	done chan struct{}
	info rdb.Info
	err  error // of CheckPlain, valid after done
}

var errAborted = errors.New("export: transfer aborted")

func newChecker() *checker {
	pr, pw := io.Pipe()
	c := &checker{sha: sha256.New(), pw: pw, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		c.info, c.err = rdb.CheckPlain(pr)
		// CheckPlain may stop early (a bad header): unblock Write.
		pr.CloseWithError(errAborted)
	}()
	return c
}

// Write never fails: a CheckPlain verdict reached early is reported by
// result.
func (c *checker) Write(p []byte) (int, error) {
	c.sha.Write(p)
	c.n += int64(len(p))
	c.pw.Write(p)
	return len(p), nil
}

// abort stops the CheckPlain goroutine; result must not be called after.
func (c *checker) abort() {
	c.pw.CloseWithError(errAborted)
	<-c.done
}

// result ends the input and returns the checked RDB's description.
func (c *checker) result() (Info, error) {
	c.pw.Close()
	<-c.done
	in := Info{Size: c.n, CRC64: c.info.Checksum}
	copy(in.SHA256[:], c.sha.Sum(nil))
	return in, c.err
}

// checkMagic checks the first 9 bytes of a source while it is staged, so a
// file that is no RDB at all is refused before anything is sent.
func checkMagic(h []byte) error {
	if len(h) >= len(SealedMagic) && string(h[:len(SealedMagic)]) == SealedMagic {
		return fmt.Errorf("it is a sealed export (%q), not a plain RDB: import it through Unseal with the KEK that sealed it (cachecrypt import --sealed): %w", SealedMagic, ErrNotRDB)
	}
	if len(h) < 9 || string(h[:5]) != "REDIS" {
		return fmt.Errorf("it starts with %q, not \"REDIS\" and a 4-digit version; give the path of an RDB snapshot (dump.rdb): %w", h, ErrNotRDB)
	}
	for _, b := range h[5:9] {
		if b < '0' || b > '9' {
			return fmt.Errorf("RDB version %q is not 4 digits: %w", h[5:9], ErrNotRDB)
		}
	}
	return nil
}
