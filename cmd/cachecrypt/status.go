package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/cachecrypt/cachecrypt"
	"github.com/cachecrypt/cachecrypt/dek"
	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/spf13/cobra"
)

func (a *app) statusCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "status DIR",
		Short: "Show which key protects each kind of data of an instance directory",
		Long: `status prints the coverage table of an instance directory: each kind of
data, the disk that holds it, whether an MMK or a CMK protects it, the exact
KEK key id (with its version) and the active DEK version. It reads each disk's
keyring header only, so it works without any KEK, even while the key is
revoked or unreachable.`,
		Example: `  cachecrypt status /var/lib/cache
  cachecrypt status --json /var/lib/cache`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(c *cobra.Command, argv []string) error {
			rows, infos, err := instanceStatus(argv[0])
			if err != nil {
				return err
			}
			if a.json {
				return a.printJSON(statusJSON(rows, infos))
			}
			return cachecrypt.WriteStatus(a.stdout, rows)
		},
	}
}

// diskKeyring returns the keyring path of a disk of the instance in dir.
func diskKeyring(dir, disk string) string { return filepath.Join(dir, disk, "keyring") }

// instanceStatus builds the coverage table of the instance in dir from its
// keyrings' headers, as cachecrypt.Instance.Status does for an open one.
func instanceStatus(dir string) ([]cachecrypt.StatusRow, map[string]dek.Info, error) {
	infos := map[string]dek.Info{}
	for _, d := range []string{cachecrypt.DiskPersistence, cachecrypt.DiskOS} {
		p := diskKeyring(dir, d)
		info, err := dek.ReadInfo(p)
		if errors.Is(err, fs.ErrNotExist) && d == cachecrypt.DiskPersistence {
			return nil, nil, usagef("%s is not a cachecrypt instance directory: %s is missing", dir, p)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("status: disk %s: %w", d, err)
		}
		infos[d] = info
	}
	row := func(data, disk string, info dek.Info) cachecrypt.StatusRow {
		key := "MMK"
		if info.KEK.Kind.CustomerManaged() {
			key = "CMK"
		}
		return cachecrypt.StatusRow{Data: data, Disk: disk, Key: key, KEK: info.KEK, DEKVersion: info.Active}
	}
	pers, osd := infos[cachecrypt.DiskPersistence], infos[cachecrypt.DiskOS]
	rows := []cachecrypt.StatusRow{
		row("RDB snapshots, AOF logs (persistence)", "persistence disk", pers),
		row("RDB files waiting to be exported", "OS disk + persistence", osd),
		row("temporary files of an export", "OS disk", osd),
	}
	if st, err := os.Stat(filepath.Join(dir, cachecrypt.DiskNVMe)); err == nil && st.IsDir() {
		rows = append(rows, cachecrypt.StatusRow{Data: "keys and values of the Flash tier", Disk: "transient NVMe flash",
			Key: "ephemeral (MMK only)", KEK: kek.Descriptor{Kind: kek.KindMMK, KeyID: "in-memory, per process", Algorithm: "AES-256-GCM"}})
	}
	return rows, infos, nil
}

type statusRowJSON struct {
	Data       string `json:"data"`
	Disk       string `json:"disk"`
	Key        string `json:"key"`
	KEKKind    string `json:"kek_kind"`
	KeyID      string `json:"key_id"`
	KeyVersion string `json:"key_version,omitempty"`
	Algorithm  string `json:"key_algorithm"`
	DEKVersion uint32 `json:"dek_version,omitempty"`
}

type statusJSONOut struct {
	Rows  []statusRowJSON `json:"rows"`
	Disks map[string]any  `json:"disks"`
}

func statusJSON(rows []cachecrypt.StatusRow, infos map[string]dek.Info) statusJSONOut {
	out := statusJSONOut{Disks: map[string]any{}}
	for _, r := range rows {
		out.Rows = append(out.Rows, statusRowJSON{Data: r.Data, Disk: r.Disk, Key: r.Key, KEKKind: string(r.KEK.Kind),
			KeyID: r.KEK.KeyID, KeyVersion: keyVersion(r.KEK), Algorithm: r.KEK.Algorithm, DEKVersion: r.DEKVersion})
	}
	for name, info := range infos {
		out.Disks[name] = map[string]any{"keyring": info.Path, "disk_id": info.DiskID,
			"dek_active": info.Active, "dek_versions": info.Versions, "generation": info.Generation}
	}
	return out
}
