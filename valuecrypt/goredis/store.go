package goredis

import (
	"context"
	"errors"
	"fmt"

	"github.com/cachecrypt/cachecrypt/valuecrypt"
	"github.com/redis/go-redis/v9"
)

// KeysetKey is the default key under which Store keeps the keyset.
const KeysetKey = "valuecrypt:keyset"

// Store returns a valuecrypt.Store that keeps the keyset in the cache under
// key (KeysetKey if empty), without expiry. Only the sealed keyset, with
// its keyset key wrapped by the KEK, reaches the server. Saves are a
// compare-and-set in a Lua script, so processes may rotate concurrently.
// Persist the cache (or back the key up): losing it loses every value.
func Store(rdb redis.Cmdable, key string) valuecrypt.Store {
	if key == "" {
		key = KeysetKey
	}
	return &store{rdb: rdb, key: key}
}

type store struct {
	rdb redis.Cmdable
	key string
}

// casKeyset replaces KEYS[1] with ARGV[3] when it holds ARGV[2] (ARGV[1]
// "replace"), or when it does not exist (ARGV[1] "create").
var casKeyset = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if ARGV[1] == 'create' then
  if cur then return 0 end
elseif cur ~= ARGV[2] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[3])
return 1`)

func (s *store) Load(ctx context.Context) ([]byte, error) {
	b, err := s.rdb.Get(ctx, s.key).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("no keyset under key %q in the cache; create one with valuecrypt.Create (or restore the key, if it was lost): %w", s.key, valuecrypt.ErrKeysetMissing)
	}
	if err != nil {
		return nil, fmt.Errorf("load keyset from key %q: %w", s.key, err)
	}
	return b, nil
}

func (s *store) Save(ctx context.Context, old, next []byte) error {
	mode := "replace"
	if old == nil {
		mode = "create"
	}
	ok, err := casKeyset.Run(ctx, s.rdb, []string{s.key}, mode, old, next).Int()
	if err != nil {
		return fmt.Errorf("save keyset under key %q: %w", s.key, err)
	}
	if ok != 1 {
		return fmt.Errorf("keyset under key %q changed since it was loaded: %w", s.key, valuecrypt.ErrConflict)
	}
	return nil
}
