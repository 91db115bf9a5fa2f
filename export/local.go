package export

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/cachecrypt/cachecrypt/internal/atomicfile"
)

// FromReader is a Source reading r, such as the decrypting reader of an
// encrypted persistence RDB. If r has a Size() int64 method, the transfer
// checks that exactly that many bytes arrive. The transfer closes r if it is
// an io.Closer.
func FromReader(r io.Reader) Source { return readerSource{r} }

type readerSource struct{ r io.Reader }

func (s readerSource) Open(context.Context) (io.ReadCloser, Meta, error) {
	m := Meta{Size: -1}
	if sz, ok := s.r.(interface{ Size() int64 }); ok {
		m.Size = sz.Size()
	}
	if rc, ok := s.r.(io.ReadCloser); ok {
		return rc, m, nil
	}
	return io.NopCloser(s.r), m, nil
}

// FromFile is a Source reading the plain RDB file at path.
func FromFile(path string) Source { return fileSource(path) }

type fileSource string

func (p fileSource) Open(context.Context) (io.ReadCloser, Meta, error) {
	f, err := os.Open(string(p))
	if err != nil {
		return nil, Meta{}, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, Meta{}, err
	}
	return f, Meta{Size: st.Size()}, nil
}

// ToWriter is a Destination writing to w. A failed transfer may leave part
// of the RDB in w: use ToFile or a blob destination for all-or-nothing.
func ToWriter(w io.Writer) Destination { return writerDest{w} }

type writerDest struct{ w io.Writer }

func (d writerDest) Put(_ context.Context, s *Stream) error { return copyAll(d.w, s) }

// copyAll copies with a large buffer, and without the io.ReaderFrom of w
// (io.Discard's uses 8 KiB reads).
func copyAll(w io.Writer, s *Stream) error {
	buf := make([]byte, 1<<20)
	for {
		n, err := s.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// ToFile is a Destination that atomically replaces the file at path (mode
// 0600) with the plain RDB: on any failure the file is left as it was and
// the partial copy is removed.
func ToFile(path string) Destination { return fileDest(path) }

type fileDest string

func (p fileDest) Put(_ context.Context, s *Stream) error {
	f, err := atomicfile.Create(atomicfile.OS, string(p), 0o600)
	if err != nil {
		return err
	}
	if err := copyAll(f, s); err != nil {
		f.Abort()
		return fmt.Errorf("write %s: %w", p, err)
	}
	return f.Commit()
}
