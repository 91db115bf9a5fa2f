package main

import (
	"bytes"
	"encoding/xml"
	"flag"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func TestParseLine(t *testing.T) {
	for _, tc := range []struct {
		name, line string
		procs      int
		want       Run
		ok         bool
		err        string
	}{
		{name: "standard", line: "BenchmarkX/seg=64KiB/impl=cachecrypt-2 \t 16\t 13000000 ns/op\t5162.22 MB/s\t 262144 B/op\t 20 allocs/op", procs: 2,
			want: Run{Name: "BenchmarkX/seg=64KiB/impl=cachecrypt", Procs: 2, N: 16, Metrics: map[string]float64{"ns/op": 13e6, "MB/s": 5162.22, "B/op": 262144, "allocs/op": 20}}, ok: true},
		{name: "custom metric", line: "BenchmarkK/kek=mmk 100 61000 ns/op 1.000 kekcalls/op", procs: 1,
			want: Run{Name: "BenchmarkK/kek=mmk", Procs: 1, N: 100, Metrics: map[string]float64{"ns/op": 61000, "kekcalls/op": 1}}, ok: true},
		{name: "procs 1 keeps a trailing number", line: "BenchmarkAOF/rec=64-2 5 10 ns/op", procs: 1,
			want: Run{Name: "BenchmarkAOF/rec=64-2", Procs: 1, N: 5, Metrics: map[string]float64{"ns/op": 10}}, ok: true},
		{name: "procs 2 trims only its own suffix", line: "BenchmarkAOF/rec=64-4 5 10 ns/op", procs: 2,
			want: Run{Name: "BenchmarkAOF/rec=64-4", Procs: 2, N: 5, Metrics: map[string]float64{"ns/op": 10}}, ok: true},
		{name: "name only (parent of sub-benchmarks)", line: "BenchmarkX/seg=64KiB", procs: 1},
		{name: "log text", line: "BenchmarkX: opening the keyring failed", procs: 1},
		{name: "value not a number", line: "BenchmarkX 10 abc ns/op", procs: 1, err: `value "abc" is not a number`},
		{name: "unit missing", line: "BenchmarkX 10 12 ns/op 7", procs: 1, err: "want value/unit pairs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok, err := parseLine(tc.line, tc.procs)
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.ok, ok)
			if ok {
				assert.Equal(t, tc.want, got)
			}
		})
	}
}

func TestParseReportsLine(t *testing.T) {
	_, err := Parse(strings.NewReader("goos: linux\nBenchmarkX 10 1 ns/op\nBenchmarkY 10 x ns/op\n"), 1, nil)
	require.ErrorContains(t, err, "benchreport.Parse: line 3")
}

func TestParseEnv(t *testing.T) {
	f, err := os.Open("testdata/raw-gomaxprocs-2.txt")
	require.NoError(t, err)
	defer f.Close()
	var env Env
	runs, err := Parse(f, 2, &env)
	require.NoError(t, err)
	assert.Equal(t, Env{GOOS: "linux", GOARCH: "amd64", CPU: "Test CPU @ 2.00GHz"}, env)
	require.Len(t, runs, 8)
	assert.Equal(t, "BenchmarkLegacyName|pipe", runs[7].Name)
}

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{
		{nil, 0}, {[]float64{7}, 7}, {[]float64{3, 1, 2}, 2}, {[]float64{4, 1, 3, 2}, 2.5}, {[]float64{5, 5, 100, 5, 1}, 5},
	} {
		in := append([]float64(nil), tc.in...)
		assert.Equal(t, tc.want, Median(tc.in), "Median(%v)", tc.in)
		assert.Equal(t, in, tc.in, "Median must not reorder its input")
	}
}

func TestSplitName(t *testing.T) {
	top, dims, impl := splitName("BenchmarkStreamSeal/seg=64KiB/impl=sio/zstd")
	assert.Equal(t, "StreamSeal", top)
	assert.Equal(t, []string{"seg=64KiB", "zstd"}, dims)
	assert.Equal(t, "sio", impl)
}

func loadTestdata(t *testing.T) ([]Result, Env) {
	t.Helper()
	var runs []Run
	var env Env
	for _, p := range []int{1, 2} {
		b, err := os.ReadFile(filepath.Join("testdata", "raw-gomaxprocs-"+string(rune('0'+p))+".txt"))
		require.NoError(t, err)
		rs, err := Parse(bytes.NewReader(b), p, &env)
		require.NoError(t, err)
		runs = append(runs, rs...)
	}
	return Summarize(runs), env
}

func find(t *testing.T, rs []Result, name string, procs int) Result {
	t.Helper()
	for _, r := range rs {
		if r.Name == name && r.Procs == procs {
			return r
		}
	}
	t.Fatalf("no result %s at GOMAXPROCS=%d", name, procs)
	return Result{}
}

func TestSummarize(t *testing.T) {
	rs, _ := loadTestdata(t)
	ours1 := find(t, rs, "BenchmarkStreamSeal/seg=64KiB/impl=cachecrypt", 1)
	assert.Equal(t, 3, ours1.Runs)
	assert.Equal(t, 2684.35, ours1.Metrics[unitMBs])
	assert.Equal(t, 12.0, ours1.Metrics[unitAllocsOp])
	// The limit has no seg= dimension: it serves every segment size.
	assert.InDelta(t, 2684.35/3355.44, ours1.VS["rawgcm"], 1e-9)
	assert.InDelta(t, 2684.35/1636.80, ours1.VS["sio"], 1e-9)
	assert.InDelta(t, 2684.35/13421.77, ours1.VS["plain"], 1e-9)

	ours2 := find(t, rs, "BenchmarkStreamSeal/seg=64KiB/impl=cachecrypt", 2)
	assert.InDelta(t, (5162.22+5592.41)/2, ours2.Metrics[unitMBs], 1e-9)
	assert.InDelta(t, ours2.Metrics[unitMBs]/((6710.89+6100.81)/2), ours2.VS["rawgcm"], 1e-9)
	assert.NotContains(t, ours2.VS, "plain", "no plain run at GOMAXPROCS=2: no ratio")

	base := find(t, rs, "BenchmarkStreamSeal/seg=64KiB/impl=sio", 1)
	assert.Nil(t, base.VS, "baselines carry no ratios")
	assert.Equal(t, []string{"rawgcm", "plain", "sio"}, Baselines(rs))

	var order []string
	for _, r := range rs {
		order = append(order, r.Name+"@"+string(rune('0'+r.Procs)))
	}
	assert.Equal(t, []string{
		"BenchmarkStreamSeal/impl=rawgcm@1", "BenchmarkStreamSeal/impl=rawgcm@2",
		"BenchmarkStreamSeal/seg=64KiB/impl=cachecrypt@1", "BenchmarkStreamSeal/seg=64KiB/impl=plain@1", "BenchmarkStreamSeal/seg=64KiB/impl=sio@1",
		"BenchmarkStreamSeal/seg=64KiB/impl=cachecrypt@2", "BenchmarkStreamSeal/seg=64KiB/impl=sio@2",
		"BenchmarkKeyringOpen/kek=mmk/impl=cachecrypt@1", "BenchmarkKeyringOpen/kek=mmk/impl=cachecrypt@2",
		"BenchmarkLegacyName|pipe@1", "BenchmarkLegacyName|pipe@2",
	}, order)
}

func TestRatioMostSpecificBaselineAndNsOp(t *testing.T) {
	runs := []Run{
		{Name: "BenchmarkAOF/rec=64B/impl=cachecrypt", Procs: 1, Metrics: map[string]float64{unitNsOp: 200}},
		{Name: "BenchmarkAOF/impl=plain", Procs: 1, Metrics: map[string]float64{unitNsOp: 50}},
		{Name: "BenchmarkAOF/rec=64B/impl=plain", Procs: 1, Metrics: map[string]float64{unitNsOp: 100}},
		{Name: "BenchmarkAOF/rec=4KiB/impl=plain", Procs: 1, Metrics: map[string]float64{unitNsOp: 1}},
		{Name: "BenchmarkOther/rec=64B/impl=rawgcm", Procs: 1, Metrics: map[string]float64{unitNsOp: 1}},
	}
	r := find(t, Summarize(runs), "BenchmarkAOF/rec=64B/impl=cachecrypt", 1)
	assert.Equal(t, map[string]float64{"plain": 0.5}, r.VS, "the rec=64B baseline wins over the general one; other benchmarks never match")
}

func TestGolden(t *testing.T) {
	rs, _ := loadTestdata(t)
	for _, g := range []struct {
		file  string
		write func(io.Writer) error
	}{
		{"golden-table.md", func(w io.Writer) error { return WriteMarkdown(w, rs) }},
		{"golden-results.csv", func(w io.Writer) error { return WriteCSV(w, rs) }},
		{"golden-chart.svg", func(w io.Writer) error { return WriteSVG(w, "test chart", rs) }},
	} {
		t.Run(g.file, func(t *testing.T) {
			var buf bytes.Buffer
			require.NoError(t, g.write(&buf))
			path := filepath.Join("testdata", g.file)
			if *update {
				require.NoError(t, os.WriteFile(path, buf.Bytes(), 0o644))
			}
			want, err := os.ReadFile(path)
			require.NoError(t, err, "run go test -update to create the golden files")
			assert.Equal(t, string(want), buf.String())
		})
	}
}

func TestSVGWellFormed(t *testing.T) {
	rs, _ := loadTestdata(t)
	rs = append(rs, Result{Top: "Esc<&>", Impl: "a<b", Procs: 1, Metrics: map[string]float64{unitMBs: 1}})
	var buf bytes.Buffer
	require.NoError(t, WriteSVG(&buf, `title "<&>"`, rs))
	d := xml.NewDecoder(&buf)
	bars := 0
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "rect" {
			bars++
		}
	}
	// 7 results with MB/s in testdata + 4 drawn as ops/s (benchmarks
	// without MB/s) + the added one, plus the background.
	assert.Equal(t, 13, bars)
}

func TestChartUnit(t *testing.T) {
	rs, _ := loadTestdata(t)
	assert.Equal(t, unitMBs, chartUnit(byTop(rs, "StreamSeal")))
	keyring := byTop(rs, "KeyringOpen")
	assert.Equal(t, unitOpsPerSec, chartUnit(keyring))
	assert.InDelta(t, 1e9/60000, chartValue(keyring[0], unitOpsPerSec), 1e-9)
}

func TestReplaceSection(t *testing.T) {
	doc := []byte("# Bench\n\nintro\n<!-- figures:start -->\nold figures\n<!-- figures:end -->\ntail\n")
	got, err := ReplaceSection(doc, []byte("\nnew\n"))
	require.NoError(t, err)
	assert.Equal(t, "# Bench\n\nintro\n<!-- figures:start -->\nnew\n<!-- figures:end -->\ntail\n", string(got))

	for _, bad := range []string{
		"no markers",
		"<!-- figures:end --> <!-- figures:start -->",
		"<!-- figures:start --> <!-- figures:start --> <!-- figures:end -->",
	} {
		_, err := ReplaceSection([]byte(bad), []byte("x"))
		assert.ErrorContains(t, err, "need exactly one", bad)
	}
}

func TestParseFlags(t *testing.T) {
	cfg, err := parseFlags([]string{"-quick"})
	require.NoError(t, err)
	assert.Equal(t, 1, cfg.count)
	assert.Equal(t, "100ms", cfg.benchtime)
	assert.Equal(t, []int{1, 2}, cfg.procs)

	cfg, err = parseFlags([]string{"-quick", "-count", "3", "-procs", "2", "-bench", "Stream"})
	require.NoError(t, err)
	assert.Equal(t, 3, cfg.count, "an explicit -count wins over -quick")
	assert.Equal(t, []int{2}, cfg.procs)
	assert.Equal(t, "Stream", cfg.bench)

	for _, bad := range [][]string{{"-count", "0"}, {"-procs", "1,x"}, {"-procs", "0"}, {"extra"}} {
		_, err := parseFlags(bad)
		assert.Error(t, err, "%q", bad)
	}
}

func TestSweep(t *testing.T) {
	assert.Equal(t, []int{1}, sweep(1))
	assert.Equal(t, []int{1, 2}, sweep(2))
	assert.Equal(t, []int{1, 2, 3}, sweep(3))
	assert.Equal(t, []int{1, 2, 4, 8, 16}, sweep(16))
	assert.Equal(t, []int{1, 2, 4, 8, 16, 64}, sweep(64))
	cfg, err := parseFlags([]string{"-procs", "sweep"})
	require.NoError(t, err)
	assert.Equal(t, sweep(runtime.NumCPU()), cfg.procs)
}

func TestFormatNum(t *testing.T) {
	for v, want := range map[float64]string{0: "0", 2: "2", 1234.567: "1235", 56.78: "56.8", 3.14159: "3.14", 0.012345: "0.0123"} {
		assert.Equal(t, want, formatNum(v), "formatNum(%v)", v)
	}
}
