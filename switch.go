package cachecrypt

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/cachecrypt/cachecrypt/nvme"
)

// SetEncryption switches the instance's persistent disks to another KEK
// while it runs: MMK to CMK, CMK to MMK, or one CMK to another. Each disk's
// keyring is rewrapped (one Wrap call and a few hundred bytes each), so the
// cost does not depend on how much data the disks hold, and readers and
// writers keep working throughout.
//
// The new KEK's prerequisites are validated first. Each keyring is replaced
// atomically, so a crash at any point leaves every disk loadable under the
// old or the new KEK; the next Open converges all disks to the KEK it is
// given. If a rewrap fails, the disks already switched are rewrapped back,
// and the instance stays on the old KEK.
//
// Rewrapping alone does not re-encrypt data: anyone who kept a copy of an
// old keyring file and can still use the old KEK can read the data written
// before the switch. Call RotateDEK afterwards (and rewrite old files, or let
// them age out) when that matters.
func (i *Instance) SetEncryption(ctx context.Context, e Encryption) error {
	i.admin.Lock()
	defer i.admin.Unlock()
	if err := i.usable(); err != nil {
		return fmt.Errorf("cachecrypt.SetEncryption: %w", err)
	}
	next := i.resolve(e)
	if err := validate(ctx, e, next); err != nil {
		return fmt.Errorf("cachecrypt.SetEncryption: %w", err)
	}
	i.mu.RLock()
	prev := i.kek
	i.mu.RUnlock()
	for n, d := range i.disks {
		i.step("rewrap " + d.name)
		if err := d.keyring.Rewrap(ctx, next); err != nil {
			i.emit(Event{Kind: EventRewrap, Disk: d.name, KEK: d.keyring.Descriptor(), Err: err})
			return fmt.Errorf("cachecrypt.SetEncryption: %w", errors.Join(err, i.rollback(ctx, prev, n), i.recordKeyrings()))
		}
		i.emit(Event{Kind: EventRewrap, Disk: d.name, KEK: d.keyring.Descriptor(), DEKVersion: d.keyring.Active()})
	}
	i.mu.Lock()
	i.kek = next
	i.mu.Unlock()
	i.emit(Event{Kind: EventSwitch, KEK: i.disks[0].keyring.Descriptor()})
	if err := i.recordKeyrings(); err != nil {
		return fmt.Errorf("cachecrypt.SetEncryption: %w", err)
	}
	return nil
}

// rollback rewraps the first n disks back under prev after a failed switch.
func (i *Instance) rollback(ctx context.Context, prev kek.KEK, n int) error {
	var errs []error
	for _, d := range i.disks[:n] {
		if err := d.keyring.Rewrap(ctx, prev); err != nil {
			errs = append(errs, fmt.Errorf("disk %q stays under the new key: %w", d.name, err))
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("rolling back failed too (reopen with both keys, the old one in Config.Previous): %w", errors.Join(errs...))
}

// RotateDEK makes a fresh DEK version active on every persistent disk. New
// files use it; old files keep decrypting with theirs. It makes no KEK call.
func (i *Instance) RotateDEK() error {
	i.admin.Lock()
	defer i.admin.Unlock()
	if err := i.usable(); err != nil {
		return fmt.Errorf("cachecrypt.RotateDEK: %w", err)
	}
	for _, d := range i.disks {
		v, err := d.keyring.RotateDEK()
		if err != nil {
			return fmt.Errorf("cachecrypt.RotateDEK: disk %q: %w", d.name, err)
		}
		i.emit(Event{Kind: EventRotate, Disk: d.name, KEK: d.keyring.Descriptor(), DEKVersion: v})
	}
	if err := i.recordKeyrings(); err != nil {
		return fmt.Errorf("cachecrypt.RotateDEK: %w", err)
	}
	return nil
}

// usable reports why the instance cannot act: closed, or failed closed.
func (i *Instance) usable() error {
	i.mu.RLock()
	defer i.mu.RUnlock()
	if i.closed {
		return ErrClosed
	}
	return i.failedClosed
}

// step is a hook for crash tests: it runs before each step of a switch.
func (i *Instance) step(name string) {
	if i.cfg.stepHook != nil {
		i.cfg.stepHook(name)
	}
}

// Probe checks now that the KEK still unwraps the instance's keyrings (one
// KEK call). Failures for longer than Config.RevocationGrace make the
// instance fail closed: every key is zeroed and every disk returns the KEK's
// error (ErrRevoked, or ErrKEKUnavailable) until a later probe succeeds,
// which unwraps the keyrings again and resumes with nothing lost. Probe runs
// every Config.ProbeInterval on its own; calling it directly is for
// operators and tests.
func (i *Instance) Probe(ctx context.Context) error {
	i.admin.Lock()
	defer i.admin.Unlock()
	i.mu.RLock()
	k, failed, closed := i.kek, i.failedClosed, i.closed
	i.mu.RUnlock()
	if closed {
		return fmt.Errorf("cachecrypt.Probe: %w", ErrClosed)
	}
	err := i.disks[0].keyring.Probe(ctx, k)
	if err == nil && failed != nil {
		err = i.restore(ctx, k)
	}
	now := i.cfg.now()
	i.mu.Lock()
	if err == nil {
		i.lastCheck, i.failingSince = now, time.Time{}
		i.mu.Unlock()
		return nil
	}
	if i.failingSince.IsZero() {
		i.failingSince = now
	}
	var closedNow error
	if i.failedClosed == nil && now.Sub(i.failingSince) >= i.cfg.RevocationGrace {
		closedNow = i.failClosed(err)
	}
	i.mu.Unlock()
	i.emit(Event{Kind: EventProbe, KEK: i.disks[0].keyring.Descriptor(), Err: err})
	if closedNow != nil {
		if h := i.handle(); h != nil {
			h.suspend(closedNow) // outside i.mu: calls in flight may need it to finish
		}
		i.emit(Event{Kind: EventRevoked, Err: closedNow})
	}
	return fmt.Errorf("cachecrypt.Probe: %w", err)
}

// failClosed zeroes every key and returns why; the caller holds i.mu.
func (i *Instance) failClosed(cause error) error {
	reason := kek.ErrUnavailable
	if errors.Is(cause, kek.ErrRevoked) {
		reason = kek.ErrRevoked
	}
	for _, d := range i.disks {
		d.keyring.Lock(reason)
	}
	i.failHandles(reason)
	if i.flash != nil {
		i.flash.Close()
	}
	i.failedClosed = fmt.Errorf("instance %s failed closed after its KEK failed for %s: %w", i.dir, i.cfg.RevocationGrace, reason)
	return i.failedClosed
}

// restore unwraps every keyring again after the instance failed closed.
func (i *Instance) restore(ctx context.Context, k kek.KEK) error {
	for _, d := range i.disks {
		if err := d.keyring.Unlock(ctx, k); err != nil {
			return err
		}
	}
	var flash *nvme.Store
	if i.cfg.Tier == FlashOptimized {
		var err error
		if flash, err = i.openFlash(); err != nil {
			return err
		}
	}
	i.mu.Lock()
	i.failedClosed = nil
	if flash != nil {
		i.flash = flash
	}
	i.mu.Unlock()
	if h := i.handle(); h != nil {
		if err := h.resume(); err != nil {
			return fmt.Errorf("reopening the AOF: %w", err)
		}
	}
	i.emit(Event{Kind: EventRestored, KEK: i.disks[0].keyring.Descriptor()})
	return nil
}

func (i *Instance) probeLoop() {
	defer i.done.Done()
	t := time.NewTicker(i.cfg.ProbeInterval)
	defer t.Stop()
	lastRefresh := i.cfg.now()
	for {
		select {
		case <-i.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), i.cfg.ProbeInterval)
			if i.Probe(ctx) == nil && i.cfg.now().Sub(lastRefresh) >= i.cfg.RefreshInterval {
				lastRefresh = i.cfg.now()
				i.RefreshKEK(ctx)
			}
			i.rotateIfDue()
			cancel()
		}
	}
}

// RefreshKEK follows a KEK that moved to a new version (a versionless Key
// Vault key after rotation, a rotated MMK): it asks the KEK for its current
// version with one Wrap of a throwaway key, and rewraps every disk still
// under an older version. It returns how many disks it rewrapped. Files are
// untouched. The health probe loop calls it every Config.RefreshInterval.
func (i *Instance) RefreshKEK(ctx context.Context) (int, error) {
	i.admin.Lock()
	defer i.admin.Unlock()
	if err := i.usable(); err != nil {
		return 0, fmt.Errorf("cachecrypt.RefreshKEK: %w", err)
	}
	i.mu.RLock()
	k := i.kek
	i.mu.RUnlock()
	probe := make([]byte, 32)
	w, err := k.Wrap(ctx, probe)
	if err != nil {
		return 0, fmt.Errorf("cachecrypt.RefreshKEK: %w", err)
	}
	n := 0
	for _, d := range i.disks {
		if d.keyring.Descriptor() == w.Descriptor {
			continue
		}
		from := d.keyring.Descriptor()
		if err := d.keyring.Rewrap(ctx, k); err != nil {
			return n, fmt.Errorf("cachecrypt.RefreshKEK: disk %q: %w", d.name, err)
		}
		n++
		i.emit(Event{Kind: EventRewrap, Disk: d.name, KEK: d.keyring.Descriptor(), DEKVersion: d.keyring.Active()})
		i.cfg.Logger.Info("cachecrypt: KEK version changed; disk rewrapped", "disk", d.name, "from", from.KeyID, "to", d.keyring.Descriptor().KeyID)
	}
	if n > 0 {
		if err := i.recordKeyrings(); err != nil {
			return n, fmt.Errorf("cachecrypt.RefreshKEK: %w", err)
		}
	}
	return n, nil
}
