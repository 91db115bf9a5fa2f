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

// opError is a failed vault call: a kek sentinel, a short description of
// what the vault said and what to do, and the SDK error (for errors.As).
type opError struct {
	op     string
	key    KeyID
	kind   error  // kek sentinel, or nil
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
	if e.kind == nil {
		return []error{e.cause}
	}
	return []error{e.kind, e.cause}
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

// describe returns the status, error code, inner code and message of a
// Key Vault error response.
func describe(re *azcore.ResponseError) (inner, text string) {
	text = fmt.Sprintf("HTTP %d", re.StatusCode)
	if re.ErrorCode != "" {
		text += " " + re.ErrorCode
	}
	if re.RawResponse == nil {
		return "", text
	}
	body, err := runtime.Payload(re.RawResponse)
	var ve vaultError
	if err != nil || json.Unmarshal(body, &ve) != nil {
		return "", text
	}
	if ve.Error.InnerError != nil {
		inner = ve.Error.InnerError.Code
		text += "/" + inner
	}
	if ve.Error.Message != "" {
		text += " (" + ve.Error.Message + ")"
	}
	return inner, text
}

// classify maps an error of the azkeys client to a kek sentinel.
func classify(op string, key KeyID, err error) error {
	e := &opError{op: op, key: key, cause: err}
	var re *azcore.ResponseError
	var afe *azidentity.AuthenticationFailedError
	switch {
	case errors.As(err, &afe) && afe.RawResponse != nil && afe.RawResponse.StatusCode >= 400 && afe.RawResponse.StatusCode < 500 &&
		afe.RawResponse.StatusCode != http.StatusTooManyRequests && afe.RawResponse.StatusCode != http.StatusRequestTimeout:
		e.kind, e.detail = kek.ErrRevoked, fmt.Sprintf("the managed identity endpoint refused a token (HTTP %d): "+
			"assign the user-assigned managed identity to this host and check its client ID or resource ID", afe.RawResponse.StatusCode)
	case errors.As(err, &re):
		inner, text := describe(re)
		e.kind, e.detail = classifyStatus(op, re.StatusCode, inner, text)
		if d := retryAfter(err); d > 0 {
			e.detail += fmt.Sprintf("; the vault asked to retry after %s", d)
		}
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled):
		e.kind, e.detail = kek.ErrUnavailable, fmt.Sprintf("no answer from the vault in time (%v); check the network path to the vault and retry", err)
	default:
		// Network failures, dropped connections, token endpoint failures:
		// transient until proven otherwise.
		e.kind, e.detail = kek.ErrUnavailable, fmt.Sprintf("vault unreachable (%s); check the network path, DNS and the managed identity endpoint, then retry", firstLine(err))
	}
	return e
}

func classifyStatus(op string, status int, inner, text string) (error, string) {
	switch {
	case status == http.StatusForbidden && inner == "KeyDisabled":
		return kek.ErrRevoked, text + ": the key is disabled; re-enable it to restore access"
	case status == http.StatusForbidden && (inner == "KeyExpired" || inner == "KeyNotYetValid"):
		return kek.ErrRevoked, text + ": the key is outside its activation/expiry dates; adjust them or rotate the key"
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return kek.ErrRevoked, text + ": access to the key was refused; grant the identity get, wrapKey and unwrapKey on the key (role Key Vault Crypto Service Encryption User)"
	case status == http.StatusNotFound:
		return kek.ErrRevoked, text + ": the key does not exist or was deleted; recover it from soft delete (az keyvault key recover) to restore access"
	case status == http.StatusBadRequest && op == "Unwrap":
		return kek.ErrUnwrap, text + ": the vault could not unwrap the ciphertext; it is corrupt or was not sealed by this key version"
	case status == http.StatusRequestTimeout || status == http.StatusTooManyRequests || status >= 500:
		return kek.ErrUnavailable, text + ": the vault is throttling or unavailable; retry later"
	}
	return nil, text
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
