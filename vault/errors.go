package vault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/cachecrypt/cachecrypt/kek"
)

// Errors of this package, matched with errors.Is beside the kek sentinel
// that says what the caller should do (fail closed, retry).
var (
	// ErrNetwork means the vault's network rules refused this host: its
	// firewall does not list the host's address (ForbiddenByFirewall), or
	// public network access is off and the request did not come through an
	// approved private endpoint (ForbiddenByConnection). It comes with
	// kek.ErrRevoked: no permission grant fixes it, the network rules do.
	ErrNetwork = errors.New("vault: the vault's network rules refused this host")

	// ErrAccessPending means the vault refused the identity by Azure RBAC
	// (ForbiddenByRbac) before this KEK ever reached the key. A role
	// assignment takes up to 10 minutes to take effect, so a refusal right
	// after the assignment is not a revocation: it comes with
	// kek.ErrUnavailable (retry). Once the KEK has reached the key, the same
	// refusal is kek.ErrRevoked.
	ErrAccessPending = errors.New("vault: access refused before the identity ever reached the key; a role assignment may still be taking effect")

	// ErrRequest means the vault refused the request as sent (HTTP 400 other
	// than a bad ciphertext, 405, 413, 415, 422 and the like): an api-version
	// it does not serve, a proxy in the way, a malformed request. Retrying
	// the same request cannot help, and it says nothing about the key.
	ErrRequest = errors.New("vault: the vault refused the request as sent")
)

// Role assignments take up to 10 minutes to take effect:
// https://learn.microsoft.com/azure/key-vault/general/rbac-guide
const rbacDelayNote = "a role assignment takes up to 10 minutes to take effect (https://learn.microsoft.com/azure/key-vault/general/rbac-guide)"

// reason is the cause of a failed vault call, as far as the answer shows
// it. Validate turns each into the check it failed.
type reason int

const (
	reasonUnknown       reason = iota
	reasonTransient            // throttling, outage, timeout, network
	reasonIdentity             // the token endpoint refused the identity
	reasonDisabled             // the key version is disabled
	reasonDates                // the key version is expired or not yet valid
	reasonKeyOperation         // the key's own operations exclude this one
	reasonNetwork              // firewall or private link
	reasonPermission           // RBAC or access policy refused the identity
	reasonAccessPending        // RBAC refused the identity before any success
	reasonAuth                 // 401: the vault did not accept the token
	reasonNotFound             // the key does not exist (or was deleted)
	reasonCiphertext           // unwrap refused the ciphertext
	reasonRequest              // the request itself was refused
)

// verdict is what a refusal means: a kek sentinel (or nil), a sentinel of
// this package (or nil), the reason and what to do.
type verdict struct {
	kind, extra error
	why         reason
	detail      string
}

// opError is a failed vault call: a kek sentinel, a short description of
// what the vault said and what to do, and the SDK error (for errors.As).
type opError struct {
	op     string
	key    KeyID
	kind   error  // kek sentinel, or nil
	extra  error  // sentinel of this package, or nil
	why    reason // cause, for Validate
	text   string // what the vault answered
	detail string // what happened and what to do
	cause  error
}

func (e *opError) Error() string {
	s := fmt.Sprintf("vault.%s: key %s: %s", e.op, e.key, e.detail)
	if e.kind != nil {
		s += ": " + e.kind.Error()
	}
	return s
}

func (e *opError) Unwrap() []error {
	errs := []error{e.cause}
	for _, s := range []error{e.extra, e.kind} {
		if s != nil {
			errs = append([]error{s}, errs...)
		}
	}
	return errs
}

// vaultError is the error body of a Key Vault response.
type vaultError struct {
	Error struct {
		Code       string `json:"code"`
		Message    string `json:"message"`
		InnerError *struct {
			Code string `json:"code"`
		} `json:"innererror"`
	} `json:"error"`
}

// answer is what an error response of the vault says.
type answer struct {
	status  int
	code    string // error code, such as "Forbidden"
	inner   string // inner error code, such as "KeyDisabled"
	message string
}

// text returns the status, codes and message, for error messages.
func (a answer) text() string {
	s := fmt.Sprintf("HTTP %d", a.status)
	if a.code != "" {
		s += " " + a.code
	}
	if a.inner != "" {
		s += "/" + a.inner
	}
	if a.message != "" {
		s += " (" + a.message + ")"
	}
	return s
}

// describe reads the status, error code, inner code and message of a Key
// Vault error response.
func describe(re *azcore.ResponseError) answer {
	a := answer{status: re.StatusCode, code: re.ErrorCode}
	if re.RawResponse == nil {
		return a
	}
	body, err := runtime.Payload(re.RawResponse)
	var ve vaultError
	if err != nil || json.Unmarshal(body, &ve) != nil {
		return a
	}
	if a.code == "" {
		a.code = ve.Error.Code
	}
	if ve.Error.InnerError != nil {
		a.inner = ve.Error.InnerError.Code
	}
	a.message = ve.Error.Message
	return a
}

// classify maps an error of the azkeys client to a kek sentinel. reached
// tells whether this KEK has reached the key before (see ErrAccessPending).
func classify(op string, key KeyID, err error, reached bool) error {
	e := &opError{op: op, key: key, cause: err}
	var re *azcore.ResponseError
	var afe *azidentity.AuthenticationFailedError
	switch {
	case errors.As(err, &afe) && afe.RawResponse != nil:
		v := classifyIdentity(afe.RawResponse.StatusCode)
		e.kind, e.why, e.detail = v.kind, v.why, v.detail
	case errors.As(err, &re):
		a := describe(re)
		e.text = a.text()
		v := classifyStatus(op, a, key.ManagedHSM(), reached)
		e.kind, e.extra, e.why, e.detail = v.kind, v.extra, v.why, e.text+": "+v.detail
		if d := retryAfter(err); d > 0 {
			e.detail += fmt.Sprintf("; the vault asked to retry after %s", d)
		}
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled):
		e.kind, e.why, e.detail = kek.ErrUnavailable, reasonTransient, fmt.Sprintf("no answer from the vault in time (%v); check the network path to the vault and retry", err)
	default:
		// Network failures, dropped connections, token endpoint failures:
		// transient until proven otherwise.
		e.kind, e.why, e.detail = kek.ErrUnavailable, reasonTransient, fmt.Sprintf("vault unreachable (%s); check the network path, DNS and the managed identity endpoint, then retry", firstLine(err))
	}
	return e
}

// classifyIdentity maps a refusal of the managed identity token endpoint.
func classifyIdentity(status int) verdict {
	switch {
	case status == http.StatusNotFound || status == http.StatusGone:
		// IMDS answers 404 and 410 while it is being updated, and asks
		// clients to retry:
		// https://learn.microsoft.com/entra/identity/managed-identities-azure-resources/how-to-use-vm-token#error-handling
		return verdict{kind: kek.ErrUnavailable, why: reasonTransient, detail: fmt.Sprintf("the managed identity endpoint answered HTTP %d, which it does while it is being updated; retry in a minute", status)}
	case status >= 400 && status < 500 && status != http.StatusTooManyRequests && status != http.StatusRequestTimeout:
		return verdict{kind: kek.ErrRevoked, why: reasonIdentity, detail: fmt.Sprintf("the managed identity endpoint refused a token (HTTP %d): "+
			"assign the user-assigned managed identity to this host and check its client ID or resource ID", status)}
	}
	return verdict{kind: kek.ErrUnavailable, why: reasonTransient, detail: fmt.Sprintf("the managed identity endpoint failed (HTTP %d); retry later", status)}
}

// Inner error codes of Key Vault's 403 answers.
const (
	innerKeyDisabled           = "KeyDisabled"
	innerKeyExpired            = "KeyExpired"
	innerKeyNotYetValid        = "KeyNotYetValid"
	innerKeyOperationForbidden = "KeyOperationForbidden"
	innerForbiddenByFirewall   = "ForbiddenByFirewall"
	innerForbiddenByConnection = "ForbiddenByConnection"
	innerForbiddenByRbac       = "ForbiddenByRbac"
	innerAccessDenied          = "AccessDenied" // access policy model
)

// classifyStatus maps an error answer of the vault to a kek sentinel, a
// sentinel of this package, a reason and what to do.
func classifyStatus(op string, a answer, hsm, reached bool) verdict {
	switch st := a.status; {
	case st == http.StatusForbidden:
		return classifyForbidden(a.inner, hsm, reached)
	case st == http.StatusUnauthorized:
		return verdict{kek.ErrRevoked, nil, reasonAuth, "the vault did not accept the identity's token: check that the identity belongs to the vault's tenant and that the vault URL names the right cloud"}
	case st == http.StatusNotFound:
		return verdict{kek.ErrRevoked, nil, reasonNotFound, "the key does not exist or was deleted; recover it from soft delete (" + recoverCommand(hsm) + ") to restore access"}
	case st == http.StatusGone:
		return verdict{kek.ErrRevoked, nil, reasonNotFound, "the key or its vault is gone; recover it from soft delete if it is still within its retention period (" + recoverCommand(hsm) + ")"}
	case st == http.StatusConflict && (a.inner == "ObjectIsDeletedButRecoverable" || a.inner == "ObjectIsBeingDeleted"):
		return verdict{kek.ErrRevoked, nil, reasonNotFound, "the key is deleted; recover it from soft delete (" + recoverCommand(hsm) + ") to restore access"}
	case st == http.StatusConflict:
		return verdict{kek.ErrUnavailable, nil, reasonTransient, "another operation on the key is in progress; retry"}
	case st == http.StatusBadRequest && op == "Unwrap" && !namesOtherCause(a):
		return verdict{kek.ErrUnwrap, nil, reasonCiphertext, "the vault could not unwrap the ciphertext; it is corrupt or was not sealed by this key version"}
	case st == http.StatusRequestTimeout || st == http.StatusTooManyRequests || st >= 500:
		return verdict{kek.ErrUnavailable, nil, reasonTransient, "the vault is throttling or unavailable; retry later"}
	case mentions(a.message, "api-version"):
		return verdict{nil, ErrRequest, reasonRequest, "the vault does not serve the API version of this client; check for a proxy that rewrites requests, and update the Azure SDK"}
	}
	return verdict{nil, ErrRequest, reasonRequest, "the vault refused the request as sent; check for a proxy between this host and the vault"}
}

// classifyForbidden maps a 403 answer by its inner code.
func classifyForbidden(inner string, hsm, reached bool) verdict {
	switch inner {
	case innerKeyDisabled:
		return verdict{kek.ErrRevoked, nil, reasonDisabled, "the key is disabled; re-enable it to restore access (" + enableCommand(hsm) + ")"}
	case innerKeyExpired, innerKeyNotYetValid:
		return verdict{kek.ErrRevoked, nil, reasonDates, "the key is outside its activation/expiry dates; adjust them or rotate the key"}
	case innerKeyOperationForbidden:
		return verdict{kek.ErrRevoked, nil, reasonKeyOperation, "the key does not allow this operation; allow wrapKey and unwrapKey on the key (" + opsCommand(hsm) + ")"}
	case innerForbiddenByFirewall:
		return verdict{kek.ErrRevoked, ErrNetwork, reasonNetwork, "the vault firewall does not allow this host's address; add the host's network to the vault firewall, or allow trusted Azure services (" + bypassCommand(hsm) + ")"}
	case innerForbiddenByConnection:
		return verdict{kek.ErrRevoked, ErrNetwork, reasonNetwork, "public network access to the vault is off and the request did not come through an approved private endpoint; reach the vault through its private endpoint, or enable public access from selected networks"}
	case innerForbiddenByRbac:
		if !reached {
			return verdict{kek.ErrUnavailable, ErrAccessPending, reasonAccessPending, "the identity has no role on the key yet; " + rbacDelayNote + ", so if the role was just assigned, retry in a few minutes; otherwise " + grantFix(hsm)}
		}
		return verdict{kek.ErrRevoked, nil, reasonPermission, "the identity's role on the key was removed; " + grantFix(hsm)}
	case innerAccessDenied:
		return verdict{kek.ErrRevoked, nil, reasonPermission, "the vault's access policies do not give the identity this permission; " + policyFix}
	}
	return verdict{kek.ErrRevoked, nil, reasonPermission, "access to the key was refused; " + grantFix(hsm)}
}

// namesOtherCause reports whether a 400 answer to an unwrap names a cause
// other than the ciphertext: an api-version, an algorithm, a request body.
// The service's message wording is not documented; these are the words its
// parameter errors use.
func namesOtherCause(a answer) bool {
	for _, w := range []string{"api-version", "algorithm", "request body", "json", "not supported for key type"} {
		if mentions(a.message, w) {
			return true
		}
	}
	return false
}

func mentions(s, word string) bool { return strings.Contains(strings.ToLower(s), word) }

// Advice for a vault and for a Managed HSM, which has its own role names
// and az commands (az keyvault ... --hsm-name, az keyvault update-hsm).
func grantFix(hsm bool) string {
	if hsm {
		return `assign the managed identity the Managed HSM local RBAC role "Managed HSM Crypto Service Encryption User" on the key ` +
			`(az keyvault role assignment create --hsm-name HSM --role "Managed HSM Crypto Service Encryption User" --assignee-object-id ID --scope /keys/KEY)`
	}
	return `grant the managed identity get, wrapKey and unwrapKey on the key (role "Key Vault Crypto Service Encryption User"; ` +
		`on a vault that uses access policies: ` + policyCommand + `)`
}

const (
	policyCommand = "az keyvault set-policy --name VAULT --object-id ID --key-permissions get wrapKey unwrapKey"
	policyFix     = "add an access policy giving the managed identity get, wrapKey and unwrapKey on keys (" + policyCommand + ")"
)

// keyCommand is the az command that runs verb on the key, in a vault or a
// Managed HSM, with the extra arguments args (each starting with a space).
func keyCommand(hsm bool, verb, args string) string {
	where := "--vault-name VAULT"
	if hsm {
		where = "--hsm-name HSM"
	}
	return "az keyvault key " + verb + " " + where + " --name KEY" + args
}

func recoverCommand(hsm bool) string { return keyCommand(hsm, "recover", "") }

func enableCommand(hsm bool) string { return keyCommand(hsm, "set-attributes", " --enabled true") }

func opsCommand(hsm bool) string {
	return keyCommand(hsm, "set-attributes", " --ops wrapKey unwrapKey")
}

func bypassCommand(hsm bool) string {
	if hsm {
		return "az keyvault update-hsm --hsm-name HSM --bypass AzureServices"
	}
	return "az keyvault update --name VAULT --bypass AzureServices"
}

// retryAfter returns the delay an error response asks for, or 0.
func retryAfter(err error) time.Duration {
	var re *azcore.ResponseError
	if !errors.As(err, &re) || re.RawResponse == nil {
		return 0
	}
	h := re.RawResponse.Header
	for _, name := range []string{"retry-after-ms", "x-ms-retry-after-ms"} {
		if ms, err := strconv.ParseInt(h.Get(name), 10, 64); err == nil && ms > 0 {
			return time.Duration(ms) * time.Millisecond
		}
	}
	v := h.Get("Retry-After")
	if s, err := strconv.ParseInt(v, 10, 64); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return time.Until(t)
	}
	return 0
}

func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}
