// Command kvemulator serves the Key Vault emulator of package vaulttest for
// programs that are not written in Go: tests of the official JavaScript,
// Python or .NET clients, or a shell session with curl.
//
// It starts the emulator on 127.0.0.1, creates the keys and managed
// identities it is told to, writes the emulator's CA certificate and an
// env file into a directory, prints "ready" on standard output, and serves
// until SIGTERM or SIGINT.
//
// Usage:
//
//	kvemulator -dir DIR [-config FILE] [-key NAME[:TYPE[:BITS]]]... [-identity NAME=CLIENT_ID]... [-admin NAME=CLIENT_ID]...
//
// A -key is an RSA key (TYPE RSA or RSA-HSM, BITS 2048, 3072 or 4096;
// default RSA 2048) in the vault https://localhost:PORT. An -identity is a
// user-assigned managed identity with the permissions of the role "Key
// Vault Crypto Service Encryption User" (get, wrapKey, unwrapKey); an
// -admin one has every key permission. The config file, JSON, says the same:
//
//	{"keys": [{"name": "cmk", "type": "RSA-HSM", "size": 3072}],
//	 "identities": [{"name": "cache", "clientId": "GUID", "permissions": ["get", "wrapKey", "unwrapKey"]}]}
//
// DIR receives ca.pem (the certificate to trust; it is valid for ten years)
// and env, lines of NAME=VALUE:
//
//	KEYVAULT_URL        https://localhost:PORT
//	KEYVAULT_KEY_<NAME> the versionless key id of each key (NAME upper-cased, "-" as "_")
//	IDENTITY_ENDPOINT   the App Service style managed identity endpoint
//	IDENTITY_HEADER     its secret header
//	NODE_EXTRA_CA_CERTS DIR/ca.pem, so that node trusts the emulator
//	SSL_CERT_FILE       DIR/ca.pem, for Python and OpenSSL-based clients
//
// A client reaches the vault by address, so it must turn off challenge
// resource verification (disableChallengeResourceVerification in
// JavaScript, verify_challenge_resource=False in Python): the emulator's
// challenge names the public cloud's resource, https://vault.azure.net.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
	"github.com/cachecrypt/cachecrypt/vault/vaulttest"
)

// config is what the emulator serves: from the config file, then flags.
type config struct {
	Keys       []keySpec      `json:"keys"`
	Identities []identitySpec `json:"identities"`
}

type keySpec struct {
	Name string `json:"name"`
	Type string `json:"type"` // RSA (default) or RSA-HSM
	Size int    `json:"size"` // 2048 (default), 3072 or 4096
}

type identitySpec struct {
	Name        string   `json:"name"`
	ClientID    string   `json:"clientId"`
	Permissions []string `json:"permissions"` // default: Crypto Service Encryption User
}

// adminPrincipal creates the keys.
const adminPrincipal = "kvemulator-admin"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "kvemulator:", err)
		os.Exit(2)
	}
}

// run serves the emulator until ctx is done.
func run(ctx context.Context, args []string, stdout io.Writer) error {
	cfg, dir, err := parse(args)
	if err != nil {
		return err
	}
	s, err := vaulttest.Start()
	if err != nil {
		return err
	}
	defer s.Close()
	vaultURL := "https://localhost:" + portOf(s.Addr())
	env, err := setup(ctx, s, vaultURL, cfg)
	if err != nil {
		return err
	}
	ca := filepath.Join(dir, "ca.pem")
	if err := s.WriteCACert(ca); err != nil {
		return err
	}
	endpoint, header := s.IdentityEndpoint()
	env = append(env, "IDENTITY_ENDPOINT="+endpoint, "IDENTITY_HEADER="+header,
		"NODE_EXTRA_CA_CERTS="+ca, "SSL_CERT_FILE="+ca)
	if err := os.WriteFile(filepath.Join(dir, "env"), []byte(strings.Join(env, "\n")+"\n"), 0o600); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "ready")
	<-ctx.Done()
	return nil
}

// parse reads the flags and the config file.
func parse(args []string) (config, string, error) {
	fs := flag.NewFlagSet("kvemulator", flag.ContinueOnError)
	dir := fs.String("dir", "", "directory for ca.pem and env (required)")
	file := fs.String("config", "", "JSON config file of keys and identities")
	var keys, ids, admins []string
	fs.Func("key", "RSA key NAME[:RSA|RSA-HSM[:BITS]] (repeatable)", func(v string) error { keys = append(keys, v); return nil })
	fs.Func("identity", "managed identity NAME=CLIENT_ID with get, wrapKey, unwrapKey (repeatable)", func(v string) error { ids = append(ids, v); return nil })
	fs.Func("admin", "managed identity NAME=CLIENT_ID with every key permission (repeatable)", func(v string) error { admins = append(admins, v); return nil })
	if err := fs.Parse(args); err != nil {
		return config{}, "", err
	}
	if *dir == "" {
		return config{}, "", errors.New("-dir is required: the directory that receives ca.pem and env")
	}
	var cfg config
	if *file != "" {
		b, err := os.ReadFile(*file)
		if err != nil {
			return config{}, "", err
		}
		dec := json.NewDecoder(strings.NewReader(string(b)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&cfg); err != nil {
			return config{}, "", fmt.Errorf("config %s: %w", *file, err)
		}
	}
	for _, k := range keys {
		parts := strings.Split(k, ":")
		ks := keySpec{Name: parts[0]}
		if len(parts) > 1 {
			ks.Type = parts[1]
		}
		if len(parts) > 2 {
			n, err := strconv.Atoi(parts[2])
			if err != nil {
				return config{}, "", fmt.Errorf("-key %q: key size %q is not a number", k, parts[2])
			}
			ks.Size = n
		}
		cfg.Keys = append(cfg.Keys, ks)
	}
	for i, list := range [][]string{ids, admins} {
		for _, v := range list {
			name, id, ok := strings.Cut(v, "=")
			if !ok || name == "" || id == "" {
				return config{}, "", fmt.Errorf("identity %q: want NAME=CLIENT_ID", v)
			}
			spec := identitySpec{Name: name, ClientID: id}
			if i == 1 {
				spec.Permissions = vaulttest.AllPermissions
			}
			cfg.Identities = append(cfg.Identities, spec)
		}
	}
	return cfg, *dir, nil
}

// setup creates the keys and identities, and returns the env lines of the
// vault and its keys.
func setup(ctx context.Context, s *vaulttest.Server, vaultURL string, cfg config) ([]string, error) {
	s.Grant(adminPrincipal, vaulttest.AllPermissions...)
	opts := s.ClientOptions()
	opts.DisableChallengeResourceVerification = true // reached by address
	admin, err := azkeys.NewClient(vaultURL, s.Credential(adminPrincipal), opts)
	if err != nil {
		return nil, err
	}
	env := []string{"KEYVAULT_URL=" + vaultURL}
	for _, k := range cfg.Keys {
		kty := azkeys.KeyType(k.Type)
		if k.Type == "" {
			kty = azkeys.KeyTypeRSA
		}
		size := k.Size
		if size == 0 {
			size = 2048
		}
		if _, err := admin.CreateKey(ctx, k.Name, azkeys.CreateKeyParameters{Kty: &kty, KeySize: to.Ptr(int32(size))}, nil); err != nil {
			return nil, fmt.Errorf("key %q: %w", k.Name, err)
		}
		env = append(env, "KEYVAULT_KEY_"+strings.ToUpper(strings.ReplaceAll(k.Name, "-", "_"))+"="+vaultURL+"/keys/"+k.Name)
	}
	for _, id := range cfg.Identities {
		perms := id.Permissions
		if perms == nil {
			perms = vaulttest.CryptoServiceEncryptionUser
		}
		s.Grant(id.Name, perms...)
		s.AddManagedIdentity(id.Name, id.ClientID, "")
	}
	return env, nil
}

func portOf(addr string) string {
	i := strings.LastIndexByte(addr, ':')
	return addr[i+1:]
}
