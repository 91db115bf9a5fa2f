package nvme

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var updateVector = flag.Bool("update", false, "rewrite testdata/page-v1.json")

// vector is the committed test vector of the page format (FORMAT.md, "Pages
// (NVMe flash)"): one page written with a fixed key and session id.
type vector struct {
	Comment    string `json:"comment"`
	Key        string `json:"key"`
	Session    uint64 `json:"session"`
	PageSize   int    `json:"page_size"`
	Pages      int64  `json:"pages"`
	Page       int64  `json:"page"`
	Generation uint64 `json:"generation"`
	Counter    uint64 `json:"counter"`
	Plaintext  string `json:"plaintext"`
	Header     string `json:"header"`
	Record     string `json:"record"`
	Ciphertext string `json:"ciphertext"`
}

type memDev []byte

func (m memDev) ReadAt(p []byte, off int64) (int, error)  { return copy(p, m[off:]), nil }
func (m memDev) WriteAt(p []byte, off int64) (int, error) { return copy(m[off:], p), nil }

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestVector writes the vector's page with its key and checks the bytes on
// the device, then opens the committed bytes in a fresh store with that key.
func TestVector(t *testing.T) {
	path := filepath.Join("testdata", "page-v1.json")
	var v vector
	if *updateVector {
		key := make([]byte, 32)
		for i := range key {
			key[i] = byte(i)
		}
		pt := make([]byte, 512)
		for i := range pt {
			pt[i] = byte(i % 251)
		}
		v = vector{Comment: "nvme page format v1: page 2 of 3, first write of the session (generation 1, counter 1)",
			Key: hex.EncodeToString(key), Session: 0x0102030405060708, PageSize: 512, Pages: 3, Page: 2,
			Generation: 1, Counter: 1, Plaintext: hex.EncodeToString(pt)}
	} else {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(data, &v); err != nil {
			t.Fatal(err)
		}
	}
	lay := newLayout(v.PageSize, v.Pages)
	dev := make(memDev, lay.size())
	s, err := newStoreKey(dev, lay, unhex(t, v.Key), v.Session)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.WritePage(v.Page, unhex(t, v.Plaintext)); err != nil {
		t.Fatal(err)
	}
	header := dev[:headerSize]
	record := dev[lay.recordOffset(v.Page):][:recordSize]
	ct := dev[lay.dataOffset(v.Page):][:v.PageSize]
	if *updateVector {
		v.Header, v.Record, v.Ciphertext = hex.EncodeToString(header), hex.EncodeToString(record), hex.EncodeToString(ct)
		out, _ := json.MarshalIndent(v, "", "  ")
		if err := os.WriteFile(path, append(out, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	for _, c := range []struct {
		name      string
		got, want []byte
	}{{"header", header, unhex(t, v.Header)}, {"record", record, unhex(t, v.Record)}, {"ciphertext", ct, unhex(t, v.Ciphertext)}} {
		if !bytes.Equal(c.got, c.want) {
			t.Errorf("%s = %x\nwant %x", c.name, c.got, c.want)
		}
	}

	// Recompute the page from the FORMAT.md recipe alone: AES-256-GCM,
	// nonce = 4 zero bytes | counter, AD = version | session | page | generation.
	block, _ := aes.NewCipher(unhex(t, v.Key))
	gcm, _ := cipher.NewGCM(block)
	nonce := binary.BigEndian.AppendUint64(make([]byte, 4), v.Counter)
	ad := binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64([]byte{1}, v.Session), uint64(v.Page)), v.Generation)
	sealed := gcm.Seal(nil, nonce, unhex(t, v.Plaintext), ad)
	wantRec := binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(bytes.Clone(sealed[v.PageSize:]), v.Counter), v.Session)
	if !bytes.Equal(sealed[:v.PageSize], unhex(t, v.Ciphertext)) || !bytes.Equal(wantRec, unhex(t, v.Record)) {
		t.Error("the vector does not follow the FORMAT.md recipe")
	}

	// Open the committed bytes: a store with the vector's key and the
	// page's expected generation in memory.
	dev2 := make(memDev, lay.size())
	copy(dev2[lay.recordOffset(v.Page):], unhex(t, v.Record))
	copy(dev2[lay.dataOffset(v.Page):], unhex(t, v.Ciphertext))
	s2, err := newStoreKey(dev2, lay, unhex(t, v.Key), v.Session)
	if err != nil {
		t.Fatal(err)
	}
	s2.gens[v.Page] = v.Generation
	got := make([]byte, v.PageSize)
	if err := s2.ReadPage(v.Page, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, unhex(t, v.Plaintext)) {
		t.Fatal("vector plaintext mismatch")
	}
}

// TestKeyNeverOnDisk: the page key appears nowhere in the file, and Close
// zeroes it.
func TestKeyNeverOnDisk(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flash.img")
	s, err := Open(path, &Options{Pages: 64})
	if err != nil {
		t.Fatal(err)
	}
	key := bytes.Clone(s.key)
	p := make([]byte, s.PageSize())
	for i := range s.Pages() {
		if err := s.WritePage(i, p); err != nil {
			t.Fatal(err)
		}
	}
	keyRef := s.key
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(keyRef, make([]byte, 32)) {
		t.Fatal("Close left the key in memory")
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, part := range [][]byte{key, key[:16], key[16:]} {
		if bytes.Contains(raw, part) {
			t.Fatal("key bytes found in the store's file")
		}
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Fatalf("store created %d files, want only its own", len(entries))
	}
}

// TestNoncesNeverRepeat: counters handed out across scratch buffers,
// including dropped ones, are unique.
func TestNoncesNeverRepeat(t *testing.T) {
	s, err := newStoreKey(make(memDev, newLayout(512, 1).size()), newLayout(512, 1), make([]byte, 32), 1)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[uint64]bool{}
	for i := range 1000 {
		sc := &scratch{}
		for range i % 70 { // some scratches use part of their block, some more than one block
			c := s.nextCounter(sc)
			if c == 0 || seen[c] {
				t.Fatalf("counter %d repeated or zero", c)
			}
			seen[c] = true
		}
	}
}

// TestWriteAllocs: the hot path does not allocate per page.
func TestWriteAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items at random under the race detector")
	}
	lay := newLayout(4096, 4)
	s, err := newStoreKey(make(memDev, lay.size()), lay, make([]byte, 32), 1)
	if err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 4096)
	s.WritePage(0, p)
	if n := testing.AllocsPerRun(100, func() { s.WritePage(1, p) }); n > 0 {
		t.Errorf("WritePage allocates %.1f times per page", n)
	}
	if n := testing.AllocsPerRun(100, func() { s.ReadPage(1, p) }); n > 0 {
		t.Errorf("ReadPage allocates %.1f times per page", n)
	}
}
