package cachecrypt

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/cachecrypt/cachecrypt/internal/atomicfile"
	"github.com/cachecrypt/cachecrypt/kek"
)

// Where the platform key (MMK) lives. It is never on a data disk: a copy
// of the instance directory alone must decrypt nothing.
const (
	// PlatformStoreEnv, when set, is the platform key store's directory.
	PlatformStoreEnv = "CACHECRYPT_PLATFORM_STORE"
	// PlatformCredential is the systemd credential that holds the MMK
	// keyset, read from $CREDENTIALS_DIRECTORY (systemd-creds encrypt can
	// seal it to the machine's TPM2). It takes precedence over the store.
	PlatformCredential = "cachecrypt-mmk"
	// instanceIDFile, in the instance directory, names the instance in the
	// platform key store. It is not secret.
	instanceIDFile = "instance-id"
	// legacyPlatformKey is where releases before the store kept the MMK,
	// inside the instance directory; Open moves it out.
	legacyPlatformKey = "platform/mmk.key"
	platformKeyName   = "mmk.key"
)

// ErrPlatformKey: the platform key an instance needs is not where it should
// be (the store was lost or the instance directory was copied to another
// machine), or it is configured inside the data.
var ErrPlatformKey = errors.New("cachecrypt: platform key unavailable")

// PlatformStore returns the platform key store's directory: $CACHECRYPT_
// PLATFORM_STORE if set, else /var/lib/cachecrypt for root, else
// cachecrypt under os.UserConfigDir (~/.config/cachecrypt). Back it up apart
// from the data: without it, MMK-encrypted instances cannot be opened.
func PlatformStore() (string, error) {
	if d := os.Getenv(PlatformStoreEnv); d != "" {
		return d, nil
	}
	if os.Geteuid() == 0 {
		return "/var/lib/cachecrypt", nil
	}
	d, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("%w: no directory for the platform key store (%v): set %s", ErrPlatformKey, err, PlatformStoreEnv)
	}
	return filepath.Join(d, "cachecrypt"), nil
}

// platformKey is the resolved place of an instance's MMK.
type platformKey struct {
	path     string // the key file, or the systemd credential
	readOnly bool   // a systemd credential: never written
}

// locatePlatformKey finds where the instance's MMK lives: the configured
// file, the systemd credential, or the store's entry for the instance.
func (i *Instance) locatePlatformKey() (platformKey, error) {
	if p := i.cfg.PlatformKeyFile; p != "" {
		return platformKey{path: p}, i.outsideData(p, "Config.PlatformKeyFile")
	}
	if p, ok := credentialKey(); ok {
		return platformKey{path: p, readOnly: true}, nil
	}
	entry, err := i.storeEntry()
	if err != nil {
		return platformKey{}, err
	}
	return platformKey{path: filepath.Join(entry, platformKeyName)}, nil
}

// credentialKey returns the path of the systemd credential that holds the
// MMK, if the service has one.
func credentialKey() (string, bool) {
	d := os.Getenv("CREDENTIALS_DIRECTORY")
	if d == "" {
		return "", false
	}
	p := filepath.Join(d, PlatformCredential)
	return p, fileExists(p)
}

// storeEntry returns the instance's directory in the platform key store
// (not created), naming the instance first if it has no id yet.
func (i *Instance) storeEntry() (string, error) {
	store, err := PlatformStore()
	if err != nil {
		return "", err
	}
	if err := i.outsideData(store, PlatformStoreEnv); err != nil {
		return "", err
	}
	id, err := i.instanceID()
	if err != nil {
		return "", err
	}
	return filepath.Join(store, "instances", id), nil
}

// outsideData refuses a platform key path inside the instance directory
// (and so inside any of its disks), unless the configuration opts in.
func (i *Instance) outsideData(p, what string) error {
	if i.cfg.PlatformKeyInData {
		return nil
	}
	abs, err1 := filepath.Abs(p)
	dir, err2 := filepath.Abs(i.dir)
	if err := errors.Join(err1, err2); err != nil {
		return err
	}
	if abs != dir && !strings.HasPrefix(abs, dir+string(filepath.Separator)) {
		return nil
	}
	return fmt.Errorf("%w: %s (%s) is inside the instance directory %s, so a copy of the data would carry its key: "+
		"leave it unset to use the platform key store (%s, or $%s), or a systemd credential named %s",
		ErrPlatformKey, what, p, i.dir, "~/.config/cachecrypt or /var/lib/cachecrypt", PlatformStoreEnv, PlatformCredential)
}

// instanceID returns the instance's name in the store, creating it for a
// new instance (or one made before the store existed).
func (i *Instance) instanceID() (string, error) {
	id, err := readInstanceID(i.dir)
	if !errors.Is(err, fs.ErrNotExist) {
		return id, err
	}
	var rnd [16]byte
	rand.Read(rnd[:])
	id = "cc-" + hex.EncodeToString(rnd[:])
	if err := atomicfile.WriteFile(i.cfg.fs, filepath.Join(i.dir, instanceIDFile), []byte(id+"\n"), 0o600); err != nil {
		return "", err
	}
	i.step("platform: instance id")
	return id, nil
}

// readInstanceID reads DIR/instance-id; it fails with fs.ErrNotExist when
// the instance has none yet.
func readInstanceID(dir string) (string, error) {
	path := filepath.Join(dir, instanceIDFile)
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	id := strings.TrimSpace(string(b))
	if !validInstanceID(id) {
		return "", fmt.Errorf("%s holds %q, not an instance id; restore it from a backup of the directory", path, b)
	}
	return id, nil
}

func validInstanceID(id string) bool {
	h, ok := strings.CutPrefix(id, "cc-")
	_, err := hex.DecodeString(h)
	return ok && err == nil && len(h) == 32
}

// loadPlatformKey loads the instance's MMK, moving a key kept inside the
// instance directory by an earlier release to where it belongs first. A
// new instance gets a new key; an existing one whose key is missing is
// refused (unless it is under a CMK: the MMK then only matters as a
// fallback, and a fresh one is made).
func (i *Instance) loadPlatformKey(pk platformKey) (*kek.MMK, error) {
	if pk.readOnly {
		b, err := os.ReadFile(pk.path)
		if err != nil {
			return nil, err
		}
		return kek.ParseMMK("mmk", b)
	}
	if i.cfg.PlatformKeyFile == "" {
		if err := i.migratePlatformKey(pk.path); err != nil {
			return nil, fmt.Errorf("moving the platform key out of %s: %w", i.dir, err)
		}
	}
	if _, err := os.Stat(pk.path); errors.Is(err, fs.ErrNotExist) && i.hasKeyrings() && i.cfg.Encryption.CMK == nil {
		return nil, fmt.Errorf("%w: instance %s is encrypted under its platform key, which should be %s and is not there: "+
			"restore the platform key store from its backup (a copy of the data directory alone cannot be opened, by design)",
			ErrPlatformKey, i.dir, pk.path)
	}
	if err := os.MkdirAll(filepath.Dir(pk.path), 0o700); err != nil {
		return nil, err
	}
	return kek.LoadMMK(pk.path)
}

// hasKeyrings reports whether the instance was created before.
func (i *Instance) hasKeyrings() bool {
	_, err := os.Stat(filepath.Join(i.DiskDir(DiskPersistence), keyringFile))
	return err == nil
}

// migratePlatformKey moves DIR/platform/mmk.key to dst. Each step can be
// interrupted and redone: the copy is atomic and compared, the original
// is removed only once the copy is durable.
func (i *Instance) migratePlatformKey(dst string) error {
	src := filepath.Join(i.dir, legacyPlatformKey)
	legacy, err := os.ReadFile(src)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	stored, err := os.ReadFile(dst)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
			return err
		}
		if err := atomicfile.WriteFile(i.cfg.fs, dst, legacy, 0o600); err != nil {
			return err
		}
		i.step("platform: key copied")
	case err != nil:
		return err
	case !bytes.Equal(stored, legacy):
		return fmt.Errorf("%w: %s and %s hold different keys; keep the one that opens the instance (try each with PlatformKeyFile) and delete the other",
			ErrPlatformKey, src, dst)
	}
	if err := os.Remove(src); err != nil {
		return err
	}
	if err := i.cfg.fs.SyncDir(filepath.Dir(src)); err != nil {
		return err
	}
	os.Remove(filepath.Dir(src)) // the platform directory, if nothing else is in it
	i.step("platform: legacy key removed")
	i.emit(Event{Kind: EventMigrated, Detail: fmt.Sprintf("the platform key moved from %s to %s", src, dst)})
	return nil
}

// PlatformKeyPath returns the file that holds the platform key of the
// instance kept in dir, as Open finds it with the default configuration:
// the systemd credential, the key an earlier release left in the directory
// (until Open moves it), or the store's entry for the instance. It creates
// nothing; for a directory that is not an instance it fails.
func PlatformKeyPath(dir string) (string, error) {
	if fileExists(filepath.Join(dir, legacyPlatformKey)) {
		return filepath.Join(dir, legacyPlatformKey), nil
	}
	if p, ok := credentialKey(); ok {
		return p, nil
	}
	id, err := readInstanceID(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("cachecrypt.PlatformKeyPath: %s has no %s: not an instance, or not opened yet: %w", dir, instanceIDFile, err)
	}
	if err != nil {
		return "", fmt.Errorf("cachecrypt.PlatformKeyPath: %w", err)
	}
	store, err := PlatformStore()
	if err != nil {
		return "", fmt.Errorf("cachecrypt.PlatformKeyPath: %w", err)
	}
	return filepath.Join(store, "instances", id, platformKeyName), nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
