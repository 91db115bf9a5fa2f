package vault

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// vaultHostSuffixes are the DNS suffixes of the Key Vault and Managed HSM
// data planes in the clouds Azure runs today: public, China (21Vianet), US
// Government, and the sovereign clouds Bleu (France) and Delos (Germany).
// The suffixes are those the official clients trust for the challenge
// resource (the Key Vault resource of each cloud, such as
// https://vault.sovcloud-api.fr; see the cloud environments listed by
// Azure PowerShell, Get-AzEnvironment, and by Microsoft.Data.SqlClient's
// Key Vault provider).
var vaultHostSuffixes = []string{
	".vault.azure.net",              // Azure public cloud
	".vault.azure.cn",               // Azure operated by 21Vianet (China)
	".vault.usgovcloudapi.net",      // Azure US Government
	".vault.sovcloud-api.fr",        // Bleu, the French sovereign cloud
	".vault.sovcloud-api.de",        // Delos, the German sovereign cloud
	".managedhsm.azure.net",         // Managed HSM, public cloud
	".managedhsm.azure.cn",          // Managed HSM, China
	".managedhsm.usgovcloudapi.net", // Managed HSM, US Government
	".managedhsm.sovcloud-api.fr",   // Managed HSM, Bleu
	".managedhsm.sovcloud-api.de",   // Managed HSM, Delos
}

// closedCloudSuffix is the DNS suffix of Microsoft Cloud Germany, which
// closed on 2021-10-29
// (https://learn.microsoft.com/previous-versions/azure/germany/germany-developer-guide):
// its vault hosts (NAME.vault.microsoftazure.de, and the Managed HSM name
// some clients list, NAME.managedhsm.microsoftazure.de) no longer answer.
const closedCloudSuffix = ".microsoftazure.de"

var (
	vaultNameRE  = regexp.MustCompile(`^[a-z][a-z0-9-]{1,22}[a-z0-9]$`)
	keyNameRE    = regexp.MustCompile(`^[A-Za-z0-9-]{1,127}$`)
	keyVersionRE = regexp.MustCompile(`^[0-9a-fA-F]{32}$`)
)

// KeyID names a key in a vault: the vault's base URL, the key's name and,
// optionally, one version. A KeyID without a version follows the key's
// current version.
type KeyID struct {
	Vault   string // base URL of the vault, such as "https://contoso.vault.azure.net"
	Name    string // key name
	Version string // 32 hex digits, or "" for the current version
}

// ParseKeyID parses a Key Vault or Managed HSM key identifier URI, such as
// "https://contoso.vault.azure.net/keys/cache-cmk" or
// "https://contoso.managedhsm.azure.net/keys/cache-cmk/0123456789abcdef0123456789abcdef".
// The host must be a Key Vault or Managed HSM host of a public or sovereign
// Azure cloud. A trailing slash after the name (".../keys/cache-cmk/") is
// the versionless form, as azkeys writes it.
func ParseKeyID(s string) (KeyID, error) {
	u, base, err := parseVaultURL(s)
	if err != nil {
		return KeyID{}, fmt.Errorf("vault.ParseKeyID: %w", err)
	}
	parts := strings.Split(strings.TrimPrefix(u.Path, "/"), "/")
	if len(parts) < 2 || len(parts) > 3 || parts[0] != "keys" {
		return KeyID{}, fmt.Errorf("vault.ParseKeyID: %q: path must be /keys/NAME or /keys/NAME/VERSION", s)
	}
	id := KeyID{Vault: base, Name: parts[1]}
	if len(parts) == 3 {
		// ".../keys/NAME/" (empty version) is the versionless form that
		// azkeys and the JavaScript and Python clients write: it follows
		// the current version, like ".../keys/NAME".
		id.Version = parts[2]
	}
	if err := id.check(); err != nil {
		return KeyID{}, fmt.Errorf("vault.ParseKeyID: %q: %w", s, err)
	}
	return id, nil
}

// NewKeyID builds a KeyID from a vault URL (such as
// "https://contoso.vault.azure.net/"), a key name and an optional version.
func NewKeyID(vaultURL, name, version string) (KeyID, error) {
	u, base, err := parseVaultURL(vaultURL)
	if err != nil {
		return KeyID{}, fmt.Errorf("vault.NewKeyID: %w", err)
	}
	if u.Path != "" && u.Path != "/" {
		return KeyID{}, fmt.Errorf("vault.NewKeyID: vault URL %q must have no path; pass the key name separately or use a key identifier URI", vaultURL)
	}
	id := KeyID{Vault: base, Name: name, Version: version}
	if err := id.check(); err != nil {
		return KeyID{}, fmt.Errorf("vault.NewKeyID: %w", err)
	}
	return id, nil
}

// parseVaultURL checks the scheme and host of a vault URL and returns it with
// its normalised base, "https://host".
func parseVaultURL(s string) (*url.URL, string, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, "", fmt.Errorf("%q is not a URL: %v", s, err)
	}
	switch {
	case u.Scheme != "https":
		return nil, "", fmt.Errorf("%q: scheme must be https", s)
	case u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "":
		return nil, "", fmt.Errorf("%q: must have no user info, query or fragment", s)
	case u.Port() != "":
		return nil, "", fmt.Errorf("%q: must have no port", s)
	}
	host := strings.ToLower(u.Hostname())
	if strings.HasSuffix(host, closedCloudSuffix) {
		return nil, "", fmt.Errorf("%q: host %q is in Microsoft Cloud Germany, which closed on 2021-10-29; use a vault in an Azure region in Germany (NAME.vault.azure.net) or in the Delos cloud (NAME.vault.sovcloud-api.de)", s, host)
	}
	name, ok := vaultName(host)
	if !ok {
		return nil, "", fmt.Errorf("%q: host %q is not a Key Vault or Managed HSM host (NAME.vault.azure.net, NAME.managedhsm.azure.net or a sovereign-cloud equivalent)", s, host)
	}
	if !vaultNameRE.MatchString(name) || strings.Contains(name, "--") {
		return nil, "", fmt.Errorf("%q: vault name %q must be 3-24 letters, digits and single hyphens, starting with a letter and ending with a letter or digit", s, name)
	}
	return u, "https://" + host, nil
}

// vaultName returns the vault name of a data-plane host.
func vaultName(host string) (string, bool) {
	for _, suf := range vaultHostSuffixes {
		if name, ok := strings.CutSuffix(host, suf); ok && !strings.Contains(name, ".") {
			return name, true
		}
	}
	return "", false
}

func (id KeyID) check() error {
	if !keyNameRE.MatchString(id.Name) {
		return fmt.Errorf("key name %q must be 1-127 letters, digits and hyphens", id.Name)
	}
	if id.Version != "" && !keyVersionRE.MatchString(id.Version) {
		return fmt.Errorf("key version %q must be 32 hexadecimal digits", id.Version)
	}
	return nil
}

// String returns the key identifier URI: VAULT/keys/NAME[/VERSION].
func (id KeyID) String() string {
	if id.Version == "" {
		return id.Vault + "/keys/" + id.Name
	}
	return id.Vault + "/keys/" + id.Name + "/" + id.Version
}

// ManagedHSM reports whether the key lives in a Managed HSM rather than a
// vault.
func (id KeyID) ManagedHSM() bool { return strings.Contains(id.Vault, ".managedhsm.") }

// sameKey reports whether other names the same key as id, in any version.
func (id KeyID) sameKey(other KeyID) bool {
	return strings.EqualFold(id.Vault, other.Vault) && strings.EqualFold(id.Name, other.Name)
}
