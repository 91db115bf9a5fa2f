package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/stretchr/testify/require"

	"github.com/cachecrypt/cachecrypt"
	"github.com/cachecrypt/cachecrypt/export"
	"github.com/cachecrypt/cachecrypt/export/blob"
	"github.com/cachecrypt/cachecrypt/internal/testenv"
	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/cachecrypt/cachecrypt/rdb"
)

const canary = "sidecar-canary-5d1e"

// source starts a redis-server with sample data of every type and a canary
// value, and returns it with its DEBUG DIGEST.
func source(t *testing.T, directives ...string) (*testenv.Redis, string) {
	t.Helper()
	r := testenv.StartRedis(t, filepath.Join(t.TempDir(), "source"), append(directives, "repl-diskless-sync-delay 0")...)
	c, err := dial(r.Addr())
	require.NoError(t, err)
	defer c.close()
	require.NoError(t, fill(c, 2000))
	r.MustDo(t, "SET", "canary", canary)
	r.MustDo(t, "SET", "large", strings.Repeat("0123456789abcdef", 40000)) // 640 KB: many reads, several segments
	return r, r.Digest(t)
}

func openSidecar(t *testing.T, dir string) *Sidecar {
	t.Helper()
	s, err := Open(t.Context(), dir, nil)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

// TestSnapshotAndRestoreDigestEqual pulls a snapshot from a real
// redis-server, both as a sized payload (disk-based replication) and as a
// diskless EOF-marked stream, stores it encrypted (no plaintext on disk),
// restores it into a fresh redis-server: DEBUG DIGEST equal.
func TestSnapshotAndRestoreDigestEqual(t *testing.T) {
	for _, diskless := range []bool{false, true} {
		t.Run(fmt.Sprintf("diskless=%v", diskless), func(t *testing.T) {
			src, digest := source(t, "repl-diskless-sync "+map[bool]string{true: "yes", false: "no"}[diskless])
			dir := t.TempDir()
			s := openSidecar(t, dir)
			pi, info, err := s.Snapshot(t.Context(), src.Addr(), PullOptions{})
			require.NoError(t, err)
			require.Equal(t, diskless, pi.Diskless)
			require.Equal(t, pi.Size, info.Size)
			require.NotZero(t, info.Checksum)
			requireNoPlaintext(t, dir, canary)

			restored := t.TempDir()
			ri, err := s.Restore(restored)
			require.NoError(t, err)
			require.Equal(t, info, ri)
			dst := testenv.StartRedis(t, restored)
			require.Equal(t, digest, dst.Digest(t), "DEBUG DIGEST of the restored redis-server")
			require.Equal(t, canary, dst.MustDo(t, "GET", "canary"))
		})
	}
}

// TestSnapshotWithPassword: AUTH before the handshake; a wrong password is
// refused and keeps the previous snapshot.
func TestSnapshotWithPassword(t *testing.T) {
	src, digest := source(t)
	src.MustDo(t, "CONFIG", "SET", "requirepass", "s3cret-from-env") // this connection stays authenticated
	s := openSidecar(t, t.TempDir())
	_, _, err := s.Snapshot(t.Context(), src.Addr(), PullOptions{Password: "s3cret-from-env"})
	require.NoError(t, err)
	before, err := os.ReadFile(s.Path())
	require.NoError(t, err)

	_, _, err = s.Snapshot(t.Context(), src.Addr(), PullOptions{Password: "wrong"})
	require.ErrorContains(t, err, "AUTH")
	after, err := os.ReadFile(s.Path())
	require.NoError(t, err)
	require.Equal(t, before, after, "a failed pull replaced the snapshot")

	restored := t.TempDir()
	_, err = s.Restore(restored)
	require.NoError(t, err)
	require.Equal(t, digest, testenv.StartRedis(t, restored).Digest(t))
}

// TestExportImportThroughAzurite exports the encrypted snapshot to a blob in
// Azurite, imports it into another instance (other keys), and restores it:
// DEBUG DIGEST equal.
func TestExportImportThroughAzurite(t *testing.T) {
	a := testenv.StartAzurite(t)
	src, digest := source(t)
	s := openSidecar(t, t.TempDir())
	_, _, err := s.Snapshot(t.Context(), src.Addr(), PullOptions{})
	require.NoError(t, err)

	cred, err := azblob.NewSharedKeyCredential(a.Account, a.Key)
	require.NoError(t, err)
	svc, err := azblob.NewClientWithSharedKeyCredential(a.Endpoint, cred, nil)
	require.NoError(t, err)
	_, err = svc.CreateContainer(t.Context(), "backups", nil)
	require.NoError(t, err)
	bb := svc.ServiceClient().NewContainerClient("backups").NewBlockBlobClient("cache-1/dump.rdb")

	// On demand, through the daemon's HTTP API.
	d := &Daemon{Sidecar: s, Redis: src.Addr(), Blob: func() (export.Destination, error) { return blob.To(bb), nil }}
	st := api(t, d, "POST", "/snapshot", http.StatusOK)
	require.NotZero(t, st.SnapshotSize)
	st = api(t, d, "POST", "/export", http.StatusOK)
	require.Equal(t, st, api(t, d, "GET", "/status", http.StatusOK))
	info, err := s.inst.Export(t.Context(), export.ToWriter(io.Discard), nil)
	require.NoError(t, err)
	require.Equal(t, hex.EncodeToString(info.SHA256[:]), st.ExportSHA256)
	props, err := bb.GetProperties(t.Context(), nil)
	require.NoError(t, err)
	require.Equal(t, hex.EncodeToString(info.SHA256[:]), blob.SHA256(props.Metadata))
	require.Equal(t, info.Size, *props.ContentLength)

	other := openSidecar(t, t.TempDir())
	info2, err := other.Import(t.Context(), blob.From(bb.BlobClient()))
	require.NoError(t, err)
	require.Equal(t, info, info2)
	restored := t.TempDir()
	_, err = other.Restore(restored)
	require.NoError(t, err)
	require.Equal(t, digest, testenv.StartRedis(t, restored).Digest(t))

	// Sealed, through the daemon: only this sidecar's KEK imports it; the
	// other sidecar (its own platform key) is refused and keeps its
	// snapshot.
	sealedBB := svc.ServiceClient().NewContainerClient("backups").NewBlockBlobClient("cache-1/dump.ccsealed")
	d.Sealed, d.Blob = true, func() (export.Destination, error) { return blob.To(sealedBB), nil }
	api(t, d, "POST", "/export", http.StatusOK)
	_, err = other.ImportSealed(t.Context(), blob.From(sealedBB.BlobClient()))
	require.True(t, errors.Is(err, kek.ErrKeyMismatch) || errors.Is(err, kek.ErrUnwrap), "%v", err)
	_, err = other.Import(t.Context(), blob.From(sealedBB.BlobClient()))
	require.ErrorIs(t, err, export.ErrNotRDB, "a sealed blob is no plain RDB")
	info3, err := s.ImportSealed(t.Context(), blob.From(sealedBB.BlobClient()))
	require.NoError(t, err)
	require.Equal(t, info, info3)
	restored2 := t.TempDir()
	_, err = s.Restore(restored2)
	require.NoError(t, err)
	require.Equal(t, digest, testenv.StartRedis(t, restored2).Digest(t))
}

// api calls the daemon's HTTP API and checks the status code.
func api(t *testing.T, d *Daemon, method, path string, code int) Status {
	t.Helper()
	w := httptest.NewRecorder()
	d.ServeHTTP(w, httptest.NewRequest(method, path, nil))
	require.Equal(t, code, w.Code, w.Body.String())
	var st Status
	require.NoError(t, json.Unmarshal(w.Body.Bytes(), &st))
	return st
}

// TestDaemonReportsFailures: a failed export (no snapshot yet) answers 500
// with the error in the status; unknown paths answer 404.
func TestDaemonReportsFailures(t *testing.T) {
	s := openSidecar(t, t.TempDir())
	d := &Daemon{Sidecar: s, Redis: "127.0.0.1:1", Blob: func() (export.Destination, error) { return export.ToWriter(io.Discard), nil }}
	st := api(t, d, "POST", "/export", http.StatusInternalServerError)
	require.Contains(t, st.LastError, "sidecar.Export")
	st = api(t, d, "POST", "/snapshot", http.StatusInternalServerError)
	require.Contains(t, st.LastError, "connect")
	w := httptest.NewRecorder()
	d.ServeHTTP(w, httptest.NewRequest("GET", "/nothing", nil))
	require.Equal(t, http.StatusNotFound, w.Code)
}

// TestRestoreTampered: a flipped bit in the encrypted snapshot fails the
// restore with ErrAuthentication and leaves no dump.rdb behind.
func TestRestoreTampered(t *testing.T) {
	dir := t.TempDir()
	s := openSidecar(t, dir)
	plain := tinyRDB("k", "v")
	_, err := rdb.Encrypt(s.Path(), bytes.NewReader(plain), s.keys)
	require.NoError(t, err)
	b, err := os.ReadFile(s.Path())
	require.NoError(t, err)
	b[len(b)-20] ^= 1
	require.NoError(t, os.WriteFile(s.Path(), b, 0o600))
	restored := t.TempDir()
	_, err = s.Restore(restored)
	require.ErrorIs(t, err, cachecrypt.ErrAuthentication)
	entries, err := os.ReadDir(restored)
	require.NoError(t, err)
	require.Empty(t, entries, "restore left files behind")
}

// TestPullProtocol runs Pull against a scripted replication peer: keep-alive
// newlines, sized and EOF-marked payloads delivered a few bytes at a time
// (the mark split across reads), and broken transfers, which keep the
// previous snapshot.
func TestPullProtocol(t *testing.T) {
	good := tinyRDB("key", "value")
	damaged := bytes.Clone(good)
	damaged[12] ^= 1
	mark := strings.Repeat("ab", 20)
	tests := []struct {
		name     string
		reply    string
		chunk    int
		want     []byte
		diskless bool
		err      error
	}{
		{"sized", "\n\n$" + strconv.Itoa(len(good)) + "\r\n" + string(good), 3, good, false, nil},
		{"fullresync then sized", "+FULLRESYNC 0123 0\r\n$" + strconv.Itoa(len(good)) + "\r\n" + string(good), 1000, good, false, nil},
		{"diskless", "\n$EOF:" + mark + "\r\n" + string(good) + mark, 7, good, true, nil},
		{"diskless one byte at a time", "$EOF:" + mark + "\r\n" + string(good) + mark, 1, good, true, nil},
		{"sized cut short", "$" + strconv.Itoa(len(good)+10) + "\r\n" + string(good), 5, nil, false, io.ErrUnexpectedEOF},
		{"diskless without mark", "$EOF:" + mark + "\r\n" + string(good), 5, nil, true, io.ErrUnexpectedEOF},
		{"short mark", "$EOF:abc\r\n" + string(good), 5, nil, true, ErrProtocol},
		{"damaged RDB", "$" + strconv.Itoa(len(damaged)) + "\r\n" + string(damaged), 100, nil, false, rdb.ErrChecksum},
		{"not an RDB", "$5\r\nhello", 100, nil, false, rdb.ErrNotRDB},
		{"refused", "-ERR no sync for you\r\n", 100, nil, false, nil},
		{"garbage", "%3\r\n", 100, nil, false, ErrProtocol},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := openSidecar(t, t.TempDir())
			previous := tinyRDB("previous", "snapshot")
			_, err := rdb.Encrypt(s.Path(), bytes.NewReader(previous), s.keys)
			require.NoError(t, err)

			addr := fakeReplica(t, tc.reply, tc.chunk)
			pi, _, err := s.Snapshot(context.Background(), addr, PullOptions{})
			var back bytes.Buffer
			_, derr := rdb.Decrypt(&back, s.Path(), s.keys)
			require.NoError(t, derr)
			if tc.want != nil {
				require.NoError(t, err)
				require.Equal(t, tc.diskless, pi.Diskless)
				require.Equal(t, tc.want, back.Bytes())
				return
			}
			require.Error(t, err)
			if tc.err != nil {
				require.ErrorIs(t, err, tc.err)
			}
			require.Equal(t, previous, back.Bytes(), "a failed pull replaced the snapshot")
		})
	}
}

// fakeReplica listens for one connection, answers +OK to the REPLCONF
// commands, and answers SYNC with reply, chunk bytes per write, then closes.
func fakeReplica(t *testing.T, reply string, chunk int) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		r := bufio.NewReader(c)
		for {
			args, err := readCommand(r)
			if err != nil {
				return
			}
			if !strings.EqualFold(args[0], "SYNC") {
				io.WriteString(c, "+OK\r\n")
				continue
			}
			for b := []byte(reply); len(b) > 0; {
				n := min(chunk, len(b))
				if _, err := c.Write(b[:n]); err != nil {
					return
				}
				b = b[n:]
			}
			return
		}
	}()
	return ln.Addr().String()
}

func readCommand(r *bufio.Reader) ([]string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	n, err := strconv.Atoi(strings.TrimSpace(line[1:]))
	if err != nil || line[0] != '*' {
		return nil, fmt.Errorf("bad command %q", line)
	}
	args := make([]string, n)
	for i := range args {
		if _, err := r.ReadString('\n'); err != nil {
			return nil, err
		}
		a, err := r.ReadString('\n')
		if err != nil {
			return nil, err
		}
		args[i] = strings.TrimRight(a, "\r\n")
	}
	return args, nil
}

// TestDemo runs the README command's code path.
func TestDemo(t *testing.T) {
	testenv.LookPath(t, "redis-server", testenv.RedisInstall)
	var out bytes.Buffer
	require.NoError(t, run(t.Context(), &out, "demo", nil), out.String())
	require.Contains(t, out.String(), "digests equal")
}

// tinyRDB builds a valid RDB (version 9) holding one string key.
func tinyRDB(key, value string) []byte {
	b := []byte("REDIS0009")
	b = append(b, 0xFE, 0x00, 0x00, byte(len(key)))
	b = append(b, key...)
	b = append(b, byte(len(value)))
	b = append(b, value...)
	b = append(b, 0xFF)
	return binary.LittleEndian.AppendUint64(b, rdb.CRC64(0, b))
}

func requireNoPlaintext(t *testing.T, dir, needle string) {
	t.Helper()
	files := 0
	require.NoError(t, filepath.Walk(dir, func(path string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		files++
		require.False(t, bytes.Contains(b, []byte(needle)), "plaintext %q in %s", needle, path)
		return err
	}))
	require.Greater(t, files, 2)
}

// FuzzCopyUntilMark: a diskless payload delivered in reads of any size comes
// out whole, whatever bytes it holds (short of the random mark itself).
func FuzzCopyUntilMark(f *testing.F) {
	f.Add([]byte("REDIS0009\xff"), uint8(1))
	f.Add(bytes.Repeat([]byte("ab"), 100), uint8(39))
	f.Fuzz(func(t *testing.T, payload []byte, chunk uint8) {
		mark := []byte(strings.Repeat("0123456789", 4))
		if bytes.Index(append(bytes.Clone(payload), mark...), mark) != len(payload) {
			return // the mark occurs earlier: the protocol relies on it being random
		}
		a, b := net.Pipe()
		defer a.Close()
		go func() {
			defer b.Close()
			for p := append(bytes.Clone(payload), mark...); len(p) > 0; {
				n := min(int(chunk)+1, len(p))
				if _, err := b.Write(p[:n]); err != nil {
					return
				}
				p = p[n:]
			}
		}()
		c := &rconn{conn: a, r: bufio.NewReaderSize(a, 16), idle: 10 * time.Second}
		var out bytes.Buffer
		n, err := c.copyUntilMark(&out, mark)
		require.NoError(t, err)
		require.Equal(t, int64(len(payload)), n)
		require.True(t, bytes.Equal(payload, out.Bytes()), "payload changed")
	})
}
