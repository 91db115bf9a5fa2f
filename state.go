package cachecrypt

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/cachecrypt/cachecrypt/aof"
	"github.com/cachecrypt/cachecrypt/dek"
	"github.com/cachecrypt/cachecrypt/internal/atomicfile"
	"github.com/cachecrypt/cachecrypt/internal/stream"
	"github.com/cachecrypt/cachecrypt/kek"
)

// ErrRollback: a keyring, the snapshot or the AOF on disk is older than the
// one this instance last committed, or is missing: an old copy was put
// back (or a file deleted). Nothing is served from it. To accept a backup
// you restored on purpose, remove the state record the error names; the
// next Open records what is on disk.
var ErrRollback = errors.New("cachecrypt: data older than the last committed state")

// errOtherInstance: a state record that authenticates but belongs to
// another instance.
var errOtherInstance = errors.New("another instance's state record")

// The state record lives beside the platform key, outside the data. It is
// two slots written in turn (one fsync per update; a torn write spoils one
// slot and the other still holds the state before it), each sealed by the
// MMK.
const (
	stateLabel = "cachecrypt instance state v1\x00"
	stateSlots = 2
)

// state is what the instance last committed: each keyring's generation
// and digest, the snapshot's identity (its stream salt) and the AOF
// manifest's generation. Anything on disk at least this new is accepted
// (a crash may leave a disk one commit ahead); anything older is refused.
type state struct {
	Seq      uint64                  `json:"seq"`
	Instance string                  `json:"instance"`
	Keyrings map[string]keyringState `json:"keyrings"`
	Snapshot string                  `json:"snapshot,omitempty"` // hex salt
	// Pending is set while a snapshot commit is in flight: a crash before
	// its rename leaves Previous ("" for none) on disk. Cleared once the
	// new one is seen, and at Close.
	Pending  bool   `json:"pending,omitempty"`
	Previous string `json:"previous_snapshot,omitempty"`
	AOF      uint64 `json:"aof_generation,omitempty"`
}

type keyringState struct {
	Generation uint64 `json:"generation"`
	Digest     string `json:"digest"`
}

// stateStore reads and writes an instance's state record.
type stateStore struct {
	fs   atomicfile.FS
	mu   sync.Mutex
	base string // path prefix of the slots: BASE-0, BASE-1
	id   string
	mmk  *kek.MMK
	cur  state
	have bool // a record exists
}

func (s *stateStore) slot(n uint64) string { return fmt.Sprintf("%s-%d", s.base, n%stateSlots) }

// load reads the newest intact slot. No slot at all is a first open.
func (s *stateStore) load(ctx context.Context) error {
	var errs []error
	found := 0
	for n := range uint64(stateSlots) {
		b, err := os.ReadFile(s.slot(n))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		found++
		st, err := s.open(ctx, b, err)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s.slot(n), err))
			continue
		}
		if !s.have || st.Seq > s.cur.Seq {
			s.cur, s.have = st, true
		}
	}
	if !s.have && found == 1 && !errors.Is(errs[0], errOtherInstance) {
		return nil // the first write of the record was torn by a crash: nothing was recorded yet
	}
	if !s.have && len(errs) > 0 {
		return fmt.Errorf("%w: the state record is unreadable (%w); if you restored this instance on purpose, remove %s-* and open it again",
			ErrRollback, errors.Join(errs...), s.base)
	}
	return nil
}

func (s *stateStore) open(ctx context.Context, b []byte, err error) (state, error) {
	var st state
	var w kek.Wrapped
	if err == nil {
		err = json.Unmarshal(b, &w)
	}
	var plain []byte
	if err == nil {
		plain, err = s.mmk.Unwrap(ctx, w)
	}
	if err == nil && !bytes.HasPrefix(plain, []byte(stateLabel)) {
		err = errors.New("not a state record")
	}
	if err == nil {
		err = json.Unmarshal(plain[len(stateLabel):], &st)
	}
	if err == nil && st.Instance != s.id {
		err = fmt.Errorf("%w: the record of instance %s, not %s", errOtherInstance, st.Instance, s.id)
	}
	return st, err
}

// write makes next the state, in the slot after the current one. The
// caller holds mu.
func (s *stateStore) write(ctx context.Context, next state) error {
	next.Seq, next.Instance = s.cur.Seq+1, s.id
	body, err := json.Marshal(next)
	if err != nil {
		return err
	}
	w, err := s.mmk.Wrap(ctx, append([]byte(stateLabel), body...))
	if err != nil {
		return err
	}
	b, err := json.Marshal(w)
	if err != nil {
		return err
	}
	if err := writeSynced(s.fs, s.slot(next.Seq), b); err != nil {
		return fmt.Errorf("writing the state record: %w", err)
	}
	s.cur, s.have = next, true
	return nil
}

// writeSynced replaces the content of path in place and fsyncs it; the
// first write of a slot also fsyncs its directory.
func writeSynced(fsys atomicfile.FS, path string, b []byte) error {
	_, statErr := os.Stat(path)
	f, err := fsys.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && statErr != nil {
		err = fsys.SyncDir(filepath.Dir(path))
	}
	return err
}

// update applies change to a copy of the state and writes it if it
// differs.
func (s *stateStore) update(ctx context.Context, change func(st *state)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := s.cur
	next.Keyrings = map[string]keyringState{}
	for k, v := range s.cur.Keyrings {
		next.Keyrings[k] = v
	}
	change(&next)
	if s.have && equalState(next, s.cur) {
		return nil
	}
	return s.write(ctx, next)
}

func equalState(a, b state) bool {
	a.Seq, b.Seq = 0, 0
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

func markOf(r *dek.Keyring) keyringState { return mark(r.Generation(), r.Digest()) }

func mark(gen uint64, digest [32]byte) keyringState {
	return keyringState{Generation: gen, Digest: hex.EncodeToString(digest[:])}
}

func saltOf(h stream.Header) string { return hex.EncodeToString(h.Salt[:]) }

// checkKeyring refuses a keyring older than the recorded one, or another
// keyring of the same generation. Open checks the file before it unwraps
// it (so no KEK call, and no KEK failure, comes first) and again once it
// is authenticated.
func (s *stateStore) checkKeyring(disk, path string, got keyringState) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	want, ok := s.cur.Keyrings[disk]
	if !ok {
		return nil
	}
	switch {
	case got.Generation < want.Generation:
		return s.rollback("keyring %s is generation %d, older than generation %d this instance committed", path, got.Generation, want.Generation)
	case got.Generation == want.Generation && got.Digest != want.Digest:
		return s.rollback("keyring %s is not the generation-%d keyring this instance committed", path, got.Generation)
	}
	return nil
}

// checkMissing refuses a keyring that was committed and is gone.
func (s *stateStore) checkMissing(disk, path string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if want, ok := s.cur.Keyrings[disk]; ok {
		return s.rollback("keyring %s is missing; this instance committed its generation %d", path, want.Generation)
	}
	return nil
}

func (s *stateStore) rollback(format string, args ...any) error {
	return fmt.Errorf("%w: %s: an old copy was put back or a file deleted. Restore the newest copy; "+
		"to accept a backup restored on purpose, remove %s-* (the next Open records what is on disk)",
		ErrRollback, fmt.Sprintf(format, args...), s.base)
}

// stateBase returns the path prefix of the state record: beside the
// platform key, or in the store's entry for a key from a credential.
func (i *Instance) stateBase(pk platformKey) (string, error) {
	if !pk.readOnly {
		return pk.path + ".state", nil
	}
	dir, err := i.storeEntry()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "state"), os.MkdirAll(dir, 0o700)
}

// openState loads the instance's state record.
func (i *Instance) openState(ctx context.Context, pk platformKey, mmk *kek.MMK) error {
	base, err := i.stateBase(pk)
	if err != nil {
		return err
	}
	id := i.dir
	if i.cfg.PlatformKeyFile == "" {
		if id, err = i.instanceID(); err != nil {
			return err
		}
	}
	i.state = &stateStore{fs: i.cfg.fs, base: base, id: id, mmk: mmk}
	return i.state.load(ctx)
}

// checkFiles refuses a snapshot or an AOF older than the state record, and
// records what is on disk (rolling forward a crash one commit ahead). It
// runs once the keyrings are open.
func (i *Instance) checkFiles(ctx context.Context) error {
	snap, err := i.snapshotSalt()
	if err != nil {
		return err
	}
	gen, err := i.aofGeneration()
	if err != nil {
		return err
	}
	s := i.state
	s.mu.Lock()
	cur, have := s.cur, s.have
	s.mu.Unlock()
	if have {
		if err := s.checkSnapshot(cur, snap); err != nil {
			return err
		}
		if gen < cur.AOF {
			return s.rollback("the AOF manifest in %s is generation %d, older than generation %d this instance committed", i.AOFDir(), gen, cur.AOF)
		}
	}
	return s.update(ctx, func(st *state) {
		i.markKeyrings(st)
		st.Snapshot, st.Previous, st.Pending = snap, "", false
		st.AOF = max(st.AOF, gen)
	})
}

// checkSnapshot accepts the recorded snapshot, or the one a commit in
// flight replaced.
func (s *stateStore) checkSnapshot(cur state, disk string) error {
	switch {
	case disk == cur.Snapshot:
		return nil
	case cur.Pending && disk == cur.Previous:
		return nil // a crash before the new snapshot's rename
	case disk == "":
		return s.rollback("the snapshot is missing; this instance committed one")
	}
	return s.rollback("the snapshot on disk is not the last one this instance committed")
}

// snapshotSalt names the snapshot on disk, or "" if there is none.
func (i *Instance) snapshotSalt() (string, error) {
	r, err := i.openSnapshot()
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	defer r.Close()
	return saltOf(r.Header()), nil
}

// aofGeneration returns the AOF manifest's generation, 0 without an AOF.
func (i *Instance) aofGeneration() (uint64, error) {
	if _, err := os.Stat(i.AOFDir()); errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	keys := i.diskKeys(DiskPersistence)
	gen, err := aof.Generation(i.AOFDir(), keys, aof.Options{})
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	return gen, err
}

// markKeyrings records every open keyring in st.
func (i *Instance) markKeyrings(st *state) {
	for _, d := range i.disks {
		st.Keyrings[d.name] = markOf(d.keyring)
	}
}

// recordKeyrings records the keyrings after a commit changed them.
func (i *Instance) recordKeyrings() error {
	return i.state.update(context.Background(), i.markKeyrings)
}

// recordSnapshot records, before its rename, that the snapshot named salt
// is about to replace the one on disk. The caller holds snapMu.
func (i *Instance) recordSnapshot(salt string) error {
	onDisk, err := i.snapshotSalt()
	if err != nil {
		return err
	}
	return i.state.update(context.Background(), func(st *state) {
		st.Snapshot, st.Previous, st.Pending = salt, onDisk, true
	})
}

// recordAOF records the AOF manifest's generation after a commit.
func (i *Instance) recordAOF(gen uint64) error {
	return i.state.update(context.Background(), func(st *state) { st.AOF = max(st.AOF, gen) })
}

// settleSnapshot clears a pending snapshot commit once it is known to have
// ended (at Close).
func (i *Instance) settleSnapshot() error {
	i.snapMu.Lock()
	defer i.snapMu.Unlock()
	onDisk, err := i.snapshotSalt()
	if err != nil {
		return err
	}
	return i.state.update(context.Background(), func(st *state) {
		st.Snapshot, st.Previous, st.Pending = onDisk, "", false
	})
}
