package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/tidwall/redcon"
)

// exec runs one keyspace command at time now (Unix ms). It returns the RESP
// reply and, when the keyspace changed, the AOF record: an absolute form of
// the change (SET ... PXAT, DEL, PEXPIREAT, FLUSHALL) that gives the same
// result whenever it is replayed. The caller holds the keyspace lock.
func (s *Server) exec(args [][]byte, now int64) (reply, rec []byte, err error) {
	name := strings.ToLower(string(args[0]))
	d := s.db
	switch name {
	case "get":
		if len(args) != 2 {
			return nil, nil, errArgs(name)
		}
		e, ok := d.get(string(args[1]), now)
		if !ok {
			return redcon.AppendNull(nil), nil, nil
		}
		return redcon.AppendBulk(nil, e.val), nil, nil
	case "set":
		return s.set(args, now)
	case "incr", "decr", "incrby", "decrby":
		return s.incr(name, args, now)
	case "del", "unlink":
		if len(args) < 2 {
			return nil, nil, errArgs(name)
		}
		var gone [][]byte
		for _, k := range args[1:] {
			if _, ok := d.get(string(k), now); ok {
				d.del(string(k))
				gone = append(gone, k)
			}
		}
		if len(gone) > 0 {
			rec = record(append([][]byte{[]byte("DEL")}, gone...)...)
		}
		return redcon.AppendInt(nil, int64(len(gone))), rec, nil
	case "exists":
		if len(args) < 2 {
			return nil, nil, errArgs(name)
		}
		n := 0
		for _, k := range args[1:] {
			if _, ok := d.get(string(k), now); ok {
				n++
			}
		}
		return redcon.AppendInt(nil, int64(n)), nil, nil
	case "expire", "pexpire", "expireat", "pexpireat":
		return s.expire(name, args, now)
	case "ttl", "pttl":
		if len(args) != 2 {
			return nil, nil, errArgs(name)
		}
		e, ok := d.get(string(args[1]), now)
		switch {
		case !ok:
			return redcon.AppendInt(nil, -2), nil, nil
		case e.exp == 0:
			return redcon.AppendInt(nil, -1), nil, nil
		case name == "ttl":
			return redcon.AppendInt(nil, (e.exp-now+500)/1000), nil, nil
		}
		return redcon.AppendInt(nil, e.exp-now), nil, nil
	case "dbsize":
		return redcon.AppendInt(nil, int64(d.size())), nil, nil
	case "flushall", "flushdb":
		d.flush()
		return redcon.AppendOK(nil), record([]byte("FLUSHALL")), nil
	}
	return nil, nil, fmt.Errorf(errUnknown, args[0])
}

// set implements SET key value [NX|XX] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL].
func (s *Server) set(args [][]byte, now int64) (reply, rec []byte, err error) {
	if len(args) < 3 {
		return nil, nil, errArgs("set")
	}
	var (
		nx, xx, keep bool
		exp          int64
		hasExp       bool
	)
	for i := 3; i < len(args); i++ {
		opt := strings.ToUpper(string(args[i]))
		switch opt {
		case "NX":
			nx = true
		case "XX":
			xx = true
		case "KEEPTTL":
			keep = true
		case "EX", "PX", "EXAT", "PXAT":
			if hasExp || i+1 == len(args) {
				return nil, nil, errSyntax
			}
			i++
			n, err := parseInt(args[i])
			if err != nil {
				return nil, nil, err
			}
			if n <= 0 {
				return nil, nil, errExpire
			}
			if exp, err = absExpiry(opt, n, now); err != nil {
				return nil, nil, err
			}
			hasExp = true
		default:
			return nil, nil, errSyntax
		}
	}
	if (nx && xx) || (keep && hasExp) {
		return nil, nil, errSyntax
	}
	key := string(args[1])
	old, exists := s.db.get(key, now)
	if (nx && exists) || (xx && !exists) {
		return redcon.AppendNull(nil), nil, nil
	}
	if keep && exists {
		exp = old.exp
	}
	val := append([]byte(nil), args[2]...) // args alias the connection's buffer
	if exp != 0 && exp <= now {
		s.db.del(key) // already expired (replaying an old record)
	} else {
		s.db.set(key, entry{val: val, exp: exp})
	}
	return redcon.AppendOK(nil), setRecord(args[1], val, exp), nil
}

// absExpiry converts an expiry option to Unix milliseconds.
func absExpiry(opt string, n, now int64) (int64, error) {
	const maxMs = math.MaxInt64 / 2
	switch opt {
	case "EX", "EXPIRE":
		if n > maxMs/1000 {
			return 0, errExpire
		}
		return now + n*1000, nil
	case "PX", "PEXPIRE":
		if n > maxMs {
			return 0, errExpire
		}
		return now + n, nil
	case "EXAT", "EXPIREAT":
		if n > maxMs/1000 {
			return 0, errExpire
		}
		return n * 1000, nil
	}
	return n, nil // PXAT, PEXPIREAT
}

func setRecord(key, val []byte, exp int64) []byte {
	if exp == 0 {
		return record([]byte("SET"), key, val)
	}
	return record([]byte("SET"), key, val, []byte("PXAT"), strconv.AppendInt(nil, exp, 10))
}

func (s *Server) incr(name string, args [][]byte, now int64) (reply, rec []byte, err error) {
	by := int64(1)
	switch name {
	case "incr", "decr":
		if len(args) != 2 {
			return nil, nil, errArgs(name)
		}
	default:
		if len(args) != 3 {
			return nil, nil, errArgs(name)
		}
		if by, err = parseInt(args[2]); err != nil {
			return nil, nil, err
		}
	}
	if strings.HasPrefix(name, "decr") {
		if by == math.MinInt64 {
			return nil, nil, errInt
		}
		by = -by
	}
	key := string(args[1])
	e, ok := s.db.get(key, now)
	var n int64
	if ok {
		if n, err = parseInt(e.val); err != nil {
			return nil, nil, err
		}
	}
	if (by > 0 && n > math.MaxInt64-by) || (by < 0 && n < math.MinInt64-by) {
		return nil, nil, fmt.Errorf("ERR increment or decrement would overflow")
	}
	n += by
	e.val = strconv.AppendInt(nil, n, 10)
	s.db.set(key, e)
	return redcon.AppendInt(nil, n), setRecord(args[1], e.val, e.exp), nil
}

func (s *Server) expire(name string, args [][]byte, now int64) (reply, rec []byte, err error) {
	if len(args) != 3 {
		return nil, nil, errArgs(name)
	}
	n, err := parseInt(args[2])
	if err != nil {
		return nil, nil, err
	}
	exp, err := absExpiry(strings.ToUpper(name), n, now)
	if err != nil {
		return nil, nil, fmt.Errorf("ERR invalid expire time in '%s' command", name)
	}
	key := string(args[1])
	e, ok := s.db.get(key, now)
	if !ok {
		return redcon.AppendInt(nil, 0), nil, nil
	}
	if exp <= now {
		s.db.del(key)
		return redcon.AppendInt(nil, 1), record([]byte("DEL"), args[1]), nil
	}
	e.exp = exp
	s.db.set(key, e)
	return redcon.AppendInt(nil, 1), record([]byte("PEXPIREAT"), args[1], strconv.AppendInt(nil, exp, 10)), nil
}

// record encodes a command as a RESP array of bulk strings, the AOF format.
func record(args ...[]byte) []byte {
	b := redcon.AppendArray(nil, len(args))
	for _, a := range args {
		b = redcon.AppendBulk(b, a)
	}
	return b
}
