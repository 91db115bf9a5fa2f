package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/cachecrypt/cachecrypt"
	"github.com/cachecrypt/cachecrypt/aof"
	"github.com/cachecrypt/cachecrypt/internal/testenv"
	"github.com/cachecrypt/cachecrypt/rdb"
)

// script is a sequence of commands whose replies must match a real
// redis-server's. Expiries are absolute (PXAT, PEXPIREAT) or far away, so
// that the datasets hash the same in DEBUG DIGEST.
func script() [][]string {
	far := strconv.FormatInt(time.Now().Add(time.Hour).UnixMilli(), 10)
	past := strconv.FormatInt(time.Now().Add(-time.Hour).UnixMilli(), 10)
	big := string(bytes.Repeat([]byte("v"), 70000)) // a 32-bit length in the RDB
	mid := string(bytes.Repeat([]byte("m"), 300))   // a 14-bit length
	cmds := [][]string{
		{"SET", "a", "1"}, {"GET", "a"}, {"INCR", "a"}, {"INCRBY", "a", "40"}, {"DECR", "a"},
		{"SET", "s", "hello", "NX"}, {"SET", "s", "again", "NX"}, {"SET", "nx-new", "x", "XX"},
		{"SET", "s", "world", "XX"}, {"GET", "s"}, {"GET", "missing"},
		{"SET", "e", "expiring", "PXAT", far}, {"PEXPIREAT", "s", far}, {"SET", "s", "kept", "KEEPTTL"},
		{"SET", "gone", "x", "PXAT", past}, {"GET", "gone"},
		{"SET", "big", big}, {"SET", "mid", mid}, {"SET", "neg", "-12345"}, {"SET", "empty", ""},
		{"SET", "bin", "\x00\xff\r\n"}, {"INCR", "s"}, {"INCR", "neg"},
		{"DEL", "nothing", "a"}, {"EXISTS", "a", "s", "e", "big"}, {"SET", "d", "1"}, {"PEXPIREAT", "d", past},
		{"EXISTS", "d"}, {"EXPIRE", "missing", "10"}, {"SET", "a", "2"}, {"DBSIZE"},
		{"SET", "x", "1", "EX", "0"}, {"SET", "x", "1", "PX"}, {"SET", "x", "1", "NX", "XX"}, {"NOSUCH"},
	}
	for i := range 200 {
		cmds = append(cmds, []string{"SET", fmt.Sprintf("key:%d", i), strconv.Itoa(i * i)})
	}
	return append(cmds, []string{"DBSIZE"})
}

// TestMatchesRedisAndSnapshotLoadsInRedis runs the same commands on this
// server and on a real redis-server, compares every reply, then takes a
// snapshot (SAVE), decrypts it and loads it into a fresh redis-server: its
// DEBUG DIGEST equals the first redis-server's.
func TestMatchesRedisAndSnapshotLoadsInRedis(t *testing.T) {
	real := testenv.StartRedis(t, filepath.Join(t.TempDir(), "real"))
	dir := t.TempDir()
	addr, stop := startInProcess(t, Config{Dir: dir})
	c := dial(t, addr)
	for _, cmd := range script() {
		want, werr := real.Do(cmd...)
		got, gerr := c.do(cmd...)
		if werr != nil {
			require.Error(t, gerr, "%v: redis says %v", cmd, werr)
			continue
		}
		require.NoError(t, gerr, "%v", cmd)
		require.Equal(t, want, got, "%v", cmd)
	}
	ttl := c.must(t, "TTL", "e").(int64)
	require.InDelta(t, 3600, ttl, 2)
	require.Equal(t, int64(-1), c.must(t, "TTL", "a"))
	require.Equal(t, int64(-2), c.must(t, "TTL", "missing"))

	require.Equal(t, "OK", c.must(t, "SAVE"))
	require.Equal(t, "0", infoField(t, c, "rdb_changes_since_last_save"))
	stop()

	plain := decryptSnapshot(t, dir)
	info, err := rdb.CheckPlain(bytes.NewReader(plain))
	require.NoError(t, err)
	require.NotZero(t, info.Checksum)
	loadDir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(loadDir, "dump.rdb"), plain, 0o600))
	loaded := testenv.StartRedis(t, loadDir)
	require.Equal(t, real.Digest(t), loaded.Digest(t), "DEBUG DIGEST of redis-server loading the decrypted snapshot")
	require.Equal(t, real.MustDo(t, "DBSIZE"), loaded.MustDo(t, "DBSIZE"))
}

func decryptSnapshot(t *testing.T, dir string) []byte {
	t.Helper()
	inst, err := cachecrypt.Open(t.Context(), dir, cachecrypt.Config{Logger: quiet})
	require.NoError(t, err)
	defer inst.Close()
	keys, err := inst.Keyring(cachecrypt.DiskPersistence)
	require.NoError(t, err)
	var out bytes.Buffer
	_, err = rdb.Decrypt(&out, filepath.Join(inst.DiskDir(cachecrypt.DiskPersistence), "dump.rdb"), keys)
	require.NoError(t, err)
	return out.Bytes()
}

// TestRestartFromSnapshotAndAOF writes, snapshots with BGSAVE, writes more
// (overwrites, deletes, expiries), restarts, and finds exactly the same
// keyspace; no value is in plaintext anywhere in the data directory. The
// plaintext-AOF baseline restarts the same way.
func TestRestartFromSnapshotAndAOF(t *testing.T) {
	for _, plainAOF := range []bool{false, true} {
		t.Run(fmt.Sprintf("plain-aof=%v", plainAOF), func(t *testing.T) {
			const canary = "canary-7f3a9c-value"
			dir := t.TempDir()
			cfg := Config{Dir: dir, PlainAOF: plainAOF, Fsync: aof.EverySec}
			addr, stop := startInProcess(t, cfg)
			c := dial(t, addr)
			far := strconv.FormatInt(time.Now().Add(time.Hour).UnixMilli(), 10)
			for i := range 100 {
				c.must(t, "SET", fmt.Sprintf("k%d", i), fmt.Sprintf("%s-%d", canary, i))
			}
			c.must(t, "SET", "ttl", canary, "PXAT", far)
			c.must(t, "SET", "short", canary, "PX", "150")
			require.Equal(t, "Background saving started", c.must(t, "BGSAVE"))
			waitSaved(t, c)
			require.Equal(t, "ok", infoField(t, c, "rdb_last_bgsave_status"))
			require.Equal(t, "1", infoField(t, c, "aof_enabled"))
			require.Equal(t, "ok", infoField(t, c, "aof_last_write_status"))
			saved, _ := strconv.ParseInt(infoField(t, c, "rdb_last_save_time"), 10, 64)
			require.InDelta(t, time.Now().Unix(), saved, 5)

			c.must(t, "SET", "k0", "after-snapshot")
			c.must(t, "DEL", "k1", "k2")
			c.must(t, "INCR", "counter")
			c.must(t, "INCR", "counter")
			c.must(t, "EXPIRE", "k3", "3600")
			c.must(t, "PEXPIREAT", "k4", "1")
			c.must(t, "SET", "new", canary)
			require.Equal(t, "7", infoField(t, c, "rdb_changes_since_last_save"))
			time.Sleep(200 * time.Millisecond) // "short" expires
			want := dump(t, c)
			require.NotContains(t, want, "short")
			require.NotContains(t, want, "k4")
			stop()

			if !plainAOF {
				requireNoPlaintext(t, dir, canary)
			}
			addr, _ = startInProcess(t, cfg)
			c = dial(t, addr)
			require.Equal(t, want, dump(t, c))
			require.InDelta(t, 3600, c.must(t, "TTL", "k3").(int64), 2)
			require.InDelta(t, 3600, c.must(t, "TTL", "ttl").(int64), 2)
		})
	}
}

// dump returns the keyspace as key -> value (with "+ttl" for keys with one)
// through GET on every key this test writes.
func dump(t *testing.T, c *client) map[string]string {
	t.Helper()
	keys := []string{"ttl", "short", "counter", "new"}
	for i := range 100 {
		keys = append(keys, fmt.Sprintf("k%d", i))
	}
	out := map[string]string{}
	for _, k := range keys {
		v := c.must(t, "GET", k)
		if v == nil {
			continue
		}
		s := v.(string)
		if c.must(t, "TTL", k).(int64) >= 0 {
			s += "+ttl"
		}
		out[k] = s
	}
	require.Equal(t, int64(len(out)), c.must(t, "DBSIZE"))
	return out
}

func waitSaved(t *testing.T, c *client) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for infoField(t, c, "rdb_bgsave_in_progress") != "0" {
		require.True(t, time.Now().Before(deadline), "BGSAVE did not finish")
		time.Sleep(10 * time.Millisecond)
	}
}

// requireNoPlaintext fails if any file under dir contains needle.
func requireNoPlaintext(t *testing.T, dir, needle string) {
	t.Helper()
	n := 0
	err := filepath.Walk(dir, func(path string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		n++
		require.False(t, bytes.Contains(b, []byte(needle)), "plaintext %q in %s", needle, path)
		return err
	})
	require.NoError(t, err)
	require.Greater(t, n, 3)
}

// TestTamperedFilesRefused: a bit flipped in the snapshot or in an AOF part
// stops the server from starting, with ErrAuthentication, instead of
// serving (or losing) data.
func TestTamperedFilesRefused(t *testing.T) {
	for _, file := range []string{"dump.rdb", "appendonlydir/appendonly.aof.1.incr.aof", "appendonlydir/appendonly.aof.manifest"} {
		t.Run(file, func(t *testing.T) {
			dir := t.TempDir()
			addr, stop := startInProcess(t, Config{Dir: dir})
			c := dial(t, addr)
			c.must(t, "SET", "k", strings.Repeat("v", 1000))
			c.must(t, "SAVE")
			c.must(t, "SET", "k2", "v2")
			stop()
			path := filepath.Join(dir, cachecrypt.DiskPersistence, file)
			b, err := os.ReadFile(path)
			require.NoError(t, err)
			i := len(b) / 2
			if strings.HasSuffix(file, ".manifest") { // text: change a salt's hex digit, keeping the syntax valid
				i = bytes.Index(b, []byte(" salt ")) + len(" salt ")
				if b[i] == '0' {
					b[i] = '1'
				} else {
					b[i] = '0'
				}
			} else {
				b[i] ^= 1
			}
			require.NoError(t, os.WriteFile(path, b, 0o600))
			_, err = Open(t.Context(), Config{Dir: dir, Logger: quiet})
			require.ErrorIs(t, err, cachecrypt.ErrAuthentication)
		})
	}
}

// TestRDBRoundTrip: what writeRDB writes, readRDB reads back, and
// CheckPlain accepts.
func TestRDBRoundTrip(t *testing.T) {
	snap := map[string]entry{
		"a": {val: []byte("1")}, "b": {val: bytes.Repeat([]byte("x"), 20000), exp: 4102444800000},
		"": {val: []byte("empty key")}, "c": {val: []byte{}},
	}
	var buf bytes.Buffer
	require.NoError(t, writeRDB(&buf, snap))
	_, err := rdb.CheckPlain(bytes.NewReader(buf.Bytes()))
	require.NoError(t, err)
	d := newDB()
	require.NoError(t, readBytes(buf.Bytes(), d, nowMs()))
	require.Equal(t, snap, d.m)
	require.Equal(t, 1, d.expires())

	bad := bytes.Clone(buf.Bytes())
	bad[20] ^= 0xFF
	require.Error(t, readBytes(bad, newDB(), nowMs()))
	require.Error(t, readBytes(buf.Bytes()[:buf.Len()-3], newDB(), nowMs()))
}

func FuzzReadRDB(f *testing.F) {
	var buf bytes.Buffer
	writeRDB(&buf, map[string]entry{"a": {val: []byte("1"), exp: 5}, "b": {val: []byte("2")}})
	f.Add(buf.Bytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		d := newDB()
		if readBytes(b, d, 0) != nil {
			return
		}
		var out bytes.Buffer
		require.NoError(t, writeRDB(&out, d.m))
		d2 := newDB()
		require.NoError(t, readBytes(out.Bytes(), d2, 0))
		require.Equal(t, d.m, d2.m)
	})
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func readBytes(b []byte, d *db, now int64) error {
	return readRDB(bufio.NewReader(bytes.NewReader(b)), d, now)
}

// TestRewriteAOF: BGREWRITEAOF replaces the AOF with an RDB-preamble base
// (as Redis' aof-use-rdb-preamble does). Keys deleted after an older
// snapshot stay deleted across a restart (the base is the whole state), and
// the log, decrypted with aof.Export, loads into a real redis-server with
// the same keys and values.
func TestRewriteAOF(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Dir: dir, Fsync: aof.Always}
	addr, stop := startInProcess(t, cfg)
	c := dial(t, addr)
	for i := range 100 {
		c.must(t, "SET", fmt.Sprintf("k%d", i), strconv.Itoa(i))
	}
	c.must(t, "SAVE") // the snapshot holds k0..k99
	for i := range 50 {
		c.must(t, "DEL", fmt.Sprintf("k%d", i))
	}
	require.Equal(t, "Background append only file rewriting started", c.must(t, "BGREWRITEAOF"))
	c.must(t, "SET", "after", "rewrite", "PX", "3600000")
	deadline := time.Now().Add(30 * time.Second)
	for infoField(t, c, "aof_rewrite_in_progress") != "0" {
		require.True(t, time.Now().Before(deadline), "BGREWRITEAOF did not finish")
		time.Sleep(10 * time.Millisecond)
	}
	require.Equal(t, "ok", infoField(t, c, "aof_last_bgrewrite_status"))
	c.must(t, "INCR", "n")
	stop()

	inst, err := cachecrypt.Open(t.Context(), dir, cachecrypt.Config{Logger: quiet})
	require.NoError(t, err)
	keys, err := inst.Keyring(cachecrypt.DiskPersistence)
	require.NoError(t, err)
	aofDir := filepath.Join(inst.DiskDir(cachecrypt.DiskPersistence), "appendonlydir")
	rep, err := aof.Check(aofDir, keys, aof.Options{})
	require.NoError(t, err)
	require.Equal(t, byte(aof.TypeBase), rep.Parts[0].Type)
	require.Contains(t, rep.Parts[0].Name, ".base.rdb")
	redisDir := t.TempDir()
	require.NoError(t, aof.Export(aofDir, filepath.Join(redisDir, "appendonlydir"), keys, aof.Options{}))
	inst.Close()

	addr, _ = startInProcess(t, cfg)
	c = dial(t, addr)
	real := testenv.StartRedis(t, redisDir, "appendonly yes")
	require.Equal(t, int64(52), c.must(t, "DBSIZE"))
	require.Equal(t, real.MustDo(t, "DBSIZE"), c.must(t, "DBSIZE"))
	for _, k := range []string{"k0", "k49", "k50", "k99", "after", "n"} {
		require.Equal(t, real.MustDo(t, "GET", k), c.must(t, "GET", k), k)
	}
	require.Nil(t, c.must(t, "GET", "k0"))
	require.Equal(t, "1", c.must(t, "GET", "n"))
	require.InDelta(t, 3600, c.must(t, "TTL", "after").(int64), 2)
	require.InDelta(t, 3600, real.MustDo(t, "TTL", "after").(int64), 2)
}

// TestExpiryCycleDropsKeys: keys with an expiry vanish without being read,
// as Redis' active expiry does, and the others stay.
func TestExpiryCycleDropsKeys(t *testing.T) {
	d := newDB()
	now := nowMs()
	for i := range 1000 {
		d.set(fmt.Sprint("keep", i), entry{val: []byte("v")})
		d.set(fmt.Sprint("gone", i), entry{val: []byte("v"), exp: now - 1})
	}
	d.set("later", entry{val: []byte("v"), exp: now + 60_000})
	for rounds := 0; d.expires() > 1; rounds++ {
		require.Less(t, rounds, 200, "the expiry cycle does not converge")
		d.sweep(20, now)
	}
	require.Equal(t, 1001, d.size())
	require.Equal(t, 1, d.expires())
	d.set("later", entry{val: []byte("no ttl now")})
	require.Zero(t, d.expires())
}

// TestPlainAOFTornTail: the plaintext baseline cuts a command torn by a
// crash off its AOF, like aof-load-truncated, and keeps the rest.
func TestPlainAOFTornTail(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Dir: dir, PlainAOF: true, Fsync: aof.Always}
	addr, stop := startInProcess(t, cfg)
	c := dial(t, addr)
	c.must(t, "SET", "a", "1")
	c.must(t, "SET", "b", "2")
	stop()
	path := filepath.Join(dir, cachecrypt.DiskPersistence, "plain", "appendonly.aof")
	whole, err := os.ReadFile(path)
	require.NoError(t, err)
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteString("*3\r\n$3\r\nSET\r\n$1\r\nc\r\n$5\r\nhal")
	require.NoError(t, err)
	require.NoError(t, f.Close())

	addr, stop = startInProcess(t, cfg)
	c = dial(t, addr)
	require.Equal(t, "2", c.must(t, "GET", "b"))
	require.Nil(t, c.must(t, "GET", "c"))
	c.must(t, "SET", "d", "4")
	stop()
	after, err := os.ReadFile(path)
	require.NoError(t, err)
	require.True(t, bytes.HasPrefix(after, whole), "the torn command was not cut off before appending")
	require.NotContains(t, string(after), "hal")
}
