package nvme

import (
	"encoding/binary"
	"fmt"
)

// On-disk layout, specified in FORMAT.md, section "Pages (NVMe flash)":
//
//	[0, P)                header block: magic, version, page size, page count
//	[P, P+M)              metadata region: one 32-byte record per page
//	[P+M, P+M+N*P)        data region: N pages of P bytes, ciphertext only
//
// M is N*32 rounded up to a whole number of pages, so every data page starts
// on a page boundary.
const (
	magic      = "CCNVMEPG"
	version    = 1
	headerSize = 32

	tagSize    = 16
	nonceSize  = 12
	recordSize = 32 // tag 16 | counter 8 | session 8
	adSize     = 1 + 8 + 8 + 8

	maxPages = 1 << 40
)

type layout struct {
	pageSize int
	pages    int64
	meta     int64 // offset of the metadata region
	data     int64 // offset of the data region
}

func newLayout(pageSize int, pages int64) layout {
	ps := int64(pageSize)
	metaBytes := (pages*recordSize + ps - 1) / ps * ps
	return layout{pageSize: pageSize, pages: pages, meta: ps, data: ps + metaBytes}
}

func (l layout) size() int64 { return l.data + l.pages*int64(l.pageSize) }

// fitLayout returns the layout for pages pages, or for as many pages as fit
// in size bytes when pages is 0.
func fitLayout(pageSize int, pages, size int64) (layout, error) {
	ps := int64(pageSize)
	if pages == 0 {
		pages = max(0, (size-ps)/(ps+recordSize))
		for pages > 0 && newLayout(pageSize, pages).size() > size {
			pages--
		}
		if pages == 0 {
			return layout{}, fmt.Errorf("device of %d bytes holds no %d-byte page; set Options.Pages to size a new file", size, pageSize)
		}
	}
	l := newLayout(pageSize, min(pages, maxPages))
	if l.size() > size {
		return layout{}, fmt.Errorf("device of %d bytes is too small for %d pages of %d bytes (needs %d)", size, pages, pageSize, l.size())
	}
	return l, nil
}

func (l layout) recordOffset(page int64) int64 { return l.meta + page*recordSize }
func (l layout) dataOffset(page int64) int64   { return l.data + page*int64(l.pageSize) }

// header returns the header block. It holds no secret and no session id: the
// store never trusts it, and rewrites it at every Open.
func (l layout) header() []byte {
	h := make([]byte, headerSize)
	copy(h, magic)
	binary.BigEndian.PutUint16(h[8:], version)
	binary.BigEndian.PutUint32(h[12:], uint32(l.pageSize))
	binary.BigEndian.PutUint64(h[16:], uint64(l.pages))
	binary.BigEndian.PutUint64(h[24:], uint64(l.data))
	return h
}

// setNonce returns the 12-byte nonce of counter value ctr: four zero bytes,
// then ctr big-endian.
func (sc *scratch) setNonce(ctr uint64) []byte {
	sc.nonce = [nonceSize]byte{}
	binary.BigEndian.PutUint64(sc.nonce[4:], ctr)
	return sc.nonce[:]
}

// setAD returns the associated data of a page: version, session id, page
// number and generation.
func (sc *scratch) setAD(session uint64, page int64, gen uint64) []byte {
	sc.ad[0] = version
	binary.BigEndian.PutUint64(sc.ad[1:], session)
	binary.BigEndian.PutUint64(sc.ad[9:], uint64(page))
	binary.BigEndian.PutUint64(sc.ad[17:], gen)
	return sc.ad[:]
}

// setRecord fills the metadata record: tag, counter, session id.
func (sc *scratch) setRecord(tag []byte, ctr, session uint64) {
	copy(sc.rec[:tagSize], tag)
	binary.BigEndian.PutUint64(sc.rec[16:], ctr)
	binary.BigEndian.PutUint64(sc.rec[24:], session)
}

// record parses the counter and session id of the metadata record.
func (sc *scratch) record() (ctr, session uint64) {
	return binary.BigEndian.Uint64(sc.rec[16:]), binary.BigEndian.Uint64(sc.rec[24:])
}
