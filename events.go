package cachecrypt

import (
	"context"
	"log/slog"
	"time"

	"github.com/cachecrypt/cachecrypt/kek"
)

// EventKind names a key operation.
type EventKind string

// The key operations an Instance reports.
const (
	EventUnwrap   EventKind = "unwrap"    // a disk's keyring was unwrapped (open)
	EventWrap     EventKind = "wrap"      // a disk's keyring was created
	EventRewrap   EventKind = "rewrap"    // a disk's keyring moved to another KEK
	EventRotate   EventKind = "rotate"    // a new DEK version became active
	EventRetire   EventKind = "retire"    // old DEK versions were removed
	EventProbe    EventKind = "probe"     // the KEK health probe failed
	EventRevoked  EventKind = "revoked"   // the instance failed closed
	EventRestored EventKind = "restored"  // KEK access returned; disks resumed
	EventSwitch   EventKind = "switch"    // an encryption switch completed
	EventRecover  EventKind = "recovered" // Open finished an interrupted switch
	EventSweep    EventKind = "swept"     // Open removed temporary files a crash left
	EventMigrated EventKind = "migrated"  // Open moved the platform key out of the instance directory
)

// Event describes one key operation. It never holds key bytes.
type Event struct {
	Time       time.Time
	Kind       EventKind
	Disk       string         // disk name, or "" for the instance
	KEK        kek.Descriptor // the KEK version involved
	DEKVersion uint32         // active DEK version after the operation
	Detail     string         // what was done, for people (files, versions)
	Err        error          // set for failures
}

func (i *Instance) emit(e Event) {
	e.Time = i.cfg.now()
	attrs := []slog.Attr{slog.String("event", string(e.Kind))}
	if e.Disk != "" {
		attrs = append(attrs, slog.String("disk", e.Disk))
	}
	if e.KEK.KeyID != "" {
		attrs = append(attrs, slog.String("kek_kind", string(e.KEK.Kind)), slog.String("key_id", e.KEK.KeyID))
	}
	if e.DEKVersion != 0 {
		attrs = append(attrs, slog.Uint64("dek_version", uint64(e.DEKVersion)))
	}
	if e.Detail != "" {
		attrs = append(attrs, slog.String("detail", e.Detail))
	}
	level := slog.LevelInfo
	if e.Err != nil {
		level = slog.LevelWarn
		attrs = append(attrs, slog.String("error", e.Err.Error()))
	}
	i.cfg.Logger.LogAttrs(context.Background(), level, "cachecrypt key operation", attrs...)
	if i.cfg.OnEvent != nil {
		i.cfg.OnEvent(e)
	}
}
