package cachecrypt

import "fmt"

// RetireUnused removes the DEK versions that nothing uses any more and
// returns those it retired per disk. A version stays while the snapshot,
// the AOF (a part or the manifest), a writer still running (a snapshot, a
// rewrite, an import or export) or, on the OS disk, any temporary file may
// use it; the active version always stays. The retired keys are zeroed and
// gone from the keyring files.
//
// It takes no lock that writers wait on for long: writers only register
// the versions they may use (see DESIGN.md, "Maintenance and writers").
func (i *Instance) RetireUnused() (map[string][]uint32, error) {
	i.admin.Lock()
	defer i.admin.Unlock()
	if err := i.usable(); err != nil {
		return nil, fmt.Errorf("cachecrypt.RetireUnused: %w", err)
	}
	out := map[string][]uint32{}
	for _, disk := range []string{DiskPersistence, DiskOS} {
		old, err := i.retireUnused(disk)
		if err != nil {
			return out, fmt.Errorf("cachecrypt.RetireUnused: %w", err)
		}
		if len(old) > 0 {
			out[disk] = old
		}
	}
	return out, nil
}

// rotateIfDue rotates the DEKs when Config.RotateDEKEvery has passed since
// the active version was created, then retires what no file uses.
func (i *Instance) rotateIfDue() {
	every := i.cfg.RotateDEKEvery
	if every <= 0 || i.usable() != nil {
		return
	}
	if i.cfg.now().Sub(i.disks[0].keyring.Info().ActiveCreated) < every {
		return
	}
	if err := i.RotateDEK(); err != nil {
		i.cfg.Logger.Warn("cachecrypt: scheduled DEK rotation failed", "error", err)
		return
	}
	if _, err := i.RetireUnused(); err != nil {
		i.cfg.Logger.Warn("cachecrypt: retiring unused DEK versions failed", "error", err)
	}
}
