// Command client shows client-side value encryption with go-redis: values
// are sealed in the application before they reach redis-server, bound to
// their key name, under a keyset that is itself stored in the server,
// wrapped by the platform-managed key (MMK).
//
//	redis-server --port 6379 &
//	go run ./examples/client -addr 127.0.0.1:6379
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/cachecrypt/cachecrypt/valuecrypt"
	"github.com/cachecrypt/cachecrypt/valuecrypt/goredis"
	"github.com/redis/go-redis/v9"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:6379", "address of redis-server")
	keyFile := flag.String("mmk", filepath.Join(os.TempDir(), "cachecrypt-client-example.key"), "platform key file (created on first use); keep it outside the cache")
	flag.Parse()
	if err := run(os.Stdout, *addr, *keyFile); err != nil {
		log.Fatal(err)
	}
}

func run(out io.Writer, addr, keyFile string) error {
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()

	// The KEK: here the platform-managed key. A vault.KEK or a pkcs11.KEK
	// works the same way.
	mmk, err := kek.LoadMMK(keyFile)
	if err != nil {
		return err
	}
	// The keyset lives in the cache itself, sealed and wrapped: one KEK
	// call to open it, none per value.
	store := goredis.Store(rdb, "")
	ks, err := valuecrypt.Open(ctx, store, mmk)
	if errors.Is(err, valuecrypt.ErrKeysetMissing) {
		ks, err = valuecrypt.Create(ctx, store, mmk)
	}
	if err != nil {
		return err
	}
	defer ks.Close()
	// AES-GCM with random nonces allows 2^32 values per key: ask for a
	// rotation once this process has sealed half of that under the
	// primary key (lower it when many processes write).
	ks.SetRotateAfter(valuecrypt.DefaultRotateAfter, func(id uint32, seals uint64) {
		log.Printf("valuecrypt key %d has sealed %d values in this process: rotate the keyset", id, seals)
	})
	c := goredis.New(rdb, valuecrypt.NewCipher(ks, valuecrypt.Config{Context: "example-app"}))

	if err := c.Set(ctx, "session:42", []byte("alice, admin, token=s3cr3t"), time.Hour); err != nil {
		return err
	}
	if err := c.HSet(ctx, "user:42", map[string][]byte{"email": []byte("alice@example.com"), "plan": []byte("gold")}, 0); err != nil {
		return err
	}
	session, err := c.Get(ctx, "session:42")
	if err != nil {
		return err
	}
	user, err := c.HGetAll(ctx, "user:42")
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "GET session:42 through valuecrypt: %s\n", session)
	fmt.Fprintf(out, "HGETALL user:42 through valuecrypt: email=%s plan=%s\n", user["email"], user["plan"])

	raw := rdb.Get(ctx, "session:42").Val()
	fmt.Fprintf(out, "GET session:42 as the server holds it: %d bytes, %x...; plaintext visible: %v\n",
		len(raw), raw[:12], strings.Contains(raw, "s3cr3t"))

	// A value moved to another key no longer opens.
	if err := rdb.Copy(ctx, "session:42", "session:43", 0, true).Err(); err != nil {
		return err
	}
	_, err = c.Get(ctx, "session:43")
	fmt.Fprintf(out, "after COPY session:42 session:43, GET session:43: authentication failed: %v\n", errors.Is(err, valuecrypt.ErrAuthentication))
	rdb.Del(ctx, "session:43")

	// Rotation: new writes use the new key; Reencrypt moves old values.
	id, err := ks.Rotate(ctx)
	if err != nil {
		return err
	}
	p, err := c.Reencrypt(ctx, goredis.ReencryptOptions{})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "rotated to key %d; re-encrypted %d value(s), %d already current\n", id, p.Rewritten, p.Current)
	session, err = c.Get(ctx, "session:42")
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "GET session:42 after rotation: %s\n", session)
	return nil
}
