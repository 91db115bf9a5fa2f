package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/cachecrypt/cachecrypt"
	"github.com/cachecrypt/cachecrypt/aof"
	"github.com/cachecrypt/cachecrypt/dek"
	"github.com/cachecrypt/cachecrypt/internal/atomicfile"
	"github.com/cachecrypt/cachecrypt/internal/stream"
	"github.com/cachecrypt/cachecrypt/rdb"
	"github.com/spf13/cobra"
)

// verifyResult is the outcome of verifying one file or AOF directory.
type verifyResult struct {
	File    string `json:"file"`
	Kind    string `json:"kind"`
	OK      bool   `json:"ok"`
	Detail  string `json:"detail,omitempty"`  // what was checked
	Error   string `json:"error,omitempty"`   // what is wrong
	Damaged string `json:"damaged,omitempty"` // the damaged file (an AOF part)
	Segment *int64 `json:"segment,omitempty"` // damaged stream segment
	Offset  *int64 `json:"offset,omitempty"`  // byte offset of the damage in the file
	Code    int    `json:"exit_code"`
	err     error
}

func (a *app) verifyCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "verify FILE|DIR...",
		Short: "Authenticate every segment, frame and keyring; exit 2 names damage",
		Long: `verify authenticates everything it is given without writing any plaintext:
every segment of an encrypted stream (RDB snapshot, staging or temp file),
every frame of an encrypted AOF directory (with its manifest), and the MAC of
each keyring (which needs its KEK). A directory is searched recursively;
an instance directory's disks are all verified. A plain RDB file given by
name is checked for its CRC-64 trailer.

Each damaged item is reported with the file and where the damage is: the
segment number and byte offset of a stream, the part and offset of an AOF.
The exit code is 2 if anything is damaged, else 3 if a key was unavailable,
else 4 for any other failure, 0 when all is intact.`,
		Example: `  cachecrypt verify /var/lib/cache
  cachecrypt verify --json /var/lib/cache/persistence/dump.rdb`,
		Args: args(cobra.MinimumNArgs(1)),
		RunE: func(c *cobra.Command, argv []string) error {
			var results []verifyResult
			for _, p := range argv {
				rs, err := a.verifyPath(c.Context(), p)
				if err != nil {
					return err
				}
				results = append(results, rs...)
			}
			return a.reportVerify(results)
		},
	}
}

func (a *app) reportVerify(results []verifyResult) error {
	worst := exitOK
	for _, r := range results {
		switch {
		case r.Code == exitDamaged:
			worst = exitDamaged
		case r.Code == exitKey && worst != exitDamaged:
			worst = exitKey
		case r.Code != exitOK && worst == exitOK:
			worst = r.Code
		}
	}
	if a.json {
		if err := a.printJSON(map[string]any{"ok": worst == exitOK, "exit_code": worst, "results": results}); err != nil {
			return err
		}
	} else {
		hinted := map[string]bool{}
		for _, r := range results {
			if r.OK {
				fmt.Fprintf(a.stdout, "OK       %s (%s: %s)\n", r.File, r.Kind, r.Detail)
				continue
			}
			label := "FAILED  "
			if r.Code == exitDamaged {
				label = "DAMAGED "
			}
			where := ""
			if r.Damaged != "" && r.Damaged != r.File {
				where += " part " + r.Damaged
			}
			if r.Segment != nil {
				where += fmt.Sprintf(" segment %d", *r.Segment)
			}
			if r.Offset != nil {
				where += fmt.Sprintf(" offset %d", *r.Offset)
			}
			if where != "" {
				where = " at" + where
			}
			fmt.Fprintf(a.stdout, "%s %s (%s)%s: %s\n", label, r.File, r.Kind, where, r.Error)
			if h := hint(r.err); h != "" && !hinted[h] {
				hinted[h] = true
				fmt.Fprintf(a.stdout, "         what to do: %s\n", h)
			}
		}
	}
	if worst != exitOK {
		return &silentError{worst}
	}
	return nil
}

// verifyPath verifies a file or a directory tree.
func (a *app) verifyPath(ctx context.Context, path string) ([]verifyResult, error) {
	k, err := detect(path)
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	switch k {
	case kindAOFPart, kindAOFManifest:
		return []verifyResult{a.verifyAOF(ctx, filepath.Dir(path))}, nil
	case kindAOFDir:
		return []verifyResult{a.verifyAOF(ctx, path)}, nil
	case kindKeyring, kindStream, kindPlainRDB, kindNVMe:
		return []verifyResult{a.verifyFile(ctx, path, k)}, nil
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return nil, usagef("verify: %s is not a cachecrypt file (no keyring, stream or AOF magic bytes)", path)
	}
	// A directory: every file by its magic, each AOF directory once.
	var results []verifyResult
	var files []string
	aofDirs := map[string]bool{}
	err = filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if detectDir(p) == kindAOFDir {
				aofDirs[p] = true
				return filepath.SkipDir
			}
			return nil
		}
		if d.Type().IsRegular() {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	for _, f := range files {
		if atomicfile.IsTemp(filepath.Base(f)) {
			results = append(results, verifyResult{File: f, Kind: "temporary", OK: true,
				Detail: "not verified: a file being written (or left by a crash, removed at the next open)"})
			continue
		}
		switch k, _ := detect(f); k {
		case kindKeyring, kindStream, kindNVMe:
			results = append(results, a.verifyFile(ctx, f, k))
		}
	}
	dirs := make([]string, 0, len(aofDirs))
	for d := range aofDirs {
		dirs = append(dirs, d)
	}
	sort.Strings(dirs)
	for _, d := range dirs {
		results = append(results, a.verifyAOF(ctx, d))
	}
	if len(results) == 0 {
		return nil, usagef("verify: no cachecrypt files under %s", path)
	}
	return results, nil
}

// failed fills r from err.
func failed(r verifyResult, err error) verifyResult {
	r.OK, r.err, r.Error, r.Code = false, err, err.Error(), exitCode(err)
	return r
}

func (a *app) verifyFile(ctx context.Context, path string, k kind) verifyResult {
	r := verifyResult{File: path, Kind: string(k), OK: true}
	switch k {
	case kindKeyring:
		kr, err := a.openKeyringFile(ctx, path)
		if err != nil {
			return failed(r, err)
		}
		r.Detail = fmt.Sprintf("MAC ok, DEK v%d active of %d held, %s", kr.Active(), len(kr.Info().Versions), descString(kr.Descriptor()))
		kr.Close()
	case kindPlainRDB:
		f, err := os.Open(path)
		if err != nil {
			return failed(r, err)
		}
		defer f.Close()
		info, err := rdb.CheckPlain(f)
		if err != nil {
			return failed(r, fmt.Errorf("plain RDB: %w", err))
		}
		r.Detail = fmt.Sprintf("plain RDB v%d, %d bytes, CRC-64 %016x", info.Version, info.Size, info.Checksum)
	case kindStream:
		return a.verifyStream(ctx, r)
	case kindNVMe:
		r.Detail = "not verified: " + nvmeNote
	}
	return r
}

var segmentRE = regexp.MustCompile(`segment (\d+)`)

func (a *app) verifyStream(ctx context.Context, r verifyResult) verifyResult {
	f, h, size, err := openStreamFile(r.File)
	if err != nil {
		return failed(r, err)
	}
	defer f.Close()
	r.Kind = "stream/" + h.Purpose
	kr, err := a.openKeyring(ctx, r.File, h.DiskID)
	if err != nil {
		return failed(r, err)
	}
	defer kr.Close()
	// locate fills the segment and its offset from an error naming one.
	locate := func(r verifyResult, err error) verifyResult {
		r = failed(r, err)
		if m := segmentRE.FindStringSubmatch(err.Error()); m != nil {
			seg, _ := strconv.ParseInt(m[1], 10, 64)
			off := int64(h.Len()) + seg*int64(h.SegmentSize+stream.TagSize)
			r.Segment, r.Offset = &seg, &off
		}
		return r
	}
	sr, err := stream.NewReader(f, size, kr, h.Purpose)
	if err != nil {
		return locate(r, err)
	}
	nseg := (size - int64(h.Len()) + int64(h.SegmentSize+stream.TagSize) - 1) / int64(h.SegmentSize+stream.TagSize)
	r.Detail = fmt.Sprintf("%d segments of %d bytes, DEK v%d, %s", nseg, h.SegmentSize, h.DEKVersion, h.Compression)
	if h.Compression != stream.None {
		if err := sr.Verify(); err != nil {
			return locate(r, err)
		}
		return r
	}
	// Uncompressed: authenticate in chunks, with a progress bar.
	bar := a.progress(sr.Size(), "verify "+filepath.Base(r.File), true)
	defer bar.Finish()
	// About 4 MiB of whole segments at a time (one at least).
	chunk := make([]byte, max(1, (4<<20)/h.SegmentSize)*h.SegmentSize)
	defer clear(chunk)
	for off := int64(0); off < sr.Size(); off += int64(len(chunk)) {
		if err := ctx.Err(); err != nil {
			return failed(r, err)
		}
		n, err := sr.ReadAt(chunk, off)
		bar.Add(n)
		if err != nil && !(errors.Is(err, io.EOF) && off+int64(n) == sr.Size()) {
			r = locate(r, err)
			if r.Segment == nil {
				seg := (off + int64(n)) / int64(h.SegmentSize)
				o := int64(h.Len()) + seg*int64(h.SegmentSize+stream.TagSize)
				r.Segment, r.Offset = &seg, &o
			}
			return r
		}
	}
	return r
}

// openStreamFile opens an encrypted stream file and parses its header.
func openStreamFile(path string) (*os.File, stream.Header, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, stream.Header{}, 0, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, stream.Header{}, 0, err
	}
	b := make([]byte, stream.MaxHeaderLen)
	n, _ := f.ReadAt(b, 0)
	h, _, err := stream.ParseHeader(b[:n])
	if err != nil {
		f.Close()
		return nil, stream.Header{}, 0, fmt.Errorf("%s: %w", path, err)
	}
	return f, h, st.Size(), nil
}

var aofOffsetRE = regexp.MustCompile(`(\S+) at offset (\d+)`)

// aofName returns the base name (Redis' appendfilename) of the encrypted
// AOF in dir, from its manifest's file name, and the manifest's disk id.
func aofName(dir string) (name, diskID string, err error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", "", err
	}
	for _, e := range entries {
		if n, ok := strings.CutSuffix(e.Name(), ".manifest"); ok {
			b, err := os.ReadFile(filepath.Join(dir, e.Name()))
			if err != nil {
				return "", "", err
			}
			if m, err := parseAOFManifest(b); err == nil {
				return n, m.DiskID, nil
			}
		}
	}
	return "", "", fmt.Errorf("%s holds no encrypted AOF manifest: %w", dir, cachecrypt.ErrFormat)
}

// openAOFKeys finds the AOF directory's name and unwraps its keyring.
func (a *app) openAOFKeys(ctx context.Context, dir string) (string, *dek.Keyring, error) {
	name, diskID, err := aofName(dir)
	if err != nil {
		return "", nil, err
	}
	kr, err := a.openKeyring(ctx, dir, diskID)
	return name, kr, err
}

func (a *app) verifyAOF(ctx context.Context, dir string) verifyResult {
	r := verifyResult{File: dir, Kind: string(kindAOFDir), OK: true}
	name, kr, err := a.openAOFKeys(ctx, dir)
	if err != nil {
		return failed(r, err)
	}
	defer kr.Close()
	rep, err := aof.Check(dir, kr, aof.Options{Name: name})
	if err != nil {
		r = failed(r, err)
		if rep != nil && rep.Damage != nil {
			off := rep.Damage.Offset
			r.Damaged, r.Offset = rep.Damage.File, &off
			r.Error += " (a torn tail: 'cachecrypt aof fix' cuts it off)"
		} else if m := aofOffsetRE.FindStringSubmatch(err.Error()); m != nil {
			off, _ := strconv.ParseInt(m[2], 10, 64)
			r.Damaged, r.Offset = m[1], &off
		}
		return r
	}
	var frames, bytes int64
	for _, p := range rep.Parts {
		frames += int64(p.Frames)
		bytes += p.Bytes
	}
	r.Detail = fmt.Sprintf("manifest generation %d, %d parts, %d frames, %d bytes", rep.Generation, len(rep.Parts), frames, bytes)
	return r
}
