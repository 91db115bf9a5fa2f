package pkcs11_test

import (
	"bytes"
	"fmt"
	"log"
	"strings"
	"testing"

	"github.com/cachecrypt/cachecrypt/kek/pkcs11"
	"github.com/stretchr/testify/require"
)

func TestParseURI(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		want  pkcs11.URI
		canon string
	}{
		{
			name: "full",
			in:   "pkcs11:token=cache;object=disk-kek;id=%01%02?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/cc/pin",
			want: pkcs11.URI{Token: "cache", Object: "disk-kek", ID: []byte{1, 2},
				ModulePath: "/usr/lib/softhsm/libsofthsm2.so", PINSource: "file:/etc/cc/pin"},
			canon: "pkcs11:token=cache;object=disk-kek;id=%01%02?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/cc/pin",
		},
		{
			name:  "attribute order and scheme case are normalised",
			in:    "PKCS11:id=%0a;object=k;token=t",
			want:  pkcs11.URI{Token: "t", Object: "k", ID: []byte{0x0a}},
			canon: "pkcs11:token=t;object=k;id=%0A",
		},
		{
			name:  "percent-encoded label with space, semicolon and UTF-8",
			in:    "pkcs11:token=My%20Token%3Bx;object=cl%C3%A9",
			want:  pkcs11.URI{Token: "My Token;x", Object: "clé"},
			canon: "pkcs11:token=My%20Token%3Bx;object=cl%C3%A9",
		},
		{
			name:  "id given as plain characters is the same bytes",
			in:    "pkcs11:serial=0123abcd;id=AB",
			want:  pkcs11.URI{Serial: "0123abcd", ID: []byte("AB")},
			canon: "pkcs11:serial=0123abcd;id=%41%42",
		},
		{
			name:  "reserved characters allowed raw in path values",
			in:    "pkcs11:object=a:b@c!$'()*+,=d",
			want:  pkcs11.URI{Object: "a:b@c!$'()*+,=d"},
			canon: "pkcs11:object=a:b@c!$'()*+,=d",
		},
		{
			name:  "type=private accepted and dropped",
			in:    "pkcs11:token=t;object=k;type=private",
			want:  pkcs11.URI{Token: "t", Object: "k"},
			canon: "pkcs11:token=t;object=k",
		},
		{
			name:  "pin from the environment (cachecrypt extension)",
			in:    "pkcs11:token=t;object=k?pin-source=env:HSM_PIN",
			want:  pkcs11.URI{Token: "t", Object: "k", PINSource: "env:HSM_PIN"},
			canon: "pkcs11:token=t;object=k?pin-source=env:HSM_PIN",
		},
		{
			name:  "file URI with empty authority, encoded module path",
			in:    "pkcs11:token=t?pin-source=file:///run/pin&module-path=%2Fopt%2Fhsm%20lib%2Fp11.so",
			want:  pkcs11.URI{Token: "t", PINSource: "file:///run/pin", ModulePath: "/opt/hsm lib/p11.so"},
			canon: "pkcs11:token=t?module-path=/opt/hsm%20lib/p11.so&pin-source=file:///run/pin",
		},
		{
			name:  "empty URI",
			in:    "pkcs11:",
			want:  pkcs11.URI{},
			canon: "pkcs11:",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := pkcs11.ParseURI(tt.in)
			require.NoError(t, err)
			require.Equal(t, tt.want.Token, u.Token)
			require.Equal(t, tt.want.Serial, u.Serial)
			require.Equal(t, tt.want.Object, u.Object)
			require.True(t, bytes.Equal(tt.want.ID, u.ID), "id %x, want %x", u.ID, tt.want.ID)
			require.Equal(t, tt.want.ModulePath, u.ModulePath)
			require.Equal(t, tt.want.PINSource, u.PINSource)
			require.Equal(t, tt.canon, u.String())
			again, err := pkcs11.ParseURI(u.String())
			require.NoError(t, err)
			require.Equal(t, u, again)
		})
	}
}

func TestParseURIRejects(t *testing.T) {
	const secret = "s3cr3t-pin-4711"
	tests := []struct {
		name, in, want string
	}{
		{"not a pkcs11 URI", "file:/x", `starts with "pkcs11:"`},
		{"too short", "pkcs1", `starts with "pkcs11:"`},
		{"fragment", "pkcs11:token=t#frag", "no fragment"},
		{"pin-value refused, value never echoed", "pkcs11:token=t?pin-value=" + secret, "pin-value is refused"},
		{"pin-value even when malformed", "pkcs11:token=t?pin-value=%zz" + secret, "pin-value is refused"},
		{"attribute without =", "pkcs11:token", "not of the form name=value"},
		{"query attribute without = is not echoed", "pkcs11:token=t?" + secret, "not of the form name=value"},
		{"empty name", "pkcs11:=x", "not of the form name=value"},
		{"duplicate attribute", "pkcs11:token=a;token=b", `"token" appears more than once`},
		{"duplicate query attribute", "pkcs11:token=a?module-path=/a&module-path=/b", `"module-path" appears more than once`},
		{"truncated percent-encoding", "pkcs11:id=%0", "truncated percent-encoding"},
		{"percent at end", "pkcs11:id=%", "truncated percent-encoding"},
		{"bad hex digit", "pkcs11:id=%G1", "invalid percent-encoding"},
		{"space must be encoded", "pkcs11:token=a b", "must be percent-encoded"},
		{"slash not allowed in path value", "pkcs11:object=a/b", "must be percent-encoded"},
		{"empty value", "pkcs11:object=", "is empty"},
		{"unknown path attribute", "pkcs11:colour=red", `unknown path attribute "colour"`},
		{"unsupported token selector", "pkcs11:slot-id=1", `"slot-id" is not supported`},
		{"bad type", "pkcs11:object=k;type=cert", "type=private"},
		{"unknown query attribute", "pkcs11:token=t?color=red", `unknown query attribute "color"`},
		{"module-name", "pkcs11:token=t?module-name=softhsm2", "module-name is not supported"},
		{"relative module path", "pkcs11:token=t?module-path=lib.so", "absolute path"},
		{"relative pin file", "pkcs11:token=t?pin-source=file:pin.txt", "absolute file path"},
		{"pin-source scheme", "pkcs11:token=t?pin-source=|/bin/pin", "file:/absolute/path or env:NAME"},
		{"empty env name", "pkcs11:token=t?pin-source=env:", "no valid environment variable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := pkcs11.ParseURI(tt.in)
			require.Error(t, err, "parsed as %v", u)
			require.Contains(t, err.Error(), tt.want)
			require.True(t, strings.HasPrefix(err.Error(), "pkcs11.ParseURI: "), err.Error())
			require.NotContains(t, err.Error(), secret)
		})
	}
}

// FuzzParseURI checks that every URI that parses has a canonical form that
// parses back to the same URI and is a fixed point, and that pin-value is
// never accepted.
func FuzzParseURI(f *testing.F) {
	for _, s := range []string{
		"pkcs11:token=cache;object=disk-kek;id=%01%02?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/cc/pin",
		"pkcs11:serial=1;id=AB;type=public?pin-source=env:X",
		"pkcs11:object=a:b@c!$'()*+,=d",
		"pkcs11:token=t?pin-value=1234",
		"pkcs11:id=%zz",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := pkcs11.ParseURI(s)
		if err != nil {
			return
		}
		if strings.Contains(s, "pin-value") && strings.Contains(s, "?") && strings.Index(s, "pin-value") > strings.Index(s, "?") {
			t.Fatalf("accepted pin-value in %q", s)
		}
		c := u.String()
		again, err := pkcs11.ParseURI(c)
		if err != nil {
			t.Fatalf("canonical form %q of %q does not parse: %v", c, s, err)
		}
		if again.String() != c {
			t.Fatalf("canonical form is not a fixed point: %q -> %q", c, again.String())
		}
		if again.Token != u.Token || again.Serial != u.Serial || again.Object != u.Object ||
			!bytes.Equal(again.ID, u.ID) || again.ModulePath != u.ModulePath || again.PINSource != u.PINSource {
			t.Fatalf("%q and its canonical form %q differ", s, c)
		}
	})
}

func ExampleParseURI() {
	u, err := pkcs11.ParseURI("pkcs11:object=disk%20kek;token=cache;id=%A0%01?pin-source=file:/run/pin")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("token %q, object %q, id %x\n", u.Token, u.Object, u.ID)
	fmt.Println(u)
	_, err = pkcs11.ParseURI("pkcs11:token=cache?pin-value=1234")
	fmt.Println(err != nil)
	// Output:
	// token "cache", object "disk kek", id a001
	// pkcs11:token=cache;object=disk%20kek;id=%A0%01?pin-source=file:/run/pin
	// true
}
