// Command fleet simulates N cache nodes restarting at once against one
// throttled Azure Key Vault (package bench/fleet) and prints, per fleet size
// and retry policy, the time until every disk is open, the KEK calls and
// vault requests per node, the 429s, and how many nodes fit a restart
// budget.
//
//	go run -C bench ./cmd/fleet -nodes 100,1000,10000
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cachecrypt/cachecrypt/bench/fleet"
)

func main() {
	start := time.Now()
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("fleet: took %s\n", time.Since(start).Round(time.Millisecond))
}

func run(args []string) error {
	def := fleet.DefaultConfig(0)
	fs := flag.NewFlagSet("fleet", flag.ContinueOnError)
	nodes := fs.String("nodes", "100,1000,10000", "comma-separated fleet sizes")
	policies := fs.String("policies", "retry-after,full-jitter,retry-after+jitter", "comma-separated retry policies")
	disks := fs.Int("disks", def.DisksPerNode, "customer-managed keyrings per node (one Unwrap each)")
	ops := fs.Int("limit", def.Vault.Ops, "vault RSA operations allowed per -window (2000: RSA-HSM 2048; 4000: RSA 2048 software key; 250: RSA-HSM 4096)")
	window := fs.Duration("window", def.Vault.Window, "throttling window")
	latency := fs.Duration("latency", def.Vault.Latency, "round trip of an accepted unwrapkey")
	reject := fs.Duration("reject-latency", def.Vault.RejectLatency, "round trip of a 429")
	spread := fs.Duration("spread", 0, "node start times spread uniformly over this duration (0: all at once)")
	budget := fs.Duration("budget", time.Minute, "restart budget: nodes fully open within it are counted, and -max finds how many fit")
	base := fs.Duration("base", def.Base, "backoff: first ceiling of the jitter")
	capd := fs.Duration("cap", def.Cap, "backoff: largest ceiling of the jitter")
	maxNodes := fs.Bool("max", true, "bisect the largest fleet each policy opens within -budget")
	count429 := fs.Bool("count-429", false, "429 answers count against the limit too (Key Vault's older throttling guidance)")
	markdown := fs.Bool("markdown", false, "print Markdown tables (for bench/README.md)")
	seed := fs.Uint64("seed", def.Seed, "random seed of jitter and start times")
	if err := fs.Parse(args); err != nil {
		return err
	}
	sizes, err := ints(*nodes)
	if err != nil {
		return fmt.Errorf("fleet: -nodes: %w", err)
	}
	cfg := def
	cfg.DisksPerNode, cfg.Spread, cfg.Base, cfg.Cap, cfg.Seed = *disks, *spread, *base, *capd, *seed
	cfg.Vault.Ops, cfg.Vault.Window, cfg.Vault.Latency, cfg.Vault.RejectLatency = *ops, *window, *latency, *reject
	cfg.Vault.CountRejected = *count429
	cfg.Vault.Name = fmt.Sprintf("%d ops / %s", *ops, *window)

	ctx := context.Background()
	f, err := fleet.New(ctx, cfg.DisksPerNode)
	if err != nil {
		return err
	}
	defer f.Close()

	fmt.Printf("vault: %d RSA operations per %s (sliding window), 429 + Retry-After beyond (429s count against the limit: %v); unwrapkey %s, 429 %s; %d CMK keyrings per node; budget %s\n\n",
		cfg.Vault.Ops, cfg.Vault.Window, cfg.Vault.CountRejected, cfg.Vault.Latency, cfg.Vault.RejectLatency, cfg.DisksPerNode, *budget)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	row := func(cells ...string) {
		if *markdown {
			fmt.Fprintf(tw, "| %s |\n", strings.Join(cells, " | "))
			return
		}
		fmt.Fprintf(tw, "%s\t\n", strings.Join(cells, "\t"))
	}
	if *markdown {
		tw = tabwriter.NewWriter(os.Stdout, 0, 0, 0, ' ', 0)
	}
	row("nodes", "policy", "all disks open", "node p50", "node p99", "KEK calls/node", "vault requests/node", "429s", "nodes open in budget", "sim wall time")
	if *markdown {
		row("--:", "---", "--:", "--:", "--:", "--:", "--:", "--:", "--:", "--:")
	}
	for _, n := range sizes {
		for _, p := range strings.Split(*policies, ",") {
			c := cfg
			c.Nodes, c.Policy = n, fleet.Policy(strings.TrimSpace(p))
			r, err := f.Run(ctx, c, *budget)
			if err != nil {
				return err
			}
			row(strconv.Itoa(n), string(c.Policy), secs(r.AllOpen), secs(r.NodeP50), secs(r.NodeP99),
				fmt.Sprintf("%.2f", r.KEKCallsPerNode()), fmt.Sprintf("%.2f", r.RequestsPerNode()), strconv.FormatInt(r.Throttled, 10),
				strconv.Itoa(r.WithinBudget), r.Wall.Round(time.Millisecond).String())
		}
	}
	tw.Flush()
	if !*maxNodes {
		return nil
	}
	// Starts spread over -spread give the vault that much more time.
	bound := fleet.Capacity(cfg.Vault, cfg.DisksPerNode, *budget+cfg.Spread)
	fmt.Printf("\nlargest fleet with every node's disks open within %s of its start (bound at the vault's sustained rate: %d nodes)\n", *budget, bound)
	for _, p := range strings.Split(*policies, ",") {
		c := cfg
		c.Policy = fleet.Policy(strings.TrimSpace(p))
		n, err := f.MaxNodes(ctx, c, *budget, 2*bound)
		if err != nil {
			return err
		}
		format := "  %-20s %6d nodes (%.0f%% of the bound)\n"
		if *markdown {
			format = "- `%s`: %d nodes (%.0f%% of the bound)\n"
		}
		fmt.Printf(format, c.Policy, n, 100*float64(n)/float64(bound))
	}
	return nil
}

func secs(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', 2, 64) + " s" }

func ints(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q: want positive integers such as 100,1000,10000", s)
		}
		out = append(out, n)
	}
	return out, nil
}
