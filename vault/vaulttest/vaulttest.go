// Package vaulttest is an in-process Azure Key Vault emulator for tests.
//
// A Server speaks, over TLS, the subset of the Key Vault REST API that the
// official azkeys client uses for keys: the 401 authentication challenge,
// create, get, update (enable, disable, expiry, activation, operations),
// delete, recover and purge with soft delete, versions, and wrapkey and
// unwrapkey with real RSA. It also serves an App Service style managed
// identity token endpoint (IDENTITY_ENDPOINT and IDENTITY_HEADER), so that
// azidentity.ManagedIdentityCredential itself can be exercised, keeps
// per-identity permissions, exposes the vault's management-plane properties
// (vault.PropertiesSource), injects faults (throttling with Retry-After, 5xx,
// latency, dropped connections, an RSA operation rate limit) and counts
// requests per operation.
//
// The server answers for every vault host: a client built with
// Server.ClientOptions reaches it under real names such as
// https://contoso.vault.azure.net or https://contoso.managedhsm.azure.net,
// so the SDK's challenge resource verification runs unchanged. Each host is
// its own vault, with its own keys.
//
// The emulator refuses what the service refuses, with the service's status,
// error code, inner code and message shapes: tokens are bound to their
// audience (the vault's cloud, or Azure Resource Manager) and expire; an
// unsupported api-version is refused; a disabled key cannot even be read;
// wrap is refused outside a key's activation and expiry dates but unwrap is
// not; a vault can be put behind a firewall or made private-link only
// (SetNetwork), and can use access policies instead of Azure RBAC
// (UseAccessPolicies). Where the service documents a behaviour, the code
// links the page; where the behaviour was inferred from the service's
// answers and the SDKs, the code says so.
//
// Besides the App Service style token endpoint, the emulator serves the
// Azure Instance Metadata Service (IMDS) token endpoint: a client from
// Client reaches it at its real address, http://169.254.169.254.
//
// Command kvemulator (vault/vaulttest/cmd/kvemulator) serves an emulator
// for programs that are not written in Go.
package vaulttest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
	"github.com/cachecrypt/cachecrypt/vault"
)

// DefaultTenant is the tenant named in the authentication challenge.
const DefaultTenant = "72f988bf-86f1-41af-91ab-2d7cd011db47"

// Key operations and permissions, as named by Key Vault.
const (
	OpGet       = "get"
	OpCreate    = "create"
	OpUpdate    = "update"
	OpDelete    = "delete"
	OpRecover   = "recover"
	OpPurge     = "purge"
	OpList      = "list"
	OpWrapKey   = "wrapKey"
	OpUnwrapKey = "unwrapKey"
	OpRotate    = "rotate"

	OpGetRotationPolicy = "getrotationpolicy"
	OpSetRotationPolicy = "setrotationpolicy"
)

// Counters of requests outside the key operations (see Server.Count).
const (
	CountToken = "token" // managed identity token requests
	CountARM   = "arm"   // Azure Resource Manager reads of vault properties
)

// CryptoServiceEncryptionUser holds the permissions of the built-in role
// "Key Vault Crypto Service Encryption User": what a CMK identity needs.
var CryptoServiceEncryptionUser = []string{OpGet, OpWrapKey, OpUnwrapKey}

// AllPermissions holds every key permission the emulator knows.
var AllPermissions = []string{OpGet, OpCreate, OpUpdate, OpDelete, OpRecover, OpPurge, OpList, OpWrapKey, OpUnwrapKey, OpRotate,
	OpGetRotationPolicy, OpSetRotationPolicy}

// Network is the network rule of a vault's data plane (see SetNetwork).
type Network int

// Network rules. A Server reaches every vault from 127.0.0.1, which no
// firewall rule of the emulator lists.
const (
	// NetworkOpen lets every address in (public network access from all
	// networks), the default.
	NetworkOpen Network = iota
	// NetworkFirewall lets in only listed addresses and, when the vault's
	// properties say so (TrustedServicesBypass), trusted Azure services:
	// others get 403 ForbiddenByFirewall.
	NetworkFirewall
	// NetworkPrivateOnly disables public network access: a request that does
	// not come through an approved private endpoint gets 403
	// ForbiddenByConnection.
	NetworkPrivateOnly
)

// Fault is an injected failure, applied to the next Count requests of the
// data plane (0 means every request until ClearFaults). Only requests for
// the operations in Ops are affected; empty Ops means all operations of the
// data plane. Ops containing CountToken affects the managed identity token
// endpoints (App Service and IMDS) too.
type Fault struct {
	Status     int           // HTTP status to answer with, such as 429 or 503; 0 for none
	RetryAfter time.Duration // sent as Retry-After (whole seconds, rounded up), plus retry-after-ms when not whole
	Latency    time.Duration // delay before answering
	Drop       bool          // close the connection without an answer
	Count      int           // requests affected; 0 means until ClearFaults
	Ops        []string      // operations affected; empty means all
}

// Server is an in-process Key Vault emulator. Its methods are safe for
// concurrent use.
type Server struct {
	srv    *httptest.Server
	caPEM  []byte
	tenant string

	mu       sync.Mutex
	vaults   map[string]*vaultState // by lower-case host name, without port
	tokens   map[string]token       // bearer token -> what it grants
	perms    map[string][]string    // principal -> permissions
	mis      map[string]string      // managed identity client ID or resource ID (lower case) -> principal
	systemMI string                 // principal of the system-assigned identity; "" for none
	miHeader string
	props    vault.Properties
	faults   []*Fault
	latency  time.Duration
	counts   map[string]int
	rate     rateLimit
}

// vaultState is one vault (or Managed HSM): its keys and its access rules.
type vaultState struct {
	keys           map[string]*key // live keys by lower-case name
	deleted        map[string]*key // soft-deleted keys by lower-case name
	network        Network
	accessPolicies bool // access policy permission model instead of Azure RBAC
}

// token is an issued bearer token.
type token struct {
	principal string
	audience  string // resource it was issued for, without a trailing slash
	expires   time.Time
}

// rateLimit caps RSA operations (wrapkey, unwrapkey) per window.
type rateLimit struct {
	n          int
	window     time.Duration
	retryAfter time.Duration
	times      []time.Time
}

// NewServer starts an emulator with soft delete and purge protection on,
// in region "westeurope", with no firewall, and closes it when tb ends.
func NewServer(tb testing.TB) *Server {
	tb.Helper()
	s, err := Start()
	if err != nil {
		tb.Fatalf("vaulttest.NewServer: %v", err)
	}
	tb.Cleanup(s.Close)
	return s
}

// Start starts an emulator outside of a test. Call Close when done.
func Start() (*Server, error) {
	cert, caPEM, err := selfSigned()
	if err != nil {
		return nil, fmt.Errorf("vaulttest.Start: %w", err)
	}
	s := &Server{
		caPEM:    caPEM,
		tenant:   DefaultTenant,
		vaults:   map[string]*vaultState{},
		tokens:   map[string]token{},
		perms:    map[string][]string{},
		mis:      map[string]string{},
		miHeader: randHex(16),
		props:    vault.Properties{SoftDelete: true, PurgeProtection: true, Location: "westeurope"},
		counts:   map[string]int{},
	}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	s.srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	s.srv.StartTLS()
	return s, nil
}

// Close shuts the emulator down.
func (s *Server) Close() { s.srv.Close() }

// Addr returns the emulator's listening address, host:port.
func (s *Server) Addr() string { return s.srv.Listener.Addr().String() }

// CACertPEM returns the PEM certificate that the emulator's TLS certificate
// chains to; NewClient trusts it.
func (s *Server) CACertPEM() []byte { return append([]byte(nil), s.caPEM...) }

// VaultURL returns the URL of the vault called name, such as
// "https://name.vault.azure.net". Any vault or Managed HSM host reaches
// the emulator through a client from Client or ClientOptions.
func (s *Server) VaultURL(name string) string { return "https://" + name + ".vault.azure.net" }

// Client returns an HTTP client that reaches the emulator for every host
// name and trusts its certificate.
func (s *Server) Client() *http.Client { return NewClient(s.Addr(), s.caPEM) }

// ClientOptions returns azkeys client options that reach the emulator, with
// a fast retry policy (3 retries, 10 ms to 100 ms apart) so that fault tests
// run quickly.
func (s *Server) ClientOptions() *azkeys.ClientOptions {
	return ClientOptions(s.Addr(), s.caPEM)
}

// NewClient returns an HTTP client that dials addr for every host name and
// trusts the certificate caPEM: a client of an emulator running in another
// process. It sends requests for the IMDS token endpoint
// (http://169.254.169.254) to the emulator too, over TLS.
func NewClient(addr string, caPEM []byte) *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	d := &net.Dialer{Timeout: 5 * time.Second}
	return &http.Client{Transport: imdsOverTLS{&http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, addr)
		},
		MaxIdleConnsPerHost: 16,
	}}}
}

// imdsHost is the address of the Azure Instance Metadata Service.
const imdsHost = "169.254.169.254"

// imdsOverTLS sends plain HTTP requests for IMDS over TLS, since the
// emulator listens for TLS only.
type imdsOverTLS struct{ next http.RoundTripper }

func (t imdsOverTLS) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Scheme == "http" && r.URL.Host == imdsHost {
		r = r.Clone(r.Context())
		r.URL.Scheme = "https"
	}
	return t.next.RoundTrip(r)
}

// ClientOptions returns azkeys client options for an emulator at addr whose
// certificate is caPEM (see NewClient), with a fast retry policy.
func ClientOptions(addr string, caPEM []byte) *azkeys.ClientOptions {
	return &azkeys.ClientOptions{ClientOptions: azcore.ClientOptions{
		Transport: NewClient(addr, caPEM),
		Retry:     policy.RetryOptions{MaxRetries: 3, RetryDelay: 10 * time.Millisecond, MaxRetryDelay: 100 * time.Millisecond},
	}}
}

// WriteCACert writes the emulator's CA certificate to path, for a child
// process (see NewClient).
func (s *Server) WriteCACert(path string) error { return os.WriteFile(path, s.caPEM, 0o644) }

// certLifetime is how long the emulator's certificate is valid: long enough
// for an emulator that a command keeps running, and a CA file that a test
// setup writes once.
const certLifetime = 10 * 365 * 24 * time.Hour

// selfSigned makes a self-signed ECDSA certificate valid for every Key Vault
// and Managed HSM host, localhost, 127.0.0.1 and the IMDS address.
func selfSigned() (tls.Certificate, []byte, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "vaulttest Key Vault emulator"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(certLifetime),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:                  true,
		BasicConstraintsValid: true,
		DNSNames: []string{
			"*.vault.azure.net", "*.vault.azure.cn", "*.vault.usgovcloudapi.net", "*.vault.sovcloud-api.fr", "*.vault.sovcloud-api.de",
			"*.managedhsm.azure.net", "*.managedhsm.azure.cn", "*.managedhsm.usgovcloudapi.net",
			"*.managedhsm.sovcloud-api.fr", "*.managedhsm.sovcloud-api.de", "localhost",
			"management.azure.com",
		},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback, net.ParseIP(imdsHost)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv},
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return fmt.Sprintf("%x", b)
}
