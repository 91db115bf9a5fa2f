package main

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Standard metric units of the testing package. Any other unit is a custom
// metric reported with b.ReportMetric.
const (
	unitNsOp     = "ns/op"
	unitMBs      = "MB/s"
	unitBOp      = "B/op"
	unitAllocsOp = "allocs/op"
)

// A Run is one line of benchmark output: one run of one benchmark.
type Run struct {
	Name    string             // full name without the -GOMAXPROCS suffix
	Procs   int                // GOMAXPROCS the run used
	N       int                // iterations
	Metrics map[string]float64 // unit -> value
}

// Env is what the benchmark output says about the machine.
type Env struct {
	GOOS, GOARCH, CPU string
}

// Parse reads standard `go test -bench` output of a process that ran with
// GOMAXPROCS=procs. Lines that are not benchmark results (PASS, ok, logs)
// are skipped; header lines fill env. A result line that cannot be parsed is
// an error naming the line, because silently dropping figures would skew the
// report.
func Parse(r io.Reader, procs int, env *Env) ([]Run, error) {
	var runs []Run
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for line := 1; sc.Scan(); line++ {
		text := sc.Text()
		if env != nil {
			parseHeader(text, env)
		}
		if !strings.HasPrefix(text, "Benchmark") {
			continue
		}
		run, ok, err := parseLine(text, procs)
		if err != nil {
			return nil, fmt.Errorf("benchreport.Parse: line %d %q: %w", line, text, err)
		}
		if ok {
			runs = append(runs, run)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("benchreport.Parse: %w", err)
	}
	return runs, nil
}

func parseHeader(text string, env *Env) {
	for _, h := range []struct {
		prefix string
		dst    *string
	}{{"goos: ", &env.GOOS}, {"goarch: ", &env.GOARCH}, {"cpu: ", &env.CPU}} {
		if v, ok := strings.CutPrefix(text, h.prefix); ok {
			*h.dst = strings.TrimSpace(v)
		}
	}
}

// parseLine parses "BenchmarkX/sub-2  1234  567 ns/op  89.1 MB/s ...". A
// line holding only a name (a benchmark's own log output, or a parent
// benchmark announcing its sub-benchmarks) reports ok == false.
func parseLine(text string, procs int) (Run, bool, error) {
	f := strings.Fields(text)
	if len(f) < 2 {
		return Run{}, false, nil
	}
	n, err := strconv.Atoi(f[1])
	if err != nil {
		return Run{}, false, nil // "BenchmarkX some log text": not a result
	}
	if len(f)%2 != 0 {
		return Run{}, false, fmt.Errorf("want value/unit pairs after the iteration count, got %d fields", len(f)-2)
	}
	run := Run{Name: trimProcs(f[0], procs), Procs: procs, N: n, Metrics: make(map[string]float64, (len(f)-2)/2)}
	for i := 2; i < len(f); i += 2 {
		v, err := strconv.ParseFloat(f[i], 64)
		if err != nil {
			return Run{}, false, fmt.Errorf("metric %q: value %q is not a number", f[i+1], f[i])
		}
		run.Metrics[f[i+1]] = v
	}
	return run, true, nil
}

// trimProcs removes the "-N" suffix the testing package appends to names
// when GOMAXPROCS is N > 1.
func trimProcs(name string, procs int) string {
	if procs <= 1 {
		return name
	}
	return strings.TrimSuffix(name, "-"+strconv.Itoa(procs))
}
