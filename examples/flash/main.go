// Command flash is a small Flash-tier cache: it keeps at most -hot values in
// RAM and spills the least recently used ones to an encrypted page store on
// NVMe (here a file), reading them back on a miss.
//
//	go run ./examples/flash -file /tmp/flash.img -keys 2000 -hot 100
//
// The page key is drawn at start-up and lives only in memory: run the program
// twice on the same file and the second run finds nothing of the first, by
// design. A customer-managed key for the flash disk is refused (try -cmk).
package main

import (
	"container/list"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"

	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/cachecrypt/cachecrypt/nvme"
)

// cache is a RAM LRU of at most hot entries over a spill store.
type cache struct {
	hot   int
	lru   *list.List // of *entry, most recent first
	ram   map[string]*list.Element
	flash *nvme.Spill

	hits, flashHits, spills int
}

type entry struct {
	key   string
	value []byte
}

func newCache(hot int, flash *nvme.Spill) *cache {
	return &cache{hot: hot, lru: list.New(), ram: map[string]*list.Element{}, flash: flash}
}

// Set stores a value in RAM, spilling the coldest value if RAM is full.
func (c *cache) Set(key string, value []byte) error {
	if el, ok := c.ram[key]; ok {
		el.Value.(*entry).value = value
		c.lru.MoveToFront(el)
		return nil
	}
	c.ram[key] = c.lru.PushFront(&entry{key, value})
	if err := c.flash.Delete(key); err != nil && !errors.Is(err, nvme.ErrNotFound) {
		return err
	}
	if c.lru.Len() <= c.hot {
		return nil
	}
	cold := c.lru.Remove(c.lru.Back()).(*entry)
	delete(c.ram, cold.key)
	c.spills++
	return c.flash.Put(cold.key, cold.value)
}

// Get returns a value from RAM, or from flash (promoting it back to RAM).
func (c *cache) Get(key string) ([]byte, error) {
	if el, ok := c.ram[key]; ok {
		c.hits++
		c.lru.MoveToFront(el)
		return el.Value.(*entry).value, nil
	}
	v, err := c.flash.Get(key)
	if err != nil {
		return nil, err
	}
	c.flashHits++
	return v, c.Set(key, v)
}

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		log.Fatal(err)
	}
}

func run(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("flash", flag.ContinueOnError)
	file := fs.String("file", filepath.Join(os.TempDir(), "cachecrypt-flash.img"), "flash file or block device")
	keys := fs.Int("keys", 2000, "number of keys to write")
	hot := fs.Int("hot", 100, "values kept in RAM")
	cmk := fs.Bool("cmk", false, "ask for a customer-managed key (refused)")
	if err := fs.Parse(args); err != nil {
		return err
	}

	if *cmk {
		d := kek.Descriptor{Kind: kek.KindKeyVault, KeyID: "https://contoso.vault.azure.net/keys/flash/1", Algorithm: "RSA-OAEP-256"}
		return nvme.CheckKEK(d)
	}

	store, err := nvme.Open(*file, &nvme.Options{Pages: int64(*keys) + 16})
	if err != nil {
		return err
	}
	defer store.Close()
	c := newCache(*hot, nvme.NewSpill(store))

	value := func(i int) []byte { return fmt.Appendf(nil, "value %d: %0*d", i, 50+i%3000, i) }
	for i := range *keys {
		if err := c.Set(fmt.Sprint("key:", i), value(i)); err != nil {
			return err
		}
	}
	for i := *keys - 1; i >= 0; i-- { // newest first: the hot ones are still in RAM
		v, err := c.Get(fmt.Sprint("key:", i))
		if err != nil {
			return err
		}
		if string(v) != string(value(i)) {
			return fmt.Errorf("key:%d read back wrong", i)
		}
	}
	fmt.Fprintf(out, "%d keys, %d in RAM, %d spilled to encrypted flash %s\n", *keys, c.lru.Len(), c.spills, *file)
	fmt.Fprintf(out, "reads: %d from RAM, %d from flash, all verified\n", c.hits, c.flashHits)
	return nil
}
