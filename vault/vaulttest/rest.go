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

// route names the operation of a data-plane request and its key name and
// version. Empty path segments (an empty version) are ignored.
func route(r *http.Request) (op, name, version string, ok bool) {
	var seg []string
	for _, p := range strings.Split(r.URL.Path, "/") {
		if p != "" {
			seg = append(seg, p)
		}
	}
	m := r.Method
	switch {
	case len(seg) == 1 && seg[0] == "keys" && m == "GET":
		return OpList, "", "", true
	case len(seg) < 2:
		return "", "", "", false
	case seg[0] == "deletedkeys" && len(seg) == 2 && m == "GET":
		return OpGet, seg[1], "", true
	case seg[0] == "deletedkeys" && len(seg) == 2 && m == "DELETE":
		return OpPurge, seg[1], "", true
	case seg[0] == "deletedkeys" && len(seg) == 3 && seg[2] == "recover" && m == "POST":
		return OpRecover, seg[1], "", true
	case seg[0] != "keys":
		return "", "", "", false
	}
	name = seg[1]
	rest := seg[2:]
	switch {
	case len(rest) == 0 && m == "GET":
		return OpGet, name, "", true
	case len(rest) == 0 && m == "PATCH":
		return OpUpdate, name, "", true
	case len(rest) == 0 && m == "DELETE":
		return OpDelete, name, "", true
	case len(rest) == 1 && rest[0] == "create" && m == "POST":
		return OpCreate, name, "", true
	case len(rest) == 1 && rest[0] == "rotate" && m == "POST":
		return OpRotate, name, "", true
	case len(rest) == 1 && rest[0] == "versions" && m == "GET":
		return OpList, name, "", true
	case len(rest) == 1 && m == "POST" && (rest[0] == "wrapkey" || rest[0] == "unwrapkey"):
		return map[string]string{"wrapkey": OpWrapKey, "unwrapkey": OpUnwrapKey}[rest[0]], name, "", true
	case len(rest) == 1 && m == "GET":
		return OpGet, name, rest[0], true
	case len(rest) == 1 && m == "PATCH":
		return OpUpdate, name, rest[0], true
	case len(rest) == 2 && m == "POST" && (rest[1] == "wrapkey" || rest[1] == "unwrapkey"):
		return map[string]string{"wrapkey": OpWrapKey, "unwrapkey": OpUnwrapKey}[rest[1]], name, rest[0], true
	}
	return "", "", "", false
}

// serve is the emulator's HTTP handler.
func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/msi/token" {
		s.serveToken(w, r)
		return
	}
	if strings.HasPrefix(r.URL.Path, "/subscriptions/") {
		s.serveARM(w, r)
		return
	}
	auth, hasAuth := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	s.mu.Lock()
	principal, known := s.tokens[auth]
	s.mu.Unlock()
	if !hasAuth || !known {
		s.challenge(w, r)
		return
	}
	op, name, version, ok := route(r)
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
	if d := latency + f.Latency; d > 0 {
		t := time.NewTimer(d)
		select {
		case <-r.Context().Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
	if f.Drop {
		if hj, ok := w.(http.Hijacker); ok {
			if c, _, err := hj.Hijack(); err == nil {
				c.Close()
				return
			}
		}
		panic(http.ErrAbortHandler)
	}
	if f.Status != 0 {
		if f.RetryAfter > 0 {
			w.Header().Set("Retry-After", strconv.FormatInt(int64((f.RetryAfter+time.Second-1)/time.Second), 10))
			if f.RetryAfter%time.Second != 0 {
				w.Header().Set("retry-after-ms", strconv.FormatInt(f.RetryAfter.Milliseconds(), 10))
			}
		}
		code := "Throttled"
		if f.Status != http.StatusTooManyRequests {
			code = "ServiceUnavailable"
		}
		writeErr(w, errf(f.Status, code, "", "injected fault: HTTP %d", f.Status))
		return
	}
	host := r.Host // with the port, if any: KIDs must lead back here
	var pre *keyVersion
	if op == OpCreate {
		// RSA key generation is slow: do it before taking the lock.
		var req jsonCreate
		if json.Unmarshal(body, &req) == nil {
			pre, _ = newVersion(req.Kty, req.KeySize, req.Crv, req.KeyOps)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.allowed(principal, op) {
		writeErr(w, errf(http.StatusForbidden, "Forbidden", "ForbiddenByRbac",
			"Caller is not authorized to perform action on resource. Caller: principal=%s; Action: keys/%s; Vault: %s", principal, op, host))
		return
	}
	status, v, e := s.do(op, "https://"+host, name, version, r.URL.Path, body, pre)
	if e != nil {
		writeErr(w, e)
		return
	}
	if v == nil {
		w.WriteHeader(status)
		return
	}
	writeJSON(w, status, v)
}

// challenge answers a request without a valid token with the bearer
// challenge of Key Vault: the authorization server ends in the tenant, and
// the resource is the data plane of the vault's cloud.
func (s *Server) challenge(w http.ResponseWriter, r *http.Request) {
	// The resource is the vault's parent domain (vault.azure.net,
	// managedhsm.azure.net, vault.azure.cn...). A bare address or localhost
	// gets the public cloud's, which the SDK's challenge resource
	// verification rejects unless DisableChallengeResourceVerification is set,
	// as it would for a real vault reached by address.
	resource := "https://vault.azure.net"
	host, _, err := net.SplitHostPort(r.Host)
	if err != nil {
		host = r.Host
	}
	if net.ParseIP(host) == nil && strings.Count(host, ".") >= 2 {
		_, parent, _ := strings.Cut(host, ".")
		resource = "https://" + parent
	}
	w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer authorization="https://login.microsoftonline.com/%s", resource="%s"`, s.tenant, resource))
	writeErr(w, errf(http.StatusUnauthorized, "Unauthorized", "", "AKV10000: Request is missing a Bearer or PoP token."))
}

// do runs one operation. Callers hold s.mu.
func (s *Server) do(op, base, name, version, path string, body []byte, pre *keyVersion) (int, any, *apiError) {
	lname := strings.ToLower(name)
	deletedPath := strings.HasPrefix(strings.TrimLeft(path, "/"), "deletedkeys/")
	if op == OpCreate {
		return s.create(base, name, body, pre)
	}
	if deletedPath {
		return s.doDeleted(op, base, lname)
	}
	if op == OpList && name == "" {
		var out []map[string]any
		for _, k := range s.keys {
			out = append(out, map[string]any{"kid": base + "/keys/" + k.name})
		}
		return 200, map[string]any{"value": out}, nil
	}
	k := s.keys[lname]
	if k == nil {
		return 0, nil, errf(http.StatusNotFound, "KeyNotFound", "", "A key with (name/id) %s was not found in this key vault. If you recently deleted this key you may be able to recover it using the correct recovery command.", name)
	}
	if op == OpDelete {
		delete(s.keys, lname)
		k.deletedAt = time.Now()
		b := s.bundle(base, k, k.current())
		if s.props.SoftDelete {
			s.deleted[lname] = k
			b.RecoveryID = base + "/deletedkeys/" + k.name
			b.DeletedDate = k.deletedAt.Unix()
			b.ScheduledPurgeDate = k.deletedAt.Add(90 * 24 * time.Hour).Unix()
		}
		return 200, b, nil
	}
	if op == OpRotate {
		nv, err := newVersion(k.current().kty, 0, "", k.current().ops)
		if err != nil {
			return 0, nil, errf(http.StatusInternalServerError, "InternalError", "", "%v", err)
		}
		k.versions = append(k.versions, nv)
		return 200, s.bundle(base, k, nv), nil
	}
	if op == OpList {
		var out []map[string]any
		for _, v := range k.versions {
			out = append(out, map[string]any{"kid": base + "/keys/" + k.name + "/" + v.id, "attributes": s.bundle(base, k, v).Attributes})
		}
		return 200, map[string]any{"value": out}, nil
	}
	kv := k.version(version)
	if kv == nil {
		return 0, nil, errf(http.StatusNotFound, "KeyNotFound", "", "A key with (name/id) %s/%s was not found in this key vault.", name, version)
	}
	switch op {
	case OpGet:
		return 200, s.bundle(base, k, kv), nil
	case OpUpdate:
		return s.update(base, k, kv, body)
	case OpWrapKey, OpUnwrapKey:
		return s.crypt(op, base, k, kv, body)
	}
	return 0, nil, errf(http.StatusBadRequest, "BadParameter", "", "unsupported operation %s", op)
}

func (s *Server) doDeleted(op, base, lname string) (int, any, *apiError) {
	k := s.deleted[lname]
	if k == nil {
		return 0, nil, errf(http.StatusNotFound, "KeyNotFound", "", "Deleted Key not found: %s", lname)
	}
	switch op {
	case OpGet:
		b := s.bundle(base, k, k.current())
		b.RecoveryID = base + "/deletedkeys/" + k.name
		b.DeletedDate = k.deletedAt.Unix()
		b.ScheduledPurgeDate = k.deletedAt.Add(90 * 24 * time.Hour).Unix()
		return 200, b, nil
	case OpRecover:
		delete(s.deleted, lname)
		s.keys[lname] = k
		return 200, s.bundle(base, k, k.current()), nil
	case OpPurge:
		if s.props.PurgeProtection {
			return 0, nil, errf(http.StatusForbidden, "Forbidden", "", "Operation \"purge\" is not allowed because purge protection is enabled for this vault. Key Vault service will automatically purge it after the retention period has passed.")
		}
		delete(s.deleted, lname)
		return http.StatusNoContent, nil, nil
	}
	return 0, nil, errf(http.StatusBadRequest, "BadParameter", "", "unsupported operation %s on a deleted key", op)
}

func (s *Server) create(base, name string, body []byte, pre *keyVersion) (int, any, *apiError) {
	var req jsonCreate
	if err := json.Unmarshal(body, &req); err != nil {
		return 0, nil, errf(http.StatusBadRequest, "BadParameter", "", "invalid request body: %v", err)
	}
	lname := strings.ToLower(name)
	if s.deleted[lname] != nil {
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
	k := s.keys[lname]
	if k == nil {
		k = &key{name: name}
		s.keys[lname] = k
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
	now := time.Now()
	switch {
	case !kv.enabled:
		return 0, nil, errf(http.StatusForbidden, "Forbidden", "KeyDisabled", "Operation %s is not allowed on a disabled key.", op)
	case kv.exp != nil && !now.Before(*kv.exp):
		return 0, nil, errf(http.StatusForbidden, "Forbidden", "KeyExpired", "Operation %s is not allowed on an expired key.", op)
	case kv.nbf != nil && now.Before(*kv.nbf):
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
	if err != nil {
		return 0, nil, errf(http.StatusBadRequest, "BadParameter", "", "value is not base64url: %v", err)
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
		out, err = rsa.EncryptPKCS1v15(rand.Reader, &kv.rsa.PublicKey, in)
	case h != nil:
		out, err = kv.rsa.Decrypt(nil, in, &rsa.OAEPOptions{Hash: hashOf(req.Alg)})
	default:
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

// serveToken is the App Service style managed identity endpoint.
func (s *Server) serveToken(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	s.mu.Lock()
	s.counts[CountToken]++
	header := s.miHeader
	var principal string
	var found bool
	id := q.Get("client_id") + q.Get("mi_res_id") + q.Get("principal_id") + q.Get("object_id")
	if id == "" {
		principal, found = "system-assigned", true
	} else {
		principal, found = s.mis[strings.ToLower(id)]
	}
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
	writeJSON(w, http.StatusOK, map[string]string{
		"access_token": s.issue(principal),
		"expires_on":   strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10),
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
	_, known := s.tokens[auth]
	s.counts[CountARM]++
	p := s.props
	s.mu.Unlock()
	switch {
	case !known:
		writeErr(w, errf(http.StatusUnauthorized, "AuthenticationFailed", "", "Authentication failed. The 'Authorization' header is missing or invalid."))
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
