package blob_test

import (
	"context"
	"fmt"
	"log"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"

	"github.com/cachecrypt/cachecrypt/export"
	"github.com/cachecrypt/cachecrypt/export/blob"
	"github.com/cachecrypt/cachecrypt/osdisk"
)

// Export a snapshot to a blob, then import it back. The blob holds a plain
// RDB under the storage account's encryption; its metadata records the
// SHA-256 that the import checks. (Needs a storage account or Azurite: not
// run as a test; see TestRoundTripThroughAzuriteDigestEqual.)
func Example() {
	ctx := context.Background()
	var (
		scratch  *osdisk.Disk       // the instance's encrypted OS disk
		snapshot export.Source      // e.g. export.FromReader(rdb reader)
		restore  export.Destination // e.g. the encrypted persistence RDB
		cred     *azblob.SharedKeyCredential
	)
	svc, err := azblob.NewClientWithSharedKeyCredential("https://account.blob.core.windows.net/", cred, nil)
	if err != nil {
		log.Fatal(err)
	}
	bb := svc.ServiceClient().NewContainerClient("backups").NewBlockBlobClient("cache-1/dump.rdb")

	info, err := export.Export(ctx, scratch, snapshot, &blob.Destination{Client: bb, Concurrency: 8}, nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("exported %d bytes, sha256 %x\n", info.Size, info.SHA256)

	if _, err := export.Import(ctx, scratch, blob.From(bb.BlobClient()), restore, nil); err != nil {
		log.Fatal(err)
	}
}
