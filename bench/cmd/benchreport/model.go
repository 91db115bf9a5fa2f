package main

import (
	"cmp"
	"slices"
	"strings"
)

// Naming convention (bench/README.md, "Naming convention"):
//
//	Benchmark<Top>/<dim>/<dim>/impl=<implementation>
//
// Every element but impl=... is a dimension of the configuration (seg=64KiB,
// rec=256B, fsync=always, zstd, ...). Results with the same Top, the same
// dimensions and the same GOMAXPROCS form a group; inside a group an
// implementation whose name starts with "cachecrypt" is ours and every other
// implementation is a baseline. A baseline may leave dimensions out: it
// then serves every configuration that has all of its dimensions (for
// example BenchmarkStreamSeal/impl=rawgcm is the limit of every
// BenchmarkStreamSeal/seg=.../impl=cachecrypt); the baseline with the most
// matching dimensions wins.
const (
	implPrefix = "impl="
	implOurs   = "cachecrypt"
	implLimit  = "rawgcm" // raw crypto/cipher AES-256-GCM: the limit
	implPlain  = "plain"  // unencrypted I/O
)

// A Result is the median of every run of one benchmark at one GOMAXPROCS.
type Result struct {
	Name    string // full benchmark name, without the -GOMAXPROCS suffix
	Top     string // benchmark function without "Benchmark"
	Dims    []string
	Impl    string // "" when the name has no impl= element
	Procs   int
	Runs    int
	Metrics map[string]float64 // median per unit

	// VS maps a baseline implementation to our speed relative to it:
	// MB/s ours / MB/s baseline, or ns/op baseline / ns/op ours when
	// either lacks MB/s. Above 1 we are faster. Set only for our results.
	VS map[string]float64
	// Base maps each baseline implementation in VS to the full name of
	// the baseline result it was compared with (same GOMAXPROCS).
	Base map[string]string
}

// Ours reports whether r measures cachecrypt itself.
func (r Result) Ours() bool { return strings.HasPrefix(r.Impl, implOurs) }

// Config is the result's dimensions joined with "/", or "-" if none.
func (r Result) Config() string {
	if len(r.Dims) == 0 {
		return "-"
	}
	return strings.Join(r.Dims, "/")
}

// splitName splits "BenchmarkTop/a/impl=x/b" into "Top", [a b], "x".
func splitName(name string) (top string, dims []string, impl string) {
	parts := strings.Split(name, "/")
	top = strings.TrimPrefix(parts[0], "Benchmark")
	for _, p := range parts[1:] {
		if v, ok := strings.CutPrefix(p, implPrefix); ok {
			impl = v
			continue
		}
		dims = append(dims, p)
	}
	return top, dims, impl
}

// Median returns the median of vs (the mean of the two middle values for
// an even count); vs is not modified. It returns 0 for no values.
func Median(vs []float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	m := len(s) / 2
	if len(s)%2 == 1 {
		return s[m]
	}
	return (s[m-1] + s[m]) / 2
}

// Summarize takes the median of each metric over the runs of each
// benchmark and GOMAXPROCS, then computes the ratios of our results against
// every baseline of their group. Results are ordered by benchmark, then
// configuration (in the order they first appear), GOMAXPROCS, and
// implementation (ours first, then the limit, plain I/O and peers by name).
func Summarize(runs []Run) []Result {
	type key struct {
		name  string
		procs int
	}
	samples := map[key]map[string][]float64{}
	counts := map[key]int{}
	topOrder, cfgOrder := map[string]int{}, map[string]int{} // order of first appearance
	var keys []key
	for _, r := range runs {
		k := key{r.Name, r.Procs}
		if samples[k] == nil {
			samples[k] = map[string][]float64{}
			keys = append(keys, k)
		}
		counts[k]++
		for u, v := range r.Metrics {
			samples[k][u] = append(samples[k][u], v)
		}
		top, dims, _ := splitName(r.Name)
		if _, ok := topOrder[top]; !ok {
			topOrder[top] = len(topOrder)
		}
		if c := configKey(top, dims); !hasKey(cfgOrder, c) {
			cfgOrder[c] = len(cfgOrder)
		}
	}
	results := make([]Result, 0, len(keys))
	for _, k := range keys {
		top, dims, impl := splitName(k.name)
		res := Result{Name: k.name, Top: top, Dims: dims, Impl: impl, Procs: k.procs, Runs: counts[k], Metrics: map[string]float64{}}
		for u, vs := range samples[k] {
			res.Metrics[u] = Median(vs)
		}
		results = append(results, res)
	}
	slices.SortStableFunc(results, func(a, b Result) int {
		return cmp.Or(
			cmp.Compare(topOrder[a.Top], topOrder[b.Top]),
			cmp.Compare(cfgOrder[configKey(a.Top, a.Dims)], cfgOrder[configKey(b.Top, b.Dims)]),
			cmp.Compare(a.Procs, b.Procs),
			compareImpl(a.Impl, b.Impl),
		)
	})
	compare(results)
	return results
}

func configKey(top string, dims []string) string {
	return top + "\x00" + strings.Join(dims, "/")
}

func hasKey(m map[string]int, k string) bool { _, ok := m[k]; return ok }

// implRank orders implementations: ours, the limit, plain I/O, peers.
func implRank(impl string) int {
	switch {
	case strings.HasPrefix(impl, implOurs):
		return 0
	case impl == implLimit:
		return 1
	case impl == implPlain:
		return 2
	case impl == "":
		return 4
	}
	return 3
}

func compareImpl(a, b string) int {
	return cmp.Or(cmp.Compare(implRank(a), implRank(b)), cmp.Compare(a, b))
}

// compare fills VS of every result of ours.
func compare(results []Result) {
	for i := range results {
		r := &results[i]
		if !r.Ours() {
			continue
		}
		best := map[string]*Result{}
		for j := range results {
			b := &results[j]
			if b.Impl == "" || b.Ours() || b.Top != r.Top || b.Procs != r.Procs || !subset(b.Dims, r.Dims) {
				continue
			}
			if cur := best[b.Impl]; cur == nil || len(b.Dims) > len(cur.Dims) {
				best[b.Impl] = b
			}
		}
		for impl, b := range best {
			if v, ok := ratio(*r, *b); ok {
				if r.VS == nil {
					r.VS, r.Base = map[string]float64{}, map[string]string{}
				}
				r.VS[impl], r.Base[impl] = v, b.Name
			}
		}
	}
}

// ratio is our speed relative to base: higher is faster.
func ratio(ours, base Result) (float64, bool) {
	if o, b := ours.Metrics[unitMBs], base.Metrics[unitMBs]; o > 0 && b > 0 {
		return o / b, true
	}
	if o, b := ours.Metrics[unitNsOp], base.Metrics[unitNsOp]; o > 0 && b > 0 {
		return b / o, true
	}
	return 0, false
}

func subset(sub, set []string) bool {
	for _, s := range sub {
		if !slices.Contains(set, s) {
			return false
		}
	}
	return true
}

// Baselines lists the baseline implementations that appear in results, in
// column order.
func Baselines(results []Result) []string {
	var bs []string
	for _, r := range results {
		if r.Impl != "" && !r.Ours() && !slices.Contains(bs, r.Impl) {
			bs = append(bs, r.Impl)
		}
	}
	slices.SortFunc(bs, compareImpl)
	return bs
}
