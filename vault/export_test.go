package vault

import (
	"bytes"
	"io"
	"net/http"
	"net/url"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
)

// ClassifyAnswer classifies an error answer of the vault (status and JSON
// body) to op, as the KEK does; reached says whether the KEK has reached
// the key before.
func ClassifyAnswer(op string, status int, body string, reached bool) error {
	req := &http.Request{Method: http.MethodPost, URL: &url.URL{Scheme: "https", Host: "contoso.vault.azure.net", Path: "/keys/cmk/" + "0123456789abcdef0123456789abcdef" + "/unwrapkey"}}
	resp := &http.Response{StatusCode: status, Status: http.StatusText(status), Header: http.Header{"Content-Type": {"application/json"}},
		Body: io.NopCloser(bytes.NewBufferString(body)), Request: req}
	id, err := ParseKeyID("https://contoso.vault.azure.net/keys/cmk/0123456789abcdef0123456789abcdef")
	if err != nil {
		panic(err)
	}
	return classify(op, id, runtime.NewResponseError(resp), reached)
}
