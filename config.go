package cachecrypt

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/cachecrypt/cachecrypt/dek"
	"github.com/cachecrypt/cachecrypt/internal/atomicfile"
	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/cachecrypt/cachecrypt/nvme"
)

// Tier is the service tier of a cache instance. Only the Flash Optimized
// tier has an NVMe flash disk.
type Tier int

// The tiers of the managed-cache model.
const (
	MemoryOptimized Tier = iota + 1
	Balanced
	ComputeOptimized
	FlashOptimized
)

func (t Tier) String() string {
	switch t {
	case MemoryOptimized:
		return "Memory Optimized"
	case Balanced:
		return "Balanced"
	case ComputeOptimized:
		return "Compute Optimized"
	case FlashOptimized:
		return "Flash Optimized"
	}
	return fmt.Sprintf("Tier(%d)", int(t))
}

// Encryption selects the key-encryption key of an instance's persistent
// disks. The zero value is the platform-managed key (MMK).
type Encryption struct {
	// CMK is the customer-managed key: a Key Vault key (package vault) or a
	// PKCS#11 key (package kek/pkcs11). Nil selects the MMK.
	CMK kek.KEK
	// Check, if set, validates the CMK's prerequisites before the instance
	// accepts it (for a Key Vault key: vault.KEK.Validate with the cache's
	// region). A CMK that implements Validator is also checked.
	Check func(ctx context.Context) error
}

// MMK is the default encryption setting: the platform-managed key.
var MMK = Encryption{}

// CustomerManaged returns the setting for a customer-managed key.
func CustomerManaged(k kek.KEK) Encryption { return Encryption{CMK: k} }

// Validator is implemented by KEKs that check their prerequisites (key type,
// permissions, vault settings) before an instance accepts them. Open and
// SetEncryption call it; a failure is a *kek.PrerequisiteError listing
// every failed check.
type Validator interface {
	Validate(ctx context.Context) error
}

// Config configures an Instance. The zero value (with a Tier) is a working
// MMK-encrypted instance.
type Config struct {
	// Tier of the instance; zero means Balanced.
	Tier Tier
	// Encryption of the persistence and OS disks; zero means MMK.
	Encryption Encryption
	// Flash configures the NVMe page store of the Flash Optimized tier
	// (ignored on other tiers). Its page key lives only in memory and dies
	// with the process; Flash.KEK may only be nil or the MMK: a CMK fails
	// with ErrUnsupported. Zero Pages means 65536 pages (256 MiB of 4 KiB).
	Flash nvme.Options

	// Previous lists other KEKs that may still wrap a disk, for an Open
	// after a CMK-to-CMK switch was interrupted by a crash. The MMK is
	// always tried; it need not be listed.
	Previous []kek.Unwrapper
	// PlatformKeyFile is the MMK's key file. Empty (the default) means the
	// systemd credential PlatformCredential if the service has one, else
	// the instance's entry in the platform key store (PlatformStore). Open
	// refuses a path inside the instance directory.
	PlatformKeyFile string
	// PlatformKeyInData lets PlatformKeyFile (or the store) lie inside the
	// instance directory. For tests only: a copy of the directory then
	// carries its own key.
	PlatformKeyInData bool

	// ProbeInterval is how often the KEK's health is checked (one Unwrap).
	// Zero means one minute; negative disables the probe.
	ProbeInterval time.Duration
	// RevocationGrace is how long KEK failures are tolerated before the
	// instance fails closed: its keys are zeroed and every disk returns
	// ErrRevoked (or ErrKEKUnavailable) until access returns. Zero means
	// ten minutes.
	RevocationGrace time.Duration

	// RefreshInterval is how often the probe loop calls RefreshKEK to
	// follow a KEK that moved to a new version. Zero means one hour.
	RefreshInterval time.Duration

	// RotateDEKEvery makes the probe loop rotate every disk's DEK once the
	// active version is older than this, then retire the versions no file
	// uses any more (RetireUnused). Zero means only on demand (RotateDEK).
	RotateDEKEvery time.Duration

	// Logger receives an event record for every key operation; nil uses
	// slog.Default(). Key bytes are never logged.
	Logger *slog.Logger
	// OnEvent, if set, is called synchronously for every key operation.
	OnEvent func(Event)

	now      func() time.Time // tests: the clock
	stepHook func(string)     // tests: runs before each step of a switch
	fs       atomicfile.FS    // tests: the filesystem of keyrings, snapshots and markers
}

// keyringOpts returns the options every keyring is opened with.
func (i *Instance) keyringOpts() []dek.Option { return []dek.Option{dek.WithFS(i.cfg.fs)} }

func (c *Config) setDefaults(dir string) {
	if c.Tier == 0 {
		c.Tier = Balanced
	}
	if c.Tier == FlashOptimized && c.Flash.Pages == 0 {
		c.Flash.Pages = 65536
	}
	if c.ProbeInterval == 0 {
		c.ProbeInterval = time.Minute
	}
	if c.RevocationGrace == 0 {
		c.RevocationGrace = 10 * time.Minute
	}
	if c.RefreshInterval == 0 {
		c.RefreshInterval = time.Hour
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.fs == nil {
		c.fs = atomicfile.OS
	}
}
