package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/cachecrypt/cachecrypt/export"
)

// Daemon is the long-running sidecar: it snapshots the Redis server every
// Every, and on demand through its HTTP API:
//
//	POST /snapshot   pull a snapshot now
//	POST /export     send the current snapshot to the blob
//	GET  /status     the last snapshot and export, as JSON
//
// Operations run one at a time.
type Daemon struct {
	Sidecar *Sidecar
	Redis   string      // address of the redis-server
	Pull    PullOptions // credentials for it
	Blob    func() (export.Destination, error)
	Sealed  bool          // export sealed under the sidecar's KEK (Sidecar.ExportSealed)
	Every   time.Duration // 0: only on demand
	Logger  *slog.Logger

	mu     sync.Mutex // one operation at a time; guards status
	status Status
}

// Status is what GET /status returns.
type Status struct {
	LastSnapshot time.Time `json:"last_snapshot"`
	SnapshotSize int64     `json:"snapshot_size"`
	Diskless     bool      `json:"diskless"`
	LastExport   time.Time `json:"last_export"`
	ExportSHA256 string    `json:"export_sha256,omitempty"`
	LastError    string    `json:"last_error,omitempty"`
}

// Run snapshots every d.Every until ctx ends.
func (d *Daemon) Run(ctx context.Context) {
	if d.Every <= 0 {
		<-ctx.Done()
		return
	}
	t := time.NewTicker(d.Every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := d.Snapshot(ctx); err != nil {
				d.Logger.Error("scheduled snapshot failed", "err", err)
			}
		}
	}
}

// Snapshot pulls a snapshot now.
func (d *Daemon) Snapshot(ctx context.Context) (Status, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	pi, _, err := d.Sidecar.Snapshot(ctx, d.Redis, d.Pull)
	if err == nil {
		d.status.LastSnapshot, d.status.SnapshotSize, d.status.Diskless = time.Now().UTC(), pi.Size, pi.Diskless
	}
	return d.record(err)
}

// Export sends the current snapshot to the blob now.
func (d *Daemon) Export(ctx context.Context) (Status, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	dst, err := d.Blob()
	if err == nil {
		var info export.Info
		send := d.Sidecar.Export
		if d.Sealed {
			send = d.Sidecar.ExportSealed
		}
		if info, err = send(ctx, dst); err == nil {
			d.status.LastExport, d.status.ExportSHA256 = time.Now().UTC(), hex.EncodeToString(info.SHA256[:])
		}
	}
	return d.record(err)
}

func (d *Daemon) record(err error) (Status, error) {
	d.status.LastError = ""
	if err != nil {
		d.status.LastError = err.Error()
	}
	return d.status, err
}

// ServeHTTP implements the HTTP API.
func (d *Daemon) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var (
		st  Status
		err error
	)
	switch {
	case r.URL.Path == "/status" && r.Method == http.MethodGet:
		d.mu.Lock()
		st = d.status
		d.mu.Unlock()
	case r.URL.Path == "/snapshot" && r.Method == http.MethodPost:
		st, err = d.Snapshot(r.Context())
	case r.URL.Path == "/export" && r.Method == http.MethodPost:
		st, err = d.Export(r.Context())
	default:
		http.Error(w, "sidecar: GET /status, POST /snapshot or POST /export", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		w.WriteHeader(http.StatusInternalServerError)
	}
	json.NewEncoder(w).Encode(st)
}
