// Command benchreport runs cachecrypt's benchmark matrix and writes a
// report: a Markdown table with ratios against the limit (raw AES-256-GCM)
// and each peer, a CSV, and an SVG chart.
//
// Each GOMAXPROCS runs in its own `go test` process, with GOMAXPROCS set in
// the environment (not -cpu, see golang/go#49980), -count runs each; the
// report holds the median of the runs. Run it from the repository root or
// from bench/:
//
//	go run -C bench ./cmd/benchreport              # full matrix, bench/out/
//	go run -C bench ./cmd/benchreport -quick       # smoke run, about a minute
//	go run -C bench ./cmd/benchreport -readme      # also refresh bench/README.md
//	go run -C bench ./cmd/benchreport -procs sweep # GOMAXPROCS 1,2,4,8,16 up to the CPUs here
//
// bench/README.md documents the naming convention that tells the harness
// which benchmark is the baseline of which.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

type config struct {
	bench, benchtime, pkg, out, from string
	count                            int
	procs                            []int
	quick, readme                    bool
}

func main() {
	start := time.Now()
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	err = run(ctx, cfg, start)
	fmt.Printf("benchreport: took %s\n", time.Since(start).Round(time.Second))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (config, error) {
	var cfg config
	var procs string
	fs := flag.NewFlagSet("benchreport", flag.ContinueOnError)
	fs.StringVar(&cfg.bench, "bench", ".", "benchmark `regexp` passed to go test -bench")
	fs.IntVar(&cfg.count, "count", 5, "runs of each benchmark per GOMAXPROCS; the report shows the median")
	fs.StringVar(&cfg.benchtime, "benchtime", "1s", "go test -benchtime for each run")
	fs.StringVar(&procs, "procs", "1,2", "comma-separated GOMAXPROCS values, one go test process each; \"sweep\" is 1,2,4,8,16 up to this machine's CPUs (and its CPU count)")
	fs.StringVar(&cfg.pkg, "pkg", ".", "package pattern inside the bench module")
	fs.StringVar(&cfg.out, "out", "", "output `dir` (default: out/ in the bench module)")
	fs.StringVar(&cfg.from, "from", "", "build the report from the raw-gomaxprocs-N.txt files in `dir` instead of running benchmarks")
	fs.BoolVar(&cfg.quick, "quick", false, "smoke run: -count 1 -benchtime 100ms unless given")
	fs.BoolVar(&cfg.readme, "readme", false, "also replace the figures section of the bench module's README.md and write figures.svg beside it")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("benchreport: unexpected arguments %q; flags only", fs.Args())
	}
	if cfg.quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["count"] {
			cfg.count = 1
		}
		if !set["benchtime"] {
			cfg.benchtime = "100ms"
		}
	}
	if cfg.count < 1 {
		return cfg, fmt.Errorf("benchreport: -count %d: need at least one run", cfg.count)
	}
	if procs == "sweep" {
		cfg.procs = sweep(runtime.NumCPU())
		return cfg, nil
	}
	for _, p := range strings.Split(procs, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || n < 1 {
			return cfg, fmt.Errorf("benchreport: -procs %q: want positive integers such as 1,2, or sweep", procs)
		}
		if n > runtime.NumCPU() {
			fmt.Fprintf(os.Stderr, "benchreport: warning: GOMAXPROCS=%d on a machine with %d CPUs measures time-sharing, not scaling\n", n, runtime.NumCPU())
		}
		cfg.procs = append(cfg.procs, n)
	}
	return cfg, nil
}

// sweep returns the GOMAXPROCS values -procs sweep runs on a machine of
// cpus CPUs: 1, 2, 4, 8, 16 as far as it has them, then cpus itself.
func sweep(cpus int) []int {
	var ps []int
	for p := 1; p <= min(cpus, 16); p *= 2 {
		ps = append(ps, p)
	}
	if ps[len(ps)-1] != cpus {
		ps = append(ps, cpus)
	}
	return ps
}

func run(ctx context.Context, cfg config, start time.Time) error {
	dir, err := benchDir()
	if err != nil {
		return err
	}
	if cfg.out == "" {
		cfg.out = filepath.Join(dir, "out")
	}
	if err := os.MkdirAll(cfg.out, 0o755); err != nil {
		return fmt.Errorf("benchreport: %w", err)
	}
	var runs []Run
	var env Env
	var failed []error
	for _, p := range cfg.procs {
		raw, err := rawOutput(ctx, cfg, dir, p)
		if err != nil {
			failed = append(failed, err) // keep what ran: a report of the rest is still useful
		}
		rs, perr := Parse(bytes.NewReader(raw), p, &env)
		if perr != nil {
			return perr
		}
		runs = append(runs, rs...)
	}
	if len(runs) == 0 {
		return errors.Join(append(failed, fmt.Errorf("benchreport: no benchmark matched -bench %q", cfg.bench))...)
	}
	results := Summarize(runs)
	header := describe(cfg, env, start)
	if err := writeReport(cfg.out, header, results); err != nil {
		return err
	}
	if cfg.readme {
		if err := updateReadme(dir, header, results); err != nil {
			return err
		}
	}
	return errors.Join(failed...)
}

// rawOutput runs one go test process with GOMAXPROCS=procs, streaming its
// output to stdout and to out/raw-gomaxprocs-N.txt, or reads that file
// back with -from.
func rawOutput(ctx context.Context, cfg config, dir string, procs int) ([]byte, error) {
	name := fmt.Sprintf("raw-gomaxprocs-%d.txt", procs)
	if cfg.from != "" {
		b, err := os.ReadFile(filepath.Join(cfg.from, name))
		if err != nil {
			return nil, fmt.Errorf("benchreport: -from: %w", err)
		}
		return b, nil
	}
	args := []string{"test", "-run", "^$", "-bench", cfg.bench, "-benchmem", "-count", strconv.Itoa(cfg.count), "-benchtime", cfg.benchtime, "-timeout", "0", cfg.pkg}
	fmt.Printf("benchreport: GOMAXPROCS=%d go %s\n", procs, strings.Join(args, " "))
	var buf bytes.Buffer
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOMAXPROCS="+strconv.Itoa(procs))
	cmd.Stdout = io.MultiWriter(&buf, os.Stdout)
	cmd.Stderr = io.MultiWriter(&buf, os.Stderr)
	err := cmd.Run()
	if werr := os.WriteFile(filepath.Join(cfg.out, name), buf.Bytes(), 0o644); werr != nil {
		return buf.Bytes(), fmt.Errorf("benchreport: %w", werr)
	}
	if err != nil {
		return buf.Bytes(), fmt.Errorf("benchreport: GOMAXPROCS=%d go test failed: %w (output in %s)", procs, err, filepath.Join(cfg.out, name))
	}
	return buf.Bytes(), nil
}

// benchDir finds the bench module: the current directory or ./bench.
func benchDir() (string, error) {
	for _, d := range []string{".", "bench"} {
		b, err := os.ReadFile(filepath.Join(d, "go.mod"))
		if err == nil && bytes.Contains(b, []byte("module github.com/cachecrypt/cachecrypt/bench\n")) {
			return filepath.Abs(d)
		}
	}
	return "", errors.New("benchreport: run me from the repository root or from bench/ (go run -C bench ./cmd/benchreport)")
}

func describe(cfg config, env Env, start time.Time) string {
	procs := make([]string, len(cfg.procs))
	for i, p := range cfg.procs {
		procs[i] = strconv.Itoa(p)
	}
	cpu := env.CPU
	if cpu == "" {
		cpu = "unknown CPU"
	}
	s := fmt.Sprintf("%s; %s, %d cores, %s %s/%s; GOMAXPROCS %s in separate processes; median of %d run(s), -benchtime %s, -bench %q.",
		start.UTC().Format("2006-01-02 15:04 MST"), cpu, runtime.NumCPU(), runtime.Version(), env.GOOS, env.GOARCH,
		strings.Join(procs, " and "), cfg.count, cfg.benchtime, cfg.bench)
	if cfg.from != "" {
		s += fmt.Sprintf(" Rebuilt from the raw output saved in %s (the run settings are the flags given now).", cfg.from)
	}
	return s
}

func writeReport(out, header string, results []Result) error {
	var md bytes.Buffer
	fmt.Fprintf(&md, "# cachecrypt benchmarks\n\n%s\n\n![throughput](chart.svg)\n\n", header)
	if err := WriteMarkdown(&md, results); err != nil {
		return err
	}
	var csv, svg bytes.Buffer
	if err := WriteCSV(&csv, results); err != nil {
		return err
	}
	if err := WriteSVG(&svg, "cachecrypt throughput (median; MB/s, or operations per second)", results); err != nil {
		return err
	}
	for name, b := range map[string][]byte{"report.md": md.Bytes(), "results.csv": csv.Bytes(), "chart.svg": svg.Bytes()} {
		if err := os.WriteFile(filepath.Join(out, name), b, 0o644); err != nil {
			return fmt.Errorf("benchreport: %w", err)
		}
	}
	fmt.Printf("benchreport: wrote %s/{report.md,results.csv,chart.svg}\n", out)
	return nil
}

const (
	markStart = "<!-- figures:start -->"
	markEnd   = "<!-- figures:end -->"
)

// updateReadme replaces the text between the figure markers of
// dir/README.md and writes dir/figures.svg.
func updateReadme(dir, header string, results []Result) error {
	path := filepath.Join(dir, "README.md")
	old, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("benchreport: -readme: %w", err)
	}
	var section bytes.Buffer
	fmt.Fprintf(&section, "\n_%s_\n\n![throughput chart](figures.svg)\n\n", header)
	if err := WriteMarkdown(&section, results); err != nil {
		return err
	}
	updated, err := ReplaceSection(old, section.Bytes())
	if err != nil {
		return fmt.Errorf("benchreport: -readme: %s: %w", path, err)
	}
	var svg bytes.Buffer
	if err := WriteSVG(&svg, "cachecrypt throughput (median; MB/s, or operations per second)", results); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "figures.svg"), svg.Bytes(), 0o644); err != nil {
		return fmt.Errorf("benchreport: %w", err)
	}
	if err := os.WriteFile(path, updated, 0o644); err != nil {
		return fmt.Errorf("benchreport: %w", err)
	}
	fmt.Printf("benchreport: updated %s and figures.svg\n", path)
	return nil
}

// ReplaceSection returns doc with the text between the figure markers
// replaced by section. It fails unless each marker appears exactly once,
// start before end.
func ReplaceSection(doc, section []byte) ([]byte, error) {
	s, e := bytes.Index(doc, []byte(markStart)), bytes.Index(doc, []byte(markEnd))
	if s < 0 || e < 0 || e < s || bytes.Count(doc, []byte(markStart)) != 1 || bytes.Count(doc, []byte(markEnd)) != 1 {
		return nil, fmt.Errorf("need exactly one %s followed by one %s around the figures section; add them", markStart, markEnd)
	}
	var b bytes.Buffer
	b.Write(doc[:s+len(markStart)])
	b.Write(section)
	if !bytes.HasSuffix(section, []byte("\n")) {
		b.WriteString("\n")
	}
	b.Write(doc[e:])
	return b.Bytes(), nil
}
