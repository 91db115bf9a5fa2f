package main

import (
	"github.com/cachecrypt/cachecrypt/aof"
	"github.com/cachecrypt/cachecrypt/rdb"
)

// Sentinels of the data packages that mean damaged data (exit code 2).
var (
	errNotRDB      = rdb.ErrNotRDB
	errChecksum    = rdb.ErrChecksum
	errMissingPart = aof.ErrMissingPart
	errRollback    = aof.ErrRollback
)
