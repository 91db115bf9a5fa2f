package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/cachecrypt/cachecrypt"
	"github.com/cachecrypt/cachecrypt/aof"
	"github.com/cachecrypt/cachecrypt/internal/stream"
	"github.com/cachecrypt/cachecrypt/rdb"
	"github.com/spf13/cobra"
)

func (a *app) addDataCommands(root *cobra.Command) {
	root.AddCommand(a.decryptCommand(), a.encryptCommand(), a.aofCommand())
	a.addTransferCommands(root)
}

func (a *app) decryptCommand() *cobra.Command {
	var out string
	var strict bool
	c := &cobra.Command{
		Use:   "decrypt FILE|AOFDIR [-o OUT]",
		Short: "Decrypt an encrypted RDB snapshot (to a file or stdout) or AOF directory",
		Long: `decrypt writes the plaintext of an encrypted stream (RDB snapshot, staging or
temp file) to OUT, or to stdout when OUT is "-" or absent (never to a
terminal). OUT is replaced atomically, mode 0600, only once every segment
authenticated: damage leaves no partial plaintext behind and exits with 2.

An encrypted AOF directory is decrypted into the plain Redis 7 appendonlydir
OUT (absent or empty), with a Redis manifest: redis-server loads it as is.
A torn final frame (a write a crash cut short) is left out, like Redis'
default aof-load-truncated yes; --strict refuses it instead.`,
		Example: `  cachecrypt decrypt /var/lib/cache/persistence/dump.rdb -o /tmp/dump.rdb
  cachecrypt decrypt /var/lib/cache/persistence/dump.rdb | redis-check-rdb /dev/stdin
  cachecrypt decrypt /var/lib/cache/persistence/appendonlydir -o /tmp/appendonlydir`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(c *cobra.Command, argv []string) error {
			src := argv[0]
			k, err := detect(src)
			if err != nil {
				return fmt.Errorf("decrypt: %w", err)
			}
			switch k {
			case kindStream:
				return a.decryptStream(c.Context(), src, out)
			case kindAOFDir, kindAOFManifest, kindAOFPart:
				dir := src
				if k != kindAOFDir {
					dir = filepath.Dir(src)
				}
				if out == "" || out == "-" {
					return usagef("decrypt: an AOF directory decrypts into a directory: pass -o DIR")
				}
				name, kr, err := a.openAOFKeys(c.Context(), dir)
				if err != nil {
					return err
				}
				defer kr.Close()
				if err := aof.Export(dir, out, kr, aof.Options{Name: name, Strict: strict}); err != nil {
					return fmt.Errorf("decrypt %s: %w", dir, err)
				}
				return a.done(newRecord().add("decrypted", dir).add("to", out))
			case kindKeyring:
				return usagef("decrypt: %s is a keyring; its keys are never written out (see 'cachecrypt keyring show')", src)
			case kindNVMe:
				return usagef("decrypt: %s is an NVMe page store, %s", src, nvmeNote)
			}
			return usagef("decrypt: %s is not an encrypted stream or AOF directory (see 'cachecrypt inspect')", src)
		},
	}
	c.Flags().StringVarP(&out, "output", "o", "", "where to write the plaintext: a file (replaced atomically), a directory for an AOF, or - for stdout")
	c.Flags().BoolVar(&strict, "strict", false, "AOF: refuse a torn final frame instead of leaving it out")
	return c
}

// done prints the record of a finished command to stderr, or as JSON to
// stdout, so that a command writing data to stdout keeps it clean.
func (a *app) done(r *record) error {
	if a.json {
		return a.printJSON(r)
	}
	return r.write(a.stderr)
}

func (a *app) decryptStream(ctx context.Context, src, out string) error {
	f, h, size, err := openStreamFile(src)
	if err != nil {
		return fmt.Errorf("decrypt: %w", err)
	}
	defer f.Close()
	kr, err := a.openKeyring(ctx, src, h.DiskID)
	if err != nil {
		return err
	}
	defer kr.Close()
	sr, err := stream.NewReader(f, size, kr, h.Purpose)
	if err != nil {
		return fmt.Errorf("decrypt %s: %w", src, err)
	}
	bar := a.progress(sr.Size(), "decrypt", true)
	defer bar.Finish()
	write := func(w io.Writer) (int64, error) { return sr.WriteTo(ctxWriter{ctx, io.MultiWriter(w, bar)}) }
	var n int64
	if out == "" || out == "-" {
		if a.json {
			return usagef("decrypt: --json needs -o FILE: stdout carries the result")
		}
		if isTerminal(a.stdout) {
			return usagef("decrypt: refusing to write binary plaintext to a terminal: pass -o FILE or pipe the output")
		}
		if _, err := write(a.stdout); err != nil {
			return fmt.Errorf("decrypt %s: %w (the plaintext written to stdout before the damage must be discarded)", src, err)
		}
		return nil
	}
	n, err = writeFileAtomic(out, write)
	if err != nil {
		return fmt.Errorf("decrypt %s: %w", src, err)
	}
	return a.done(newRecord().add("decrypted", src).add("purpose", h.Purpose).add("to", out).add("bytes", n))
}

// writeFileAtomic writes a new file at path through write: a temporary file
// beside it (mode 0600), fsynced and renamed over path only on success.
func writeFileAtomic(path string, write func(io.Writer) (int64, error)) (int64, error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return 0, err
	}
	n, err := write(tmp)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return n, err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	return n, nil
}

func (a *app) encryptCommand() *cobra.Command {
	var out, purpose, compression string
	var segmentSize int
	c := &cobra.Command{
		Use:   "encrypt FILE|AOFDIR|- -o OUT",
		Short: "Encrypt a plain RDB file or Redis appendonlydir for a disk",
		Long: `encrypt writes a plain RDB file as an encrypted snapshot (a stream of purpose
"rdb") at OUT, atomically, after checking that it is an RDB with a valid
CRC-64. A plain Redis 7 appendonlydir becomes an encrypted AOF directory OUT
(absent or empty). OUT "-" writes an encrypted stream to stdout. FILE "-"
(or a pipe) is read once, as an RDB unless --purpose says otherwise, without
the CRC-64 check first: for example
  redis-cli --rdb - | cachecrypt encrypt - -o /var/lib/cache/persistence/dump.rdb

The keys are those of the disk OUT is on: the "keyring" next to OUT or in a
parent directory (the disk directory of an instance), or --keyring.
--purpose encrypts any other file as a stream of that purpose.`,
		Example: `  cachecrypt encrypt /backup/dump.rdb -o /var/lib/cache/persistence/dump.rdb
  cachecrypt encrypt /backup/appendonlydir -o /var/lib/cache/persistence/appendonlydir`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(c *cobra.Command, argv []string) error {
			src := argv[0]
			if out == "" {
				return usagef("encrypt: pass the output with -o OUT (a file, a directory for an AOF, or - for stdout)")
			}
			if src == "-" {
				src = "/dev/stdin"
			}
			k, err := detect(src)
			if err != nil {
				return fmt.Errorf("encrypt: %w", err)
			}
			opts := rdb.Options{SegmentSize: segmentSize}
			switch strings.ToLower(compression) {
			case "", "none":
			case "zstd":
				opts.Compression = rdb.Zstd
			case "s2":
				opts.Compression = rdb.S2
			default:
				return usagef("encrypt: --compression %q: use none, zstd or s2", compression)
			}
			switch {
			case k == kindPlainAOFDir:
				return a.encryptAOF(c.Context(), src, out)
			case k == kindPlainRDB && purpose == "":
				purpose = rdb.Purpose
				if err := checkPlainRDB(src); err != nil {
					return err
				}
			case k == kindPipe && purpose == "":
				purpose = rdb.Purpose // read once: its RDB checksum cannot be checked first
			case purpose == "":
				return usagef("encrypt: %s is not a plain RDB file nor a Redis appendonlydir (%s); pass --purpose to encrypt it as a generic stream", src, k)
			}
			return a.encryptStream(c.Context(), src, out, purpose, opts)
		},
	}
	c.Flags().StringVarP(&out, "output", "o", "", "the encrypted file or AOF directory to write, or - for stdout")
	c.Flags().StringVar(&purpose, "purpose", "", "stream purpose for a file that is not an RDB (default rdb)")
	c.Flags().StringVar(&compression, "compression", "none", "compress before encrypting: none, zstd or s2 (compressed snapshots lose random access, and their size leaks how well the content compresses: keep none for data that mixes secrets with values others control)")
	c.Flags().IntVar(&segmentSize, "segment-size", 0, "plaintext bytes per segment (default 65536)")
	return c
}

func checkPlainRDB(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := rdb.CheckPlain(f); err != nil {
		return fmt.Errorf("encrypt: %s is not an intact RDB file: %w", path, err)
	}
	return nil
}

func (a *app) encryptStream(ctx context.Context, src, out, purpose string, opts rdb.Options) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if out == "-" && a.keyring == "" {
		return usagef("encrypt: with -o - name the disk's keyring with --keyring")
	}
	if dir, ok := instanceOfSnapshot(out); ok && purpose == rdb.Purpose && a.keyring == "" {
		return a.encryptIntoInstance(ctx, dir, src, f, st.Size())
	}
	kr, err := a.openKeyring(ctx, out, "")
	if err != nil {
		return err
	}
	defer kr.Close()
	bar := a.progress(st.Size(), "encrypt", true)
	defer bar.Finish()
	in := ctxReader{ctx, io.TeeReader(f, bar)}
	sopts := stream.Options{SegmentSize: opts.SegmentSize, Compression: opts.Compression}
	var n int64
	switch {
	case out == "-":
		if isTerminal(a.stdout) {
			return usagef("encrypt: refusing to write binary data to a terminal: pass -o FILE or pipe the output")
		}
		w, err := stream.NewWriter(a.stdout, kr, purpose, sopts)
		if err != nil {
			return fmt.Errorf("encrypt: %w", err)
		}
		if _, err = w.ReadFrom(in); err == nil {
			err = w.Close()
		}
		if err != nil {
			return fmt.Errorf("encrypt %s: %w", src, err)
		}
		return nil
	case purpose == rdb.Purpose:
		w, err := rdb.Create(out, kr, opts)
		if err != nil {
			return fmt.Errorf("encrypt: %w", err)
		}
		defer w.Close()
		if n, err = w.ReadFrom(in); err == nil {
			err = w.Commit()
		}
		if err != nil {
			return fmt.Errorf("encrypt %s: %w", src, err)
		}
	default:
		n, err = writeFileAtomic(out, func(dst io.Writer) (int64, error) {
			w, err := stream.NewWriter(dst, kr, purpose, sopts)
			if err != nil {
				return 0, err
			}
			n, err := w.ReadFrom(in)
			if err == nil {
				err = w.Close()
			}
			return n, err
		})
		if err != nil {
			return fmt.Errorf("encrypt %s: %w", src, err)
		}
	}
	return a.done(newRecord().add("encrypted", src).add("to", out).add("purpose", purpose).
		add("disk_id", kr.DiskID()).add("dek_version", kr.Active()).add("bytes", n))
}

func (a *app) encryptAOF(ctx context.Context, src, out string) error {
	name, err := plainAOFName(src)
	if err != nil {
		return err
	}
	kr, err := a.openKeyring(ctx, out, "")
	if err != nil {
		return err
	}
	defer kr.Close()
	if err := aof.Import(src, out, kr, aof.Options{Name: name}); err != nil {
		return fmt.Errorf("encrypt %s: %w", src, err)
	}
	return a.done(newRecord().add("encrypted", src).add("to", out).add("disk_id", kr.DiskID()).add("dek_version", kr.Active()))
}

// plainAOFName returns Redis' appendfilename of the plain appendonlydir.
func plainAOFName(dir string) (string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	for _, e := range entries {
		if n, ok := strings.CutSuffix(e.Name(), ".manifest"); ok {
			return n, nil
		}
	}
	return "", fmt.Errorf("%s has no Redis manifest (*.manifest): %w", dir, cachecrypt.ErrFormat)
}

// instanceOfSnapshot reports whether path is the snapshot of an instance
// (DIR/persistence/dump.rdb of a directory with an instance keyring), and
// which.
func instanceOfSnapshot(path string) (string, bool) {
	abs, err := filepath.Abs(path)
	if err != nil || filepath.Base(abs) != cachecrypt.SnapshotFile || filepath.Base(filepath.Dir(abs)) != cachecrypt.DiskPersistence {
		return "", false
	}
	dir := filepath.Dir(filepath.Dir(abs))
	_, err = os.Stat(diskKeyring(dir, cachecrypt.DiskPersistence))
	return dir, err == nil
}

// encryptIntoInstance makes the RDB in f the snapshot of the instance in
// dir, through the instance: under its lock, and recorded in its state so
// that a later Open knows it (a file written behind its back would be
// refused as a rollback).
func (a *app) encryptIntoInstance(ctx context.Context, dir, src string, f *os.File, size int64) error {
	inst, err := a.openInstance(ctx, dir)
	if err != nil {
		return err
	}
	defer inst.Close()
	bar := a.progress(size, "encrypt", true)
	defer bar.Finish()
	var n int64
	err = inst.SaveSnapshot(func(w io.Writer) error {
		var err error
		n, err = io.Copy(w, ctxReader{ctx, io.TeeReader(f, bar)})
		return err
	})
	if err != nil {
		return fmt.Errorf("encrypt %s: %w", src, err)
	}
	kr, err := inst.Keyring(cachecrypt.DiskPersistence)
	if err != nil {
		return err
	}
	return a.done(newRecord().add("encrypted", src).add("to", inst.SnapshotPath()).add("purpose", rdb.Purpose).
		add("disk_id", kr.DiskID()).add("dek_version", kr.Active()).add("bytes", n))
}
