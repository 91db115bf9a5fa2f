package main

import (
	"encoding/csv"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
)

var standardUnits = []string{unitMBs, unitNsOp, unitBOp, unitAllocsOp}

// WriteMarkdown writes one table per benchmark: every configuration,
// implementation and GOMAXPROCS with its medians, and for our rows the
// speed relative to each baseline of the same group ("0.93×": 93 % of the
// baseline's throughput).
func WriteMarkdown(w io.Writer, results []Result) error {
	var b strings.Builder
	for i, top := range tops(results) {
		rs := byTop(results, top)
		bases := Baselines(rs)
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "#### %s\n\n", top)
		b.WriteString("| configuration | impl | GOMAXPROCS | MB/s | ns/op | B/op | allocs/op |")
		for _, base := range bases {
			fmt.Fprintf(&b, " vs %s |", base)
		}
		b.WriteString(" other |\n|---|---|--:|--:|--:|--:|--:|")
		b.WriteString(strings.Repeat("--:|", len(bases)))
		b.WriteString("---|\n")
		for _, r := range rs {
			impl := r.Impl
			if r.Ours() {
				impl = "**" + impl + "**"
			}
			fmt.Fprintf(&b, "| %s | %s | %d |", mdEscape(r.Config()), mdEscape(orDash(impl)), r.Procs)
			for _, u := range standardUnits {
				fmt.Fprintf(&b, " %s |", metric(r, u))
			}
			for _, base := range bases {
				fmt.Fprintf(&b, " %s |", formatRatio(r, base))
			}
			fmt.Fprintf(&b, " %s |\n", mdEscape(orDash(otherMetrics(r))))
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteCSV writes one row per result, with every baseline ratio as a
// column vs_<impl> and custom metrics as "value unit" pairs joined by "; ".
func WriteCSV(w io.Writer, results []Result) error {
	bases := Baselines(results)
	cw := csv.NewWriter(w)
	head := []string{"benchmark", "configuration", "impl", "gomaxprocs", "runs", "mb_per_s", "ns_per_op", "b_per_op", "allocs_per_op"}
	for _, base := range bases {
		head = append(head, "vs_"+base)
	}
	cw.Write(append(head, "other"))
	for _, r := range results {
		row := []string{r.Top, r.Config(), r.Impl, strconv.Itoa(r.Procs), strconv.Itoa(r.Runs)}
		for _, u := range standardUnits {
			v, ok := r.Metrics[u]
			row = append(row, csvNum(v, ok))
		}
		for _, base := range bases {
			v, ok := r.VS[base]
			row = append(row, csvNum(math.Round(v*1e4)/1e4, ok))
		}
		cw.Write(append(row, otherMetrics(r)))
	}
	cw.Flush()
	return cw.Error()
}

func csvNum(v float64, ok bool) string {
	if !ok {
		return ""
	}
	return strconv.FormatFloat(math.Round(v*1000)/1000, 'f', -1, 64)
}

func tops(results []Result) []string {
	var ts []string
	for _, r := range results {
		if !slices.Contains(ts, r.Top) {
			ts = append(ts, r.Top)
		}
	}
	return ts
}

func byTop(results []Result, top string) []Result {
	var rs []Result
	for _, r := range results {
		if r.Top == top {
			rs = append(rs, r)
		}
	}
	return rs
}

func metric(r Result, unit string) string {
	v, ok := r.Metrics[unit]
	if !ok {
		return "-"
	}
	return formatNum(v)
}

// formatNum prints about three significant digits, never an exponent.
func formatNum(v float64) string {
	switch a := max(v, -v); {
	case a >= 100 || v == float64(int64(v)):
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
	return strconv.FormatFloat(v, 'f', 4, 64)
}

func formatRatio(r Result, base string) string {
	v, ok := r.VS[base]
	if !ok {
		return ""
	}
	return strconv.FormatFloat(v, 'f', 2, 64) + "×"
}

func otherMetrics(r Result) string {
	var parts []string
	for _, u := range slices.Sorted(maps.Keys(r.Metrics)) {
		if !slices.Contains(standardUnits, u) {
			parts = append(parts, formatNum(r.Metrics[u])+" "+u)
		}
	}
	return strings.Join(parts, "; ")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func mdEscape(s string) string { return strings.ReplaceAll(s, "|", `\|`) }
