package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cachecrypt/cachecrypt"
	"github.com/cachecrypt/cachecrypt/dek"
	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/spf13/cobra"
)

func (a *app) keyringCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "keyring",
		Short: "Show, rotate and rewrap keyrings (the online MMK <-> CMK switch)",
		Long: `A keyring holds a disk's DEK versions, wrapped by a key-encryption key (KEK).
Each command takes an instance directory (all its disks) or a lone keyring
file. Rotating and rewrapping rewrite only the keyring file, atomically: data
files keep decrypting, and a running cache keeps going.`,
		Args: args(cobra.NoArgs),
		RunE: func(c *cobra.Command, _ []string) error { return c.Help() },
	}
	c.AddCommand(a.keyringShowCommand(), a.keyringRotateCommand(), a.keyringRewrapCommand(), a.keyringRetireCommand())
	return c
}

// keyringTargets expands the arguments into keyring files: an instance
// directory gives its disks' keyrings.
func keyringTargets(argv []string) ([]string, error) {
	var out []string
	for _, p := range argv {
		k, err := detect(p)
		if err != nil {
			return nil, err
		}
		switch k {
		case kindInstance:
			for _, d := range []string{cachecrypt.DiskPersistence, cachecrypt.DiskOS} {
				if _, err := os.Stat(diskKeyring(p, d)); err == nil {
					out = append(out, diskKeyring(p, d))
				}
			}
		case kindKeyring:
			out = append(out, p)
		default:
			return nil, usagef("%s is neither an instance directory nor a keyring file", p)
		}
	}
	return out, nil
}

func (a *app) keyringShowCommand() *cobra.Command {
	var open bool
	c := &cobra.Command{
		Use:   "show DIR|KEYRING...",
		Short: "Show keyrings: disk, KEK (kind, key id, version), DEK versions",
		Long: `show prints each keyring's header: disk id, the KEK that wraps it (kind,
key id and version, algorithm), the active DEK version and every version held.
It needs no KEK. With --open it also unwraps each keyring with its KEK (one KEK
call each), proving that the key is usable now; a failure exits with 3.`,
		Example: `  cachecrypt keyring show /var/lib/cache
  cachecrypt keyring show --open --client-id $ID /var/lib/cache/persistence/keyring`,
		Args: args(cobra.MinimumNArgs(1)),
		RunE: func(c *cobra.Command, argv []string) error {
			paths, err := keyringTargets(argv)
			if err != nil {
				return err
			}
			var recs []*record
			var firstErr error
			for _, p := range paths {
				r := newRecord().add("file", p)
				if err := inspectKeyring(r, p); err != nil {
					return err
				}
				if open {
					kr, err := a.openKeyringFile(c.Context(), p)
					if err != nil {
						r.add("unwrap", "FAILED: "+err.Error())
						if firstErr == nil {
							firstErr = err
						}
					} else {
						r.add("unwrap", "ok")
						kr.Close()
					}
				}
				recs = append(recs, r)
			}
			if err := a.printRecords(recs); err != nil {
				return err
			}
			if firstErr != nil {
				if h := hint(firstErr); h != "" {
					fmt.Fprintf(a.stderr, "cachecrypt: a keyring did not open; what to do: %s\n", h)
				}
				return &silentError{exitCode(firstErr)}
			}
			return nil
		},
	}
	c.Flags().BoolVar(&open, "open", false, "also unwrap each keyring with its KEK, to prove the key is usable")
	return c
}

// printRecords prints records as a JSON array or as blocks of lines.
func (a *app) printRecords(recs []*record) error {
	if a.json {
		return a.printJSON(recs)
	}
	for i, r := range recs {
		if i > 0 {
			fmt.Fprintln(a.stdout)
		}
		if err := r.write(a.stdout); err != nil {
			return err
		}
	}
	return nil
}

func (a *app) keyringRotateCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "rotate DIR|KEYRING...",
		Short: "Make a fresh DEK version active; old files keep decrypting",
		Long: `rotate adds a fresh DEK version to each keyring and makes it active: new files
use it, files written before keep decrypting with their version. It unwraps
each keyring once with its KEK and makes no other KEK call.`,
		Example: `  cachecrypt keyring rotate /var/lib/cache`,
		Args:    args(cobra.MinimumNArgs(1)),
		RunE: func(c *cobra.Command, argv []string) error {
			paths, err := keyringTargets(argv)
			if err != nil {
				return err
			}
			var recs []*record
			bar := a.progress(int64(len(paths)), "rotating", false)
			for _, p := range paths {
				kr, err := a.openKeyringFile(c.Context(), p)
				if err != nil {
					return err
				}
				old := kr.Active()
				v, err := kr.RotateDEK()
				kr.Close()
				if err != nil {
					return fmt.Errorf("rotate %s: %w", p, err)
				}
				recs = append(recs, newRecord().add("file", p).add("dek_active_before", old).add("dek_active", v))
				bar.Add(1)
			}
			bar.Finish()
			return a.printRecords(recs)
		},
	}
}

func (a *app) keyringRetireCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "retire KEYRING VERSION...",
		Short: "Remove DEK versions that no file uses any more",
		Long: `retire removes DEK versions from a keyring; their keys are destroyed, and files
written under them can never be decrypted again. The active version cannot be
retired. Run 'cachecrypt verify' on the disk first: it fails with exit code 3
for any file that needs a version the keyring no longer holds.`,
		Args: args(cobra.MinimumNArgs(2)),
		RunE: func(c *cobra.Command, argv []string) error {
			var vs []uint32
			for _, s := range argv[1:] {
				v, err := strconv.ParseUint(s, 10, 32)
				if err != nil {
					return usagef("DEK version %q is not a number", s)
				}
				vs = append(vs, uint32(v))
			}
			kr, err := a.openKeyringFile(c.Context(), argv[0])
			if err != nil {
				return err
			}
			defer kr.Close()
			if err := kr.Retire(vs...); err != nil {
				return fmt.Errorf("retire %s: %w", argv[0], err)
			}
			r := newRecord().add("file", argv[0])
			if err := inspectKeyring(r, argv[0]); err != nil {
				return err
			}
			return a.printRecords([]*record{r})
		},
	}
}

func (a *app) keyringRewrapCommand() *cobra.Command {
	var to string
	var prereq prereqFlags
	c := &cobra.Command{
		Use:   "rewrap --to KEK DIR|KEYRING...",
		Short: "Switch keyrings to another KEK online (MMK <-> CMK, CMK <-> CMK)",
		Long: `rewrap moves each keyring to the KEK given by --to: the switch between the
platform key (MMK) and a customer-managed key (CMK), or from one CMK to
another. It rewrites a few hundred bytes per disk, atomically, and leaves data
files untouched; a cache running on the directory keeps going.

For an instance directory, every disk switches together through
cachecrypt.Instance.SetEncryption: the new key is tried first (one wrap and one
unwrap), and if a disk fails, the disks already switched go back. Use
"--to mmk" for the instance's own platform key.

The keyring's current KEK is --kek, or found from the keyring (the platform
key, or the Key Vault key it records). Rewrapping does not re-encrypt data:
run 'keyring rotate' afterwards if copies of the old keyring must become useless
for new data.

` + kekHelp,
		Example: `  cachecrypt keyring rewrap --to https://contoso.vault.azure.net/keys/cache-cmk --client-id $ID /var/lib/cache
  cachecrypt keyring rewrap --to mmk --client-id $ID /var/lib/cache
  cachecrypt keyring rewrap --kek mmk:/var/lib/cachecrypt/instances/cc-0123/mmk.key \
      --to 'pkcs11:token=cache;object=kek;id=%01?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/cachecrypt/pin' \
      /backup/persistence/keyring`,
		Args: args(cobra.MinimumNArgs(1)),
		RunE: func(c *cobra.Command, argv []string) error {
			if to == "" {
				return usagef("keyring rewrap: --to KEK is required (see 'cachecrypt keyring rewrap --help')")
			}
			var recs []*record
			bar := a.progress(int64(len(argv)), "rewrapping", false)
			for _, p := range argv {
				k, err := detect(p)
				if err != nil {
					return err
				}
				var r *record
				switch k {
				case kindInstance:
					r, err = a.rewrapInstance(c.Context(), p, to, prereq)
				case kindKeyring:
					r, err = a.rewrapFile(c.Context(), p, to, prereq)
				default:
					err = usagef("%s is neither an instance directory nor a keyring file", p)
				}
				if err != nil {
					return err
				}
				recs = append(recs, r)
				bar.Add(1)
			}
			bar.Finish()
			return a.printRecords(recs)
		},
	}
	c.Flags().StringVar(&to, "to", "", "the KEK to switch to: a KEK URI, or mmk for an instance's own platform key")
	prereq.add(c)
	return c
}

// descString is the short form of a descriptor for output.
func descString(d kek.Descriptor) string {
	key := "MMK"
	if d.Kind.CustomerManaged() {
		key = "CMK"
	}
	return key + " " + d.KeyID
}

// targetKEK opens the KEK a rewrap goes to. platform is the instance's
// platform key file ("" for a lone keyring); "mmk" names it.
func (a *app) targetKEK(ctx context.Context, to, platform string) (kek.KEK, error) {
	if to == "mmk" {
		if platform == "" {
			return nil, usagef("--to mmk names an instance's platform key; for a lone keyring give its file: --to mmk:PATH")
		}
		to = "mmk:" + platform
	}
	return a.keks.open(ctx, to, true)
}

// roundTrip checks that k can wrap and unwrap before keyrings move to it.
func roundTrip(ctx context.Context, k kek.KEK) error {
	probe := make([]byte, dek.KeySize)
	w, err := k.Wrap(ctx, probe)
	if err != nil {
		return fmt.Errorf("new KEK cannot wrap: %w", err)
	}
	if _, err := k.Unwrap(ctx, w); err != nil {
		return fmt.Errorf("new KEK cannot unwrap what it wrapped: %w", err)
	}
	return nil
}

func (a *app) rewrapFile(ctx context.Context, path, to string, prereq prereqFlags) (*record, error) {
	platform, err := cachecrypt.PlatformKeyPath(filepath.Dir(filepath.Dir(path)))
	if err != nil {
		platform = "" // a lone keyring, not in an instance
	}
	target, err := a.targetKEK(ctx, to, platform)
	if err != nil {
		return nil, err
	}
	check, err := a.prereqCheck(prereq, target)
	if err != nil {
		return nil, err
	}
	if err := check(ctx); err != nil {
		return nil, fmt.Errorf("rewrap %s: %w", path, err)
	}
	kr, err := a.openKeyringFile(ctx, path)
	if err != nil {
		return nil, err
	}
	defer kr.Close()
	from := kr.Descriptor()
	if err := kr.Rewrap(ctx, target); err != nil {
		return nil, fmt.Errorf("rewrap %s: %w", path, err)
	}
	return newRecord().add("file", path).add("from", descString(from)).add("to", descString(kr.Descriptor())).
		add("dek_active", kr.Active()), nil
}

// openInstance opens the instance in dir under the KEK its keyrings are
// wrapped by now (see currentConfig).
func (a *app) openInstance(ctx context.Context, dir string) (*cachecrypt.Instance, error) {
	_, infos, err := instanceStatus(dir)
	if err != nil {
		return nil, err
	}
	platform, _ := cachecrypt.PlatformKeyPath(dir)
	cfg, err := a.currentConfig(ctx, infos, platform)
	if err != nil {
		return nil, err
	}
	return cachecrypt.Open(ctx, dir, cfg)
}

func (a *app) rewrapInstance(ctx context.Context, dir, to string, prereq prereqFlags) (*record, error) {
	_, infos, err := instanceStatus(dir)
	if err != nil {
		return nil, err
	}
	platform, err := cachecrypt.PlatformKeyPath(dir)
	if err != nil {
		return nil, err
	}
	cfg, err := a.currentConfig(ctx, infos, platform)
	if err != nil {
		return nil, err
	}
	next, err := a.nextEncryption(ctx, to, platform, prereq)
	if err != nil {
		return nil, err
	}
	inst, err := cachecrypt.Open(ctx, dir, cfg)
	if err != nil {
		return nil, err
	}
	defer inst.Close()
	before := inst.Status()
	if err := inst.SetEncryption(ctx, next); err != nil {
		return nil, err
	}
	after := inst.Status()
	r := newRecord().add("instance", dir).add("from", descString(before[0].KEK)).add("to", descString(after[0].KEK))
	var disks []string
	for _, d := range []string{cachecrypt.DiskPersistence, cachecrypt.DiskOS} {
		if kr, err := inst.Keyring(d); err == nil {
			disks = append(disks, fmt.Sprintf("%s: %s (DEK v%d)", d, descString(kr.Descriptor()), kr.Active()))
		}
	}
	r.add("disks", disks)
	r.add("note", "data files were not re-encrypted; run 'cachecrypt keyring rotate "+dir+"' if a copy of the old keyring must not open data written from now on")
	return r, nil
}

// currentConfig is the configuration that opens the instance under the KEK
// its keyrings are wrapped by now: --kek, or the one the persistence
// keyring records. An OS disk left under another CMK by an interrupted
// switch gets its KEK as a Previous one.
func (a *app) currentConfig(ctx context.Context, infos map[string]dek.Info, platform string) (cachecrypt.Config, error) {
	cfg := cachecrypt.Config{ProbeInterval: -1, Logger: discardLogger()} // Open finds the platform key itself
	pers := infos[cachecrypt.DiskPersistence]
	if a.kekURI != "" || pers.KEK.Kind != kek.KindMMK {
		cur, err := a.keks.unwrapperFor(ctx, a.kekURI, pers.Path)
		if err != nil {
			return cfg, err
		}
		if _, ok := cur.(*kek.MMK); ok { // the platform key, or another one: --kek mmk:PATH
			if p := mmkPath(a.kekURI, platform); !samePath(p, platform) {
				cfg.PlatformKeyFile = p
			}
		} else {
			cfg.Encryption = cachecrypt.CustomerManaged(cur)
		}
	}
	if osd := infos[cachecrypt.DiskOS]; osd.KEK.Kind.CustomerManaged() && osd.KEK.KeyID != pers.KEK.KeyID {
		if prev, err := a.keks.unwrapperFor(ctx, "", osd.Path); err == nil {
			cfg.Previous = append(cfg.Previous, prev)
		}
	}
	return cfg, nil
}

// nextEncryption is the setting an instance switches to: its own platform
// key for "mmk", else the CMK named by to, checked by prereq.
func (a *app) nextEncryption(ctx context.Context, to, platform string, prereq prereqFlags) (cachecrypt.Encryption, error) {
	if to == "mmk" || strings.HasPrefix(to, "mmk:") {
		if !samePath(mmkPath(to, platform), platform) {
			return cachecrypt.MMK, usagef("an instance's MMK is its platform key %s; use --to mmk (a lone keyring file may move to another mmk:PATH)", platform)
		}
		return cachecrypt.MMK, nil
	}
	target, err := a.targetKEK(ctx, to, platform)
	if err != nil {
		return cachecrypt.MMK, err
	}
	check, err := a.prereqCheck(prereq, target)
	if err != nil {
		return cachecrypt.MMK, err
	}
	return cachecrypt.Encryption{CMK: target, Check: check}, nil
}

// mmkPath returns the file of an mmk: URI, or def for "mmk" or "".
func mmkPath(uri, def string) string {
	if p, ok := strings.CutPrefix(uri, "mmk:"); ok && p != "" {
		p, _ = filepath.Abs(p)
		return p
	}
	return def
}

func samePath(a, b string) bool {
	a, _ = filepath.Abs(a)
	b, _ = filepath.Abs(b)
	return a == b
}
