package aof

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// A synthetic Redis 7 appendonlydir with a history entry and two
// incremental parts: Import then Export gives the same files back, and a
// Log opened on the import goes on after the last part.
func TestImportExport(t *testing.T) {
	keys := newKeys(t)
	plain := t.TempDir()
	files := map[string]string{
		"appendonly.aof.3.base.rdb": "REDIS0010\xfa\x09redis-ver\x067.0.15\xff" + string(make([]byte, 8)),
		"appendonly.aof.4.incr.aof": "*2\r\n$6\r\nSELECT\r\n$1\r\n0\r\n*3\r\n$3\r\nSET\r\n$1\r\na\r\n$1\r\n1\r\n",
		"appendonly.aof.5.incr.aof": "",
		"appendonly.aof.6.incr.aof": "*3\r\n$3\r\nSET\r\n$1\r\nb\r\n$1\r\n2\r\n",
		"appendonly.aof.manifest": "file appendonly.aof.3.base.rdb seq 3 type b\nfile appendonly.aof.2.base.rdb seq 2 type h\n" +
			"file appendonly.aof.4.incr.aof seq 4 type i\nfile appendonly.aof.5.incr.aof seq 5 type i\nfile appendonly.aof.6.incr.aof seq 6 type i\n",
	}
	for n, c := range files {
		require.NoError(t, os.WriteFile(filepath.Join(plain, n), []byte(c), 0o644))
	}
	enc := filepath.Join(t.TempDir(), "enc")
	require.NoError(t, Import(plain, enc, keys, Options{}))
	assertNoPlaintext(t, enc, "SELECT")
	out := filepath.Join(t.TempDir(), "out")
	require.NoError(t, Export(enc, out, keys, Options{}))
	requireSameFiles(t, plain, out)
	require.Error(t, Export(enc, out, keys, Options{}), "export into a non-empty directory")
	require.Error(t, Import(plain, enc, keys, Options{}), "import into a non-empty directory")

	l, err := Open(enc, keys, Options{})
	require.NoError(t, err)
	require.NoError(t, l.Append([]byte("+more")))
	require.NoError(t, l.Close())
	out2 := filepath.Join(t.TempDir(), "out")
	require.NoError(t, Export(enc, out2, keys, Options{}))
	m, err := os.ReadFile(filepath.Join(out2, "appendonly.aof.manifest"))
	require.NoError(t, err)
	require.Equal(t, files["appendonly.aof.manifest"]+"file appendonly.aof.7.incr.aof seq 7 type i\n", string(m))
	b, err := os.ReadFile(filepath.Join(out2, "appendonly.aof.7.incr.aof"))
	require.NoError(t, err)
	require.Equal(t, "+more", string(b))
}

func TestImportRejects(t *testing.T) {
	keys := newKeys(t)
	for name, man := range map[string]string{
		"quoted name":   "file \"a b\" seq 1 type b\n",
		"no base first": "file appendonly.aof.1.incr.aof seq 1 type i\n",
		"unknown type":  "file appendonly.aof.1.base.rdb seq 1 type x\n",
		"path in name":  "file ../x seq 1 type b\n",
	} {
		t.Run(name, func(t *testing.T) {
			plain := t.TempDir()
			require.NoError(t, os.WriteFile(filepath.Join(plain, "appendonly.aof.manifest"), []byte(man), 0o644))
			err := Import(plain, filepath.Join(t.TempDir(), "enc"), keys, Options{})
			require.ErrorIs(t, err, ErrFormat)
		})
	}
}

func TestFixRefusesDamageBeforeTheTail(t *testing.T) {
	f := newFixture(t)
	dir := f.copyTo(t)
	p := filepath.Join(dir, f.closed)
	offs, _ := frames(t, p)
	edit(t, p, func(b []byte) []byte { b[offs[1]+frameHdrSize] ^= 1; return b })
	before, _ := os.ReadFile(p)
	_, err := Fix(dir, f.keys, Options{})
	require.ErrorIs(t, err, ErrAuthentication)
	require.ErrorContains(t, err, f.closed)
	after, _ := os.ReadFile(p)
	require.Equal(t, before, after, "Fix must not touch damage it cannot fix")
}

// Fix cuts only a torn tail: a frame of the open part that fails
// authentication is tampering (or damage), not a crash, whether authentic
// frames follow it or not. Fix refuses, names the part and offset, and
// leaves the file as it was.
func TestFixRefusesTamperedOpenPart(t *testing.T) {
	f := newFixture(t)
	for _, frame := range []int{1, 2} { // a middle frame, the last frame
		t.Run(fmt.Sprintf("frame %d", frame), func(t *testing.T) {
			dir := f.copyTo(t)
			p := filepath.Join(dir, f.open)
			offs, _ := frames(t, p)
			edit(t, p, func(b []byte) []byte { b[offs[frame]+frameHdrSize] ^= 1; return b })
			before, _ := os.ReadFile(p)
			rep, err := Fix(dir, f.keys, Options{})
			require.ErrorIs(t, err, ErrAuthentication)
			require.ErrorContains(t, err, fmt.Sprintf("%s at offset %d", f.open, offs[frame]))
			require.Nil(t, rep.Damage, "not a torn tail")
			after, _ := os.ReadFile(p)
			require.Equal(t, before, after, "Fix must not cut authentic frames")
			_, err = Open(dir, f.keys, Options{})
			require.ErrorIs(t, err, ErrAuthentication, "Open refuses it too")
		})
	}
}

// Fix cuts a torn tail of the open part and nothing else.
func TestFixCutsTornTail(t *testing.T) {
	f := newFixture(t)
	dir := f.copyTo(t)
	p := filepath.Join(dir, f.open)
	offs, _ := frames(t, p)
	require.NoError(t, os.Truncate(p, offs[2]+frameHdrSize+1))
	rep, err := Fix(dir, f.keys, Options{})
	require.NoError(t, err)
	require.ErrorIs(t, rep.Damage.Err, ErrTruncated)
	require.Equal(t, offs[2], rep.Damage.Offset)
	require.Equal(t, int64(frameHdrSize+1), rep.Damage.Dropped)
	require.Equal(t, f.want[:len(f.want)-3], replayAll(t, dir, f.keys, Options{Strict: true}))
}
