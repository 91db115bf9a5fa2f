package main

import "time"

// entry is a string value and its absolute expiry in Unix milliseconds
// (0: none).
type entry struct {
	val []byte
	exp int64
}

// db is the keyspace. It is not safe for concurrent use: the server guards it
// with its mutex.
type db struct {
	m       map[string]entry
	expires int // keys with an expiry, for the RDB's RESIZEDB
}

func newDB() *db { return &db{m: make(map[string]entry)} }

func nowMs() int64 { return time.Now().UnixMilli() }

// get returns the live entry of key, dropping it if it has expired.
func (d *db) get(key string, now int64) (entry, bool) {
	e, ok := d.m[key]
	if !ok {
		return e, false
	}
	if e.exp != 0 && e.exp <= now {
		d.del(key)
		return entry{}, false
	}
	return e, true
}

func (d *db) set(key string, e entry) {
	old, ok := d.m[key]
	if ok && old.exp != 0 {
		d.expires--
	}
	if e.exp != 0 {
		d.expires++
	}
	d.m[key] = e
}

func (d *db) del(key string) bool {
	e, ok := d.m[key]
	if !ok {
		return false
	}
	if e.exp != 0 {
		d.expires--
	}
	delete(d.m, key)
	return true
}

func (d *db) flush() { d.m, d.expires = make(map[string]entry), 0 }

func (d *db) size() int { return len(d.m) }

// sweep drops expired keys among up to n keys with an expiry, like Redis'
// active expiry cycle, and reports whether more than a quarter of those it
// looked at had expired (then it should run again soon).
func (d *db) sweep(n int, now int64) bool {
	if d.expires == 0 {
		return false
	}
	seen, dropped := 0, 0
	for k, e := range d.m { // Go starts map iteration at a random key
		if e.exp == 0 {
			continue
		}
		if seen++; e.exp <= now {
			d.del(k)
			dropped++
		}
		if seen >= n {
			break
		}
	}
	return dropped*4 > seen
}

// snapshot copies the keyspace for a background save, leaving out expired
// keys. Values are shared: they are never modified in place.
func (d *db) snapshot(now int64) map[string]entry {
	out := make(map[string]entry, len(d.m))
	for k, e := range d.m {
		if e.exp == 0 || e.exp > now {
			out[k] = e
		}
	}
	return out
}
