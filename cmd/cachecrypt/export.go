package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/cachecrypt/cachecrypt"
	"github.com/cachecrypt/cachecrypt/export"
	"github.com/cachecrypt/cachecrypt/export/blob"
	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/cachecrypt/cachecrypt/osdisk"
	"github.com/cachecrypt/cachecrypt/rdb"
	"github.com/spf13/cobra"
)

// Environment variables for Azure Blob Storage.
const (
	// envStorageKey is a storage account key (base64); without it the
	// managed identity of --client-id is used.
	envStorageKey = "CACHECRYPT_STORAGE_KEY"
	// envStorageAccount overrides the account name taken from the URL.
	envStorageAccount = "CACHECRYPT_STORAGE_ACCOUNT"
	// envCPK is a customer-provided key (base64 of 32 bytes), when
	// --cpk-file is not given.
	envCPK = "CACHECRYPT_CPK"
)

const blobHelp = `A blob is given by its URL, https://ACCOUNT.blob.core.windows.net/CONTAINER/BLOB
(or an emulator's http://127.0.0.1:10000/ACCOUNT/CONTAINER/BLOB). The tool
authenticates with the storage account key in $` + envStorageKey + `, or else with
the user-assigned managed identity of --client-id. A SAS token is refused on
the command line, where it would leak into shell history and process lists.`

const readersHelp = `Who can read the export:
  (default)           a plain RDB: anyone who can read the file or the blob.
                      A blob is under the storage account's encryption at rest.
  --encryption-scope  a plain RDB in the blob, encrypted at rest by the storage
                      account under that encryption scope's key: still anyone
                      with read access to the blob.
  --cpk-file FILE     a plain RDB in the blob, encrypted by the service under
                      your customer-provided AES-256 key (32 raw bytes or their
                      base64 in FILE, or base64 in $` + envCPK + `): only someone with
                      blob access AND the key; import needs the same key.
  --sealed [--kek URI]
                      ciphertext (FORMAT.md, "Sealed export"): the RDB under a
                      fresh export key wrapped by the KEK --kek names (default:
                      the instance's own KEK). Only a holder of that KEK can
                      import it, on any destination: the storage account and
                      anyone with the file learn nothing. With --sealed, --kek
                      names the sealing KEK; keyrings open with $` + envKEK + ` or the
                      KEK their descriptor names.
The key is never taken from the command line and never printed.`

func (a *app) addTransferCommands(root *cobra.Command) {
	root.AddCommand(a.exportCommand(), a.importCommand())
}

// exportEncryption holds the flags that choose who can read an export.
type exportEncryption struct {
	scope   string
	cpkFile string
	sealed  bool
}

func (e *exportEncryption) add(c *cobra.Command, export bool) {
	if export {
		c.Flags().StringVar(&e.scope, "encryption-scope", "", "blob: the storage account's encryption scope to write under (readable by anyone with blob access)")
	}
	c.Flags().StringVar(&e.cpkFile, "cpk-file", "", "blob: file holding the customer-provided AES-256 key (32 bytes, or base64); default $"+envCPK)
	c.Flags().BoolVar(&e.sealed, "sealed", false, "a sealed export: only the holder of the KEK (--kek, default the instance's) can read it")
}

// customerKey reads --cpk-file or $CACHECRYPT_CPK; nil when neither is set.
// It refuses a key for a destination that is not a blob.
func (e *exportEncryption) customerKey(isBlob bool) (*blob.CustomerKey, error) {
	env := os.Getenv(envCPK)
	if e.cpkFile == "" && env == "" {
		return nil, nil
	}
	if !isBlob {
		return nil, usagef("a customer-provided key (--cpk-file, $%s) applies to a blob URL only", envCPK)
	}
	if e.cpkFile != "" {
		k, err := blob.ReadCustomerKey(e.cpkFile)
		if err != nil {
			return nil, usagef("--cpk-file: %v", err)
		}
		return k, nil
	}
	k, err := blob.ParseCustomerKey([]byte(env))
	if err != nil {
		return nil, usagef("$%s: %v", envCPK, err)
	}
	return k, nil
}

// sealingKEK returns the KEK that seals or unseals an export: the --kek given
// on the command line, or else the one that wraps the keyring at kp (the
// instance's). With --kek given, keyrings open with $CACHECRYPT_KEK or their
// descriptor's KEK from then on.
func (a *app) sealingKEK(ctx context.Context, c *cobra.Command, kp string) (kek.KEK, error) {
	if c.Flags().Changed("kek") {
		uri := a.kekURI
		a.kekURI = os.Getenv(envKEK)
		return a.keks.open(ctx, uri, false)
	}
	return a.keks.unwrapperFor(ctx, a.kekURI, kp)
}

func (a *app) exportCommand() *cobra.Command {
	var to string
	var enc exportEncryption
	c := &cobra.Command{
		Use:   "export DIR|SNAPSHOT --to FILE|BLOB-URL|- [--encryption-scope NAME | --cpk-file FILE | --sealed [--kek URI]]",
		Short: "Export an encrypted snapshot as a plain RDB (or sealed) to a file or an Azure blob",
		Long: `export decrypts an encrypted RDB snapshot (an instance directory's
persistence/dump.rdb, or the snapshot given) and sends it as a plain RDB to a
file, an Azure blob or stdout. It stages the snapshot, encrypted, on the
instance's OS disk first (DIR/os), then streams it to the destination while
checking every segment and the RDB's CRC-64: the destination is committed only
if all passed (a file is replaced atomically; a blob's block list is committed
with sha256 and crc64 metadata). No plaintext touches the OS disk.

` + readersHelp + `

` + blobHelp,
		Example: `  cachecrypt export /var/lib/cache --to /backup/dump.rdb
  cachecrypt export /var/lib/cache --to https://acct.blob.core.windows.net/backups/dump.rdb --client-id $ID
  cachecrypt export /var/lib/cache --to https://acct.blob.core.windows.net/backups/dump.rdb --cpk-file /etc/cachecrypt/export.key
  cachecrypt export /var/lib/cache --to /backup/dump.ccsealed --sealed --kek https://backup.vault.azure.net/keys/exports --client-id $ID`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(c *cobra.Command, argv []string) error {
			if to == "" {
				return usagef("export: --to FILE|BLOB-URL|- is required")
			}
			ctx := c.Context()
			if enc.scope != "" && !isURL(to) {
				return usagef("export: --encryption-scope applies to a blob URL only")
			}
			if !enc.sealed && c.Flags().Changed("kek") {
				return usagef("export: --kek with export names the KEK that seals the export: add --sealed (keyrings open with $%s or the KEK they record)", envKEK)
			}
			cpk, err := enc.customerKey(isURL(to))
			if err != nil {
				return err
			}
			if cpk != nil {
				defer cpk.Close()
				if enc.scope != "" {
					return usagef("export: --encryption-scope and a customer-provided key exclude each other: the service takes one per blob")
				}
			}
			snap, instDir, err := snapshotAndInstance(argv[0])
			if err != nil {
				return err
			}
			f, h, _, err := openStreamFile(snap)
			if err != nil {
				return fmt.Errorf("export: %w", err)
			}
			f.Close()
			opts := a.transferOptions()
			if enc.sealed {
				kp, err := a.findKeyring(snap, h.DiskID)
				if err != nil {
					return err
				}
				if opts.Seal, err = a.sealingKEK(ctx, c, kp); err != nil {
					return err
				}
			}
			kr, err := a.openKeyring(ctx, snap, h.DiskID)
			if err != nil {
				return err
			}
			defer kr.Close()
			scratch, err := a.openScratch(ctx, instDir)
			if err != nil {
				return err
			}
			defer scratch.Close()
			var dst export.Destination
			switch {
			case to == "-":
				if a.json {
					return usagef("export: --json needs --to FILE or a blob URL: stdout carries the RDB")
				}
				if isTerminal(a.stdout) {
					return usagef("export: refusing to write binary data to a terminal")
				}
				dst = export.ToWriter(a.stdout)
			case isURL(to):
				bc, err := a.blockBlobClient(to)
				if err != nil {
					return err
				}
				dst = &blob.Destination{Client: bc, EncryptionScope: enc.scope, CustomerKey: cpk}
			default:
				dst = export.ToFile(to)
			}
			info, err := export.Export(ctx, scratch, export.FromRDB(snap, kr), dst, opts)
			if err != nil {
				return fmt.Errorf("export %s: %w", snap, err)
			}
			rec := newRecord().add("exported", snap).add("to", redactURL(to)).add("bytes", info.Size).
				add("sha256", hex.EncodeToString(info.SHA256[:])).add("crc64", fmt.Sprintf("%016x", info.CRC64))
			switch {
			case enc.sealed:
				rec.add("readable-by", "holders of the sealing KEK")
			case cpk != nil:
				rec.add("readable-by", "blob readers holding the customer-provided key "+cpk.SHA256())
			case enc.scope != "":
				rec.add("readable-by", "blob readers (encryption scope "+enc.scope+")")
			default:
				rec.add("readable-by", "anyone who can read the destination")
			}
			return a.done(rec)
		},
	}
	c.Flags().StringVar(&to, "to", "", "destination: a file path, a blob URL, or - for stdout")
	enc.add(c, true)
	return c
}

func (a *app) importCommand() *cobra.Command {
	var to string
	var enc exportEncryption
	c := &cobra.Command{
		Use:   "import FILE|BLOB-URL --to DIR|SNAPSHOT [--cpk-file FILE] [--sealed [--kek URI]]",
		Short: "Import a plain RDB from a file or an Azure blob as an encrypted snapshot",
		Long: `import reads a plain RDB from a file or an Azure blob, stages it encrypted on
the instance's OS disk, and writes it as the encrypted snapshot of the instance
directory DIR (DIR/persistence/dump.rdb) or the snapshot path given, whose
disk's keyring is found next to it. The snapshot is replaced only if the data
is an RDB with a valid CRC-64 that matches the size and SHA-256 the blob's
metadata announce (as written by export).

A blob written with a customer-provided key needs the same key (--cpk-file or
$` + envCPK + `); a wrong or missing key is refused before anything is written. A
sealed export (export --sealed) needs --sealed and the KEK that sealed it:
--kek URI, or by default the KEK of the target instance. It is unwrapped once;
with another KEK the import fails with the key's error (exit 3) and writes
nothing.

` + blobHelp,
		Example: `  cachecrypt import /backup/dump.rdb --to /var/lib/cache
  cachecrypt import https://acct.blob.core.windows.net/backups/dump.rdb --client-id $ID --to /var/lib/cache
  cachecrypt import /backup/dump.ccsealed --sealed --kek mmk:/secure/backup.key --to /var/lib/cache`,
		Args: args(cobra.ExactArgs(1)),
		RunE: func(c *cobra.Command, argv []string) error {
			if to == "" {
				return usagef("import: --to DIR|SNAPSHOT is required")
			}
			ctx := c.Context()
			if !enc.sealed && c.Flags().Changed("kek") {
				return usagef("import: --kek with import names the KEK of a sealed export: add --sealed (keyrings open with $%s or the KEK they record)", envKEK)
			}
			cpk, err := enc.customerKey(isURL(argv[0]))
			if err != nil {
				return err
			}
			if cpk != nil {
				defer cpk.Close()
			}
			snap, instDir, err := snapshotAndInstance(to)
			if err != nil {
				return err
			}
			var unseal kek.KEK
			if enc.sealed {
				kp, err := a.findKeyring(snap, "")
				if err != nil {
					return err
				}
				if unseal, err = a.sealingKEK(ctx, c, kp); err != nil {
					return err
				}
			}
			kr, err := a.openKeyring(ctx, snap, "")
			if err != nil {
				return err
			}
			defer kr.Close()
			scratch, err := a.openScratch(ctx, instDir)
			if err != nil {
				return err
			}
			defer scratch.Close()
			var src export.Source
			if isURL(argv[0]) {
				bc, err := a.blockBlobClient(argv[0])
				if err != nil {
					return err
				}
				src = &blob.Source{Client: bc.BlobClient(), CustomerKey: cpk}
			} else {
				src = export.FromFile(argv[0])
			}
			if unseal != nil {
				src = export.Unseal(src, unseal)
			}
			info, err := export.Import(ctx, scratch, src, export.ToRDB(snap, kr, rdb.Options{}), a.transferOptions())
			if err != nil && unseal != nil && (errors.Is(err, kek.ErrKeyMismatch) || errors.Is(err, kek.ErrUnwrap)) {
				err = &sealedKeyError{err}
			}
			if err != nil {
				return fmt.Errorf("import %s: %w", redactURL(argv[0]), err)
			}
			return a.done(newRecord().add("imported", redactURL(argv[0])).add("to", snap).add("bytes", info.Size).
				add("sha256", hex.EncodeToString(info.SHA256[:])).add("crc64", fmt.Sprintf("%016x", info.CRC64)))
		},
	}
	c.Flags().StringVar(&to, "to", "", "the instance directory or encrypted snapshot to write")
	enc.add(c, false)
	return c
}

// sealedKeyError marks a sealed export that the given KEK does not open,
// for its hint.
type sealedKeyError struct{ error }

func (e *sealedKeyError) Unwrap() error { return e.error }

// snapshotAndInstance resolves an instance directory or a snapshot path to
// the snapshot and the instance directory (the parent of its disk).
func snapshotAndInstance(p string) (snap, inst string, err error) {
	if detectDir(p) == kindInstance {
		return filepath.Join(p, cachecrypt.DiskPersistence, cachecrypt.SnapshotFile), p, nil
	}
	inst = filepath.Dir(filepath.Dir(p))
	if detectDir(inst) != kindInstance {
		return "", "", usagef("%s is neither an instance directory nor a snapshot in one (DIR/persistence/...): export and import stage data on the instance's OS disk", p)
	}
	return p, inst, nil
}

// openScratch opens the instance's OS disk, where transfers are staged.
func (a *app) openScratch(ctx context.Context, inst string) (*osdisk.Disk, error) {
	dir := filepath.Join(inst, cachecrypt.DiskOS)
	kr, err := a.openKeyringFile(ctx, filepath.Join(dir, osdisk.KeyringName))
	if err != nil {
		return nil, err
	}
	d, err := osdisk.New(dir, kr)
	if err != nil {
		kr.Close()
		return nil, fmt.Errorf("open the OS disk %s: %w", dir, err)
	}
	return d, nil
}

// transferOptions draws a progress bar per phase of a transfer.
func (a *app) transferOptions() *export.Options {
	var phase export.Phase
	var bar interface {
		Set64(int64) error
		Finish() error
	}
	return &export.Options{Progress: func(p export.Progress) {
		if p.Phase != phase {
			if bar != nil {
				bar.Finish()
			}
			phase = p.Phase
			bar = a.progress(p.Total, p.Phase.String(), true)
		}
		bar.Set64(p.Done)
	}}
}

func isURL(s string) bool { return strings.HasPrefix(s, "https://") || strings.HasPrefix(s, "http://") }

// redactURL drops a URL's query (where a SAS token would be).
func redactURL(s string) string {
	if u, err := url.Parse(s); err == nil && isURL(s) {
		u.RawQuery = ""
		return u.String()
	}
	return s
}

// blockBlobClient returns a client of the blob at rawURL, authenticated
// with $CACHECRYPT_STORAGE_KEY or the managed identity of --client-id.
func (a *app) blockBlobClient(rawURL string) (*blockblob.Client, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, usagef("blob URL %q: %v", redactURL(rawURL), err)
	}
	if u.RawQuery != "" {
		return nil, usagef("blob URL %s: a query (SAS token) on the command line would leak; use $%s or --client-id", redactURL(rawURL), envStorageKey)
	}
	if key := os.Getenv(envStorageKey); key != "" {
		account := os.Getenv(envStorageAccount)
		if account == "" {
			account = accountOf(u)
		}
		cred, err := azblob.NewSharedKeyCredential(account, key)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", envStorageKey, err)
		}
		return blockblob.NewClientWithSharedKeyCredential(rawURL, cred, nil)
	}
	clientID := a.clientID
	if clientID == "" {
		clientID = os.Getenv(envClientID)
	}
	if clientID == "" {
		return nil, usagef("blob %s: set %s to the storage account key, or pass --client-id for a managed identity with the Storage Blob Data Contributor role", redactURL(rawURL), envStorageKey)
	}
	cred, err := azidentity.NewManagedIdentityCredential(&azidentity.ManagedIdentityCredentialOptions{ID: azidentity.ClientID(clientID)})
	if err != nil {
		return nil, err
	}
	return blockblob.NewClient(rawURL, azcore.TokenCredential(cred), nil)
}

// accountOf returns the storage account of a blob URL: the first label of
// ACCOUNT.blob.core.windows.net, or the first path segment of an emulator's
// http://HOST:PORT/ACCOUNT/... URL.
func accountOf(u *url.URL) string {
	host := u.Hostname()
	if i := strings.Index(host, ".blob."); i > 0 {
		return host[:i]
	}
	seg, _, _ := strings.Cut(strings.TrimPrefix(u.Path, "/"), "/")
	return seg
}
