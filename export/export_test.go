package export_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"go/build"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/cachecrypt/cachecrypt/dek"
	"github.com/cachecrypt/cachecrypt/export"
	"github.com/cachecrypt/cachecrypt/export/exporttest"
	"github.com/cachecrypt/cachecrypt/internal/testenv"
	"github.com/cachecrypt/cachecrypt/kek/kektest"
	"github.com/cachecrypt/cachecrypt/osdisk"
	"github.com/cachecrypt/cachecrypt/rdb"
)

func newScratch(t testing.TB) *osdisk.Disk {
	t.Helper()
	d, err := osdisk.Create(context.Background(), filepath.Join(t.TempDir(), "os"), "os-disk", kektest.New("mmk"))
	require.NoError(t, err)
	t.Cleanup(func() { d.Close() })
	return d
}

func requireNoStaging(t *testing.T, d *osdisk.Disk) {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(d.Dir(), osdisk.TempDir))
	require.NoError(t, err)
	require.Empty(t, ents, "staging file left behind")
}

// redisRDB returns the bytes of a real RDB written by redis-server.
func redisRDB(t testing.TB) []byte {
	t.Helper()
	r := testenv.StartRedis(t, t.TempDir())
	r.MustDo(t, "DEBUG", "POPULATE", "20000", "key", "64")
	r.MustDo(t, "HSET", "h", "f1", "v1", "f2", "v2")
	r.MustDo(t, "RPUSH", "l", "a", "b", "c")
	b, err := os.ReadFile(r.Save(t))
	require.NoError(t, err)
	return b
}

func TestExportToFileRoundTrip(t *testing.T) {
	plain := redisRDB(t)
	scratch := newScratch(t)
	dst := filepath.Join(t.TempDir(), "export.rdb")
	var seen []export.Progress
	opts := &export.Options{Progress: func(p export.Progress) { seen = append(seen, p) }, ProgressEvery: 64 << 10}

	in, err := export.Export(context.Background(), scratch, export.FromReader(bytes.NewReader(plain)), export.ToFile(dst), opts)
	require.NoError(t, err)
	got, err := os.ReadFile(dst)
	require.NoError(t, err)
	require.True(t, bytes.Equal(plain, got), "exported RDB differs from the source")
	require.Equal(t, sha256.Sum256(plain), in.SHA256)
	require.Equal(t, int64(len(plain)), in.Size)
	require.Equal(t, binary.LittleEndian.Uint64(plain[len(plain)-8:]), in.CRC64)
	requireNoStaging(t, scratch)

	// Progress: each phase starts at 0, grows monotonically, ends at Size.
	for _, ph := range []export.Phase{export.Staging, export.Sending} {
		var last int64 = -1
		var n int
		for _, p := range seen {
			if p.Phase != ph {
				continue
			}
			require.GreaterOrEqual(t, p.Done, last)
			last = p.Done
			n++
		}
		require.Greater(t, n, 2, "phase %v reported %d times", ph, n)
		require.Equal(t, in.Size, last, "phase %v did not end at the size", ph)
	}
	require.Equal(t, export.Staging, seen[0].Phase)
	require.Equal(t, export.Sending, seen[len(seen)-1].Phase)
}

func TestExportToWriter(t *testing.T) {
	plain := redisRDB(t)
	var buf bytes.Buffer
	in, err := export.Export(context.Background(), newScratch(t), export.FromReader(bytes.NewReader(plain)), export.ToWriter(&buf), nil)
	require.NoError(t, err)
	require.Equal(t, plain, buf.Bytes())
	require.Equal(t, sha256.Sum256(plain), in.SHA256)
}

func TestBadRDBRefused(t *testing.T) {
	plain := redisRDB(t)
	flipped := bytes.Clone(plain)
	flipped[len(flipped)/2] ^= 1
	badCRC := bytes.Clone(plain)
	badCRC[len(badCRC)-1] ^= 1
	cases := []struct {
		name string
		data []byte
		want error
		msg  string
	}{
		{"text file", []byte("hello, this is not a snapshot at all\n"), export.ErrNotRDB, `"REDIS"`},
		{"empty", nil, export.ErrNotRDB, "REDIS"},
		{"AOF", []byte("*2\r\n$6\r\nSELECT\r\n$1\r\n0\r\n"), export.ErrNotRDB, "REDIS"},
		{"bad version digits", append([]byte("REDIS00x1"), plain[9:]...), export.ErrNotRDB, "version"},
		{"old version, trailer where none belongs", append([]byte("REDIS0004"), plain[9:]...), export.ErrNotRDB, "end-of-file"},
		{"header only", plain[:9], export.ErrNotRDB, "end-of-file"},
		{"byte flipped", flipped, export.ErrChecksum, "CRC-64"},
		{"trailer flipped", badCRC, export.ErrChecksum, "CRC-64"},
		{"truncated", plain[:len(plain)-1000], export.ErrNotRDB, "truncated"},
		{"last byte cut", plain[:len(plain)-1], export.ErrNotRDB, "truncated"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			scratch := newScratch(t)
			dst := filepath.Join(t.TempDir(), "out.rdb")
			_, err := export.Import(context.Background(), scratch, export.FromReader(bytes.NewReader(tc.data)), export.ToFile(dst), nil)
			require.ErrorIs(t, err, tc.want)
			require.ErrorContains(t, err, "export.Import: source is not a valid RDB")
			require.ErrorContains(t, err, tc.msg)
			require.NoFileExists(t, dst)
			requireNoStaging(t, scratch)
		})
	}
}

func TestImportFromFileChecksSize(t *testing.T) {
	plain := redisRDB(t)
	src := filepath.Join(t.TempDir(), "in.rdb")
	require.NoError(t, os.WriteFile(src, plain, 0o600))
	var out bytes.Buffer
	in, err := export.Import(context.Background(), newScratch(t), export.FromFile(src), export.ToWriter(&out), nil)
	require.NoError(t, err)
	require.Equal(t, plain, out.Bytes())
	require.Equal(t, int64(len(plain)), in.Size)

	// A reader announcing more bytes than it yields is refused.
	short := sizedReader{bytes.NewReader(plain), int64(len(plain)) + 1}
	_, err = export.Import(context.Background(), newScratch(t), export.FromReader(short), export.ToWriter(io.Discard), nil)
	require.ErrorIs(t, err, export.ErrDigest)

	_, err = export.Import(context.Background(), newScratch(t), export.FromFile(filepath.Join(t.TempDir(), "missing.rdb")), export.ToWriter(io.Discard), nil)
	require.ErrorIs(t, err, os.ErrNotExist)
	require.ErrorContains(t, err, "export.Import: open source")
}

type sizedReader struct {
	io.Reader
	n int64
}

func (s sizedReader) Size() int64 { return s.n }

func TestCancelRemovesStaging(t *testing.T) {
	plain := redisRDB(t)
	for _, phase := range []export.Phase{export.Staging, export.Sending} {
		t.Run(phase.String(), func(t *testing.T) {
			scratch := newScratch(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var staged bool
			opts := &export.Options{ProgressEvery: 32 << 10, Progress: func(p export.Progress) {
				if p.Phase == export.Staging && p.Done > 0 {
					ents, _ := os.ReadDir(filepath.Join(scratch.Dir(), osdisk.TempDir))
					staged = staged || len(ents) == 1
				}
				if p.Phase == phase && p.Done > 64<<10 {
					cancel()
				}
			}}
			dst := filepath.Join(t.TempDir(), "out.rdb")
			_, err := export.Export(ctx, scratch, export.FromReader(bytes.NewReader(plain)), export.ToFile(dst), opts)
			require.ErrorIs(t, err, context.Canceled)
			require.True(t, staged, "staging file never seen on the OS disk")
			require.NoFileExists(t, dst)
			requireNoStaging(t, scratch)
		})
	}
}

func TestTamperedStagingFailsWithoutOutput(t *testing.T) {
	plain := redisRDB(t)
	scratch := newScratch(t)
	dst := filepath.Join(t.TempDir(), "out.rdb")
	staged := make(chan struct{})
	_, err := export.Export(context.Background(), scratch, export.FromReader(bytes.NewReader(plain)),
		exporttest.TamperDest{T: t, Scratch: scratch, Next: export.ToFile(dst), Staged: staged}, exporttest.StagedOptions(staged))
	require.ErrorIs(t, err, export.ErrAuthentication)
	require.ErrorContains(t, err, "export.Export")
	require.NoFileExists(t, dst)
	requireNoStaging(t, scratch)
}

// TestExportDoesNotImportAzure keeps the Azure SDK out of export's
// dependencies: only export/blob may import it.
func TestExportDoesNotImportAzure(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		gobin = filepath.Join(build.Default.GOROOT, "bin", "go")
	}
	for _, pkg := range []string{"../osdisk", "../dek", "."} {
		out, err := exec.Command(gobin, "list", "-deps", pkg).CombinedOutput()
		require.NoError(t, err, "%s", out)
		for _, dep := range strings.Fields(string(out)) {
			require.NotContains(t, strings.ToLower(dep), "azure", "%s pulls in %s", pkg, dep)
		}
	}
}

// FuzzImport: whatever the source holds, Import either refuses it with
// ErrNotRDB or ErrChecksum, or passes it through
// byte for byte.
func FuzzImport(f *testing.F) {
	small, err := os.ReadFile("testdata/small.rdb")
	require.NoError(f, err)
	f.Add(small)
	f.Add([]byte("REDIS0011"))
	f.Add([]byte("hello"))
	f.Add(append(bytes.Clone(small[:40]), small[41:]...))
	scratch, err := osdisk.Create(context.Background(), filepath.Join(f.TempDir(), "os"), "os-disk", kektest.New("mmk"))
	require.NoError(f, err)
	defer scratch.Close()
	f.Fuzz(func(t *testing.T, data []byte) {
		var out bytes.Buffer
		in, err := export.Import(context.Background(), scratch, export.FromReader(bytes.NewReader(data)), export.ToWriter(&out), nil)
		if err != nil {
			if !errors.Is(err, export.ErrNotRDB) && !errors.Is(err, export.ErrChecksum) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if !bytes.Equal(out.Bytes(), data) || in.SHA256 != sha256.Sum256(data) {
			t.Fatal("accepted RDB changed in transit")
		}
	})
}

// TestPersistenceRoundTrip: an encrypted persistence RDB exports to a plain
// file and imports back into an encrypted RDB; a failed import leaves the
// existing snapshot as it was.
func TestPersistenceRoundTrip(t *testing.T) {
	plain := redisRDB(t)
	ctx := context.Background()
	dir := t.TempDir()
	keys, err := dek.Create(ctx, filepath.Join(dir, "keyring"), "persist", kektest.New("mmk"))
	require.NoError(t, err)
	defer keys.Close()
	snap := filepath.Join(dir, "dump.rdb")
	_, err = rdb.Encrypt(snap, bytes.NewReader(plain), keys)
	require.NoError(t, err)
	scratch := newScratch(t)

	out := filepath.Join(t.TempDir(), "exported.rdb")
	_, err = export.Export(ctx, scratch, export.FromRDB(snap, keys), export.ToFile(out), nil)
	require.NoError(t, err)
	exported, err := os.ReadFile(out)
	require.NoError(t, err)
	require.Equal(t, plain, exported)

	restored := filepath.Join(dir, "restored.rdb")
	_, err = export.Import(ctx, scratch, export.FromFile(out), export.ToRDB(restored, keys, rdb.Options{}), nil)
	require.NoError(t, err)
	var back bytes.Buffer
	_, err = rdb.Decrypt(&back, restored, keys)
	require.NoError(t, err)
	require.Equal(t, plain, back.Bytes())

	before, err := os.ReadFile(restored)
	require.NoError(t, err)
	damaged := bytes.Clone(plain)
	damaged[len(damaged)/2] ^= 4
	_, err = export.Import(ctx, scratch, export.FromReader(bytes.NewReader(damaged)), export.ToRDB(restored, keys, rdb.Options{}), nil)
	require.ErrorIs(t, err, export.ErrChecksum)
	after, err := os.ReadFile(restored)
	require.NoError(t, err)
	require.Equal(t, before, after, "a failed import changed the existing snapshot")
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, ents, 3, "temporary file left in the persistence directory") // keyring, dump.rdb, restored.rdb
	requireNoStaging(t, scratch)

	// A snapshot of another disk's keyring does not export.
	other, err := dek.Create(ctx, filepath.Join(t.TempDir(), "keyring"), "other", kektest.New("other"))
	require.NoError(t, err)
	defer other.Close()
	_, err = export.Export(ctx, scratch, export.FromRDB(snap, other), export.ToWriter(io.Discard), nil)
	require.ErrorIs(t, err, rdb.ErrAuthentication)
}

// TestChunkedStaging stages a real RDB in many small staging files: the
// result is byte-exact, every staging file is removed, and tampering with
// any chunk, or swapping two chunks on disk, fails with ErrAuthentication.
func TestChunkedStaging(t *testing.T) {
	plain := redisRDB(t)
	const chunk = 100 << 10
	require.Greater(t, len(plain), 4*chunk)
	scratch := newScratch(t)
	var maxFiles int
	opts := &export.Options{ChunkSize: chunk, ProgressEvery: 16 << 10, Progress: func(p export.Progress) {
		ents, _ := os.ReadDir(filepath.Join(scratch.Dir(), osdisk.TempDir))
		maxFiles = max(maxFiles, len(ents))
	}}
	var out bytes.Buffer
	in, err := export.Export(context.Background(), scratch, export.FromReader(bytes.NewReader(plain)), export.ToWriter(&out), opts)
	require.NoError(t, err)
	require.Equal(t, plain, out.Bytes())
	require.Equal(t, sha256.Sum256(plain), in.SHA256)
	require.Greater(t, maxFiles, 1, "staging never held more than one chunk")
	requireNoStaging(t, scratch)

	edits := map[string]func(t *testing.T, files []string){
		"flip a byte in chunk 2": func(t *testing.T, files []string) {
			f, err := os.OpenFile(files[2], os.O_RDWR, 0)
			require.NoError(t, err)
			defer f.Close()
			b := []byte{0}
			f.ReadAt(b, 5000)
			b[0] ^= 2
			f.WriteAt(b, 5000)
		},
		"swap chunks 1 and 2 on disk": func(t *testing.T, files []string) {
			a, err := os.ReadFile(files[1])
			require.NoError(t, err)
			b, err := os.ReadFile(files[2])
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(files[1], b, 0o600))
			require.NoError(t, os.WriteFile(files[2], a, 0o600))
		},
	}
	for name, edit := range edits {
		t.Run(name, func(t *testing.T) {
			scratch := newScratch(t)
			staged := make(chan struct{})
			opts := exporttest.StagedOptions(staged)
			opts.ChunkSize = chunk
			opts.ProgressEvery = 16 << 10
			order := stagingOrder(scratch, opts)
			var out bytes.Buffer
			dst := editDest{func() {
				<-staged
				files := order()
				require.GreaterOrEqual(t, len(files), 4, "chunks 1 and 2 must be full chunks, not the last")
				edit(t, files)
			}, export.ToWriter(&out)}
			_, err := export.Export(context.Background(), scratch, export.FromReader(bytes.NewReader(plain)), dst, opts)
			require.ErrorIs(t, err, export.ErrAuthentication)
			requireNoStaging(t, scratch)
		})
	}
}

// stagingOrder wraps opts.Progress to list the staging files of scratch in
// the order the staging pass created them. Progress is reported from the
// staging goroutine while it fills the newest file, at least once per
// ProgressEvery bytes, so each chunk shows up as the one new file of some
// report. (Modification times cannot tell: they tie or invert within the
// file system's timestamp granularity.)
func stagingOrder(scratch *osdisk.Disk, opts *export.Options) func() []string {
	var (
		mu    sync.Mutex
		seen  = map[string]bool{}
		files []string
	)
	next := opts.Progress
	dir := filepath.Join(scratch.Dir(), osdisk.TempDir)
	opts.Progress = func(p export.Progress) {
		if p.Phase == export.Staging {
			ents, _ := os.ReadDir(dir)
			mu.Lock()
			for _, e := range ents {
				if name := filepath.Join(dir, e.Name()); !seen[name] {
					seen[name] = true
					files = append(files, name)
				}
			}
			mu.Unlock()
		}
		next(p)
	}
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(files)
	}
}

// editDest runs edit before handing the stream to next.
type editDest struct {
	edit func()
	next export.Destination
}

func (d editDest) Put(ctx context.Context, s *export.Stream) error {
	d.edit()
	return d.next.Put(ctx, s)
}
