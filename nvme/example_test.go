package nvme_test

import (
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/cachecrypt/cachecrypt/kek"
	"github.com/cachecrypt/cachecrypt/nvme"
)

// A Flash-tier cache keeps hot values in RAM and spills cold ones to the
// encrypted page store on NVMe. The page key lives only in memory: after a
// restart the spilled values are gone, as the Flash tier's data is
// ephemeral.
func Example() {
	dir, _ := os.MkdirTemp("", "flash")
	defer os.RemoveAll(dir)

	store, err := nvme.Open(filepath.Join(dir, "flash.img"), &nvme.Options{Pages: 256})
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	cold := nvme.NewSpill(store)

	hot := map[string][]byte{"session:1": []byte("alice"), "session:2": []byte("bob")}

	// Evict session:1 from RAM to flash.
	if err := cold.Put("session:1", hot["session:1"]); err != nil {
		log.Fatal(err)
	}
	delete(hot, "session:1")

	// A miss in RAM falls through to flash.
	v, err := cold.Get("session:1")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("session:1 from flash: %s\n", v)

	_, err = cold.Get("session:3")
	fmt.Println("session:3 missing:", errors.Is(err, nvme.ErrNotFound))
	// Output:
	// session:1 from flash: alice
	// session:3 missing: true
}

// The flash disk takes only the platform-managed key: a customer-managed key
// is refused, because the page key is never wrapped and dies with the
// process.
func ExampleCheckKEK() {
	cmk := kek.Descriptor{Kind: kek.KindKeyVault, KeyID: "https://contoso.vault.azure.net/keys/cache/1", Algorithm: "RSA-OAEP-256"}
	err := nvme.CheckKEK(cmk)
	fmt.Println(errors.Is(err, kek.ErrUnsupported))
	fmt.Println(nvme.CheckKEK(kek.Descriptor{Kind: kek.KindMMK, KeyID: "mmk/platform/1"}))
	// Output:
	// true
	// <nil>
}

// Pages written before a restart read as "not written in this session",
// never as corruption.
func ExampleStore_ReadPage() {
	dir, _ := os.MkdirTemp("", "flash")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "flash.img")

	s, _ := nvme.Open(path, &nvme.Options{Pages: 4})
	page := make([]byte, s.PageSize())
	copy(page, "cold value")
	s.WritePage(2, page)
	s.Close()

	s, _ = nvme.Open(path, nil) // restart: a new session, a new key
	defer s.Close()
	err := s.ReadPage(2, page)
	fmt.Println(errors.Is(err, nvme.ErrNotWritten))
	// Output: true
}
