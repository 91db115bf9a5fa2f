package bench

import (
	"io"
	"os"

	"github.com/cachecrypt/cachecrypt/dek"
	"github.com/cachecrypt/cachecrypt/internal/stream"
)

// TEMPORARY until package rdb lands: the encrypted persistence RDB.

func writeEncrypted(keys *dek.Keyring, plainPath, encPath string) error {
	in, err := os.Open(plainPath)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(encPath)
	if err != nil {
		return err
	}
	defer out.Close()
	w, err := stream.NewWriter(out, keys, "rdb", stream.Options{})
	if err != nil {
		return err
	}
	if _, err := w.ReadFrom(in); err != nil {
		return err
	}
	return w.Close()
}

type encReader struct{ *stream.Reader }

func openEncrypted(keys *dek.Keyring, path string) (io.Reader, func(), error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	st, _ := f.Stat()
	r, err := stream.NewReader(f, st.Size(), keys, "rdb")
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return encReader{r}, func() { f.Close() }, nil
}
