package osdisk_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cachecrypt/cachecrypt/dek"
	"github.com/cachecrypt/cachecrypt/internal/atomicfile"
	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/cachecrypt/cachecrypt/kek/kektest"
	"github.com/cachecrypt/cachecrypt/osdisk"
)

func newDisk(t *testing.T, k kek.KEK) (*osdisk.Disk, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "osdisk")
	d, err := osdisk.Create(context.Background(), dir, "os-disk-1", k)
	require.NoError(t, err)
	t.Cleanup(func() { d.Close() })
	return d, dir
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func TestTempRoundTripRandomAccess(t *testing.T) {
	d, _ := newDisk(t, kektest.New("os"))
	for _, size := range []int{0, 1, 65535, 65536, 65537, 3<<20 + 17} {
		want := randBytes(size)
		f, err := d.CreateTemp("rt")
		require.NoError(t, err)
		// Write in uneven pieces.
		for p := want; len(p) > 0; {
			n := min(len(p), 1000+len(p)%7777)
			_, err := f.Write(p[:n])
			require.NoError(t, err)
			p = p[n:]
		}
		require.Equal(t, int64(size), f.Size())

		got, err := io.ReadAll(f)
		require.NoError(t, err)
		require.True(t, bytes.Equal(want, got), "size %d: sequential read differs", size)

		for _, off := range []int{0, size / 3, size - 1, 65536 - 3} {
			if off < 0 || off >= size {
				continue
			}
			buf := make([]byte, min(100000, size-off))
			n, err := f.ReadAt(buf, int64(off))
			if err != nil {
				require.ErrorIs(t, err, io.EOF)
			}
			require.Equal(t, want[off:off+n], buf[:n])
			require.Equal(t, len(buf), n)
		}
		if size > 10 {
			pos, err := f.Seek(-10, io.SeekEnd)
			require.NoError(t, err)
			require.Equal(t, int64(size-10), pos)
			tail, err := io.ReadAll(f)
			require.NoError(t, err)
			require.Equal(t, want[size-10:], tail)
		}
		name := f.Name()
		require.NoError(t, f.Close())
		require.NoFileExists(t, name)
		require.NoError(t, f.Close(), "second Close")
	}
}

func TestTempNeverHoldsPlaintext(t *testing.T) {
	d, _ := newDisk(t, kektest.New("os"))
	canary := []byte("CANARY-osdisk-7f3a9c")
	f, err := d.CreateTemp("canary")
	require.NoError(t, err)
	defer f.Close()
	for range 1000 {
		f.Write(canary)
	}
	require.NoError(t, f.Seal())
	raw, err := os.ReadFile(f.Name())
	require.NoError(t, err)
	require.False(t, bytes.Contains(raw, canary), "temporary file holds plaintext")
	require.Greater(t, len(raw), 1000*len(canary))
}

func TestWriteAfterSealFails(t *testing.T) {
	d, _ := newDisk(t, kektest.New("os"))
	f, err := d.CreateTemp("w")
	require.NoError(t, err)
	defer f.Close()
	f.Write([]byte("abc"))
	buf := make([]byte, 3)
	_, err = f.ReadAt(buf, 0)
	require.NoError(t, err)
	_, err = f.Write([]byte("more"))
	require.ErrorContains(t, err, "osdisk.File.Write")
	require.ErrorContains(t, err, "sealed")
	require.NoError(t, f.Close())
	_, err = f.Read(buf)
	require.ErrorIs(t, err, osdisk.ErrClosed)
}

func TestTamperedTempFails(t *testing.T) {
	const seg, tag = 65536, 16
	const plainSize = 4*seg + 1000
	cases := []struct {
		name   string
		edit   func(f *os.File, hdr int64)
		readAt int64
	}{
		{"flip byte in segment 0", func(f *os.File, hdr int64) { flip(f, hdr+10) }, 0},
		{"flip tag of segment 2", func(f *os.File, hdr int64) { flip(f, hdr+3*(seg+tag)-1) }, 2*seg + 5},
		{"swap segments 1 and 2", func(f *os.File, hdr int64) {
			a, b := make([]byte, seg+tag), make([]byte, seg+tag)
			f.ReadAt(a, hdr+seg+tag)
			f.ReadAt(b, hdr+2*(seg+tag))
			f.WriteAt(b, hdr+seg+tag)
			f.WriteAt(a, hdr+2*(seg+tag))
		}, seg},
		{"copy segment 0 over segment 3", func(f *os.File, hdr int64) {
			a := make([]byte, seg+tag)
			f.ReadAt(a, hdr)
			f.WriteAt(a, hdr+3*(seg+tag))
		}, 3*seg + 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, _ := newDisk(t, kektest.New("os"))
			f, err := d.CreateTemp("tamper")
			require.NoError(t, err)
			defer f.Close()
			plain := randBytes(plainSize)
			_, err = f.Write(plain)
			require.NoError(t, err)
			require.NoError(t, f.Seal())
			raw, err := os.OpenFile(f.Name(), os.O_RDWR, 0)
			require.NoError(t, err)
			st, _ := raw.Stat()
			hdr := st.Size() - (4*(seg+tag) + 1000 + tag)
			require.Positive(t, hdr, "unexpected stream layout")
			tc.edit(raw, hdr)
			raw.Close()

			buf := make([]byte, 100)
			n, err := f.ReadAt(buf, tc.readAt)
			require.ErrorIs(t, err, osdisk.ErrAuthentication)
			require.Zero(t, n, "bytes of a failed segment were returned")
			// Untouched segments still read: segment 4 is never edited.
			n, err = f.ReadAt(buf, 4*seg)
			require.NoError(t, err)
			require.Equal(t, plain[4*seg:4*seg+n], buf[:n])
		})
	}
}

func flip(f *os.File, off int64) {
	b := make([]byte, 1)
	f.ReadAt(b, off)
	b[0] ^= 0x40
	f.WriteAt(b, off)
}

func TestOpenRemovesCrashLeftovers(t *testing.T) {
	k := kektest.New("os")
	d, dir := newDisk(t, k)
	f, err := d.CreateTemp("left")
	require.NoError(t, err)
	f.Write([]byte("data"))
	name := f.Name()
	// Simulate a crash: the process never closes f.
	require.NoError(t, d.Close())
	require.FileExists(t, name)
	unrelated := filepath.Join(dir, TempDirForTest, "keep-me")
	require.NoError(t, os.WriteFile(unrelated, nil, 0o600))

	d2, err := osdisk.Open(context.Background(), dir, k)
	require.NoError(t, err)
	defer d2.Close()
	require.NoFileExists(t, name)
	require.FileExists(t, unrelated)
}

const TempDirForTest = osdisk.TempDir

// TestCrashKilledWriterLeavesNothingAfterOpen kills a child process with
// SIGKILL while it writes temporary files, then reopens the disk.
func TestCrashKilledWriterLeavesNothingAfterOpen(t *testing.T) {
	if os.Getenv("OSDISK_CRASH_CHILD") != "" {
		t.Skip("child")
	}
	mmkPath := filepath.Join(t.TempDir(), "mmk.keyset")
	k, err := kek.LoadMMK(mmkPath)
	require.NoError(t, err)
	dir := filepath.Join(t.TempDir(), "osdisk")
	d, err := osdisk.Create(context.Background(), dir, "os-crash", k)
	require.NoError(t, err)
	require.NoError(t, d.Close())

	for round := range 3 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperCrashWriter$")
		cmd.Env = append(os.Environ(), "OSDISK_CRASH_CHILD="+dir, "OSDISK_CRASH_MMK="+mmkPath)
		out, err := cmd.StdoutPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		line, err := bufio.NewReader(out).ReadString('\n')
		require.NoError(t, err, "child did not start writing")
		require.Equal(t, "WRITING\n", line)
		time.Sleep(time.Duration(round*20) * time.Millisecond)
		require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
		cmd.Wait()
		ents, _ := os.ReadDir(filepath.Join(dir, osdisk.TempDir))
		require.NotEmpty(t, ents, "round %d: child left no file to clean up", round)

		d, err := osdisk.Open(context.Background(), dir, k)
		require.NoError(t, err)
		ents, err = os.ReadDir(filepath.Join(dir, osdisk.TempDir))
		require.NoError(t, err)
		require.Empty(t, ents, "round %d", round)
		require.NoError(t, d.Close())
	}
}

func TestHelperCrashWriter(t *testing.T) {
	dir := os.Getenv("OSDISK_CRASH_CHILD")
	if dir == "" {
		t.Skip("helper for TestCrashKilledWriterLeavesNothingAfterOpen")
	}
	k, err := kek.LoadMMK(os.Getenv("OSDISK_CRASH_MMK"))
	require.NoError(t, err)
	d, err := osdisk.Open(context.Background(), dir, k)
	require.NoError(t, err)
	buf := randBytes(1 << 20)
	// One file stays open for good, so a kill at any instant leaves one.
	held, err := d.CreateTemp("held")
	require.NoError(t, err)
	held.Write(buf)
	os.Stdout.WriteString("WRITING\n")
	for i := 0; ; i++ {
		f, err := d.CreateTemp("crash")
		require.NoError(t, err)
		for range 8 {
			f.Write(buf)
		}
		if i%2 == 0 {
			f.Close()
		}
	}
}

func TestRewrapToCMKThenReopen(t *testing.T) {
	mmk := kektest.New("mmk")
	d, dir := newDisk(t, mmk)
	cmk := kektest.New("cmk")
	require.NoError(t, d.Keyring().Rewrap(context.Background(), cmk))
	require.NoError(t, d.Close())

	_, err := osdisk.Open(context.Background(), dir, mmk)
	require.ErrorIs(t, err, kek.ErrKeyMismatch)
	d2, err := osdisk.Open(context.Background(), dir, cmk)
	require.NoError(t, err)
	defer d2.Close()
	require.Equal(t, int64(1), cmk.Unwraps())
}

func TestCreateTempRejectsPathPrefix(t *testing.T) {
	d, _ := newDisk(t, kektest.New("os"))
	_, err := d.CreateTemp("../escape")
	require.ErrorContains(t, err, "osdisk.CreateTemp")
}

func TestCreateTwiceFails(t *testing.T) {
	k := kektest.New("os")
	_, dir := newDisk(t, k)
	_, err := osdisk.Create(context.Background(), dir, "again", k)
	require.Error(t, err)
}

func TestNewUsesCallersKeyring(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	keys, err := dek.Create(ctx, filepath.Join(dir, "keyring"), "os-shared", kektest.New("k"))
	require.NoError(t, err)
	defer keys.Close()
	leftover := filepath.Join(dir, osdisk.TempDir, "x"+atomicfile.TempMarker+"1-00")
	require.NoError(t, os.MkdirAll(filepath.Dir(leftover), 0o700))
	require.NoError(t, os.WriteFile(leftover, nil, 0o600))

	d, err := osdisk.New(dir, keys)
	require.NoError(t, err)
	require.NoFileExists(t, leftover)
	f, err := d.CreateTemp("shared")
	require.NoError(t, err)
	f.Write([]byte("abc"))
	b := make([]byte, 3)
	_, err = f.ReadAt(b, 0)
	require.NoError(t, err)
	require.Equal(t, "abc", string(b))
	require.NoError(t, f.Close())
	require.NoError(t, d.Close())
	// The caller's keyring still works after the disk is closed.
	_, err = keys.FileKey(keys.Active(), "p", make([]byte, 16))
	require.NoError(t, err)
}
