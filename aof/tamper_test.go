package aof

import (
	"bytes"
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// fixture is a log with a multi-frame base, a closed incremental part and
// an open one, plus a copy of an older manifest.
type fixture struct {
	keys       Keys
	dir        string
	base       string // part names
	closed     string
	open       string
	oldMan     []byte // manifest before the last Open (same parts, one fewer incr)
	preRewrite []byte // manifest before the rewrite
	want       []byte // the replayed plaintext
}

func newFixture(t testing.TB) *fixture {
	keys, dir := newKeys(t), t.TempDir()
	f := &fixture{keys: keys, dir: dir}
	l, err := Open(dir, keys, Options{})
	require.NoError(t, err)
	require.NoError(t, l.Append([]byte("gone;")))
	f.preRewrite = readManifest(t, dir)
	base := bytes.Repeat([]byte("base."), baseChunk/5+100) // two frames
	require.NoError(t, l.Rewrite(BaseRDB, func(w *Rewrite) error { _, err := w.Write(base); return err }))
	for _, s := range []string{"c1;", "c2;", "c3;"} {
		require.NoError(t, l.Append([]byte(s)))
	}
	f.base, f.closed = l.man.base().Name, l.cur.name
	require.NoError(t, l.Close())
	f.oldMan = readManifest(t, dir)
	l, err = Open(dir, keys, Options{})
	require.NoError(t, err)
	for _, s := range []string{"o1;", "o2;", "o3;"} {
		require.NoError(t, l.Append([]byte(s)))
	}
	f.open = l.cur.name
	require.NoError(t, l.Close())
	f.want = append(base, "c1;c2;c3;o1;o2;o3;"...)
	require.Equal(t, f.want, replayAll(t, dir, keys, Options{}))
	return f
}

func readManifest(t testing.TB, dir string) []byte {
	b, err := os.ReadFile(filepath.Join(dir, "appendonly.aof.manifest"))
	require.NoError(t, err)
	return b
}

// copyTo copies the fixture's directory.
func (f *fixture) copyTo(t *testing.T) string {
	dst := t.TempDir()
	ents, _ := os.ReadDir(f.dir)
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(f.dir, e.Name()))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dst, e.Name()), b, 0o600))
	}
	return dst
}

// frames returns the offset of every frame of a part and the file's bytes.
func frames(t *testing.T, path string) ([]int64, []byte) {
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	h, err := readHeader(bytes.NewReader(b))
	require.NoError(t, err)
	var offs []int64
	for off := h.size(); off < int64(len(b)); off += frameHdrSize + int64(binary.BigEndian.Uint32(b[off:])) {
		offs = append(offs, off)
	}
	return offs, b
}

func edit(t *testing.T, path string, fn func(b []byte) []byte) {
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, fn(b), 0o600))
}

func TestTamper(t *testing.T) {
	f := newFixture(t)
	type tc struct {
		name   string
		do     func(t *testing.T, dir string)
		want   error  // nil: undetectable by design (see FORMAT.md)
		strict bool   // Options.Strict: refuse a torn tail
		got    []byte // for want == nil: the expected plaintext
	}
	flipIn := func(part string, frame int, at int64) func(*testing.T, string) {
		return func(t *testing.T, dir string) {
			p := filepath.Join(dir, part)
			offs, _ := frames(t, p)
			edit(t, p, func(b []byte) []byte { b[offs[frame]+at] ^= 0x01; return b })
		}
	}
	cut := func(part string, frame int, at int64) func(*testing.T, string) {
		return func(t *testing.T, dir string) {
			p := filepath.Join(dir, part)
			offs, _ := frames(t, p)
			require.NoError(t, os.Truncate(p, offs[frame]+at))
		}
	}
	cases := []tc{
		{name: "bit flipped in base frame", do: flipIn(f.base, 1, 100), want: ErrAuthentication},
		{name: "bit flipped in base tag", do: func(t *testing.T, dir string) {
			p := filepath.Join(dir, f.base)
			edit(t, p, func(b []byte) []byte { b[len(b)-1] ^= 0x80; return b })
		}, want: ErrAuthentication},
		{name: "bit flipped in closed incr frame", do: flipIn(f.closed, 1, frameHdrSize+1), want: ErrAuthentication},
		{name: "bit flipped in open incr middle frame", do: flipIn(f.open, 1, frameHdrSize), want: ErrAuthentication},
		{name: "bit flipped in open incr middle frame, strict", do: flipIn(f.open, 1, frameHdrSize), want: ErrAuthentication, strict: true},
		{name: "bit flipped in frame length", do: flipIn(f.closed, 0, 3), want: ErrAuthentication},
		{name: "bit flipped in last frame length of open part", do: flipIn(f.open, 2, 2), want: ErrAuthentication},
		{name: "bit flipped in header salt", do: func(t *testing.T, dir string) {
			edit(t, filepath.Join(dir, f.closed), func(b []byte) []byte { b[20] ^= 1; return b })
		}, want: ErrAuthentication},
		{name: "bit flipped in header generation", do: func(t *testing.T, dir string) {
			edit(t, filepath.Join(dir, f.open), func(b []byte) []byte { b[fixedHdrSize-2] ^= 1; return b })
		}, want: ErrAuthentication},
		{name: "bit flipped in header magic", do: func(t *testing.T, dir string) {
			edit(t, filepath.Join(dir, f.base), func(b []byte) []byte { b[0] ^= 1; return b })
		}, want: ErrFormat},
		{name: "header version changed", do: func(t *testing.T, dir string) {
			edit(t, filepath.Join(dir, f.base), func(b []byte) []byte { b[len(magic)] = 9; return b })
		}, want: ErrVersion},
		{name: "manifest field edited", do: func(t *testing.T, dir string) {
			edit(t, filepath.Join(dir, "appendonly.aof.manifest"), func(b []byte) []byte {
				return bytes.Replace(b, []byte("frames 3"), []byte("frames 2"), 1)
			})
		}, want: ErrAuthentication},
		{name: "manifest bit flipped in mac", do: func(t *testing.T, dir string) {
			edit(t, filepath.Join(dir, "appendonly.aof.manifest"), func(b []byte) []byte {
				i := bytes.LastIndex(b, []byte("mac ")) + 10
				if b[i] == '0' {
					b[i] = '1'
				} else {
					b[i] = '0'
				}
				return b
			})
		}, want: ErrAuthentication},
		{name: "manifest truncated", do: func(t *testing.T, dir string) {
			p := filepath.Join(dir, "appendonly.aof.manifest")
			st, _ := os.Stat(p)
			require.NoError(t, os.Truncate(p, st.Size()-30))
		}, want: ErrTruncated},
		{name: "manifest lines reordered", do: func(t *testing.T, dir string) {
			edit(t, filepath.Join(dir, "appendonly.aof.manifest"), func(b []byte) []byte {
				ls := strings.Split(string(b), "\n")
				ls[5], ls[6] = ls[6], ls[5]
				return []byte(strings.Join(ls, "\n"))
			})
		}, want: ErrAuthentication},
		{name: "truncated mid-frame in closed incr", do: cut(f.closed, 1, 5), want: ErrTruncated},
		{name: "truncated between frames in closed incr", do: cut(f.closed, 2, 0), want: ErrTruncated},
		{name: "truncated between frames in base", do: cut(f.base, 1, 0), want: ErrTruncated},
		{name: "bytes appended to closed incr", do: func(t *testing.T, dir string) {
			edit(t, filepath.Join(dir, f.closed), func(b []byte) []byte { return append(b, 0, 0, 0, 0) })
		}, want: ErrAuthentication},
		{name: "torn final frame of open incr, strict", do: cut(f.open, 2, 10), want: ErrTruncated, strict: true},
		{name: "torn final frame header of open incr, strict", do: cut(f.open, 2, 3), want: ErrTruncated, strict: true},
		{name: "zero-filled tail of open incr, strict", do: func(t *testing.T, dir string) {
			edit(t, filepath.Join(dir, f.open), func(b []byte) []byte { return append(b, make([]byte, 100)...) })
		}, want: ErrTruncated, strict: true},
		{name: "torn final frame of open incr, cut by default", do: cut(f.open, 2, 10),
			got: bytes.Clone(f.want[:len(f.want)-3])},
		{name: "torn final frame header of open incr, cut by default", do: cut(f.open, 2, 3),
			got: bytes.Clone(f.want[:len(f.want)-3])},
		{name: "zero-filled tail of open incr, cut by default", do: func(t *testing.T, dir string) {
			edit(t, filepath.Join(dir, f.open), func(b []byte) []byte { return append(b, make([]byte, 100)...) })
		}, got: f.want},
		{name: "open incr cut between frames: undetectable without external state", do: cut(f.open, 2, 0),
			got: bytes.Clone(f.want[:len(f.want)-3])},
		{name: "frames swapped within a part", do: func(t *testing.T, dir string) {
			p := filepath.Join(dir, f.closed)
			offs, b := frames(t, p)
			a, c := bytes.Clone(b[offs[0]:offs[1]]), bytes.Clone(b[offs[1]:offs[2]])
			out := append(append(append(bytes.Clone(b[:offs[0]]), c...), a...), b[offs[2]:]...)
			require.NoError(t, os.WriteFile(p, out, 0o600))
		}, want: ErrAuthentication},
		{name: "frame copied from another part", do: func(t *testing.T, dir string) {
			src := filepath.Join(dir, f.closed)
			so, sb := frames(t, src)
			dst := filepath.Join(dir, f.open)
			do, db := frames(t, dst)
			out := append(append(bytes.Clone(db[:do[0]]), sb[so[0]:so[1]]...), db[do[1]:]...)
			require.NoError(t, os.WriteFile(dst, out, 0o600))
		}, want: ErrAuthentication},
		{name: "frame duplicated (replayed) within a part", do: func(t *testing.T, dir string) {
			p := filepath.Join(dir, f.open)
			offs, b := frames(t, p)
			out := append(bytes.Clone(b[:offs[2]]), b[offs[1]:offs[2]]...)
			require.NoError(t, os.WriteFile(p, out, 0o600))
		}, want: ErrAuthentication},
		{name: "part swapped for another", do: func(t *testing.T, dir string) {
			b, _ := os.ReadFile(filepath.Join(dir, f.closed))
			require.NoError(t, os.WriteFile(filepath.Join(dir, f.open), b, 0o600))
		}, want: ErrAuthentication},
		{name: "missing part", do: func(t *testing.T, dir string) {
			require.NoError(t, os.Remove(filepath.Join(dir, f.closed)))
		}, want: ErrMissingPart},
		{name: "manifest rolled back one generation", do: func(t *testing.T, dir string) {
			require.NoError(t, os.WriteFile(filepath.Join(dir, "appendonly.aof.manifest"), f.oldMan, 0o600))
		}, want: ErrRollback},
		{name: "manifest rolled back across a rewrite", do: func(t *testing.T, dir string) {
			require.NoError(t, os.WriteFile(filepath.Join(dir, "appendonly.aof.manifest"), f.preRewrite, 0o600))
		}, want: ErrMissingPart},
		{name: "manifest missing", do: func(t *testing.T, dir string) {
			require.NoError(t, os.Remove(filepath.Join(dir, "appendonly.aof.manifest")))
		}, want: os.ErrNotExist},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := f.copyTo(t)
			c.do(t, dir)
			opts := Options{Strict: c.strict}
			r, err := Replay(dir, f.keys, opts)
			var got []byte
			if err == nil {
				got, err = io.ReadAll(r)
				r.Close()
			}
			if c.want != nil {
				require.ErrorIs(t, err, c.want)
				t.Log(err)
				_, err = Check(dir, f.keys, opts)
				require.ErrorIs(t, err, c.want, "Check")
				if c.want == os.ErrNotExist {
					return
				}
				// Open checks the structure and the open part's frames;
				// damage inside the base or a closed part shows on replay.
				l, err := Open(dir, f.keys, opts)
				if err == nil {
					defer l.Close()
					var r *Reader
					if r, err = l.Replay(); err == nil {
						_, err = io.ReadAll(r)
						r.Close()
					}
				}
				require.ErrorIs(t, err, c.want, "Open and replay")
				return
			}
			require.NoError(t, err)
			require.Equal(t, c.got, got)
			l, err := Open(dir, f.keys, opts)
			require.NoError(t, err)
			require.NoError(t, l.Close())
			require.Equal(t, c.got, replayAll(t, dir, f.keys, Options{}))
		})
	}
}

func TestWrongKeys(t *testing.T) {
	f := newFixture(t)
	other := newKeys(t) // same disk id, other DEK
	_, err := Replay(f.dir, other, Options{})
	require.ErrorIs(t, err, ErrAuthentication)
	_, err = Open(f.dir, other, Options{})
	require.ErrorIs(t, err, ErrAuthentication)
}
