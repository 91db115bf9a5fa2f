package main

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"strings"
)

// Chart geometry, in SVG user units (pixels).
const (
	svgWidth   = 960
	svgLabelX  = 170 // right edge of the implementation labels
	svgBarX    = 180 // left edge of the bars
	svgBarMax  = 640 // width of the longest bar of a panel
	svgBarH    = 14
	svgBarStep = 18
)

// implColor gives each implementation a fixed color so charts compare at a
// glance: ours blue, the limit dark grey, plain I/O light grey, peers warm.
func implColor(impl string) string {
	switch {
	case strings.HasPrefix(impl, implOurs):
		return "#1f6fb4"
	case impl == implLimit:
		return "#555555"
	case impl == implPlain:
		return "#b0b0b0"
	}
	peers := []string{"#e07b1f", "#2ca02c", "#9467bd", "#c0392b", "#8c564b", "#17becf"}
	h := 0
	for _, c := range impl {
		h = h*31 + int(c)
	}
	return peers[(h%len(peers)+len(peers))%len(peers)]
}

// WriteSVG draws horizontal bars of throughput (median MB/s, or operations
// per second for a benchmark without MB/s): one panel per benchmark with its
// own scale, one block per configuration and GOMAXPROCS
// of ours, holding our bar and, beside it, the bar of each baseline it was
// compared with (the limit, plain I/O, the peers). Results that are neither
// ours nor a baseline of ours get blocks of their own. title heads the
// chart.
func WriteSVG(w io.Writer, title string, results []Result) error {
	var body bytes.Buffer
	y := 30
	text(&body, 10, y, "title", title)
	y += 12
	for _, top := range tops(results) {
		rs := byTop(results, top)
		unit := chartUnit(rs)
		blocks := chartBlocks(rs, unit)
		if len(blocks) == 0 {
			continue
		}
		y += 26
		text(&body, 10, y, "panel", top+" ("+unit+")")
		peak := 0.0
		for _, b := range blocks {
			for _, r := range b.bars {
				peak = max(peak, chartValue(r, unit))
			}
		}
		for _, b := range blocks {
			y += 22
			text(&body, 20, y, "group", b.label)
			y += 6
			for _, r := range b.bars {
				v := chartValue(r, unit)
				width := int(float64(svgBarMax)*v/peak + 0.5)
				fmt.Fprintf(&body, `<text x="%d" y="%d" class="impl">%s</text>`+"\n", svgLabelX, y+svgBarH-3, esc(orDash(r.Impl)))
				fmt.Fprintf(&body, `<rect x="%d" y="%d" width="%d" height="%d" fill="%s"/>`+"\n", svgBarX, y, max(width, 1), svgBarH, implColor(r.Impl))
				fmt.Fprintf(&body, `<text x="%d" y="%d" class="value">%s</text>`+"\n", svgBarX+width+6, y+svgBarH-3, esc(formatNum(v)+barNote(r)))
				y += svgBarStep
			}
		}
	}
	y += 20
	var out bytes.Buffer
	fmt.Fprintf(&out, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", svgWidth, y, svgWidth, y)
	out.WriteString("<style>.title{font-size:16px;font-weight:bold}.panel{font-size:14px;font-weight:bold}.group{font-style:italic}.impl{text-anchor:end}.value{fill:#333}</style>\n")
	fmt.Fprintf(&out, `<rect width="%d" height="%d" fill="white"/>`+"\n", svgWidth, y)
	out.Write(body.Bytes())
	out.WriteString("</svg>\n")
	_, err := w.Write(out.Bytes())
	return err
}

type block struct {
	label string
	bars  []Result
}

// chartBlocks groups the results of one benchmark that have MB/s: our
// results of a configuration and GOMAXPROCS with their baselines, then
// every result no block has shown yet.
func chartBlocks(rs []Result, unit string) []block {
	type id struct {
		name  string
		procs int
	}
	index := map[id]Result{}
	for _, r := range rs {
		index[id{r.Name, r.Procs}] = r
	}
	shown := map[id]bool{}
	var blocks []block
	add := func(label string, r Result) {
		if chartValue(r, unit) <= 0 {
			return
		}
		shown[id{r.Name, r.Procs}] = true
		if n := len(blocks); n > 0 && blocks[n-1].label == label {
			blocks[n-1].bars = append(blocks[n-1].bars, r)
			return
		}
		blocks = append(blocks, block{label: label, bars: []Result{r}})
	}
	bases := Baselines(rs)
	for _, r := range rs {
		if !r.Ours() {
			continue
		}
		label := fmt.Sprintf("%s · GOMAXPROCS=%d", r.Config(), r.Procs)
		add(label, r)
		for _, impl := range bases {
			if name, ok := r.Base[impl]; ok {
				add(label, index[id{name, r.Procs}])
			}
		}
	}
	for _, r := range rs {
		if !shown[id{r.Name, r.Procs}] {
			add(fmt.Sprintf("%s · GOMAXPROCS=%d", r.Config(), r.Procs), r)
		}
	}
	return blocks
}

// unitOpsPerSec is what the chart draws for a benchmark none of whose
// results has MB/s (such as a keyring open): 1e9 / ns/op.
const unitOpsPerSec = "ops/s"

// chartUnit is MB/s if any result of the benchmark has it, else ops/s.
func chartUnit(rs []Result) string {
	for _, r := range rs {
		if r.Metrics[unitMBs] > 0 {
			return unitMBs
		}
	}
	return unitOpsPerSec
}

func chartValue(r Result, unit string) float64 {
	if unit == unitMBs {
		return r.Metrics[unitMBs]
	}
	if ns := r.Metrics[unitNsOp]; ns > 0 {
		return 1e9 / ns
	}
	return 0
}

// barNote adds our ratio to the limit after the value, when known.
func barNote(r Result) string {
	if v, ok := r.VS[implLimit]; ok {
		return fmt.Sprintf(" (%.0f%% of %s)", 100*v, implLimit)
	}
	return ""
}

func text(b *bytes.Buffer, x, y int, class, s string) {
	fmt.Fprintf(b, `<text x="%d" y="%d" class="%s">%s</text>`+"\n", x, y, class, esc(s))
}

func esc(s string) string {
	var b strings.Builder
	xml.EscapeText(&b, []byte(s))
	return b.String()
}
