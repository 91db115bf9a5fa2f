package aof

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"

	"github.com/cachecrypt/cachecrypt/internal/integrity"
)

const manifestMagic = "cachecrypt-aof-manifest 1"

// Part types, as in Redis' manifest.
const (
	TypeBase    = 'b' // the base: an RDB preamble or commands
	TypeIncr    = 'i' // an incremental file of appended commands
	TypeHistory = 'h' // a part replaced by a rewrite, kept only by name
)

// entry is one line of a manifest.
type entry struct {
	Name       string
	Seq        uint64
	Type       byte
	DEK        uint32
	Generation uint64
	Salt       [saltSize]byte
	Closed     bool // Size and Frames are final
	Size       int64
	Frames     uint64
}

// manifest is the authenticated list of a directory's parts.
type manifest struct {
	DiskID     string
	Generation uint64
	MACDEK     uint32
	MACSalt    [saltSize]byte
	Entries    []entry // base first, then history, then incrementals in order
	MAC        [sha256.Size]byte
}

func (m *manifest) body() []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s\ndisk %s\ngeneration %d\nmac-key %d %x\n", manifestMagic, strconv.Quote(m.DiskID), m.Generation, m.MACDEK, m.MACSalt)
	for _, e := range m.Entries {
		fmt.Fprintf(&b, "file %s seq %d type %c", e.Name, e.Seq, e.Type)
		if e.Type != TypeHistory {
			fmt.Fprintf(&b, " dek %d gen %d salt %x", e.DEK, e.Generation, e.Salt)
			if e.Closed {
				fmt.Fprintf(&b, " size %d frames %d", e.Size, e.Frames)
			}
		}
		b.WriteByte('\n')
	}
	return b.Bytes()
}

func (m *manifest) marshal() []byte {
	return fmt.Appendf(m.body(), "mac %x\n", m.MAC)
}

func (m *manifest) macKey(keys Keys) ([]byte, error) {
	return keys.FileKey(m.MACDEK, purposeManifest, m.MACSalt[:])
}

func (m *manifest) computeMAC(keys Keys) ([sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	k, err := m.macKey(keys)
	if err != nil {
		return sum, err
	}
	defer clear(k)
	h := hmac.New(sha256.New, k)
	h.Write(m.body())
	copy(sum[:], h.Sum(nil))
	return sum, nil
}

// seal draws a fresh MAC salt under the active DEK and computes the MAC.
func (m *manifest) seal(keys Keys) error {
	m.MACDEK = keys.Active()
	rand.Read(m.MACSalt[:])
	mac, err := m.computeMAC(keys)
	m.MAC = mac
	return err
}

func (m *manifest) verify(keys Keys) error {
	if m.DiskID != keys.DiskID() {
		return fmt.Errorf("manifest belongs to disk %q, the keyring to disk %q: %w", m.DiskID, keys.DiskID(), integrity.ErrAuthentication)
	}
	mac, err := m.computeMAC(keys)
	if err != nil {
		return err
	}
	if !hmac.Equal(mac[:], m.MAC[:]) {
		return fmt.Errorf("manifest MAC mismatch: %w", integrity.ErrAuthentication)
	}
	return nil
}

func (m *manifest) clone() *manifest {
	c := *m
	c.Entries = append([]entry(nil), m.Entries...)
	return &c
}

// base returns the base entry.
func (m *manifest) base() *entry {
	for i := range m.Entries {
		if m.Entries[i].Type == TypeBase {
			return &m.Entries[i]
		}
	}
	return nil
}

// last returns the last incremental entry, or nil.
func (m *manifest) last() *entry {
	if e := &m.Entries[len(m.Entries)-1]; e.Type == TypeIncr {
		return e
	}
	return nil
}

// parts returns the entries with a file: base then incrementals.
func (m *manifest) parts() []entry {
	var ps []entry
	for _, e := range m.Entries {
		if e.Type != TypeHistory {
			ps = append(ps, e)
		}
	}
	return ps
}

// parseManifest parses a manifest without authenticating it. It accepts
// only the canonical form: marshal(parseManifest(b)) == b.
func parseManifest(b []byte) (*manifest, error) {
	m, err := parseManifestLoose(b)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(m.marshal(), b) {
		return nil, fmt.Errorf("manifest is not in canonical form: %w", integrity.ErrFormat)
	}
	return m, nil
}

func parseManifestLoose(b []byte) (*manifest, error) {
	bad := func(line int, what string) error {
		return fmt.Errorf("manifest line %d: %s: %w", line+1, what, integrity.ErrFormat)
	}
	if len(b) == 0 || b[len(b)-1] != '\n' {
		return nil, fmt.Errorf("manifest does not end with a newline: %w", integrity.ErrTruncated)
	}
	lines := strings.Split(string(b[:len(b)-1]), "\n")
	if len(lines) < 6 {
		return nil, fmt.Errorf("manifest has %d lines, want at least 6: %w", len(lines), integrity.ErrTruncated)
	}
	if lines[0] != manifestMagic {
		if strings.HasPrefix(lines[0], "cachecrypt-aof-manifest ") {
			return nil, fmt.Errorf("manifest %q: %w", lines[0], integrity.ErrVersion)
		}
		return nil, bad(0, "not a cachecrypt AOF manifest")
	}
	m := &manifest{}
	id, ok := strings.CutPrefix(lines[1], "disk ")
	if !ok {
		return nil, bad(1, "want disk")
	}
	var err error
	if m.DiskID, err = strconv.Unquote(id); err != nil {
		return nil, bad(1, "disk id is not a quoted string")
	}
	g, ok := strings.CutPrefix(lines[2], "generation ")
	if !ok {
		return nil, bad(2, "want generation")
	}
	if m.Generation, err = strconv.ParseUint(g, 10, 64); err != nil {
		return nil, bad(2, "bad generation")
	}
	f := strings.Split(lines[3], " ")
	if len(f) != 3 || f[0] != "mac-key" {
		return nil, bad(3, "want mac-key VERSION SALT")
	}
	if m.MACDEK, err = parseU32(f[1]); err != nil {
		return nil, bad(3, "bad DEK version")
	}
	if err := parseHex(m.MACSalt[:], f[2]); err != nil {
		return nil, bad(3, "bad salt")
	}
	for i := 4; i < len(lines)-1; i++ {
		e, err := parseEntry(lines[i])
		if err != nil {
			return nil, bad(i, err.Error())
		}
		m.Entries = append(m.Entries, e)
	}
	mac, ok := strings.CutPrefix(lines[len(lines)-1], "mac ")
	if !ok {
		return nil, bad(len(lines)-1, "want mac (manifest truncated?)")
	}
	if err := parseHex(m.MAC[:], mac); err != nil {
		return nil, bad(len(lines)-1, "bad mac")
	}
	return m, nil
}

func parseEntry(line string) (entry, error) {
	var e entry
	f := strings.Split(line, " ")
	if len(f) < 6 || f[0] != "file" || f[2] != "seq" || f[4] != "type" || len(f[5]) != 1 {
		return e, fmt.Errorf("want file NAME seq N type T")
	}
	e.Name = f[1]
	if err := checkName(e.Name); err != nil {
		return e, err
	}
	var err error
	if e.Seq, err = strconv.ParseUint(f[3], 10, 64); err != nil {
		return e, fmt.Errorf("bad seq")
	}
	e.Type = f[5][0]
	f = f[6:]
	switch {
	case e.Type == TypeHistory && len(f) == 0:
		return e, nil
	case e.Type == TypeHistory:
		return e, fmt.Errorf("history entry with extra fields")
	case e.Type != TypeBase && e.Type != TypeIncr:
		return e, fmt.Errorf("unknown type %q", e.Type)
	}
	if (len(f) != 6 && len(f) != 10) || f[0] != "dek" || f[2] != "gen" || f[4] != "salt" {
		return e, fmt.Errorf("want dek V gen G salt S [size N frames F]")
	}
	if e.DEK, err = parseU32(f[1]); err != nil {
		return e, fmt.Errorf("bad dek")
	}
	if e.Generation, err = strconv.ParseUint(f[3], 10, 64); err != nil {
		return e, fmt.Errorf("bad gen")
	}
	if err := parseHex(e.Salt[:], f[5]); err != nil {
		return e, fmt.Errorf("bad salt")
	}
	if len(f) == 10 {
		if f[6] != "size" || f[8] != "frames" {
			return e, fmt.Errorf("want size N frames F")
		}
		e.Closed = true
		if e.Size, err = strconv.ParseInt(f[7], 10, 64); err != nil || e.Size < 0 {
			return e, fmt.Errorf("bad size")
		}
		if e.Frames, err = strconv.ParseUint(f[9], 10, 64); err != nil {
			return e, fmt.Errorf("bad frames")
		}
	}
	return e, nil
}

// check enforces the structure: one base (closed) first, then history
// entries, then incrementals of which only the last may be open.
func (m *manifest) check() error {
	bad := func(s string, a ...any) error {
		return fmt.Errorf("manifest: %s: %w", fmt.Sprintf(s, a...), integrity.ErrFormat)
	}
	if len(m.Entries) == 0 || m.Entries[0].Type != TypeBase {
		return bad("first entry must be the base")
	}
	if m.Generation == 0 {
		return bad("generation 0")
	}
	names := map[string]bool{}
	seenIncr := false
	for i, e := range m.Entries {
		if names[e.Name] {
			return bad("file %s listed twice", e.Name)
		}
		names[e.Name] = true
		switch e.Type {
		case TypeBase:
			if i != 0 {
				return bad("second base %s", e.Name)
			}
			if !e.Closed {
				return bad("base %s has no size", e.Name)
			}
		case TypeHistory:
			if seenIncr {
				return bad("history entry %s after an incremental file", e.Name)
			}
		case TypeIncr:
			seenIncr = true
			if !e.Closed && i != len(m.Entries)-1 {
				return bad("incremental file %s has no size but is not the last", e.Name)
			}
		}
		if e.Type != TypeHistory && e.Generation > m.Generation {
			return bad("file %s from generation %d, newer than the manifest's %d", e.Name, e.Generation, m.Generation)
		}
	}
	return nil
}

// checkName accepts the part names this package writes and Redis writes
// with a plain appendfilename: no path separators, spaces or quotes.
func checkName(n string) error {
	if n == "" || len(n) > 255 || n == "." || n == ".." {
		return fmt.Errorf("bad file name %q", n)
	}
	for _, c := range []byte(n) {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
		if !ok {
			return fmt.Errorf("file name %q: only letters, digits and . _ - are supported", n)
		}
	}
	return nil
}

func parseU32(s string) (uint32, error) {
	v, err := strconv.ParseUint(s, 10, 32)
	return uint32(v), err
}

func parseHex(dst []byte, s string) error {
	if len(s) != 2*len(dst) {
		return fmt.Errorf("want %d hex digits", 2*len(dst))
	}
	_, err := hex.Decode(dst, []byte(s))
	return err
}

// redisManifest is Redis 7's plain manifest: "file NAME seq N type T" lines.
type redisEntry struct {
	Name string
	Seq  uint64
	Type byte
}

func parseRedisManifest(b []byte) ([]redisEntry, error) {
	var es []redisEntry
	for i, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		if len(f) != 6 || f[0] != "file" || f[2] != "seq" || f[4] != "type" || len(f[5]) != 1 {
			return nil, fmt.Errorf("line %d of the Redis manifest %q: want \"file NAME seq N type T\" (quoted names and other keys are not supported): %w", i+1, line, integrity.ErrFormat)
		}
		if err := checkName(f[1]); err != nil {
			return nil, fmt.Errorf("line %d of the Redis manifest: %v: %w", i+1, err, integrity.ErrFormat)
		}
		seq, err := strconv.ParseUint(f[3], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("line %d of the Redis manifest: bad seq: %w", i+1, integrity.ErrFormat)
		}
		t := f[5][0]
		if t != TypeBase && t != TypeIncr && t != TypeHistory {
			return nil, fmt.Errorf("line %d of the Redis manifest: unknown type %q: %w", i+1, t, integrity.ErrFormat)
		}
		es = append(es, redisEntry{Name: f[1], Seq: seq, Type: t})
	}
	return es, nil
}

func marshalRedisManifest(m *manifest) []byte {
	var b bytes.Buffer
	for _, e := range m.Entries {
		fmt.Fprintf(&b, "file %s seq %d type %c\n", e.Name, e.Seq, e.Type)
	}
	return b.Bytes()
}
