package main

import (
	"fmt"

	"github.com/cachecrypt/cachecrypt/internal/stream"
)

// inspectStream adds the header fields of an encrypted stream.
func (a *app) inspectStream(r *record, path string) error {
	f, h, size, err := openStreamFile(path)
	if err != nil {
		return fmt.Errorf("inspect: %w", err)
	}
	f.Close()
	per := int64(h.SegmentSize + stream.TagSize)
	nseg := (size - int64(h.Len()) + per - 1) / per
	r.add("format_version", stream.FormatVersion).add("purpose", h.Purpose).add("disk_id", h.DiskID).
		add("dek_version", h.DEKVersion).add("segment_size", h.SegmentSize).add("compression", h.Compression.String()).
		add("header_len", h.Len()).add("size", size).add("segments", nseg)
	if h.Compression == stream.None && nseg > 0 {
		r.add("plaintext_size", size-int64(h.Len())-nseg*stream.TagSize)
	}
	a.addKeyringKEK(r, path, h.DiskID)
	return nil
}
