package blob

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
)

// upload stages the blocks read from r, Concurrency at a time, and returns
// their ids in order. It stops at the first error of r or of the service.
func (d *Destination) upload(ctx context.Context, r io.Reader) ([]string, error) {
	bs, conc := d.BlockSize, d.Concurrency
	if bs <= 0 {
		bs = DefaultBlockSize
	}
	if conc <= 0 {
		conc = DefaultConcurrency
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	prefix := make([]byte, 16)
	rand.Read(prefix)

	type block struct {
		n   int
		id  string
		buf []byte
	}
	free := make(chan []byte, conc)
	for range conc {
		free <- make([]byte, bs)
	}
	blocks := make(chan block)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		stageErr error
	)
	for range conc {
		wg.Go(func() {
			for b := range blocks {
				_, err := d.Client.StageBlock(ctx, b.id, streaming.NopCloser(bytes.NewReader(b.buf)), &blockblob.StageBlockOptions{
					CPKInfo: d.CustomerKey.cpk(), CPKScopeInfo: scope(d.EncryptionScope),
				})
				if err != nil {
					mu.Lock()
					if stageErr == nil {
						stageErr = fmt.Errorf("stage block %d: %w", b.n, err)
					}
					mu.Unlock()
					cancel()
				}
				free <- b.buf[:cap(b.buf)]
			}
		})
	}

	var ids []string
	var readErr error
	for readErr == nil {
		var buf []byte
		select {
		case buf = <-free:
		case <-ctx.Done():
			readErr = ctx.Err()
			continue
		}
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			id := blockID(prefix, len(ids))
			ids = append(ids, id)
			blocks <- block{len(ids) - 1, id, buf[:n]}
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		readErr = err
	}
	close(blocks)
	wg.Wait()
	if readErr != nil && (stageErr == nil || !errors.Is(readErr, context.Canceled)) {
		return nil, readErr
	}
	if stageErr != nil {
		return nil, stageErr
	}
	return ids, nil
}

// blockID returns the n-th block id: all ids of a blob have the same length.
func blockID(prefix []byte, n int) string {
	return base64.StdEncoding.EncodeToString(fmt.Appendf(nil, "%s-%010d", hex.EncodeToString(prefix), n))
}

func (d *Destination) commit(ctx context.Context, ids []string, md map[string]*string, ct string) error {
	_, err := d.Client.CommitBlockList(ctx, ids, &blockblob.CommitBlockListOptions{
		Metadata:     md,
		HTTPHeaders:  &blobHTTPHeaders{BlobContentType: &ct},
		CPKInfo:      d.CustomerKey.cpk(),
		CPKScopeInfo: scope(d.EncryptionScope),
	})
	return err
}
