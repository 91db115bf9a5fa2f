//go:build cgo

package pkcs11

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"os"
	"sync"

	"github.com/ThalesGroup/crypto11"
)

// PKCS#11 login state belongs to the application, not to a session: while
// one KEK of this process is logged in to a token, C_Login answers
// CKR_USER_ALREADY_LOGGED_IN whatever the PIN, and crypto11 takes that as
// success. So this process remembers, per module and token, a keyed hash of
// the PIN that logged in, and refuses a different PIN without calling the
// token.
var logins = struct {
	sync.Mutex
	key []byte                 // random per process: the hashes are useless elsewhere
	m   map[string]*loginEntry // module path + token selector
}{m: map[string]*loginEntry{}}

type loginEntry struct {
	pinMAC []byte
	users  int
}

func pinMAC(pin string) []byte {
	if logins.key == nil {
		logins.key = make([]byte, 32)
		rand.Read(logins.key)
	}
	m := hmac.New(sha256.New, logins.key)
	m.Write([]byte(pin))
	return m.Sum(nil)
}

// session is a logged-in crypto11 context; Close releases the login record.
type session struct {
	*crypto11.Context
	token string
	once  sync.Once
}

// Close closes the context (logging out with its last session) and forgets
// the PIN record when no session of this process uses the token any more.
func (s *session) Close() error {
	var err error
	s.once.Do(func() {
		logins.Lock()
		defer logins.Unlock()
		err = s.Context.Close()
		if e := logins.m[s.token]; e != nil {
			if e.users--; e.users == 0 {
				delete(logins.m, s.token)
			}
		}
	})
	return err
}

// login loads the module and logs in to the token, once; a PIN that differs
// from the one this process is already logged in with is refused without a
// login.
func login(u *URI, o options) (*session, error) {
	if _, err := os.Stat(u.ModulePath); err != nil {
		return nil, fmt.Errorf("module %s: %w: %w", u.ModulePath, err, ErrModuleNotFound)
	}
	pin, err := u.readPIN()
	if err != nil {
		return nil, err
	}
	token := u.ModulePath + "\x00" + u.Token + "\x00" + u.Serial
	logins.Lock()
	defer logins.Unlock()
	mac := pinMAC(pin)
	e := logins.m[token]
	if e != nil && !hmac.Equal(e.pinMAC, mac) {
		return nil, fmt.Errorf("token %s: this process is already logged in with another PIN, "+
			"so the token cannot check this one; check the PIN in the pin-source: %w", u.tokenName(), ErrPINIncorrect)
	}
	cfg := &crypto11.Config{Path: u.ModulePath, TokenLabel: u.Token, TokenSerial: u.Serial,
		Pin: pin, MaxSessions: o.maxSessions}
	c11, err := crypto11.Configure(cfg)
	cfg.Pin, pin = "", ""
	if err != nil {
		return nil, fmt.Errorf("token %s: %w", u.tokenName(), configureError(err))
	}
	if e == nil {
		e = &loginEntry{pinMAC: mac}
		logins.m[token] = e
	}
	e.users++
	return &session{Context: c11, token: token}, nil
}
