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
	m        map[string]entry
	volatile map[string]struct{} // keys with an expiry: what the expiry cycle samples
}

func newDB() *db { return &db{m: make(map[string]entry), volatile: make(map[string]struct{})} }

// expires returns how many keys have an expiry.
func (d *db) expires() int { return len(d.volatile) }

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
	if e.exp != 0 {
		d.volatile[key] = struct{}{}
	} else {
		delete(d.volatile, key)
	}
	d.m[key] = e
}

func (d *db) del(key string) bool {
	if _, ok := d.m[key]; !ok {
		return false
	}
	delete(d.volatile, key)
	delete(d.m, key)
	return true
}

func (d *db) flush() { d.m, d.volatile = make(map[string]entry), make(map[string]struct{}) }

func (d *db) size() int { return len(d.m) }

// sweep drops expired keys among up to n keys with an expiry, like Redis'
// active expiry cycle, and reports whether more than a quarter of those it
// looked at had expired (then it should run again soon).
func (d *db) sweep(n int, now int64) bool {
	seen, dropped := 0, 0
	for k := range d.volatile { // Go starts map iteration at a random key
		if seen++; d.m[k].exp <= now {
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
