package main

import (
	"bytes"
	"testing"
)

// The header parsers of inspect take any bytes without panicking, and a
// part header they accept has the length they report.
func FuzzInspectParsers(f *testing.F) {
	hdr := []byte(magicAOFPart + "\x01b\x00\x00\x00\x01")
	hdr = append(hdr, bytes.Repeat([]byte{7}, 32+8+8)...)
	hdr = append(hdr, 4)
	hdr = append(hdr, "disk"...)
	f.Add(hdr)
	f.Add([]byte(magicAOFManifest + "\ndisk \"d\"\ngeneration 3\nfile a seq 1 type b dek 1 gen 1 salt 00\nmac 00\n"))
	f.Add([]byte(magicKeyring + "\x00\x01"))
	f.Add([]byte("REDIS0011"))
	f.Fuzz(func(t *testing.T, b []byte) {
		detectBytes(b)
		parseNVMeHeader(b)
		if h, err := parseAOFPartHeader(b); err == nil {
			if h.HeaderLen > len(b) || h.HeaderLen != aofFixedHeader+len(h.DiskID) {
				t.Fatalf("header length %d for %d bytes, disk id %q", h.HeaderLen, len(b), h.DiskID)
			}
		}
		if m, err := parseAOFManifest(b); err == nil {
			for _, p := range m.Parts {
				if bytes.Contains([]byte(p), []byte(" salt ")) {
					t.Fatalf("salt shown: %q", p)
				}
			}
		}
	})
}

func TestParseAOFPartHeader(t *testing.T) {
	hdr := []byte(magicAOFPart + "\x01i\x00\x00\x00\x02")
	hdr = append(hdr, bytes.Repeat([]byte{7}, 32)...)
	hdr = append(hdr, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 9, 2)
	hdr = append(hdr, "d1"...)
	h, err := parseAOFPartHeader(hdr)
	if err != nil {
		t.Fatal(err)
	}
	want := aofPartHeader{Version: 1, Type: "incr", DEKVersion: 2, Seq: 5, Generation: 9, DiskID: "d1",
		Salt: "0707070707070707070707070707070707070707070707070707070707070707", HeaderLen: len(hdr)}
	if h != want {
		t.Fatalf("got %+v, want %+v", h, want)
	}
	if _, err := parseAOFPartHeader(hdr[:len(hdr)-1]); err == nil {
		t.Fatal("a cut disk id was accepted")
	}
}
