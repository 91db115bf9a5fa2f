package main

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/cachecrypt/cachecrypt"
	"github.com/cachecrypt/cachecrypt/dek"
	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/cachecrypt/cachecrypt/vault"
	"github.com/spf13/cobra"
)

func (a *app) inspectCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "inspect FILE",
		Short: "Show the plaintext header of an encrypted file; never a secret",
		Long: `inspect prints the header of a keyring, an encrypted stream (RDB snapshot,
export staging or temp file), an encrypted AOF part or manifest: format
version, kind, disk id, DEK version, the KEK that wraps the keyring (kind, key
id and version), segment size and compression. The file is found by its
magic bytes. No key is needed and nothing is decrypted: the header is shown
as stored, unauthenticated (run 'cachecrypt verify' for that).`,
		Example: `  cachecrypt inspect /var/lib/cache/persistence/keyring
  cachecrypt inspect --json /var/lib/cache/persistence/dump.rdb`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(c *cobra.Command, argv []string) error {
			r, err := a.inspect(argv[0])
			if err != nil {
				return err
			}
			if a.json {
				return a.printJSON(r)
			}
			return r.write(a.stdout)
		},
	}
}

func (a *app) inspect(path string) (*record, error) {
	k, err := detect(path)
	if err != nil {
		return nil, fmt.Errorf("inspect: %w", err)
	}
	switch k {
	case kindAOFDir:
		name, _, err := aofName(path)
		if err != nil {
			return nil, err
		}
		return a.inspect(filepath.Join(path, name+".manifest"))
	case kindInstance:
		return nil, usagef("inspect: %s is an instance directory: see 'cachecrypt status %s' and 'cachecrypt keyring show %s'", path, path, path)
	}
	r := newRecord().add("file", path).add("kind", string(k))
	switch k {
	case kindKeyring:
		return r, inspectKeyring(r, path)
	case kindStream:
		return r, a.inspectStream(r, path)
	case kindAOFPart:
		b, err := readHead(path, aofFixedHeader+255)
		if err != nil {
			return nil, err
		}
		h, err := parseAOFPartHeader(b)
		if err != nil {
			return nil, fmt.Errorf("inspect %s: %w", path, err)
		}
		r.add("format_version", h.Version).add("purpose", "aof-"+h.Type).add("disk_id", h.DiskID).
			add("dek_version", h.DEKVersion).add("seq", h.Seq).add("generation", h.Generation).
			add("header_len", h.HeaderLen)
		if st, err := os.Stat(path); err == nil {
			r.add("size", st.Size())
		}
		a.addKeyringKEK(r, path, h.DiskID)
		return r, nil
	case kindAOFManifest:
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		m, err := parseAOFManifest(b)
		if err != nil {
			return nil, fmt.Errorf("inspect %s: %w", path, err)
		}
		r.add("format_version", 1).add("disk_id", m.DiskID).add("generation", m.Generation).add("parts", m.Parts)
		a.addKeyringKEK(r, path, m.DiskID)
		return r, nil
	case kindNVMe:
		b, err := readHead(path, nvmeHeaderSize)
		if err != nil {
			return nil, err
		}
		h, err := parseNVMeHeader(b)
		if err != nil {
			return nil, fmt.Errorf("inspect %s: %w", path, err)
		}
		r.add("format_version", h.Version).add("page_size", h.PageSize).add("pages", h.Pages).
			add("data_offset", h.Data).add("key", "ephemeral (MMK only)").add("note", nvmeNote)
		return r, nil
	case kindPlainRDB:
		b, _ := readHead(path, 9)
		r.add("encrypted", false).add("rdb_version", strings.TrimPrefix(string(b), "REDIS"))
		return r, nil
	}
	return nil, fmt.Errorf("inspect %s: not a cachecrypt file (no keyring, stream or AOF magic bytes) nor a plain RDB: %w", path, cachecrypt.ErrFormat)
}

// readHead returns up to n bytes from the start of path.
func readHead(path string, n int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, n)
	m, err := io.ReadFull(f, b)
	if err != nil && err != io.ErrUnexpectedEOF {
		return nil, err
	}
	return b[:m], nil
}

func inspectKeyring(r *record, path string) error {
	info, err := dek.ReadInfo(path)
	if err != nil {
		return fmt.Errorf("inspect %s: %w", path, err)
	}
	b, _ := readHead(path, len(magicKeyring)+2)
	if len(b) == len(magicKeyring)+2 {
		r.add("format_version", binary.BigEndian.Uint16(b[len(magicKeyring):]))
	}
	r.add("disk_id", info.DiskID).add("generation", info.Generation)
	addKEK(r, info.KEK)
	r.add("dek_active", info.Active)
	vs := make([]string, len(info.Versions))
	for i, v := range info.Versions {
		vs[i] = fmt.Sprint(v)
	}
	r.add("dek_versions", strings.Join(vs, ","))
	return nil
}

// addKEK adds the fields of a KEK descriptor: kind, MMK or CMK, key id,
// key version and algorithm.
func addKEK(r *record, d kek.Descriptor) {
	key := "MMK"
	if d.Kind.CustomerManaged() {
		key = "CMK"
	}
	r.add("kek_kind", string(d.Kind)).add("key", key).add("key_id", d.KeyID)
	if v := keyVersion(d); v != "" {
		r.add("key_version", v)
	}
	r.add("key_algorithm", d.Algorithm)
}

// keyVersion extracts the key version from a descriptor's key id.
func keyVersion(d kek.Descriptor) string {
	switch d.Kind {
	case kek.KindKeyVault:
		if id, err := vault.ParseKeyID(d.KeyID); err == nil {
			return id.Version
		}
	case kek.KindMMK:
		if i := strings.LastIndexByte(d.KeyID, '/'); i >= 0 {
			return d.KeyID[i+1:]
		}
	case kek.KindPKCS11:
		if _, v, ok := strings.Cut(d.KeyID, ";x-spki-sha256="); ok {
			return "spki-sha256:" + v
		}
	}
	return ""
}

// addKeyringKEK adds, when the data's keyring is found, its path and the
// KEK that wraps it (read without unwrapping).
func (a *app) addKeyringKEK(r *record, path, diskID string) {
	kp, err := a.findKeyring(path, diskID)
	if err != nil {
		r.add("keyring", "not found (pass --keyring)")
		return
	}
	info, err := dek.ReadInfo(kp)
	if err != nil {
		r.add("keyring", kp+": "+err.Error())
		return
	}
	r.add("keyring", kp)
	addKEK(r, info.KEK)
}
