package vaulttest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// key is a named key with its versions, oldest first.
type key struct {
	name      string
	versions  []*keyVersion
	deletedAt time.Time
	policy    *jsonRotationPolicy // nil: the default policy
}

func (k *key) current() *keyVersion { return k.versions[len(k.versions)-1] }

func (k *key) version(v string) *keyVersion {
	if v == "" {
		return k.current()
	}
	for _, kv := range k.versions {
		if strings.EqualFold(kv.id, v) {
			return kv
		}
	}
	return nil
}

// keyVersion is one version of a key.
type keyVersion struct {
	id       string
	kty      string
	rsa      *rsa.PrivateKey
	ec       *ecdsa.PrivateKey
	ops      []string
	enabled  bool
	nbf, exp *time.Time
	created  time.Time
	updated  time.Time
	tags     map[string]string
}

// Wire shapes of the Key Vault REST API.
type (
	jsonAttributes struct {
		Enabled         *bool  `json:"enabled,omitempty"`
		NotBefore       *int64 `json:"nbf,omitempty"`
		Expires         *int64 `json:"exp,omitempty"`
		Created         int64  `json:"created,omitempty"`
		Updated         int64  `json:"updated,omitempty"`
		RecoveryLevel   string `json:"recoveryLevel,omitempty"`
		RecoverableDays int    `json:"recoverableDays,omitempty"`
	}
	jsonKey struct {
		KID    string   `json:"kid"`
		Kty    string   `json:"kty"`
		KeyOps []string `json:"key_ops"`
		N      string   `json:"n,omitempty"`
		E      string   `json:"e,omitempty"`
		Crv    string   `json:"crv,omitempty"`
		X      string   `json:"x,omitempty"`
		Y      string   `json:"y,omitempty"`
	}
	jsonBundle struct {
		Key                jsonKey           `json:"key"`
		Attributes         jsonAttributes    `json:"attributes"`
		Tags               map[string]string `json:"tags,omitempty"`
		RecoveryID         string            `json:"recoveryId,omitempty"`
		DeletedDate        int64             `json:"deletedDate,omitempty"`
		ScheduledPurgeDate int64             `json:"scheduledPurgeDate,omitempty"`
	}
	jsonCreate struct {
		Kty        string            `json:"kty"`
		KeySize    int               `json:"key_size"`
		Crv        string            `json:"crv"`
		KeyOps     []string          `json:"key_ops"`
		Attributes *jsonAttributes   `json:"attributes"`
		Tags       map[string]string `json:"tags"`
	}
	jsonUpdate struct {
		KeyOps     []string          `json:"key_ops"`
		Attributes *jsonAttributes   `json:"attributes"`
		Tags       map[string]string `json:"tags"`
	}
	jsonOperation struct {
		Alg   string `json:"alg"`
		Value string `json:"value"`
	}
	jsonResult struct {
		KID   string `json:"kid"`
		Value string `json:"value"`
	}
	jsonRotationPolicy struct {
		ID              string           `json:"id,omitempty"`
		LifetimeActions []map[string]any `json:"lifetimeActions"`
		Attributes      struct {
			ExpiryTime string `json:"expiryTime,omitempty"`
			Created    int64  `json:"created,omitempty"`
			Updated    int64  `json:"updated,omitempty"`
		} `json:"attributes"`
	}
	jsonInner struct {
		Code string `json:"code"`
	}
	jsonError struct {
		Error struct {
			Code       string     `json:"code"`
			Message    string     `json:"message"`
			InnerError *jsonInner `json:"innererror,omitempty"`
		} `json:"error"`
	}
)

// apiError is an error answer of the emulator.
type apiError struct {
	status           int
	code, inner, msg string
}

func errf(status int, code, inner, format string, args ...any) *apiError {
	return &apiError{status, code, inner, fmt.Sprintf(format, args...)}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func writeErr(w http.ResponseWriter, e *apiError) {
	var body jsonError
	body.Error.Code, body.Error.Message = e.code, e.msg
	if e.inner != "" {
		body.Error.InnerError = &jsonInner{Code: e.inner}
	}
	writeJSON(w, e.status, body)
}

// route names the operation of a data-plane request, its key name and
// version, and whether it addresses deleted keys. Empty path segments (an
// empty version, as in /keys/NAME//wrapkey) are ignored.
func route(r *http.Request) (op, name, version string, deleted, ok bool) {
	var seg []string
	for _, p := range strings.Split(r.URL.Path, "/") {
		if p != "" {
			seg = append(seg, p)
		}
	}
	m := r.Method
	switch {
	case len(seg) == 1 && seg[0] == "keys" && m == "GET":
		return OpList, "", "", false, true
	case len(seg) == 1 && seg[0] == "deletedkeys" && m == "GET":
		return OpList, "", "", true, true
	case len(seg) < 2:
		return "", "", "", false, false
	case seg[0] == "deletedkeys" && len(seg) == 2 && m == "GET":
		return OpGet, seg[1], "", true, true
	case seg[0] == "deletedkeys" && len(seg) == 2 && m == "DELETE":
		return OpPurge, seg[1], "", true, true
	case seg[0] == "deletedkeys" && len(seg) == 3 && seg[2] == "recover" && m == "POST":
		return OpRecover, seg[1], "", true, true
	case seg[0] != "keys":
		return "", "", "", false, false
	}
	name = seg[1]
	rest := seg[2:]
	crypt := map[string]string{"wrapkey": OpWrapKey, "unwrapkey": OpUnwrapKey}
	switch {
	case len(rest) == 0 && m == "GET":
		return OpGet, name, "", false, true
	case len(rest) == 0 && m == "PATCH":
		return OpUpdate, name, "", false, true
	case len(rest) == 0 && m == "DELETE":
		return OpDelete, name, "", false, true
	case len(rest) == 1 && rest[0] == "create" && m == "POST":
		return OpCreate, name, "", false, true
	case len(rest) == 1 && rest[0] == "rotate" && m == "POST":
		return OpRotate, name, "", false, true
	case len(rest) == 1 && rest[0] == "rotationpolicy" && m == "GET":
		return OpGetRotationPolicy, name, "", false, true
	case len(rest) == 1 && rest[0] == "rotationpolicy" && m == "PUT":
		return OpSetRotationPolicy, name, "", false, true
	case len(rest) == 1 && rest[0] == "versions" && m == "GET":
		return OpList, name, "", false, true
	case len(rest) == 1 && m == "POST" && crypt[rest[0]] != "":
		return crypt[rest[0]], name, "", false, true
	case len(rest) == 1 && m == "GET":
		return OpGet, name, rest[0], false, true
	case len(rest) == 1 && m == "PATCH":
		return OpUpdate, name, rest[0], false, true
	case len(rest) == 2 && m == "POST" && crypt[rest[1]] != "":
		return crypt[rest[1]], name, rest[0], false, true
	}
	return "", "", "", false, false
}

// apiVersions are the data-plane API versions the emulator serves: the
// stable versions of the service
// (https://learn.microsoft.com/azure/key-vault/general/versions) and
// previews of them.
var apiVersions = regexp.MustCompile(`^(7\.[0-6]|2016-10-01|2025-07-01)(-preview(\.[0-9]+)?)?$|^20[0-9]{2}-[0-9]{2}-[0-9]{2}-preview$`)

// checkAPIVersion refuses a missing or unknown api-version with 400, as
// the service does. The wording of the message is inferred, not documented.
func checkAPIVersion(v string) *apiError {
	switch {
	case v == "":
		return errf(http.StatusBadRequest, "BadParameter", "", "The api-version query parameter is required.")
	case !apiVersions.MatchString(v):
		return errf(http.StatusBadRequest, "BadParameter", "", "The specified api-version (%s) is not recognized. Consider using the latest supported api-version (2025-07-01).", v)
	}
	return nil
}

// resourceOf returns the token audience (resource) of the data plane of a
// vault host: its parent domain (vault.azure.net, managedhsm.azure.net,
// vault.azure.cn...). A bare address or localhost gets the public cloud's.
func resourceOf(hostport string) string {
	host := hostOf(hostport)
	if net.ParseIP(host) == nil && strings.Count(host, ".") >= 2 {
		_, parent, _ := strings.Cut(host, ".")
		return "https://" + parent
	}
	return "https://vault.azure.net"
}

// serve is the emulator's HTTP handler.
func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/msi/token":
		s.serveToken(w, r)
		return
	case r.URL.Path == "/metadata/identity/oauth2/token":
		s.serveIMDS(w, r)
		return
	case strings.HasPrefix(r.URL.Path, "/subscriptions/"):
		s.serveARM(w, r)
		return
	}
	auth, hasAuth := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	s.mu.Lock()
	tok, known := s.tokens[auth]
	s.mu.Unlock()
	// Token validation: a missing token, a token for another audience and
	// an expired token all get 401 with a new challenge
	// (https://learn.microsoft.com/azure/key-vault/general/rest-error-codes).
	// The AKV message numbers are inferred from the service's answers;
	// their wording is not documented.
	switch want := resourceOf(r.Host); {
	case !hasAuth || !known:
		s.challenge(w, r, "AKV10000: Request is missing a Bearer or PoP token.")
		return
	case tok.audience != want:
		s.challenge(w, r, fmt.Sprintf("AKV10022: Invalid audience. Expected %s, found: %s.", want, tok.audience))
		return
	case !time.Now().Before(tok.expires):
		s.challenge(w, r, "AKV10032: Invalid token: the token has expired.")
		return
	}
	if e := checkAPIVersion(r.URL.Query().Get("api-version")); e != nil {
		writeErr(w, e)
		return
	}
	op, name, version, deleted, ok := route(r)
	if !ok {
		writeErr(w, errf(http.StatusBadRequest, "BadParameter", "", "the emulator does not implement %s %s", r.Method, r.URL.Path))
		return
	}
	// Read the body first: the server watches for a client that gives up
	// (and cancels r.Context) only once the body is consumed.
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return
	}
	s.mu.Lock()
	s.counts[op]++
	f, latency := s.fault(op)
	s.mu.Unlock()
	if !s.applyFault(w, r, f, latency+f.Latency) {
		return
	}
	var pre *keyVersion
	if op == OpCreate {
		// RSA key generation is slow: do it before taking the lock.
		var req jsonCreate
		if json.Unmarshal(body, &req) == nil {
			pre, _ = newVersion(req.Kty, req.KeySize, req.Crv, req.KeyOps)
		}
	}
	host := hostOf(r.Host)
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.vault(host)
	if e := s.admit(v, tok.principal, op, host); e != nil {
		writeErr(w, e)
		return
	}
	base := "https://" + r.Host // with the port, if any: KIDs must lead back here
	status, out, e := s.do(v, op, base, name, version, deleted, body, pre)
	if e != nil {
		writeErr(w, e)
		return
	}
	if out == nil {
		w.WriteHeader(status)
		return
	}
	writeJSON(w, status, out)
}

// applyFault waits out the latency and answers with an injected fault. It
// reports whether the request should go on.
func (s *Server) applyFault(w http.ResponseWriter, r *http.Request, f Fault, latency time.Duration) bool {
	if latency > 0 {
		t := time.NewTimer(latency)
		select {
		case <-r.Context().Done():
			t.Stop()
			return false
		case <-t.C:
		}
	}
	if f.Drop {
		if hj, ok := w.(http.Hijacker); ok {
			if c, _, err := hj.Hijack(); err == nil {
				c.Close()
				return false
			}
		}
		panic(http.ErrAbortHandler)
	}
	if f.Status == 0 {
		return true
	}
	if f.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.FormatInt(int64((f.RetryAfter+time.Second-1)/time.Second), 10))
		if f.RetryAfter%time.Second != 0 {
			w.Header().Set("retry-after-ms", strconv.FormatInt(f.RetryAfter.Milliseconds(), 10))
		}
	}
	switch f.Status {
	case http.StatusUnauthorized:
		// Every 401 of the service carries a challenge.
		s.challenge(w, r, "injected fault: HTTP 401")
	case http.StatusTooManyRequests:
		writeErr(w, errf(f.Status, "Throttled", "", "injected fault: HTTP %d", f.Status))
	default:
		writeErr(w, errf(f.Status, "ServiceUnavailable", "", "injected fault: HTTP %d", f.Status))
	}
	return false
}

// admit applies the vault's network rule and permission model to a request
// of principal for op. Callers hold s.mu.
func (s *Server) admit(v *vaultState, principal, op, host string) *apiError {
	name, _, _ := strings.Cut(host, ".")
	where := fmt.Sprintf("%s;location=%s", name, s.props.Location)
	// Network rules come before permissions: a firewalled vault refuses
	// even an authorised caller
	// (https://learn.microsoft.com/azure/key-vault/general/network-security,
	// https://learn.microsoft.com/azure/key-vault/general/private-link-diagnostics).
	// The messages are those the service sends; their wording is inferred.
	switch {
	case v.network == NetworkFirewall && !s.props.TrustedServicesBypass:
		return errf(http.StatusForbidden, "Forbidden", "ForbiddenByFirewall",
			"Client address is not authorized and caller is not a trusted service.\r\nClient address: 127.0.0.1\r\nCaller: principal=%s\r\nVault: %s", principal, where)
	case v.network == NetworkPrivateOnly && !s.props.TrustedServicesBypass:
		return errf(http.StatusForbidden, "Forbidden", "ForbiddenByConnection",
			"Public network access is disabled and request is not from a trusted service nor via an approved private link.\r\nCaller: principal=%s\r\nVault: %s", principal, where)
	case s.allowed(principal, op):
		return nil
	case v.accessPolicies:
		// The access policy form of the refusal
		// (https://learn.microsoft.com/azure/key-vault/general/troubleshooting-access-issues).
		return errf(http.StatusForbidden, "Forbidden", "AccessDenied",
			"The user, group or application 'principal=%s' does not have keys %s permission on key vault '%s'. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125287", principal, op, where)
	}
	return errf(http.StatusForbidden, "Forbidden", "ForbiddenByRbac",
		"Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\nCaller: principal=%s\r\nAction: 'Microsoft.KeyVault/vaults/keys/%s/action'\r\nVault: %s", principal, op, where)
}

// challenge answers a request without a valid token with the bearer
// challenge of Key Vault: the authorization server ends in the tenant, and
// the resource is the data plane of the vault's cloud. A bare address or
// localhost gets the public cloud's, which the SDK's challenge resource
// verification rejects unless DisableChallengeResourceVerification is set,
// as it would for a real vault reached by address.
func (s *Server) challenge(w http.ResponseWriter, r *http.Request, msg string) {
	w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer authorization="https://login.microsoftonline.com/%s", resource="%s"`, s.tenant, resourceOf(r.Host)))
	writeErr(w, errf(http.StatusUnauthorized, "Unauthorized", "", "%s", msg))
}

// do runs one operation on vault v. Callers hold s.mu.
func (s *Server) do(v *vaultState, op, base, name, version string, deleted bool, body []byte, pre *keyVersion) (int, any, *apiError) {
	lname := strings.ToLower(name)
	switch {
	case op == OpCreate:
		return s.create(v, base, name, body, pre)
	case deleted && op == OpList:
		return 200, map[string]any{"value": s.deletedItems(v, base)}, nil
	case deleted:
		return s.doDeleted(v, op, base, lname)
	case op == OpList && name == "":
		var out []map[string]any
		for _, k := range v.keys {
			out = append(out, s.item(base, base+"/keys/"+k.name, k, k.current()))
		}
		return 200, map[string]any{"value": out}, nil
	}
	k := v.keys[lname]
	if k == nil {
		return 0, nil, errf(http.StatusNotFound, "KeyNotFound", "", "A key with (name/id) %s was not found in this key vault. If you recently deleted this key you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182", name)
	}
	switch op {
	case OpDelete:
		delete(v.keys, lname)
		k.deletedAt = time.Now()
		b := s.bundle(base, k, k.current())
		if s.props.SoftDelete {
			v.deleted[lname] = k
			s.markDeleted(&b, base, k)
		}
		return 200, b, nil
	case OpRotate:
		// A rotation makes a version like the current one: same type, size
		// and operations
		// (https://learn.microsoft.com/azure/key-vault/keys/how-to-configure-key-rotation).
		cur := k.current()
		size := 0
		if cur.rsa != nil {
			size = cur.rsa.N.BitLen()
		}
		nv, err := newVersion(cur.kty, size, "", cur.ops)
		if err != nil {
			return 0, nil, errf(http.StatusInternalServerError, "InternalError", "", "%v", err)
		}
		k.versions = append(k.versions, nv)
		return 200, s.bundle(base, k, nv), nil
	case OpGetRotationPolicy:
		return 200, rotationPolicy(base, k), nil
	case OpSetRotationPolicy:
		var p jsonRotationPolicy
		if err := json.Unmarshal(body, &p); err != nil {
			return 0, nil, errf(http.StatusBadRequest, "BadParameter", "", "invalid request body: %v", err)
		}
		now := time.Now().Unix()
		p.Attributes.Created, p.Attributes.Updated = now, now
		if k.policy != nil {
			p.Attributes.Created = k.policy.Attributes.Created
		}
		k.policy = &p
		return 200, rotationPolicy(base, k), nil
	case OpList:
		var out []map[string]any
		for _, kv := range k.versions {
			out = append(out, s.item(base, base+"/keys/"+k.name+"/"+kv.id, k, kv))
		}
		return 200, map[string]any{"value": out}, nil
	}
	kv := k.version(version)
	if kv == nil {
		return 0, nil, errf(http.StatusNotFound, "KeyNotFound", "", "A key with (name/id) %s/%s was not found in this key vault.", name, version)
	}
	switch op {
	case OpGet:
		// A disabled key cannot be read either: 403 KeyDisabled (inferred
		// from the service's answers; the REST reference does not say).
		if !kv.enabled {
			return 0, nil, errf(http.StatusForbidden, "Forbidden", "KeyDisabled", "Operation get is not allowed on a disabled key.")
		}
		return 200, s.bundle(base, k, kv), nil
	case OpUpdate:
		return s.update(base, k, kv, body)
	case OpWrapKey, OpUnwrapKey:
		return s.crypt(op, base, k, kv, body)
	}
	return 0, nil, errf(http.StatusBadRequest, "BadParameter", "", "unsupported operation %s", op)
}

// rotationPolicy returns the rotation policy of k: the one set, or the
// service's default, which only notifies 30 days before expiry
// (https://learn.microsoft.com/azure/key-vault/keys/how-to-configure-key-rotation).
func rotationPolicy(base string, k *key) jsonRotationPolicy {
	var p jsonRotationPolicy
	if k.policy != nil {
		p = *k.policy
	} else {
		p.LifetimeActions = []map[string]any{{"trigger": map[string]any{"timeBeforeExpiry": "P30D"}, "action": map[string]any{"type": "Notify"}}}
	}
	p.ID = base + "/keys/" + k.name + "/rotationpolicy"
	return p
}

// item is an entry of a key list: the id, attributes and tags of a key or
// version, without the key material.
func (s *Server) item(base, kid string, k *key, kv *keyVersion) map[string]any {
	b := s.bundle(base, k, kv)
	it := map[string]any{"kid": kid, "attributes": b.Attributes}
	if len(b.Tags) > 0 {
		it["tags"] = b.Tags
	}
	return it
}

// deletedItems lists the soft-deleted keys of v.
func (s *Server) deletedItems(v *vaultState, base string) []map[string]any {
	var out []map[string]any
	for _, k := range v.deleted {
		it := s.item(base, base+"/keys/"+k.name, k, k.current())
		it["recoveryId"] = base + "/deletedkeys/" + k.name
		it["deletedDate"] = k.deletedAt.Unix()
		it["scheduledPurgeDate"] = k.deletedAt.Add(90 * 24 * time.Hour).Unix()
		out = append(out, it)
	}
	return out
}

func (s *Server) markDeleted(b *jsonBundle, base string, k *key) {
	b.RecoveryID = base + "/deletedkeys/" + k.name
	b.DeletedDate = k.deletedAt.Unix()
	b.ScheduledPurgeDate = k.deletedAt.Add(90 * 24 * time.Hour).Unix()
}

func (s *Server) doDeleted(v *vaultState, op, base, lname string) (int, any, *apiError) {
	k := v.deleted[lname]
	if k == nil {
		return 0, nil, errf(http.StatusNotFound, "KeyNotFound", "", "Deleted Key not found: %s", lname)
	}
	switch op {
	case OpGet:
		b := s.bundle(base, k, k.current())
		s.markDeleted(&b, base, k)
		return 200, b, nil
	case OpRecover:
		delete(v.deleted, lname)
		v.keys[lname] = k
		return 200, s.bundle(base, k, k.current()), nil
	case OpPurge:
		if s.props.PurgeProtection {
			return 0, nil, errf(http.StatusForbidden, "Forbidden", "", "Operation \"purge\" is not allowed because purge protection is enabled for this vault. Key Vault service will automatically purge it after the retention period has passed.")
		}
		delete(v.deleted, lname)
		return http.StatusNoContent, nil, nil
	}
	return 0, nil, errf(http.StatusBadRequest, "BadParameter", "", "unsupported operation %s on a deleted key", op)
}

func (s *Server) create(v *vaultState, base, name string, body []byte, pre *keyVersion) (int, any, *apiError) {
	var req jsonCreate
	if err := json.Unmarshal(body, &req); err != nil {
		return 0, nil, errf(http.StatusBadRequest, "BadParameter", "", "invalid request body: %v", err)
	}
	lname := strings.ToLower(name)
	if v.deleted[lname] != nil {
		return 0, nil, errf(http.StatusConflict, "Conflict", "ObjectIsDeletedButRecoverable", "Key %s is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the key can only be recovered or purged.", name)
	}
	kv, err := pre, error(nil)
	if kv == nil {
		kv, err = newVersion(req.Kty, req.KeySize, req.Crv, req.KeyOps)
	}
	if err != nil {
		return 0, nil, errf(http.StatusBadRequest, "BadParameter", "", "%v", err)
	}
	if req.Attributes != nil {
		applyAttributes(kv, req.Attributes)
	}
	kv.tags = req.Tags
	k := v.keys[lname]
	if k == nil {
		k = &key{name: name}
		v.keys[lname] = k
	}
	k.versions = append(k.versions, kv)
	return 200, s.bundle(base, k, kv), nil
}

func newVersion(kty string, size int, crv string, ops []string) (*keyVersion, error) {
	now := time.Now().Truncate(time.Second)
	kv := &keyVersion{id: randHex(16), kty: kty, enabled: true, created: now, updated: now}
	var err error
	switch kty {
	case "RSA", "RSA-HSM":
		if size == 0 {
			size = 2048
		}
		if size != 2048 && size != 3072 && size != 4096 {
			return nil, fmt.Errorf("key_size %d: RSA keys are 2048, 3072 or 4096 bits", size)
		}
		kv.rsa, err = rsa.GenerateKey(rand.Reader, size)
		if ops == nil {
			ops = []string{"encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"}
		}
	case "EC", "EC-HSM":
		kv.ec, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if ops == nil {
			ops = []string{"sign", "verify"}
		}
	default:
		return nil, fmt.Errorf("kty %q is not supported by the emulator (RSA, RSA-HSM, EC, EC-HSM)", kty)
	}
	kv.ops = ops
	return kv, err
}

func applyAttributes(kv *keyVersion, a *jsonAttributes) {
	if a.Enabled != nil {
		kv.enabled = *a.Enabled
	}
	if a.NotBefore != nil {
		t := time.Unix(*a.NotBefore, 0)
		kv.nbf = &t
	}
	if a.Expires != nil {
		t := time.Unix(*a.Expires, 0)
		kv.exp = &t
	}
}

func (s *Server) update(base string, k *key, kv *keyVersion, body []byte) (int, any, *apiError) {
	var req jsonUpdate
	if err := json.Unmarshal(body, &req); err != nil {
		return 0, nil, errf(http.StatusBadRequest, "BadParameter", "", "invalid request body: %v", err)
	}
	if req.KeyOps != nil {
		kv.ops = req.KeyOps
	}
	if req.Attributes != nil {
		applyAttributes(kv, req.Attributes)
	}
	if req.Tags != nil {
		kv.tags = req.Tags
	}
	kv.updated = time.Now().Truncate(time.Second)
	return 200, s.bundle(base, k, kv), nil
}

// crypt wraps or unwraps with RSA.
func (s *Server) crypt(op, base string, k *key, kv *keyVersion, body []byte) (int, any, *apiError) {
	// Outside its activation and expiry dates a key still unwraps (and
	// decrypts and verifies); only wrap, encrypt and sign are refused with
	// 403 (https://learn.microsoft.com/azure/key-vault/keys/about-keys-details#date-time-controlled-operations).
	now := time.Now()
	dated := op == OpWrapKey
	switch {
	case !kv.enabled:
		return 0, nil, errf(http.StatusForbidden, "Forbidden", "KeyDisabled", "Operation %s is not allowed on a disabled key.", op)
	case dated && kv.exp != nil && !now.Before(*kv.exp):
		return 0, nil, errf(http.StatusForbidden, "Forbidden", "KeyExpired", "Operation %s is not allowed on an expired key.", op)
	case dated && kv.nbf != nil && now.Before(*kv.nbf):
		return 0, nil, errf(http.StatusForbidden, "Forbidden", "KeyNotYetValid", "Operation %s is not allowed on a key that is not yet valid.", op)
	case !slices.Contains(kv.ops, op):
		return 0, nil, errf(http.StatusForbidden, "Forbidden", "KeyOperationForbidden", "Operation %s is not permitted on this key.", op)
	case kv.rsa == nil:
		return 0, nil, errf(http.StatusBadRequest, "BadParameter", "", "Operation %s is not supported for key type %s.", op, kv.kty)
	}
	var req jsonOperation
	if err := json.Unmarshal(body, &req); err != nil {
		return 0, nil, errf(http.StatusBadRequest, "BadParameter", "", "invalid request body: %v", err)
	}
	in, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(req.Value, "="))
	switch {
	case err != nil:
		return 0, nil, errf(http.StatusBadRequest, "BadParameter", "", "value is not base64url: %v", err)
	case len(in) == 0:
		// The service requires a value (inferred: the REST reference marks
		// it required; the wording is the emulator's).
		return 0, nil, errf(http.StatusBadRequest, "BadParameter", "", "Property value is required and must not be empty.")
	}
	var h hash.Hash
	switch req.Alg {
	case "RSA-OAEP-256":
		h = sha256.New()
	case "RSA-OAEP":
		h = sha1.New()
	case "RSA1_5":
	default:
		return 0, nil, errf(http.StatusBadRequest, "BadParameter", "", "Invalid algorithm: %q", req.Alg)
	}
	var out []byte
	switch {
	case op == OpWrapKey && h != nil:
		out, err = rsa.EncryptOAEP(h, rand.Reader, &kv.rsa.PublicKey, in, nil)
	case op == OpWrapKey:
		//lint:ignore SA1019 the service still serves RSA1_5; the emulator models it
		out, err = rsa.EncryptPKCS1v15(rand.Reader, &kv.rsa.PublicKey, in)
	case h != nil:
		out, err = kv.rsa.Decrypt(nil, in, &rsa.OAEPOptions{Hash: hashOf(req.Alg)})
	default:
		//lint:ignore SA1019 the service still serves RSA1_5; the emulator models it
		out, err = rsa.DecryptPKCS1v15(nil, kv.rsa, in)
	}
	if err != nil {
		return 0, nil, errf(http.StatusBadRequest, "BadParameter", "", "Operation %s failed: the value could not be processed with this key.", op)
	}
	return 200, jsonResult{KID: base + "/keys/" + k.name + "/" + kv.id, Value: base64.RawURLEncoding.EncodeToString(out)}, nil
}

func hashOf(alg string) crypto.Hash {
	if alg == "RSA-OAEP" {
		return crypto.SHA1
	}
	return crypto.SHA256
}

// bundle is the key bundle of one version. Callers hold s.mu.
func (s *Server) bundle(base string, k *key, kv *keyVersion) jsonBundle {
	b64 := base64.RawURLEncoding.EncodeToString
	jk := jsonKey{KID: base + "/keys/" + k.name + "/" + kv.id, Kty: kv.kty, KeyOps: kv.ops}
	switch {
	case kv.rsa != nil:
		jk.N = b64(kv.rsa.N.Bytes())
		jk.E = b64(big.NewInt(int64(kv.rsa.E)).Bytes())
	case kv.ec != nil:
		jk.Crv = "P-256"
		jk.X, jk.Y = b64(kv.ec.X.FillBytes(make([]byte, 32))), b64(kv.ec.Y.FillBytes(make([]byte, 32)))
	}
	enabled := kv.enabled
	a := jsonAttributes{Enabled: &enabled, Created: kv.created.Unix(), Updated: kv.updated.Unix()}
	if kv.nbf != nil {
		v := kv.nbf.Unix()
		a.NotBefore = &v
	}
	if kv.exp != nil {
		v := kv.exp.Unix()
		a.Expires = &v
	}
	switch {
	case s.props.SoftDelete && s.props.PurgeProtection:
		a.RecoveryLevel, a.RecoverableDays = "Recoverable", 90
	case s.props.SoftDelete:
		a.RecoveryLevel, a.RecoverableDays = "Recoverable+Purgeable", 90
	default:
		a.RecoveryLevel = "Purgeable"
	}
	return jsonBundle{Key: jk, Attributes: a, Tags: kv.tags}
}

// identity resolves the identity a token request names (client_id,
// mi_res_id, msi_res_id, object_id or principal_id), or the system-assigned
// identity when it names none. Callers hold s.mu.
func (s *Server) identity(q url.Values) (principal string, found bool) {
	var id string
	for _, p := range []string{"client_id", "mi_res_id", "msi_res_id", "object_id", "principal_id"} {
		id += q.Get(p)
	}
	if id == "" {
		return s.systemMI, s.systemMI != ""
	}
	principal, found = s.mis[strings.ToLower(id)]
	return principal, found
}

// tokenFault applies an injected fault of the token endpoints (Ops holding
// CountToken). It reports whether the request should go on.
func (s *Server) tokenFault(w http.ResponseWriter, r *http.Request) bool {
	s.mu.Lock()
	s.counts[CountToken]++
	f, _ := s.fault(CountToken)
	s.mu.Unlock()
	if f.Status != 0 && !f.Drop {
		// The token endpoints answer in their own shape, not Key Vault's.
		writeJSON(w, f.Status, map[string]any{"error": "unavailable", "error_description": fmt.Sprintf("injected fault: HTTP %d", f.Status)})
		return false
	}
	return s.applyFault(w, r, f, f.Latency)
}

// serveToken is the App Service style managed identity endpoint
// (https://learn.microsoft.com/azure/app-service/overview-managed-identity#rest-endpoint-reference).
func (s *Server) serveToken(w http.ResponseWriter, r *http.Request) {
	if !s.tokenFault(w, r) {
		return
	}
	q := r.URL.Query()
	s.mu.Lock()
	header := s.miHeader
	principal, found := s.identity(q)
	s.mu.Unlock()
	switch {
	case r.Header.Get("X-IDENTITY-HEADER") != header:
		writeJSON(w, http.StatusUnauthorized, map[string]any{"statusCode": 401, "message": "missing or wrong X-IDENTITY-HEADER"})
		return
	case q.Get("resource") == "":
		writeJSON(w, http.StatusBadRequest, map[string]any{"statusCode": 400, "message": "resource is required"})
		return
	case !found:
		writeJSON(w, http.StatusBadRequest, map[string]any{"statusCode": 400, "message": "No User Assigned or Delegated Managed Identity found for specified ClientId/ResourceId/PrincipalId."})
		return
	}
	tok, exp := s.issue(principal, q.Get("resource"))
	writeJSON(w, http.StatusOK, map[string]string{
		"access_token": tok,
		"expires_on":   strconv.FormatInt(exp.Unix(), 10),
		"resource":     q.Get("resource"),
		"token_type":   "Bearer",
		"client_id":    q.Get("client_id"),
	})
}

// serveIMDS is the token endpoint of the Azure Instance Metadata Service
// (https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/how-to-use-vm-token).
func (s *Server) serveIMDS(w http.ResponseWriter, r *http.Request) {
	if !s.tokenFault(w, r) {
		return
	}
	q := r.URL.Query()
	s.mu.Lock()
	principal, found := s.identity(q)
	s.mu.Unlock()
	switch {
	case r.Header.Get("Metadata") != "true":
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request", "error_description": "Required metadata header not specified"})
		return
	case q.Get("resource") == "":
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request", "error_description": "Required query variable 'resource' is missing"})
		return
	case !found:
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request", "error_description": "Identity not found"})
		return
	}
	tok, exp := s.issue(principal, q.Get("resource"))
	writeJSON(w, http.StatusOK, map[string]string{
		"access_token": tok,
		"expires_in":   strconv.FormatInt(int64(time.Until(exp)/time.Second), 10),
		"expires_on":   strconv.FormatInt(exp.Unix(), 10),
		"not_before":   strconv.FormatInt(time.Now().Unix(), 10),
		"resource":     q.Get("resource"),
		"token_type":   "Bearer",
		"client_id":    q.Get("client_id"),
	})
}

// serveARM answers Azure Resource Manager reads of a vault or Managed HSM
// (GET .../providers/Microsoft.KeyVault/vaults/NAME or .../managedHSMs/NAME)
// from the emulator's vault properties, as armkeyvault reads them.
func (s *Server) serveARM(w http.ResponseWriter, r *http.Request) {
	auth, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	seg := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	s.mu.Lock()
	tok, known := s.tokens[auth]
	s.counts[CountARM]++
	p := s.props
	s.mu.Unlock()
	switch {
	case !known || !time.Now().Before(tok.expires):
		writeErr(w, errf(http.StatusUnauthorized, "AuthenticationFailed", "", "Authentication failed. The 'Authorization' header is missing or invalid."))
		return
	case tok.audience != "https://management.azure.com" && tok.audience != "https://management.core.windows.net":
		writeErr(w, errf(http.StatusUnauthorized, "InvalidAuthenticationTokenAudience", "", "The access token has been obtained for wrong audience or resource '%s'. It should exactly match with one of the allowed audiences 'https://management.core.windows.net/','https://management.azure.com/'.", tok.audience))
		return
	case r.Method != "GET" || len(seg) != 8 || !strings.EqualFold(seg[5], "Microsoft.KeyVault") ||
		(!strings.EqualFold(seg[6], "vaults") && !strings.EqualFold(seg[6], "managedHSMs")):
		writeErr(w, errf(http.StatusBadRequest, "BadRequest", "", "the emulator does not implement %s %s", r.Method, r.URL.Path))
		return
	}
	acl := map[string]any{"defaultAction": "Allow", "bypass": "None"}
	if p.FirewallEnabled {
		acl["defaultAction"] = "Deny"
	}
	if p.TrustedServicesBypass {
		acl["bypass"] = "AzureServices"
	}
	props := map[string]any{
		"tenantId":                  s.tenant,
		"enableSoftDelete":          p.SoftDelete,
		"softDeleteRetentionInDays": 90,
		"networkAcls":               acl,
		"publicNetworkAccess":       "Enabled",
	}
	if p.PurgeProtection {
		props["enablePurgeProtection"] = true // ARM omits it when off
	}
	typ := "Microsoft.KeyVault/vaults"
	if strings.EqualFold(seg[6], "managedHSMs") {
		typ = "Microsoft.KeyVault/managedHSMs"
		props["hsmUri"] = "https://" + seg[7] + ".managedhsm.azure.net/"
	} else {
		props["vaultUri"] = "https://" + seg[7] + ".vault.azure.net/"
		props["sku"] = map[string]any{"family": "A", "name": "premium"}
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"id":         r.URL.Path,
		"name":       seg[7],
		"type":       typ,
		"location":   p.Location,
		"properties": props,
	})
}
