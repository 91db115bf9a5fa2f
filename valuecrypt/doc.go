// Package valuecrypt encrypts cache values in the application, before they
// reach a Redis-compatible server, so that a memory dump, a replica, a
// MONITOR session, a snapshot or an operator running GET sees only
// ciphertext. It is independent of the server side of cachecrypt and uses
// the same key hierarchy: a Keyset of AES-256 keys, wrapped by any KEK of
// package kek (the platform-managed key, an Azure Key Vault key, a PKCS#11
// HSM key).
//
// # Values
//
// A Cipher seals each value with AES-256-GCM under the keyset's primary key
// and a random 96-bit nonce. The associated data is the Redis key name (and
// the field name, for a hash field) plus the Cipher's context (a database,
// a tenant), so a value moved with RENAME, copied with COPY, or taken from
// another tenant or cache fails with ErrAuthentication. The stored value
// is a 5-byte header (version 0xC1, key id), the nonce, the ciphertext and
// the tag: Overhead bytes more than the plaintext.
//
// # Keys
//
// A Keyset holds a primary key, older keys kept to open values written
// before a rotation, and a name key. It is shared by every process of an
// application, stored in a Store: a file (FileStore) or the cache itself
// (valuecrypt/goredis.Store), sealed under a random keyset key that the KEK
// wraps, so only ciphertext of the keyset is ever stored. Open makes one
// KEK call; Seal and Open of values make none. Rotate adds a primary key
// with a compare-and-set on the store and no KEK call; other processes pick
// it up when they first meet a value sealed under it (one reload of the
// keyset, no KEK call), and the go-redis adapter's Reencrypt rewrites old
// values online.
//
// # Limits
//
// What stays in clear, for anyone who can read the cache:
//   - key names, unless EncryptName (Config.EncryptNames in the adapter)
//     hides them; even then equal names give equal stored names, the
//     length of each name shows, and cluster hash tags are lost;
//   - TTLs, value sizes (plaintext size = stored size - Overhead), data
//     types, the number of keys and fields, and access patterns (which
//     key is read or written when, and how often);
//   - the key id of each value, which tells which rotation wrote it.
//
// Server-side operations on values cannot work on ciphertext: INCR and
// INCRBY, APPEND, GETRANGE and SETRANGE, STRLEN (it counts the ciphertext),
// SORT BY or GET of values, Lua scripts that read values, and hash field
// arithmetic (HINCRBY). Read, change and write the value in the
// application instead. Only strings and hash fields are sealed.
//
// AES-GCM with random 96-bit nonces stays within its security bound (a
// nonce collision probability under 2^-32) for at most 2^32 values sealed
// under one key, counted over every process of the application. Rotate
// keeps each key under it: rotate the keyset well before the application
// has written 2^32 values under the primary key (for example, at 50,000
// writes per second, at least once a day). Older keys only open values and
// have no such limit.
//
// # Bad input
//
// Open never returns a wrong plaintext. A value altered, truncated or from
// another key or context gives ErrAuthentication; a value written before
// encryption was enabled gives ErrPlaintext (Config.Migration returns it,
// flagged, so it can be rewritten); a value under a key id newer than the
// keyset reloads the keyset once and then gives ErrUnknownKey; a missing
// or damaged keyset gives ErrKeysetMissing or ErrKeysetCorrupt. In
// migration mode, a plaintext whose first byte is 0xC0, 0xC1 or 0xF5 to
// 0xFF (never the first byte of UTF-8 text) is taken for a ciphertext and
// fails to open rather than being returned.
//
// Someone who can write to the cache can still delete values, put back an
// older ciphertext of the same key, or (only with Config.Migration) plant
// plaintext, which is flagged with ErrPlaintext.
package valuecrypt
