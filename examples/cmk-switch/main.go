// Command cmk-switch shows a live switch of a cache instance from the
// platform-managed key (MMK) to a customer-managed key in Azure Key Vault
// and back, while a writer keeps appending to the encrypted AOF. The vault is
// the in-process emulator of package vault/vaulttest, reached through the
// official azkeys client, so the example runs offline with no setup:
//
//	go run ./examples/cmk-switch
package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
	"github.com/cachecrypt/cachecrypt"
	"github.com/cachecrypt/cachecrypt/aof"
	"github.com/cachecrypt/cachecrypt/vault"
	"github.com/cachecrypt/cachecrypt/vault/vaulttest"
)

func main() {
	dir, err := os.MkdirTemp("", "cachecrypt-cmk-switch-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := run(os.Stdout, dir); err != nil {
		log.Fatal(err)
	}
}

func run(out io.Writer, dir string) error {
	ctx := context.Background()
	srv, vk, err := startVault(ctx)
	if err != nil {
		return err
	}
	defer srv.Close()
	cmk := cachecrypt.Encryption{CMK: vk, Check: func(ctx context.Context) error {
		return vk.Validate(ctx, vault.Requirements{Region: "westeurope", Vault: srv})
	}}

	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	inst, err := cachecrypt.Open(ctx, dir, cachecrypt.Config{Logger: quiet, ProbeInterval: -1})
	if err != nil {
		return err
	}
	defer inst.Close()
	log, err := inst.OpenAOF(aof.Options{Fsync: aof.EverySec})
	if err != nil {
		return err
	}

	// A writer appends all along; the switches never stop it.
	var stop atomic.Bool
	var acked atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		for n := int64(0); !stop.Load(); n++ {
			if err := log.Append(fmt.Appendf(nil, "SET key:%d %d\n", n, n)); err != nil {
				fmt.Fprintln(out, "append failed:", err)
				return
			}
			acked.Store(n + 1)
		}
	})

	show := func(title string) {
		fmt.Fprintf(out, "\n%s (%d appends so far)\n", title, acked.Load())
		cachecrypt.WriteStatus(out, inst.Status())
	}
	show("under the platform-managed key")
	for _, s := range []struct {
		name string
		enc  cachecrypt.Encryption
	}{{"Key Vault CMK", cmk}, {"MMK", cachecrypt.MMK}} {
		time.Sleep(100 * time.Millisecond)
		start := time.Now()
		if err := inst.SetEncryption(ctx, s.enc); err != nil {
			return err
		}
		show(fmt.Sprintf("switched online to the %s in %s", s.name, time.Since(start).Round(time.Microsecond)))
	}
	stop.Store(true)
	wg.Wait()
	if err := log.Close(); err != nil {
		return err
	}
	return check(out, inst, acked.Load())
}

// check replays the AOF and counts the appends it holds.
func check(out io.Writer, inst *cachecrypt.Instance, want int64) error {
	keys, err := inst.Keyring(cachecrypt.DiskPersistence)
	if err != nil {
		return err
	}
	r, err := aof.Replay(inst.AOFDir(), keys, aof.Options{})
	if err != nil {
		return err
	}
	defer r.Close()
	var got int64
	for sc := bufio.NewScanner(r); sc.Scan(); got++ {
	}
	fmt.Fprintf(out, "\nreplayed the AOF: %d of %d acknowledged appends, none lost: %v\n", got, want, got == want)
	if got != want {
		return fmt.Errorf("lost %d appends", want-got)
	}
	return nil
}

// startVault starts the Key Vault emulator with an RSA-HSM key and returns a
// KEK that follows the key's current version.
func startVault(ctx context.Context) (*vaulttest.Server, *vault.KEK, error) {
	srv, err := vaulttest.Start()
	if err != nil {
		return nil, nil, err
	}
	srv.Grant("admin", vaulttest.AllPermissions...)
	srv.Grant("cache-identity", vaulttest.CryptoServiceEncryptionUser...)
	admin, err := azkeys.NewClient(srv.VaultURL("contoso"), srv.Credential("admin"), srv.ClientOptions())
	if err == nil {
		_, err = admin.CreateKey(ctx, "cache-cmk", azkeys.CreateKeyParameters{Kty: to.Ptr(azkeys.KeyTypeRSAHSM)}, nil)
	}
	if err != nil {
		srv.Close()
		return nil, nil, err
	}
	vk, err := vault.New(vault.Config{
		KeyID:         srv.VaultURL("contoso") + "/keys/cache-cmk",
		Credential:    srv.Credential("cache-identity"), // production: ManagedIdentity: "<client id>"
		ClientOptions: srv.ClientOptions(),
	})
	if err != nil {
		srv.Close()
		return nil, nil, err
	}
	return srv, vk, nil
}
