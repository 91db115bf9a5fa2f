package pkcs11

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// URI is a parsed RFC 7512 PKCS#11 URI that names one RSA key pair in one
// token, the module that reaches the token and where the user PIN is kept.
// It never holds the PIN itself.
//
// The supported attributes are, in the path: token (token label), serial
// (token serial number), object (CKA_LABEL of the key pair), id (CKA_ID) and
// type (private or public; both name the pair); in the query: module-path and
// pin-source. pin-source is "file:/absolute/path" (RFC 7512) or "env:NAME",
// a cachecrypt extension that reads the PIN from an environment variable.
// pin-value is refused, because it would put the PIN in command lines,
// configuration dumps and logs.
type URI struct {
	Token      string // token label ("token")
	Serial     string // token serial number ("serial")
	Object     string // CKA_LABEL of the key pair ("object")
	ID         []byte // CKA_ID of the key pair ("id")
	ModulePath string // absolute path of the PKCS#11 module ("module-path")
	PINSource  string // "file:/path" or "env:NAME" ("pin-source")
}

// ParseURI parses an RFC 7512 PKCS#11 URI. Values are percent-decoded; an
// attribute given twice, an unknown attribute, a bad percent-encoding and
// pin-value are errors. Errors never repeat the value of pin-value.
func ParseURI(s string) (*URI, error) {
	const scheme = "pkcs11:"
	if len(s) < len(scheme) || !strings.EqualFold(s[:len(scheme)], scheme) {
		return nil, errors.New(`pkcs11.ParseURI: a PKCS#11 URI starts with "pkcs11:"`)
	}
	rest := s[len(scheme):]
	if strings.Contains(rest, "#") {
		return nil, errors.New("pkcs11.ParseURI: a PKCS#11 URI has no fragment (#); percent-encode '#' as %23")
	}
	path, query, _ := strings.Cut(rest, "?")
	u := &URI{}
	seen := map[string]bool{}
	if path != "" {
		for _, attr := range strings.Split(path, ";") {
			if err := u.setPath(attr, seen); err != nil {
				return nil, fmt.Errorf("pkcs11.ParseURI: %w", err)
			}
		}
	}
	if query != "" {
		for _, attr := range strings.Split(query, "&") {
			if err := u.setQuery(attr, seen); err != nil {
				return nil, fmt.Errorf("pkcs11.ParseURI: %w", err)
			}
		}
	}
	return u, nil
}

// splitAttr splits name=value and checks that name appears once.
func splitAttr(attr string, seen map[string]bool) (name, raw string, err error) {
	name, raw, ok := strings.Cut(attr, "=")
	if !ok || name == "" {
		// Do not echo the attribute: it might be a mistyped pin-value.
		return "", "", errors.New("an attribute is not of the form name=value (separate path attributes with ';' and query attributes with '&')")
	}
	if seen[name] {
		return "", "", fmt.Errorf("attribute %q appears more than once", name)
	}
	seen[name] = true
	return name, raw, nil
}

func (u *URI) setPath(attr string, seen map[string]bool) error {
	name, raw, err := splitAttr(attr, seen)
	if err != nil {
		return err
	}
	v, err := unescape(raw, pathChars)
	if err != nil {
		return fmt.Errorf("attribute %q: %w", name, err)
	}
	if len(v) == 0 {
		return fmt.Errorf("attribute %q is empty; leave it out instead", name)
	}
	switch name {
	case "token":
		u.Token = string(v)
	case "serial":
		u.Serial = string(v)
	case "object":
		u.Object = string(v)
	case "id":
		u.ID = v
	case "type":
		if s := string(v); s != "private" && s != "public" {
			return fmt.Errorf("type=%q names no RSA key pair; use type=private or leave it out", s)
		}
	case "manufacturer", "model", "library-manufacturer", "library-description", "library-version",
		"slot-description", "slot-manufacturer", "slot-id":
		return fmt.Errorf("attribute %q is not supported; select the token by token= (label) or serial=", name)
	default:
		return fmt.Errorf("unknown path attribute %q; supported: token, serial, object, id, type", name)
	}
	return nil
}

func (u *URI) setQuery(attr string, seen map[string]bool) error {
	name, raw, err := splitAttr(attr, seen)
	if err != nil {
		return err
	}
	switch name {
	case "pin-value":
		// Never echo the value: it is a PIN.
		return errors.New("pin-value is refused: it puts the PIN in command lines and logs; " +
			"put the PIN in a file readable only by this service and use pin-source=file:/path, or use pin-source=env:NAME")
	case "module-name":
		return errors.New("module-name is not supported; give the module's absolute path with module-path=")
	case "module-path", "pin-source":
	default:
		return fmt.Errorf("unknown query attribute %q; supported: module-path, pin-source", name)
	}
	v, err := unescape(raw, queryChars)
	if err != nil {
		return fmt.Errorf("attribute %q: %w", name, err)
	}
	s := string(v)
	if name == "module-path" {
		if !filepath.IsAbs(s) {
			return fmt.Errorf("module-path %q must be an absolute path", s)
		}
		u.ModulePath = s
		return nil
	}
	if _, _, err := pinSource(s); err != nil {
		return err
	}
	u.PINSource = s
	return nil
}

// pinSource splits a pin-source value into its kind ("file" or "env") and
// its file path or variable name.
func pinSource(s string) (kind, where string, err error) {
	switch {
	case strings.HasPrefix(s, "file://"):
		where = strings.TrimPrefix(s, "file://")
		kind = "file"
	case strings.HasPrefix(s, "file:"):
		where = strings.TrimPrefix(s, "file:")
		kind = "file"
	case strings.HasPrefix(s, "env:"):
		where = strings.TrimPrefix(s, "env:")
		if where == "" || strings.ContainsAny(where, "=\x00") {
			return "", "", fmt.Errorf("pin-source %q names no valid environment variable", s)
		}
		return "env", where, nil
	default:
		return "", "", fmt.Errorf("pin-source %q is not supported; use file:/absolute/path or env:NAME", s)
	}
	if !filepath.IsAbs(where) {
		return "", "", fmt.Errorf("pin-source %q must name an absolute file path", s)
	}
	return kind, where, nil
}

// maxPINFile bounds what is read from a PIN file: PINs are short.
const maxPINFile = 1024

// readPIN reads the PIN from the URI's pin-source. Errors name the source,
// never the PIN.
func (u *URI) readPIN() (string, error) {
	if u.PINSource == "" {
		return "", errors.New("the URI has no pin-source; add pin-source=file:/path/to/pin or pin-source=env:NAME")
	}
	kind, where, err := pinSource(u.PINSource)
	if err != nil {
		return "", err
	}
	var pin string
	if kind == "env" {
		v, ok := os.LookupEnv(where)
		if !ok {
			return "", fmt.Errorf("pin-source: environment variable %s is not set", where)
		}
		pin = v
	} else {
		b, err := readSmallFile(where)
		if err != nil {
			return "", fmt.Errorf("pin-source: %w", err)
		}
		pin = string(b)
	}
	pin = strings.TrimRight(pin, "\r\n")
	if pin == "" {
		return "", fmt.Errorf("pin-source %s holds an empty PIN", u.PINSource)
	}
	return pin, nil
}

func readSmallFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err // *PathError: names the file, not its content
	}
	defer f.Close()
	buf := make([]byte, maxPINFile+1)
	n, err := f.Read(buf)
	if n == 0 && err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if n > maxPINFile {
		return nil, fmt.Errorf("%s is larger than %d bytes: it is not a PIN file", path, maxPINFile)
	}
	return buf[:n], nil
}

// String returns the canonical form of the URI: path attributes in the
// order token, serial, object, id, then the query attributes module-path and
// pin-source. It holds no PIN and is safe to log.
func (u *URI) String() string {
	s := u.path()
	var q []string
	if u.ModulePath != "" {
		q = append(q, "module-path="+escape([]byte(u.ModulePath), queryChars))
	}
	if u.PINSource != "" {
		q = append(q, "pin-source="+escape([]byte(u.PINSource), queryChars))
	}
	if len(q) > 0 {
		s += "?" + strings.Join(q, "&")
	}
	return s
}

// path returns the canonical path part: the identity of the key, without
// module or PIN source.
func (u *URI) path() string {
	var p []string
	if u.Token != "" {
		p = append(p, "token="+escape([]byte(u.Token), pathChars))
	}
	if u.Serial != "" {
		p = append(p, "serial="+escape([]byte(u.Serial), pathChars))
	}
	if u.Object != "" {
		p = append(p, "object="+escape([]byte(u.Object), pathChars))
	}
	if len(u.ID) > 0 {
		p = append(p, "id="+hexEscape(u.ID))
	}
	return "pkcs11:" + strings.Join(p, ";")
}

// Characters that RFC 7512 allows unescaped, beyond the unreserved ones, in
// path values (pk11-p-res-avail, minus '&' which we always escape) and query
// values (pk11-q-res-avail).
const (
	pathChars  = ":[]@!$'()*+,="
	queryChars = ":[]@!$'()*+,;/?|"
)

func unreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

// unescape percent-decodes s, refusing characters RFC 7512 does not allow
// unescaped in this part of the URI.
func unescape(s, allowed string) ([]byte, error) {
	var b bytes.Buffer
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '%':
			if i+2 >= len(s) {
				return nil, fmt.Errorf("truncated percent-encoding at byte %d", i)
			}
			hi, ok1 := unhex(s[i+1])
			lo, ok2 := unhex(s[i+2])
			if !ok1 || !ok2 {
				return nil, fmt.Errorf("invalid percent-encoding %q at byte %d", s[i:i+3], i)
			}
			b.WriteByte(hi<<4 | lo)
			i += 2
		case unreserved(c) || strings.IndexByte(allowed, c) >= 0:
			b.WriteByte(c)
		default:
			return nil, fmt.Errorf("character %q at byte %d must be percent-encoded", c, i)
		}
	}
	return b.Bytes(), nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// escape percent-encodes every byte of v that is neither unreserved nor in
// allowed, with upper-case hex digits.
func escape(v []byte, allowed string) string {
	var b strings.Builder
	for _, c := range v {
		if unreserved(c) || strings.IndexByte(allowed, c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// hexEscape percent-encodes every byte, as RFC 7512 recommends for id.
func hexEscape(v []byte) string {
	var b strings.Builder
	for _, c := range v {
		fmt.Fprintf(&b, "%%%02X", c)
	}
	return b.String()
}
