package vaulttest

import (
	"context"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/cachecrypt/cachecrypt/vault"
)

// Credential returns a token credential for principal, an identity of the
// emulator's own (such as "admin" or "cache-identity"). It is the way to
// inject a credential; a principal has no permission until Grant. Its
// tokens are bound to the resource of the requested scope (such as
// https://vault.azure.net/.default) and expire after an hour.
func (s *Server) Credential(principal string) azcore.TokenCredential {
	return &credential{s: s, principal: principal}
}

type credential struct {
	s         *Server
	principal string
}

// GetToken issues a token for the credential's principal and the resource
// of the first scope.
func (c *credential) GetToken(_ context.Context, opts policy.TokenRequestOptions) (azcore.AccessToken, error) {
	var resource string
	if len(opts.Scopes) > 0 {
		resource = strings.TrimSuffix(opts.Scopes[0], "/.default")
	}
	tok, exp := c.s.issue(c.principal, resource)
	return azcore.AccessToken{Token: tok, ExpiresOn: exp}, nil
}

// tokenLifetime is the lifetime of the emulator's tokens; Entra ID's
// access tokens live 60 to 90 minutes.
const tokenLifetime = time.Hour

// issue returns a new bearer token for principal, valid for resource.
func (s *Server) issue(principal, resource string) (string, time.Time) {
	tok := "vaulttest." + randHex(16)
	exp := time.Now().Add(tokenLifetime).Truncate(time.Second)
	s.mu.Lock()
	s.tokens[tok] = token{principal: principal, audience: strings.TrimSuffix(resource, "/"), expires: exp}
	s.mu.Unlock()
	return tok, exp
}

// ExpireTokens makes every token issued so far expired: the vault answers
// requests that carry one with 401 and a new challenge, as it does when a
// client keeps a token past its expiry.
func (s *Server) ExpireTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	past := time.Now().Add(-time.Second)
	for k, t := range s.tokens {
		t.expires = past
		s.tokens[k] = t
	}
}

// SetSystemAssignedIdentity gives the emulated host a system-assigned
// managed identity, principal: the token endpoints then answer requests
// that name no identity. By default the host has none, and such requests
// are refused.
func (s *Server) SetSystemAssignedIdentity(principal string) {
	s.mu.Lock()
	s.systemMI = principal
	s.mu.Unlock()
}

// SetNetwork sets the network rule of the vault at vaultURL (see Network).
// It governs the data plane only; SetProperties sets what the management
// plane reports. Under NetworkFirewall, a vault whose properties allow
// trusted services through (TrustedServicesBypass) lets the emulator's
// identities in, as the service lets in the trusted Azure services that
// hold customer-managed keys.
func (s *Server) SetNetwork(vaultURL string, n Network) {
	s.mu.Lock()
	s.vault(hostOf(vaultURL)).network = n
	s.mu.Unlock()
}

// UseAccessPolicies switches the vault at vaultURL to the access policy
// permission model (on) or back to Azure RBAC (off, the default). The
// permissions are those of Grant either way; what changes is the form of
// a refusal: 403 with inner code AccessDenied instead of ForbiddenByRbac.
func (s *Server) UseAccessPolicies(vaultURL string, on bool) {
	s.mu.Lock()
	s.vault(hostOf(vaultURL)).accessPolicies = on
	s.mu.Unlock()
}

// vault returns the vault of host, creating it. Callers hold s.mu.
func (s *Server) vault(host string) *vaultState {
	v := s.vaults[host]
	if v == nil {
		v = &vaultState{keys: map[string]*key{}, deleted: map[string]*key{}}
		s.vaults[host] = v
	}
	return v
}

// hostOf returns the lower-case host name of a vault URL, or of a bare
// host (with or without a port).
func hostOf(vaultURL string) string {
	if u, err := url.Parse(vaultURL); err == nil && u.Host != "" {
		return strings.ToLower(u.Hostname())
	}
	h := strings.ToLower(vaultURL)
	if i := strings.LastIndexByte(h, ':'); i >= 0 && !strings.Contains(h[i:], "]") {
		h = h[:i]
	}
	return h
}

// Grant gives principal the key permissions perms (see the Op constants).
func (s *Server) Grant(principal string, perms ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range perms {
		if !slices.Contains(s.perms[principal], p) {
			s.perms[principal] = append(s.perms[principal], p)
		}
	}
}

// Revoke removes the key permissions perms from principal; with no perms it
// removes them all.
func (s *Server) Revoke(principal string, perms ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(perms) == 0 {
		delete(s.perms, principal)
		return
	}
	s.perms[principal] = slices.DeleteFunc(s.perms[principal], func(p string) bool { return slices.Contains(perms, p) })
}

func (s *Server) allowed(principal, perm string) bool {
	return slices.Contains(s.perms[principal], perm)
}

// AddManagedIdentity registers a user-assigned managed identity under its
// client ID and resource ID (either may be empty) as principal, for the
// token endpoint. MSAL caches managed identity tokens per process and
// client ID: use a distinct client ID in each test.
func (s *Server) AddManagedIdentity(principal, clientID, resourceID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range []string{clientID, resourceID} {
		if id != "" {
			s.mis[strings.ToLower(id)] = principal
		}
	}
}

// IdentityEndpoint returns the values of IDENTITY_ENDPOINT and
// IDENTITY_HEADER under which azidentity.ManagedIdentityCredential uses the
// emulator's App Service style token endpoint. The credential must use the
// emulator's Client as its transport.
func (s *Server) IdentityEndpoint() (endpoint, header string) {
	return s.srv.URL + "/msi/token", s.miHeader
}

// SetProperties sets the management-plane properties of the vault.
func (s *Server) SetProperties(p vault.Properties) {
	s.mu.Lock()
	s.props = p
	s.mu.Unlock()
}

// VaultProperties returns the vault's properties; the Server is a
// vault.PropertiesSource.
func (s *Server) VaultProperties(context.Context, string) (vault.Properties, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.props, nil
}

// Inject adds a fault (see Fault). Faults apply in the order injected.
func (s *Server) Inject(f Fault) {
	s.mu.Lock()
	s.faults = append(s.faults, &f)
	s.mu.Unlock()
}

// ClearFaults removes every injected fault, the latency and the rate limit.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	s.faults, s.latency, s.rate = nil, 0, rateLimit{}
	s.mu.Unlock()
}

// SetLatency delays every data-plane answer by d.
func (s *Server) SetLatency(d time.Duration) {
	s.mu.Lock()
	s.latency = d
	s.mu.Unlock()
}

// SetRateLimit allows at most n RSA operations (wrapkey, unwrapkey) per
// window, as Key Vault does (for example 2000 per 10 s for RSA 2048 keys);
// beyond it requests get 429 with Retry-After retryAfter. n <= 0 removes the
// limit.
func (s *Server) SetRateLimit(n int, window, retryAfter time.Duration) {
	s.mu.Lock()
	s.rate = rateLimit{n: n, window: window, retryAfter: retryAfter}
	s.mu.Unlock()
}

// Count returns how many authenticated data-plane requests for operation op
// (see the Op constants) the emulator received, including those answered
// with an injected fault.
func (s *Server) Count(op string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[op]
}

// ResetCounts sets every request counter to zero.
func (s *Server) ResetCounts() {
	s.mu.Lock()
	clear(s.counts)
	s.mu.Unlock()
}

// fault returns the fault for a request of op, consuming one use of it, and
// the global latency. It applies the rate limit. Callers hold s.mu.
func (s *Server) fault(op string) (f Fault, latency time.Duration) {
	latency = s.latency
	for i, ff := range s.faults {
		if len(ff.Ops) > 0 && !slices.Contains(ff.Ops, op) || len(ff.Ops) == 0 && op == CountToken {
			continue
		}
		f = *ff
		if ff.Count > 0 {
			ff.Count--
			if ff.Count == 0 {
				s.faults = slices.Delete(s.faults, i, i+1)
			}
		}
		return f, latency
	}
	if r := &s.rate; r.n > 0 && (op == OpWrapKey || op == OpUnwrapKey) {
		now := time.Now()
		r.times = slices.DeleteFunc(r.times, func(t time.Time) bool { return now.Sub(t) >= r.window })
		if len(r.times) >= r.n {
			return Fault{Status: 429, RetryAfter: r.retryAfter}, latency
		}
		r.times = append(r.times, now)
	}
	return Fault{}, latency
}
