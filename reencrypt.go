package cachecrypt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cachecrypt/cachecrypt/aof"
	"github.com/cachecrypt/cachecrypt/internal/atomicfile"
)

// reencryptMarker, in the persistence disk's directory, records the DEK
// version a re-encryption moves every file to, so a crash mid-way resumes
// toward the same version.
const reencryptMarker = "reencrypt.target"

// ReencryptOptions configure Reencrypt.
type ReencryptOptions struct {
	// BytesPerSecond caps the plaintext rewritten per second, so the
	// rewrite does not starve the cache's own I/O. Zero means no cap.
	BytesPerSecond int64
	// Progress, if set, is called as files are rewritten.
	Progress func(ReencryptProgress)
}

// ReencryptProgress reports how far a Reencrypt has come.
type ReencryptProgress struct {
	File        string // the file being rewritten
	Done, Total int64  // plaintext bytes of that file
	// Result is set on the last report for a file: ReencryptRewritten or
	// ReencryptSkipped.
	Result string
}

// Results of a file in ReencryptProgress.
const (
	// ReencryptRewritten: the file now uses the new DEK.
	ReencryptRewritten = "rewritten"
	// ReencryptSkipped: the copy was dropped because a newer file replaced
	// the one being copied meanwhile; a newer file under an old DEK is
	// rewritten in a later round.
	ReencryptSkipped = "skipped: replaced by a newer file meanwhile"
)

// reencryptRounds bounds how often Reencrypt goes round again because
// writers that started under an old DEK committed files meanwhile.
const reencryptRounds = 8

// ReencryptPending reports whether a Reencrypt was started and not
// finished (a crash interrupted it); call Reencrypt to resume it.
func (i *Instance) ReencryptPending() bool {
	_, err := os.Stat(filepath.Join(i.DiskDir(DiskPersistence), reencryptMarker))
	return err == nil
}

// Reencrypt makes a fresh DEK active and rewrites every file of the
// persistence disk under it (the snapshot, and the AOF through a rewrite
// that keeps concurrent appends), then retires the old DEK versions. After
// it, no file depends on a key that an earlier KEK ever wrapped: a copy of
// an old keyring is useless even to someone who can still use the old KEK.
// Run it after SetEncryption when that matters.
//
// It runs online, in the caller's goroutine (start it with go to run it in
// the background), at most opts.BytesPerSecond. A crash leaves
// ReencryptPending true; calling Reencrypt again resumes toward the same DEK
// version, skipping files already rewritten. Pass the open *AOF, if any:
// two logs cannot share the directory.
func (i *Instance) Reencrypt(ctx context.Context, log *AOF, opts ReencryptOptions) error {
	target, err := i.reencryptTarget()
	if err != nil {
		return fmt.Errorf("cachecrypt.Reencrypt: %w", err)
	}
	for range reencryptRounds {
		if err := i.reencryptSnapshot(ctx, target, opts); err != nil {
			return fmt.Errorf("cachecrypt.Reencrypt: snapshot: %w", err)
		}
		if err := i.reencryptAOF(ctx, log, target, opts); err != nil {
			return fmt.Errorf("cachecrypt.Reencrypt: AOF: %w", err)
		}
		i.step("reencrypt retire")
		i.awaitLeasesFrom(DiskPersistence, target)
		done, err := i.retireBelow(target)
		if err != nil {
			return fmt.Errorf("cachecrypt.Reencrypt: %w", err)
		}
		if done {
			i.step("reencrypt done")
			if err := os.Remove(filepath.Join(i.DiskDir(DiskPersistence), reencryptMarker)); err != nil {
				return fmt.Errorf("cachecrypt.Reencrypt: %w", err)
			}
			return nil
		}
	}
	return fmt.Errorf("cachecrypt.Reencrypt: files under DEK versions older than %d kept being written for %d rounds; call Reencrypt again", target, reencryptRounds)
}

// reencryptTarget returns the DEK version a re-encryption moves files to:
// that of a pending one, or the next version. The target is recorded before
// the DEK is rotated, so a crash between the two resumes cleanly.
func (i *Instance) reencryptTarget() (uint32, error) {
	keys, err := i.Keyring(DiskPersistence)
	if err != nil {
		return 0, err
	}
	marker := filepath.Join(i.DiskDir(DiskPersistence), reencryptMarker)
	var target uint32
	b, err := os.ReadFile(marker)
	switch {
	case err == nil:
		v, perr := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32)
		if perr != nil {
			return 0, fmt.Errorf("%s is damaged (%q); delete it to start the re-encryption afresh", marker, b)
		}
		target = uint32(v)
	case errors.Is(err, fs.ErrNotExist):
		target = keys.Active() + 1
		if err := atomicfile.WriteFile(i.cfg.fs, marker, []byte(strconv.FormatUint(uint64(target), 10)), 0o600); err != nil {
			return 0, err
		}
		i.step("reencrypt marked")
	default:
		return 0, err
	}
	for keys.Active() < target {
		if err := i.RotateDEK(); err != nil {
			return 0, err
		}
	}
	return target, nil
}

// reencryptSnapshot rewrites the snapshot under the target version, unless
// a newer snapshot replaces it meanwhile: that one is never overwritten by
// the copy of an older one.
func (i *Instance) reencryptSnapshot(ctx context.Context, target uint32, opts ReencryptOptions) error {
	old, err := i.openSnapshot()
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer old.Close()
	if old.Header().DEKVersion >= target {
		return nil
	}
	hdr, total := old.Header(), old.Size()
	err = i.saveSnapshot(func(w io.Writer) error {
		_, err := io.Copy(throttle(ctx, w, opts, i.SnapshotPath(), total), old)
		return err
	}, &hdr)
	i.step("reencrypt snapshot")
	result := ReencryptRewritten
	if errors.Is(err, errSnapshotChanged) {
		result, err = ReencryptSkipped, nil
	}
	if err == nil && opts.Progress != nil {
		opts.Progress(ReencryptProgress{File: i.SnapshotPath(), Done: total, Total: total, Result: result})
	}
	return err
}

func (i *Instance) reencryptAOF(ctx context.Context, log *AOF, target uint32, opts ReencryptOptions) error {
	keys, err := i.Keyring(DiskPersistence)
	if err != nil {
		return err
	}
	if _, err := os.Stat(i.AOFDir()); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if log == nil {
		parts, err := aof.Parts(i.AOFDir(), keys, aof.Options{})
		if err != nil {
			return err
		}
		if oldest(parts) >= target {
			return nil
		}
		if log, err = i.OpenAOF(aof.Options{Fsync: aof.Always}); err != nil {
			return err
		}
		defer log.Close()
	}
	oldest, err := log.oldestVersion()
	if err != nil || oldest >= target {
		return err
	}
	defer i.lease(DiskPersistence, oldest)() // the replay reads them
	r, rw, err := log.snapshotForRewrite()
	if err != nil {
		return err
	}
	defer r.Close()
	if _, err := io.Copy(throttle(ctx, rw, opts, i.AOFDir(), -1), r); err != nil {
		rw.Abort()
		return err
	}
	i.step("reencrypt aof")
	if err := rw.Commit(); err != nil {
		return err
	}
	if err := i.recordAOF(log.Generation()); err != nil {
		return err
	}
	if opts.Progress != nil {
		opts.Progress(ReencryptProgress{File: i.AOFDir(), Result: ReencryptRewritten})
	}
	return nil
}

// snapshotForRewrite holds appends back while it takes a replay of
// everything appended so far and starts a rewrite, so the replay is exactly
// the state the new base must hold.
func (a *AOF) snapshotForRewrite() (*aof.Reader, *aof.Rewrite, error) {
	a.gate.Lock()
	defer a.gate.Unlock()
	l, err := a.current("Replay")
	if err != nil {
		return nil, nil, err
	}
	r, err := l.Replay()
	if err != nil {
		return nil, nil, err
	}
	rw, err := l.StartRewrite(aof.BaseAOF)
	if err != nil {
		r.Close()
		return nil, nil, err
	}
	return r, rw, nil
}

func oldest(parts []aof.PartInfo) uint32 {
	v := ^uint32(0)
	for _, p := range parts {
		v = min(v, p.DEK)
	}
	return v
}

// retireBelow retires what no file uses on the persistence disk and
// reports whether every version below v is gone.
func (i *Instance) retireBelow(v uint32) (bool, error) {
	i.admin.Lock()
	defer i.admin.Unlock()
	if err := i.usable(); err != nil {
		return false, err
	}
	if _, err := i.retireUnused(DiskPersistence); err != nil {
		return false, err
	}
	return slices.Min(i.diskKeys(DiskPersistence).Info().Versions) >= v, nil
}

// throttledWriter caps the bytes written per second and reports progress.
type throttledWriter struct {
	ctx   context.Context
	w     io.Writer
	opts  ReencryptOptions
	file  string
	total int64
	done  int64
	start time.Time
}

func throttle(ctx context.Context, w io.Writer, opts ReencryptOptions, file string, total int64) io.Writer {
	return &throttledWriter{ctx: ctx, w: w, opts: opts, file: file, total: total, start: time.Now()}
}

func (t *throttledWriter) Write(p []byte) (int, error) {
	if err := t.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := t.w.Write(p)
	t.done += int64(n)
	if t.opts.Progress != nil {
		t.opts.Progress(ReencryptProgress{File: t.file, Done: t.done, Total: t.total})
	}
	if rate := t.opts.BytesPerSecond; rate > 0 && err == nil {
		due := t.start.Add(time.Duration(float64(t.done) / float64(rate) * float64(time.Second)))
		select {
		case <-time.After(time.Until(due)):
		case <-t.ctx.Done():
			return n, t.ctx.Err()
		}
	}
	return n, err
}
