package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"

	"github.com/cachecrypt/cachecrypt"
	"github.com/cachecrypt/cachecrypt/kek/kektest"
)

// BenchmarkSwitch measures SetEncryption (MMK <-> CMK) on an instance
// holding 100 MB and 2 GB of encrypted snapshot data: a switch rewraps
// keyrings, so the two must take the same time. Switches alternate MMK ->
// CMK (one CMK Wrap per disk, two disks) and CMK -> MMK (no CMK call);
// cmk-calls/op is their average, 1.0, and no switch makes an Unwrap.
func BenchmarkSwitch(b *testing.B) {
	for _, size := range []int64{100 << 20, 2 << 30} {
		b.Run(fmt.Sprintf("data=%dMB", size>>20), func(b *testing.B) {
			ctx := context.Background()
			quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
			inst, err := cachecrypt.Open(ctx, b.TempDir(), cachecrypt.Config{ProbeInterval: -1, Logger: quiet})
			if err != nil {
				b.Fatal(err)
			}
			defer inst.Close()
			chunk := make([]byte, 1<<20)
			err = inst.SaveSnapshot(func(w io.Writer) error {
				for n := int64(0); n < size; n += int64(len(chunk)) {
					if _, err := w.Write(chunk); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
			cmk := kektest.New("cmk")
			settings := []cachecrypt.Encryption{cachecrypt.CustomerManaged(cmk), cachecrypt.MMK}
			n := 0
			for b.Loop() {
				if err := inst.SetEncryption(ctx, settings[n%2]); err != nil {
					b.Fatal(err)
				}
				n++
			}
			b.ReportMetric(float64(cmk.Calls())/float64(n), "cmk-calls/op")
		})
	}
}
