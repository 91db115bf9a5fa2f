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
// AES-GCM with random 96-bit nonces keeps the probability of a repeated
// nonce under 2^-32 only for at most 2^32 values sealed under one key
// (NIST SP 800-38D, section 8.3), counted over every process of the
// application; a repeated nonce would expose the XOR of two plaintexts and
// let the key's authentication be forged. Rotate keeps each key under the
// limit: new values go to a new key, and older keys only open values, which
// has no such limit. The Keyset counts the values it seals under each key,
// in memory, per process (Keyset.Seals): RotationDue reports, and the
// function given to SetRotateAfter is told, when this process has sealed
// DefaultRotateAfter (2^31) values, or a threshold of your choice, under
// the primary key; past SealLimit (2^32) in one process, Seal refuses with
// ErrSealLimit until the keyset is rotated. The count cannot see other
// processes: with N processes writing, set the threshold to at most 2^32/N
// less a margin, or rotate on a schedule (at 50,000 writes per second over
// the whole application, 2^31 values take 12 hours).
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
