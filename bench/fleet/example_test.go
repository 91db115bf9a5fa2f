package fleet_test

import (
	"context"
	"fmt"
	"time"

	"github.com/cachecrypt/cachecrypt/bench/fleet"
)

// A restart of 3,000 nodes with two customer-managed disks each against a
// vault allowing 2,000 RSA operations per 10 s: 6,000 unwraps, so a third
// of them wait one window and another third two. The simulation is
// seeded, so it is reproducible.
func ExampleFleet_Run() {
	ctx := context.Background()
	f, err := fleet.New(ctx, 2)
	if err != nil {
		panic(err)
	}
	defer f.Close()
	cfg := fleet.DefaultConfig(3000)
	cfg.Policy = fleet.RetryAfter
	r, err := f.Run(ctx, cfg, time.Minute)
	if err != nil {
		panic(err)
	}
	fmt.Printf("KEK calls per node: %.0f\n", r.KEKCallsPerNode())
	fmt.Printf("429s: %d\n", r.Throttled)
	fmt.Printf("every disk open after %.1fs\n", r.AllOpen.Seconds())
	fmt.Printf("nodes open within a minute: %d\n", r.WithinBudget)
	// Output:
	// KEK calls per node: 2
	// 429s: 6000
	// every disk open after 20.1s
	// nodes open within a minute: 3000
}

// The analytic ceiling: how many nodes one vault can open in a budget.
func ExampleCapacity() {
	lim := fleet.DefaultConfig(0).Vault // 2,000 per 10 s (RSA-HSM 2048)
	fmt.Println(fleet.Capacity(lim, 2, time.Minute))
	// Output: 6000
}
