package main

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/cachecrypt/cachecrypt"
)

// kind is what a file or directory holds, found by its magic bytes.
type kind string

const (
	kindKeyring     kind = "keyring"      // a disk's keyring (dek)
	kindStream      kind = "stream"       // an encrypted stream: RDB snapshot, staging or temp file
	kindAOFPart     kind = "aof-part"     // one part of an encrypted AOF
	kindAOFManifest kind = "aof-manifest" // the manifest of an encrypted AOF
	kindAOFDir      kind = "aof-dir"      // an encrypted AOF directory
	kindNVMe        kind = "nvme-pages"   // the Flash tier's ephemeral page store
	kindPlainRDB    kind = "plain-rdb"    // an unencrypted Redis RDB
	kindPlainAOFDir kind = "plain-aof-dir"
	kindInstance    kind = "instance" // a cachecrypt instance directory
	kindPipe        kind = "pipe"     // a pipe or device, read once, never peeked at
	kindUnknown     kind = "unknown"
)

// Magic bytes of the formats (FORMAT.md).
const (
	magicKeyring     = "CCKEYRNG"
	magicStream      = "CCST"
	magicAOFPart     = "CCAOF\r\n\x1a"
	magicAOFManifest = "cachecrypt-aof-manifest 1"
	magicNVMe        = "CCNVMEPG"
	magicPlainRDB    = "REDIS"
)

// detect returns the kind of the file or directory at path.
func detect(path string) (kind, error) {
	st, err := os.Stat(path)
	if err != nil {
		return kindUnknown, err
	}
	if st.IsDir() {
		return detectDir(path), nil
	}
	if !st.Mode().IsRegular() {
		return kindPipe, nil // peeking would consume what a pipe yields
	}
	f, err := os.Open(path)
	if err != nil {
		return kindUnknown, err
	}
	defer f.Close()
	var b [32]byte
	n, _ := io.ReadFull(f, b[:])
	return detectBytes(b[:n]), nil
}

func detectBytes(b []byte) kind {
	switch {
	case bytes.HasPrefix(b, []byte(magicKeyring)):
		return kindKeyring
	case bytes.HasPrefix(b, []byte(magicStream)):
		return kindStream
	case bytes.HasPrefix(b, []byte(magicAOFPart)):
		return kindAOFPart
	case bytes.HasPrefix(b, []byte(magicAOFManifest)):
		return kindAOFManifest
	case bytes.HasPrefix(b, []byte(magicNVMe)):
		return kindNVMe
	case bytes.HasPrefix(b, []byte(magicPlainRDB)):
		return kindPlainRDB
	}
	return kindUnknown
}

func detectDir(dir string) kind {
	if _, err := os.Stat(filepath.Join(dir, cachecrypt.DiskPersistence, "keyring")); err == nil {
		return kindInstance
	}
	entries, _ := os.ReadDir(dir)
	plainManifest := false
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".manifest") {
			continue
		}
		k, _ := detect(filepath.Join(dir, e.Name()))
		if k == kindAOFManifest {
			return kindAOFDir
		}
		plainManifest = true
	}
	if plainManifest {
		return kindPlainAOFDir
	}
	return kindUnknown
}

// aofPartHeader is the plaintext header of an encrypted AOF part
// (FORMAT.md, "AOF"): magic, format version, kind, DEK version, salt,
// sequence number, manifest generation and disk id.
type aofPartHeader struct {
	Version    int    `json:"format_version"`
	Type       string `json:"type"`
	DEKVersion uint32 `json:"dek_version"`
	Seq        uint64 `json:"seq"`
	Generation uint64 `json:"generation"`
	DiskID     string `json:"disk_id"`
	Salt       string `json:"salt"`
	HeaderLen  int    `json:"header_len"`
}

const aofFixedHeader = len(magicAOFPart) + 1 + 1 + 4 + 32 + 8 + 8 + 1

func parseAOFPartHeader(b []byte) (aofPartHeader, error) {
	if len(b) < aofFixedHeader {
		return aofPartHeader{}, fmt.Errorf("AOF part header: %d bytes, less than %d: %w", len(b), aofFixedHeader, cachecrypt.ErrTruncated)
	}
	if string(b[:len(magicAOFPart)]) != magicAOFPart {
		return aofPartHeader{}, fmt.Errorf("not an encrypted AOF part (bad magic): %w", cachecrypt.ErrFormat)
	}
	p := b[len(magicAOFPart):]
	h := aofPartHeader{Version: int(p[0])}
	switch p[1] {
	case 'b':
		h.Type = "base"
	case 'i':
		h.Type = "incr"
	default:
		h.Type = fmt.Sprintf("unknown (%q)", p[1])
	}
	h.DEKVersion = binary.BigEndian.Uint32(p[2:])
	h.Salt = hex.EncodeToString(p[6:38])
	h.Seq = binary.BigEndian.Uint64(p[38:])
	h.Generation = binary.BigEndian.Uint64(p[46:])
	n := int(p[54])
	if len(b) < aofFixedHeader+n {
		return h, fmt.Errorf("AOF part header: disk id cut short: %w", cachecrypt.ErrTruncated)
	}
	h.DiskID = string(b[aofFixedHeader : aofFixedHeader+n])
	h.HeaderLen = aofFixedHeader + n
	return h, nil
}

// aofManifest is what inspect shows of an encrypted AOF manifest.
type aofManifest struct {
	DiskID     string   `json:"disk_id"`
	Generation string   `json:"generation"`
	Parts      []string `json:"parts"`
}

func parseAOFManifest(b []byte) (aofManifest, error) {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) == 0 || lines[0] != magicAOFManifest {
		return aofManifest{}, fmt.Errorf("not an encrypted AOF manifest (bad first line): %w", cachecrypt.ErrFormat)
	}
	var m aofManifest
	for _, l := range lines[1:] {
		switch {
		case strings.HasPrefix(l, "disk "):
			m.DiskID = strings.Trim(strings.TrimPrefix(l, "disk "), `"`)
		case strings.HasPrefix(l, "generation "):
			m.Generation = strings.TrimPrefix(l, "generation ")
		case strings.HasPrefix(l, "file "):
			m.Parts = append(m.Parts, manifestPartSummary(l))
		}
	}
	return m, nil
}

// manifestPartSummary drops the salt from a manifest line, keeping name,
// seq, type, DEK version, size and frames.
func manifestPartSummary(line string) string {
	f := strings.Fields(line)
	var out []string
	for i := 0; i < len(f); i++ {
		if f[i] == "salt" && i+1 < len(f) {
			i++
			continue
		}
		out = append(out, f[i])
	}
	return strings.Join(out, " ")
}

// nvmeHeader is the header block of an NVMe page store (FORMAT.md, "Pages
// (NVMe flash)"): magic, version, page size, page count, data offset.
type nvmeHeader struct {
	Version  uint16
	PageSize uint32
	Pages    uint64
	Data     uint64
}

const nvmeHeaderSize = 32

func parseNVMeHeader(b []byte) (nvmeHeader, error) {
	if len(b) < nvmeHeaderSize {
		return nvmeHeader{}, fmt.Errorf("NVMe page store header: %d bytes, less than %d: %w", len(b), nvmeHeaderSize, cachecrypt.ErrTruncated)
	}
	if string(b[:len(magicNVMe)]) != magicNVMe {
		return nvmeHeader{}, fmt.Errorf("not an NVMe page store (bad magic): %w", cachecrypt.ErrFormat)
	}
	return nvmeHeader{
		Version:  binary.BigEndian.Uint16(b[8:]),
		PageSize: binary.BigEndian.Uint32(b[12:]),
		Pages:    binary.BigEndian.Uint64(b[16:]),
		Data:     binary.BigEndian.Uint64(b[24:]),
	}, nil
}

// nvmeNote says why an NVMe page store cannot be decrypted or verified.
const nvmeNote = "ephemeral: its key lived only in the memory of the process that opened the store and died with it; the Flash tier takes the MMK only, and there is nothing to decrypt or verify offline"
