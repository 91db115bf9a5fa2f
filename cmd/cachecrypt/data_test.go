package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/cachecrypt/cachecrypt/internal/testenv"
	"github.com/stretchr/testify/require"
)

// redisRDB starts a real redis-server, fills it and returns the RDB it
// saved and its DEBUG DIGEST.
func redisRDB(t *testing.T) (path, digest string) {
	t.Helper()
	srv := testenv.StartRedis(t, t.TempDir())
	srv.MustDo(t, "DEBUG", "POPULATE", "20000", "key", "64")
	srv.MustDo(t, "SET", "greeting", strings.Repeat("hello ", 1000))
	path = srv.Save(t)
	digest = srv.Digest(t)
	srv.Stop()
	return path, digest
}

// loadDigest starts redis-server on a copy of rdb (or an appendonlydir) and
// returns the DEBUG DIGEST of what it loaded.
func loadDigest(t *testing.T, rdbFile, aofDir string) string {
	t.Helper()
	dir := t.TempDir()
	var directives []string
	if rdbFile != "" {
		b, err := os.ReadFile(rdbFile)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, "dump.rdb"), b, 0o600))
	}
	if aofDir != "" {
		require.NoError(t, os.CopyFS(filepath.Join(dir, "appendonlydir"), os.DirFS(aofDir)))
		directives = append(directives, "appendonly yes")
	}
	srv := testenv.StartRedis(t, dir, directives...)
	defer srv.Stop()
	return srv.Digest(t)
}

// A real redis-server's RDB is encrypted into an instance, inspected,
// verified, decrypted back byte for byte (to a file and to stdout), and
// loads back into redis-server with the same digest.
func TestRDBRoundTrip(t *testing.T) {
	plain, digest := redisRDB(t)
	want, err := os.ReadFile(plain)
	require.NoError(t, err)
	dir := newInstance(t)
	enc := filepath.Join(dir, "persistence", "dump.rdb")
	ok(t, nil, "encrypt", plain, "-o", enc)

	var insp map[string]any
	jsonOut(t, nil, &insp, "inspect", enc)
	require.Equal(t, "stream", insp["kind"])
	require.Equal(t, "rdb", insp["purpose"])
	require.EqualValues(t, 1, insp["format_version"])
	require.EqualValues(t, 1, insp["dek_version"])
	require.EqualValues(t, 65536, insp["segment_size"])
	require.Equal(t, "none", insp["compression"])
	require.Equal(t, "MMK", insp["key"])
	require.True(t, strings.HasPrefix(insp["disk_id"].(string), "persistence-"))
	require.EqualValues(t, len(want), insp["plaintext_size"])
	out := ok(t, nil, "inspect", enc)
	require.NotContains(t, out, "salt", "inspect shows no key material")

	r := cli(t, nil, "verify", enc)
	require.Equal(t, 0, r.code, r)
	require.Contains(t, r.stdout, "OK")
	require.Empty(t, r.stderr, "no progress bar when stderr is not a terminal")
	out = ok(t, nil, "verify", dir)
	require.Equal(t, 3, strings.Count(out, "OK"), out) // two keyrings and the snapshot

	// A snapshot being written (an atomic write's temporary file, here cut
	// short) is not reported as damage.
	b, err := os.ReadFile(enc)
	require.NoError(t, err)
	partial := filepath.Join(dir, "persistence", "dump.rdb.cctmp-123")
	require.NoError(t, os.WriteFile(partial, b[:len(b)/2], 0o600))
	out = ok(t, nil, "verify", dir)
	require.Contains(t, out, "not verified: a file being written")
	require.NoError(t, os.Remove(partial))

	dec := filepath.Join(t.TempDir(), "dump.rdb")
	ok(t, nil, "decrypt", enc, "-o", dec)
	got, err := os.ReadFile(dec)
	require.NoError(t, err)
	require.True(t, bytes.Equal(want, got), "decrypted RDB differs from redis-server's")
	st, err := os.Stat(dec)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	stdout := ok(t, nil, "decrypt", enc)
	require.True(t, []byte(stdout) != nil && bytes.Equal(want, []byte(stdout)), "decrypt to stdout")
	require.Equal(t, digest, loadDigest(t, dec, ""), "redis-server loads the decrypted RDB")

	// Compressed, with small segments: still round trips.
	small := filepath.Join(dir, "persistence", "small.rdb")
	ok(t, nil, "encrypt", "--compression", "zstd", "--segment-size", "4096", plain, "-o", small)
	ok(t, nil, "verify", small)
	ok(t, nil, "decrypt", small, "-o", dec)
	got, _ = os.ReadFile(dec)
	require.True(t, bytes.Equal(want, got))

	// After a DEK rotation old files still decrypt; new ones use v2.
	ok(t, nil, "keyring", "rotate", dir)
	ok(t, nil, "encrypt", plain, "-o", small)
	jsonOut(t, nil, &insp, "inspect", small)
	require.EqualValues(t, 2, insp["dek_version"])
	ok(t, nil, "verify", dir)

	// Retiring v1 leaves the v1 snapshot undecryptable: verify says so
	// with exit code 3 (a key problem), not as damage.
	ok(t, nil, "keyring", "retire", filepath.Join(dir, "persistence", "keyring"), "1")
	r = fails(t, exitKey, nil, "verify", enc)
	require.Contains(t, r.stdout, "unknown DEK version")
	ok(t, nil, "verify", small)

	// A plain file that is not an RDB is refused, and a damaged RDB too.
	junk := filepath.Join(t.TempDir(), "junk")
	require.NoError(t, os.WriteFile(junk, []byte("not an rdb"), 0o600))
	fails(t, exitUsage, nil, "encrypt", junk, "-o", small)
	bad := append([]byte(nil), want...)
	bad[len(bad)/2] ^= 1
	require.NoError(t, os.WriteFile(junk, bad, 0o600))
	r = fails(t, exitDamaged, nil, "encrypt", junk, "-o", small)
	require.Contains(t, r.stderr, "CRC-64")
}

// Tampering with an encrypted snapshot makes verify exit 2 naming the
// file, the segment and its offset; decrypt exits 2 and leaves no output.
func TestRDBTamper(t *testing.T) {
	plain, _ := redisRDB(t)
	dir := newInstance(t)
	enc := filepath.Join(dir, "persistence", "dump.rdb")
	ok(t, nil, "encrypt", plain, "-o", enc)
	orig, err := os.ReadFile(enc)
	require.NoError(t, err)
	var insp map[string]any
	jsonOut(t, nil, &insp, "inspect", enc)
	hdr := int(insp["header_len"].(float64))
	nseg := int(insp["segments"].(float64))
	require.Greater(t, nseg, 4, "the test needs several segments")
	const per = 65536 + 16
	segOff := func(i int) int { return hdr + i*per }

	for _, tc := range []struct {
		name    string
		edit    func([]byte) []byte
		segment int // -1: no segment reported
	}{
		{"flip in segment 3", func(b []byte) []byte { b[segOff(3)+100] ^= 0x01; return b }, 3},
		{"flip a tag of segment 0", func(b []byte) []byte { b[segOff(1)-1] ^= 0x80; return b }, 0},
		{"flip in final segment", func(b []byte) []byte { b[len(b)-20] ^= 0x01; return b }, nseg - 1},
		{"flip header salt", func(b []byte) []byte { b[hdr-1] ^= 0x01; return b }, nseg - 1},
		{"swap segments 1 and 2", func(b []byte) []byte {
			s1 := append([]byte(nil), b[segOff(1):segOff(2)]...)
			copy(b[segOff(1):], b[segOff(2):segOff(3)])
			copy(b[segOff(2):], s1)
			return b
		}, 1},
		{"cut at a segment boundary", func(b []byte) []byte { return b[:segOff(2)] }, -1},
		{"cut inside the final segment", func(b []byte) []byte { return b[:len(b)-7] }, nseg - 1},
		{"bytes appended", func(b []byte) []byte { return append(b, 0) }, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.edit(append([]byte(nil), orig...))
			require.NoError(t, os.WriteFile(enc, b, 0o600))
			r := fails(t, exitDamaged, nil, "verify", enc)
			require.Contains(t, r.stdout, "DAMAGED")
			require.Contains(t, r.stdout, enc)
			var rep struct {
				OK       bool           `json:"ok"`
				ExitCode int            `json:"exit_code"`
				Results  []verifyResult `json:"results"`
			}
			r = fails(t, exitDamaged, nil, "--json", "verify", enc)
			require.NoError(t, jsonUnmarshal(r.stdout, &rep), r.stdout)
			require.False(t, rep.OK)
			require.Len(t, rep.Results, 1)
			res := rep.Results[0]
			require.Equal(t, enc, res.File)
			require.Equal(t, exitDamaged, res.Code)
			if tc.segment >= 0 {
				require.NotNil(t, res.Segment, res.Error)
				require.EqualValues(t, tc.segment, *res.Segment, res.Error)
				require.EqualValues(t, segOff(tc.segment), *res.Offset)
				require.Contains(t, r.stdout, fmt.Sprintf(`"segment": %d`, tc.segment))
			}
			// The instance-wide verify finds it too.
			fails(t, exitDamaged, nil, "verify", dir)
			// decrypt refuses and leaves no output file.
			dec := filepath.Join(t.TempDir(), "out.rdb")
			fails(t, exitDamaged, nil, "decrypt", enc, "-o", dec)
			_, err := os.Stat(dec)
			require.ErrorIs(t, err, os.ErrNotExist)
			entries, _ := os.ReadDir(filepath.Dir(dec))
			require.Empty(t, entries, "no temporary file left")
		})
	}
	require.NoError(t, os.WriteFile(enc, orig, 0o600))
	ok(t, nil, "verify", enc)

	// A snapshot moved to another instance's disk is refused: its keyring
	// does not hold the right disk id.
	other := newInstance(t)
	moved := filepath.Join(other, "persistence", "dump.rdb")
	require.NoError(t, os.WriteFile(moved, orig, 0o600))
	r := fails(t, exitUsage, nil, "verify", moved)
	require.Contains(t, r.stdout, "--keyring")
	r = fails(t, exitDamaged, nil, "verify", "--keyring", filepath.Join(other, "persistence", "keyring"), moved)
	require.Contains(t, r.stdout, "another disk")
}

// On a terminal (a pty from script(1)), decrypt refuses to print binary
// plaintext; on a pipe it writes it.
func TestTerminalRefusal(t *testing.T) {
	script := testenv.LookPath(t, "script", "install it with: apt-get install -y util-linux")
	plain, _ := redisRDB(t)
	dir := newInstance(t)
	enc := filepath.Join(dir, "persistence", "dump.rdb")
	ok(t, nil, "encrypt", plain, "-o", enc)
	out, err := exec.Command(script, "-qec", bin+" decrypt "+enc, "/dev/null").CombinedOutput()
	require.Error(t, err)
	require.Contains(t, string(out), "refusing to write binary plaintext to a terminal")
	require.NotContains(t, string(out), "REDIS")
}

// encrypt reads a pipe once; Ctrl-C (SIGINT) in the middle leaves neither
// the target nor a temporary file, and exits 4.
func TestEncryptPipeInterrupted(t *testing.T) {
	plain, _ := redisRDB(t)
	want, err := os.ReadFile(plain)
	require.NoError(t, err)
	dir := newInstance(t)
	enc := filepath.Join(dir, "persistence", "dump.rdb")

	// From stdin: the whole RDB, byte for byte.
	cmd := exec.Command(bin, "encrypt", "-", "-o", enc)
	cmd.Stdin = bytes.NewReader(want)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, string(out))
	dec := filepath.Join(t.TempDir(), "dump.rdb")
	ok(t, nil, "decrypt", enc, "-o", dec)
	got, _ := os.ReadFile(dec)
	require.True(t, bytes.Equal(want, got))

	// From a FIFO, interrupted after the first MiB, into a new instance (a
	// snapshot deleted behind an instance's back reads as a rollback).
	enc = filepath.Join(newInstance(t), "persistence", "dump.rdb")
	fifo := filepath.Join(t.TempDir(), "fifo")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))
	cmd = exec.Command(bin, "encrypt", fifo, "-o", enc)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	require.NoError(t, cmd.Start())
	w, err := os.OpenFile(fifo, os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = w.Write(make([]byte, 1<<20))
	require.NoError(t, err)
	require.NoError(t, cmd.Process.Signal(os.Interrupt))
	// Keep the input coming until the child is gone (EPIPE): the input never
	// ends, so only the interrupt can end the command, however long the
	// child takes to see it.
	fed := make(chan struct{})
	go func() {
		defer close(fed)
		for chunk := make([]byte, 1<<16); ; {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	}()
	err = cmd.Wait()
	w.Close()
	<-fed
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit, stderr.String())
	require.Equal(t, exitOther, exit.ExitCode(), stderr.String())
	require.Contains(t, stderr.String(), "context canceled")
	_, err = os.Stat(enc)
	require.ErrorIs(t, err, os.ErrNotExist)
	entries, err := os.ReadDir(filepath.Dir(enc))
	require.NoError(t, err)
	for _, e := range entries {
		require.Equal(t, "keyring", e.Name(), "nothing but the keyring is left")
	}
}
