// Command sidecar runs next to a real redis-server and keeps its snapshots
// encrypted at rest with cachecrypt: it pulls a snapshot over the
// replication protocol (what `redis-cli --rdb` does), writes it encrypted to
// the persistence disk of a cachecrypt instance (platform-managed key),
// exports it to Azure Blob Storage on demand, imports one back, and restores
// it into a fresh redis-server.
//
//	go run ./examples/sidecar demo                    # starts its own redis-servers
//	go run ./examples/sidecar snapshot -redis 127.0.0.1:6379 -dir /tmp/cc
//	go run ./examples/sidecar export   -dir /tmp/cc -blob https://ACCOUNT.blob.core.windows.net/backups/dump.rdb [-sealed | -encryption-scope NAME | -cpk-file FILE]
//	go run ./examples/sidecar import   -dir /tmp/cc -blob https://ACCOUNT.blob.core.windows.net/backups/dump.rdb [-sealed] [-cpk-file FILE]
//	go run ./examples/sidecar restore  -dir /tmp/cc -to /tmp/restored -start
//	go run ./examples/sidecar run      -redis 127.0.0.1:6379 -dir /tmp/cc -every 15m -listen 127.0.0.1:8089 -blob URL
//
// Who can read an export: by default anyone with read access to the blob
// (the storage account's encryption at rest, or -encryption-scope's key);
// with -cpk-file (or CACHECRYPT_CPK, base64) only someone who also has that
// customer-provided key; with -sealed only a holder of this sidecar's KEK.
//
// The Redis password is read from REDISCLI_AUTH, the storage account key from
// AZURE_STORAGE_ACCOUNT and AZURE_STORAGE_KEY (or a SAS token in the blob
// URL), a customer-provided key from -cpk-file or CACHECRYPT_CPK: secrets
// never go on the command line.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"

	"github.com/cachecrypt/cachecrypt/export"
	"github.com/cachecrypt/cachecrypt/export/blob"
)

const usage = `usage: sidecar COMMAND [flags]

commands:
  demo      start a redis-server with sample data, snapshot it encrypted, restore
            it into a second redis-server and compare DEBUG DIGEST
  snapshot  pull a snapshot from -redis into -dir, encrypted
  export    send the encrypted snapshot in -dir to the blob -blob: a plain RDB
            (readable by anyone with blob access), under -encryption-scope or
            -cpk-file (readable only with that key too), or -sealed (readable
            only by a holder of this sidecar's KEK)
  import    replace the snapshot in -dir with the blob -blob (-cpk-file, -sealed
            as it was exported)
  restore   decrypt the snapshot in -dir to -to/dump.rdb (-start: run redis-server there)
  run       snapshot -redis every -every, and on demand over HTTP on -listen:
            POST /snapshot, POST /export (to -blob), GET /status

run "sidecar COMMAND -h" for its flags`

func main() {
	log.SetFlags(0)
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Stdout, os.Args[1], os.Args[2:]); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, out io.Writer, cmd string, args []string) error {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	dir := fs.String("dir", "", "the cachecrypt instance's directory (required, except for demo)")
	addr := fs.String("redis", "127.0.0.1:6379", "snapshot: address of the redis-server")
	blobURL := fs.String("blob", "", "export, import: URL of the block blob")
	to := fs.String("to", "", "restore: directory for dump.rdb")
	start := fs.Bool("start", false, "restore: run redis-server on -to after restoring")
	port := fs.Int("port", 6390, "restore -start: port of the restored redis-server")
	listen := fs.String("listen", "127.0.0.1:8089", "run: address of the HTTP API")
	every := fs.Duration("every", 15*time.Minute, "run: snapshot interval (0: on demand only)")
	scope := fs.String("encryption-scope", "", "export, run: the storage account's encryption scope for the blob (readable by anyone with blob access)")
	cpkFile := fs.String("cpk-file", "", "export, import, run: file with the blob's customer-provided AES-256 key (32 bytes or base64; default $CACHECRYPT_CPK)")
	sealed := fs.Bool("sealed", false, "export, import, run: a sealed export, readable only by a holder of this sidecar's KEK")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if cmd == "demo" {
		return demo(ctx, out, *dir)
	}
	if *dir == "" {
		return fmt.Errorf("sidecar %s: -dir is required", cmd)
	}
	s, err := Open(ctx, *dir, nil)
	if err != nil {
		return err
	}
	defer s.Close()
	switch cmd {
	case "snapshot":
		pi, info, err := s.Snapshot(ctx, *addr, PullOptions{Password: os.Getenv("REDISCLI_AUTH")})
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "snapshot of %s: %d bytes, RDB version %d, diskless %v, encrypted at %s\n",
			*addr, pi.Size, info.Version, pi.Diskless, s.Path())
	case "export", "import":
		bb, err := blockBlob(*blobURL)
		if err != nil {
			return err
		}
		cpk, err := customerKey(*cpkFile)
		if err != nil {
			return err
		}
		if cpk != nil {
			defer cpk.Close()
		}
		if cmd == "export" {
			exp := s.Export
			if *sealed {
				exp = s.ExportSealed
			}
			info, err := exp(ctx, &blob.Destination{Client: bb, EncryptionScope: *scope, CustomerKey: cpk})
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "exported %d bytes to %s, sha256 %x\n", info.Size, *blobURL, info.SHA256)
			return nil
		}
		imp := s.Import
		if *sealed {
			imp = s.ImportSealed
		}
		info, err := imp(ctx, &blob.Source{Client: bb.BlobClient(), CustomerKey: cpk})
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "imported %d bytes from %s into %s\n", info.Size, *blobURL, s.Path())
	case "restore":
		if *to == "" {
			return fmt.Errorf("sidecar restore: -to is required")
		}
		info, err := s.Restore(*to)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "restored %d bytes to %s\n", info.Size, filepath.Join(*to, "dump.rdb"))
		if *start {
			s.Close()
			c := exec.CommandContext(ctx, "redis-server", "--dir", *to, "--port", strconv.Itoa(*port), "--save", "")
			c.Stdout, c.Stderr = out, os.Stderr
			return c.Run()
		}
	case "run":
		cpk, err := customerKey(*cpkFile)
		if err != nil {
			return err
		}
		if cpk != nil {
			defer cpk.Close()
		}
		d := &Daemon{Sidecar: s, Redis: *addr, Pull: PullOptions{Password: os.Getenv("REDISCLI_AUTH")}, Every: *every,
			Logger: slog.New(slog.NewTextHandler(os.Stderr, nil)), Sealed: *sealed,
			Blob: func() (export.Destination, error) {
				bb, err := blockBlob(*blobURL)
				if err != nil {
					return nil, err
				}
				return &blob.Destination{Client: bb, EncryptionScope: *scope, CustomerKey: cpk}, nil
			}}
		srv := &http.Server{Addr: *listen, Handler: d, ReadHeaderTimeout: 10 * time.Second}
		go d.Run(ctx)
		go func() { <-ctx.Done(); srv.Close() }()
		fmt.Fprintf(out, "sidecar for %s: snapshots every %v, API on http://%s\n", *addr, *every, *listen)
		if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
	default:
		return fmt.Errorf("sidecar: unknown command %q\n%s", cmd, usage)
	}
	return nil
}

// customerKey reads the customer-provided key from path, or else from
// $CACHECRYPT_CPK (base64); nil when neither is set.
func customerKey(path string) (*blob.CustomerKey, error) {
	if path != "" {
		return blob.ReadCustomerKey(path)
	}
	if v := os.Getenv("CACHECRYPT_CPK"); v != "" {
		k, err := blob.ParseCustomerKey([]byte(v))
		if err != nil {
			return nil, fmt.Errorf("sidecar: CACHECRYPT_CPK: %w", err)
		}
		return k, nil
	}
	return nil, nil
}

// blockBlob returns a client for the blob at url: shared key credentials
// from AZURE_STORAGE_ACCOUNT and AZURE_STORAGE_KEY if set, otherwise the URL
// must carry a SAS token.
func blockBlob(url string) (*blockblob.Client, error) {
	if url == "" {
		return nil, fmt.Errorf("sidecar: -blob is required: https://ACCOUNT.blob.core.windows.net/CONTAINER/NAME")
	}
	account, key := os.Getenv("AZURE_STORAGE_ACCOUNT"), os.Getenv("AZURE_STORAGE_KEY")
	if account == "" || key == "" {
		return blockblob.NewClientWithNoCredential(url, nil)
	}
	cred, err := azblob.NewSharedKeyCredential(account, key)
	if err != nil {
		return nil, fmt.Errorf("sidecar: AZURE_STORAGE_KEY: %w", err)
	}
	return blockblob.NewClientWithSharedKeyCredential(url, cred, nil)
}
