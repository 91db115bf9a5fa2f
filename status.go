package cachecrypt

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/cachecrypt/cachecrypt/kek"
)

// StatusRow is one line of the coverage table: a kind of data, the disk
// that holds it, and the key that protects it.
type StatusRow struct {
	Data       string         // what is stored
	Disk       string         // where
	Key        string         // "MMK", "CMK", or "ephemeral (MMK only)"
	KEK        kek.Descriptor // exact KEK version wrapping the disk's keyring
	DEKVersion uint32         // active DEK version of the disk
	LastCheck  time.Time      // last successful KEK check
	Err        error          // set while the disk has failed closed
	// Recovered says what opening the data cut off after a crash (a torn
	// AOF tail), if anything.
	Recovered string
}

// Status returns the coverage table of DESIGN.md for this instance.
func (i *Instance) Status() []StatusRow {
	i.mu.RLock()
	last, failed, recovered := i.lastCheck, i.failedClosed, i.aofRecovered
	disks := i.disks
	i.mu.RUnlock()
	row := func(data, diskLabel string, d *disk) StatusRow {
		desc := d.keyring.Descriptor()
		key := "CMK"
		if desc.Kind == kek.KindMMK {
			key = "MMK"
		}
		return StatusRow{Data: data, Disk: diskLabel, Key: key, KEK: desc,
			DEKVersion: d.keyring.Active(), LastCheck: last, Err: failed}
	}
	pers, osd := disks[0], disks[1]
	persRow := row("RDB snapshots, AOF logs (persistence)", "persistence disk", pers)
	persRow.Recovered = recovered
	rows := []StatusRow{
		persRow,
		row("RDB files waiting to be exported", "OS disk + persistence", osd),
		row("temporary files of an export", "OS disk", osd),
	}
	if i.cfg.Tier == FlashOptimized {
		rows = append(rows, StatusRow{Data: "keys and values of the Flash tier", Disk: "transient NVMe flash",
			Key: "ephemeral (MMK only)", KEK: kek.Descriptor{Kind: kek.KindMMK, KeyID: "in-memory, per process", Algorithm: "AES-256-GCM"}})
	}
	return rows
}

// WriteStatus prints the coverage table for people.
func WriteStatus(w io.Writer, rows []StatusRow) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DATA\tDISK\tKEY\tKEY ID\tDEK\tLAST KEK CHECK")
	for _, r := range rows {
		check := "-"
		if !r.LastCheck.IsZero() {
			check = r.LastCheck.UTC().Format(time.RFC3339)
		}
		if r.Err != nil {
			check = "FAILED CLOSED"
		}
		dekv := "-"
		if r.DEKVersion != 0 {
			dekv = fmt.Sprintf("v%d", r.DEKVersion)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Data, r.Disk, r.Key, r.KEK.KeyID, dekv, check)
	}
	return tw.Flush()
}
