// Package aof is an encrypted, Redis 7 style multi-part append-only file.
//
// A directory holds a manifest, one base part and incremental parts, named
// as Redis names them (appendonly.aof.1.base.rdb, appendonly.aof.1.incr.aof,
// appendonly.aof.manifest). Every part is a header followed by frames; each
// frame is one group-committed batch of appends sealed with AES-256-GCM
// under a per-file key (HKDF from the disk's DEK and a random salt), its
// index as the nonce. The manifest lists the parts with their DEK version,
// salt and, once closed, final size, and is authenticated with an HMAC
// under a key derived from the DEK: a part cannot be swapped, dropped from
// the middle, cut short or replaced by one from another file without the
// reader noticing. FORMAT.md ("AOF") specifies the bytes.
//
// Open recovers a directory after a crash: a torn or zero-filled tail of
// the last incremental part (a write cut short) is cut off and reported by
// Log.Recovered, like Redis' default aof-load-truncated yes, unless
// Options.Strict is set; any other damage (a frame that fails
// authentication, a missing part, a closed part cut short) is an error
// naming the file and offset. Open authenticates the manifest, every part header and size, and
// every frame of the last incremental part; the frames of the base and the
// closed parts are authenticated as Replay reads them (or by Check), so
// opening costs no more than the tail. A Log holds an advisory lock on
// NAME.lock: one Log per directory. Append is safe for concurrent use and group-commits: appends that
// arrive while a write is in flight are sealed into one frame and written
// with one system call, and an appender about to take a group yields once
// when other appenders are about, so that they join it (on one core a
// write never gives up the processor, and no group would form). The fsync policies are those of Redis' appendfsync.
//
// A write that fails (ENOSPC, EIO, a short write) may have put part of a
// frame in the file. The log then refuses every later Append, Sync and
// StartRewrite with ErrWriteFailed until it is closed and reopened, as
// Redis stops accepting writes after an AOF write error; the same holds
// after a failed fsync under Always and a failed manifest replacement.
// Open cuts the partial frame off and appends to a new part under a fresh
// salt. This keeps the package's invariant:
//
//	No (key, nonce) is ever reused, whatever fails. Each part file has its
//	own key (HKDF from the DEK and a fresh random salt); a frame's nonce is
//	its index in the part; each index is sealed once and written at most
//	once; a part takes no frame after a failed write; and a Log never
//	appends to a part that existed when it was opened.
//
// Replay reads the base then the incremental parts as one plaintext byte
// stream (the RESP commands, after an RDB preamble when the base is one);
// Rewrite replaces the base and drops the old parts; Check and Fix do what
// redis-check-aof does; Import and Export convert a plain Redis
// appendonlydir to and from the encrypted form.
package aof
