package goredis_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/cachecrypt/cachecrypt/valuecrypt"
	"github.com/cachecrypt/cachecrypt/valuecrypt/goredis"
	"github.com/redis/go-redis/v9"
)

// Open (or create) the application's keyset in the cache, then read and
// write sealed values. It needs a redis-server on 127.0.0.1:6379
// (examples/client is the runnable version, with its test).
func Example() {
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	mmk, err := kek.LoadMMK("/var/lib/myapp/platform.key")
	if err != nil {
		log.Fatal(err)
	}
	store := goredis.Store(rdb, "")
	ks, err := valuecrypt.Open(ctx, store, mmk)
	if errors.Is(err, valuecrypt.ErrKeysetMissing) {
		ks, err = valuecrypt.Create(ctx, store, mmk)
	}
	if err != nil {
		log.Fatal(err)
	}
	defer ks.Close()
	c := goredis.New(rdb, valuecrypt.NewCipher(ks, valuecrypt.Config{Context: "db0"}))
	if err := c.Set(ctx, "session:42", []byte("alice"), time.Hour); err != nil {
		log.Fatal(err)
	}
	v, err := c.Get(ctx, "session:42")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(v))
}

// Rotate, then rewrite the values under older keys online.
func ExampleClient_Reencrypt() {
	ctx := context.Background()
	var c *goredis.Client     // as in Example
	var ks *valuecrypt.Keyset // as in Example
	if _, err := ks.Rotate(ctx); err != nil {
		log.Fatal(err)
	}
	p, err := c.Reencrypt(ctx, goredis.ReencryptOptions{Progress: func(p goredis.Progress) {
		log.Printf("%d keys scanned, %d values rewritten", p.Keys, p.Rewritten)
	}})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(p.Rewritten, "values now under the new key")
}
