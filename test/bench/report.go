package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"
)

// Targets (issue 15): egressd against plain NAT in the same run.
const (
	targetRatio    = 0.95                   // conn/s, at every concurrency and hello
	targetAddedP50 = 50 * time.Microsecond  // at concurrency 1, both hellos
	targetAddedP99 = 250 * time.Microsecond // at concurrency 1, both hellos
	targetLong     = 0.95                   // a long flow's throughput
)

func us(d time.Duration) string { return fmt.Sprintf("%dµs", d.Microseconds()) }

func perConn(d time.Duration, n int) time.Duration {
	if n == 0 {
		return 0
	}
	return d / time.Duration(n)
}

// fmtSpread prints a median and its range over the repetitions.
func fmtSpread(s spread, format string) string {
	if s.N == 0 {
		return "-"
	}
	if s.N == 1 {
		return fmt.Sprintf(format, s.Med)
	}
	return fmt.Sprintf(format+" ["+format+"–"+format+"]", s.Med, s.Min, s.Max)
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// pick returns the results of one table cell, in repetition order.
func (b *bench) pick(scen string, conc int, hello string) []result {
	var out []result
	for _, r := range b.results {
		if r.Scenario == scen && r.Conc == conc && r.Hello == hello && r.Rep > 0 {
			out = append(out, r)
		}
	}
	return out
}

func kernelRelease() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}

// cell is one scenario's figures in one table: medians and ranges over
// the rounds, each ratio and difference taken against the plain NAT
// measured in the same round.
type cell struct {
	scenario, hello                      string
	conc                                 int
	cps, ratio, p50, added, p99, added99 spread
	proc, ends, host, queued             spread
	dp50, dp99                           spread
	addedConn                            spread // connect's p50 minus plain's: the SYN's part
	qd, ud                               uint64
	errs, hs, decided, reused            int
	egressd                              bool // an egressd scenario (or variant): it has queues and decision lines
}

func (b *bench) isEgressd(name string) bool {
	_, v := b.o.variants[name]
	return name == scenEgressd || v
}

// cell computes one table cell; ok is false when it was not measured.
func (b *bench) cell(name string, conc int, hello string) (c cell, ok bool) {
	base := b.pick(scenPlain, conc, hello)
	rs := b.pick(name, conc, hello)
	if len(rs) == 0 || len(base) == 0 {
		return c, false
	}
	c = cell{scenario: name, hello: hello, conc: conc, egressd: b.isEgressd(name)}
	var cps, ratio, p50, added, p99, added99, proc, ends, host, queued, dp50, dp99, addedConn []float64
	for i, r := range rs {
		cps = append(cps, r.ConnPerSec)
		p50 = append(p50, micros(r.Client.P50))
		p99 = append(p99, micros(r.Client.P99))
		if i < len(base) && base[i].ConnPerSec > 0 {
			ratio = append(ratio, r.ConnPerSec/base[i].ConnPerSec)
			added = append(added, micros(r.Client.P50-base[i].Client.P50))
			added99 = append(added99, micros(r.Client.P99-base[i].Client.P99))
			addedConn = append(addedConn, micros(r.Client.ConnectP50-base[i].Client.ConnectP50))
		}
		proc = append(proc, micros(perConn(r.ProcCPU, r.Client.Handshakes)))
		ends = append(ends, micros(perConn(r.ClientCPU+r.ServerCPU, r.Client.Handshakes)))
		host = append(host, micros(perConn(r.HostCPU, r.Client.Handshakes)))
		if r.Client.Handshakes > 0 {
			queued = append(queued, float64(r.Queue.Queued)/float64(r.Client.Handshakes))
		}
		c.qd += r.Queue.QueueDropped
		c.ud += r.Queue.UserDropped
		c.errs += r.Client.Errors
		c.hs += r.Client.Handshakes
		c.decided += r.Decisions
		c.reused += r.Client.Reused
		dp50 = append(dp50, micros(r.DecisionP50))
		dp99 = append(dp99, micros(r.DecisionP99))
	}
	c.cps, c.ratio, c.p50, c.added = spreadOf(cps), spreadOf(ratio), spreadOf(p50), spreadOf(added)
	c.p99, c.added99, c.proc, c.ends = spreadOf(p99), spreadOf(added99), spreadOf(proc), spreadOf(ends)
	c.host, c.queued, c.dp50, c.dp99 = spreadOf(host), spreadOf(queued), spreadOf(dp50), spreadOf(dp99)
	c.addedConn = spreadOf(addedConn)
	return c, true
}

// row is a cell as the table's columns.
func (c cell) row() []string {
	q, drops, proc := "-", "-", fmtSpread(c.proc, "%.0f")
	if c.egressd {
		q, drops = fmtSpread(c.queued, "%.2f"), fmt.Sprintf("%d/%d", c.qd, c.ud)
	}
	if c.scenario == scenPlain {
		proc = "-"
	}
	return []string{c.scenario, fmtSpread(c.cps, "%.0f"), fmtSpread(c.ratio, "%.2f"),
		fmtSpread(c.p50, "%.0f"), fmtSpread(c.added, "%+.0f"), fmtSpread(c.p99, "%.0f"), fmtSpread(c.added99, "%+.0f"),
		proc, fmtSpread(c.ends, "%.0f"), fmtSpread(c.host, "%.0f"), q, drops, fmt.Sprint(c.errs)}
}

var tableHeader = []string{"scenario", "conn/s", "×plain", "p50 µs", "+p50 µs", "p99 µs", "+p99 µs",
	"CPU µs/conn: NAT procs", "client+servers", "host", "queued pkts/conn", "q/u drops", "errors"}

// notes are the lines under an egressd cell: its decision lines and its
// own decision latency.
func (c cell) notes() string {
	return fmt.Sprintf("%s: %d decision lines for %d handshakes (%d reused 5-tuples); its own decision latency (first held packet to verdict) p50 %s µs, p99 %s µs; of the added p50, connect (the SYN's part) %s µs",
		c.scenario, c.decided, c.hs, c.reused, fmtSpread(c.dp50, "%.0f"), fmtSpread(c.dp99, "%.0f"), fmtSpread(c.addedConn, "%+.0f"))
}

// verdict says whether an egressd cell meets the targets: the
// rate at every concurrency, the added latency at concurrency 1 (with
// more at a time the two CPUs are saturated and latency is queueing
// behind the endpoints' TLS work), and whether it is ahead of every peer
// measured in the same table (a higher rate; at concurrency 1 also a
// lower added p50).
func verdict(c cell, peers []cell) string {
	var miss []string
	if c.ratio.Med < targetRatio {
		miss = append(miss, fmt.Sprintf("conn/s %.2fx < %.2fx (by %.0f%%)", c.ratio.Med, targetRatio, 100*(targetRatio-c.ratio.Med)))
	}
	if c.conc == 1 {
		if c.added.Med > micros(targetAddedP50) {
			miss = append(miss, fmt.Sprintf("+p50 %+.0fµs > +%s (by %.0fµs)", c.added.Med, us(targetAddedP50), c.added.Med-micros(targetAddedP50)))
		}
		if c.added99.Med > micros(targetAddedP99) {
			miss = append(miss, fmt.Sprintf("+p99 %+.0fµs > +%s (by %.0fµs)", c.added99.Med, us(targetAddedP99), c.added99.Med-micros(targetAddedP99)))
		}
	}
	for _, p := range peers {
		if c.ratio.Med <= p.ratio.Med {
			miss = append(miss, fmt.Sprintf("conn/s not ahead of %s (%.2fx vs %.2fx)", p.scenario, c.ratio.Med, p.ratio.Med))
		}
		if c.conc == 1 && c.added.Med >= p.added.Med {
			miss = append(miss, fmt.Sprintf("+p50 not below %s's (%+.0f vs %+.0fµs)", p.scenario, c.added.Med, p.added.Med))
		}
	}
	what := fmt.Sprintf(">= %.2fx plain conn/s", targetRatio)
	got := fmt.Sprintf("%.2fx", c.ratio.Med)
	if c.conc == 1 {
		what += fmt.Sprintf(", <= +%s p50, <= +%s p99", us(targetAddedP50), us(targetAddedP99))
		got += fmt.Sprintf(", %+.0fµs, %+.0fµs", c.added.Med, c.added99.Med)
	}
	if len(peers) > 0 {
		what += ", ahead of the peers"
	}
	if len(miss) == 0 {
		return fmt.Sprintf("target (%s): %s MEETS it (%s)", what, c.scenario, got)
	}
	return fmt.Sprintf("target (%s): %s MISSES it (%s): %s", what, c.scenario, got, strings.Join(miss, "; "))
}

// table is one concurrency and hello: every scenario's cell, and the
// notes and verdicts under it.
type table struct {
	conc       int
	hello      string
	helloBytes int
	cells      []cell
	notes      []string
}

func (b *bench) tables() []table {
	var out []table
	for _, conc := range b.o.concs {
		for _, hello := range b.o.hellos {
			base := b.pick(scenPlain, conc, hello)
			if len(base) == 0 {
				continue
			}
			t := table{conc: conc, hello: hello, helloBytes: base[0].Client.HelloBytes}
			var peers []cell
			for _, name := range b.o.scenarios {
				c, ok := b.cell(name, conc, hello)
				if !ok {
					continue
				}
				t.cells = append(t.cells, c)
				if name == scenSquid || name == scenNginx {
					peers = append(peers, c)
				}
			}
			for _, c := range t.cells {
				if c.egressd {
					t.notes = append(t.notes, c.notes(), verdict(c, peers))
				}
			}
			out = append(out, t)
		}
	}
	return out
}

func (t table) title() string {
	return fmt.Sprintf("concurrency %d, hello %s (%d bytes)", t.conc, t.hello, t.helloBytes)
}

// longCell is one scenario's long-flow figures.
type longCell struct {
	scenario      string
	gbps, ratio   spread
	procPerGB     spread // NAT processes' CPU ms per GB carried
	hostPerGB     spread
	retrans, reps int
}

func (b *bench) longCells() []longCell {
	var base []longResult
	for _, r := range b.long {
		if r.Scenario == scenPlain {
			base = append(base, r)
		}
	}
	var out []longCell
	for _, name := range b.o.scenarios {
		var gbps, ratio, proc, host []float64
		c := longCell{scenario: name}
		i := 0
		for _, r := range b.long {
			if r.Scenario != name {
				continue
			}
			gb := r.BitsPerSec * r.Seconds / 8 / 1e9
			gbps = append(gbps, r.BitsPerSec/1e9)
			if i < len(base) && base[i].BitsPerSec > 0 {
				ratio = append(ratio, r.BitsPerSec/base[i].BitsPerSec)
			}
			if gb > 0 {
				proc = append(proc, float64(r.ProcCPU.Milliseconds())/gb)
				host = append(host, float64(r.HostCPU.Milliseconds())/gb)
			}
			c.retrans += r.Retrans
			c.reps++
			i++
		}
		if c.reps == 0 {
			continue
		}
		c.gbps, c.ratio, c.procPerGB, c.hostPerGB = spreadOf(gbps), spreadOf(ratio), spreadOf(proc), spreadOf(host)
		out = append(out, c)
	}
	return out
}

func (c longCell) row() []string {
	proc := fmtSpread(c.procPerGB, "%.0f")
	if c.scenario == scenPlain {
		proc = "-"
	}
	return []string{c.scenario, fmtSpread(c.gbps, "%.2f"), fmtSpread(c.ratio, "%.2f"), proc,
		fmtSpread(c.hostPerGB, "%.0f"), fmt.Sprint(c.retrans)}
}

var longHeader = []string{"scenario", "Gbit/s", "×plain", "CPU ms/GB: NAT procs", "host", "retransmits"}

func (b *bench) header() []string {
	what := "TLS 1.3 handshake, then GET / (HTTP/1.1, the server closes)"
	if !b.o.http {
		what = "TLS 1.3 handshake, then close"
	}
	return []string{
		fmt.Sprintf("egressd bench-lab, %s: %s, kernel %s, %d CPUs", b.started.Format(time.RFC3339), runtime.Version(), kernelRelease(), runtime.NumCPU()),
		fmt.Sprintf("each measurement: %s warm-up + %s counted; %d repetitions interleaved across scenarios; medians [min–max]", b.o.warmup, b.o.duration, b.o.reps),
		fmt.Sprintf("each connection: %s; latency = connect start to handshake done; new full handshake every time (no resumption)", what),
	}
}

// report prints the tables as text.
func (b *bench) report(w io.Writer) {
	fmt.Fprintln(w)
	for _, l := range b.header() {
		fmt.Fprintln(w, l)
	}
	printTable := func(header []string, rows [][]string) {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, strings.Join(header, "\t")+"\t")
		for _, r := range rows {
			fmt.Fprintln(tw, strings.Join(r, "\t")+"\t")
		}
		tw.Flush()
	}
	for _, t := range b.tables() {
		fmt.Fprintf(w, "\n== %s ==\n", t.title())
		var rows [][]string
		for _, c := range t.cells {
			rows = append(rows, c.row())
		}
		printTable(tableHeader, rows)
		for _, n := range t.notes {
			fmt.Fprintln(w, n)
		}
	}
	if lc := b.longCells(); len(lc) > 0 {
		fmt.Fprintf(w, "\n== long flow: one iperf3 TCP stream for %s ==\n", b.o.longFlow)
		var rows [][]string
		for _, c := range lc {
			rows = append(rows, c.row())
		}
		printTable(longHeader, rows)
		for _, c := range lc {
			if b.isEgressd(c.scenario) {
				fmt.Fprintln(w, longVerdict(c))
			}
		}
	}
	b.reportMicro(w)
}

func (b *bench) reportMicro(w io.Writer) {
	if len(b.micro) == 0 {
		return
	}
	fmt.Fprintln(w, "\n== hot paths (go test -bench, 200ms each) ==")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "benchmark\tns/op\tB/op\tallocs/op\t")
	for _, r := range b.micro {
		fmt.Fprintf(tw, "%s\t%.0f\t%d\t%d\t%s\n", r.Name, r.NsPerOp, r.BPerOp, r.Allocs, r.Why)
	}
	tw.Flush()
}

func longVerdict(c longCell) string {
	v := "MEETS"
	if c.ratio.Med < targetLong {
		v = "MISSES"
	}
	return fmt.Sprintf("target (a long flow at >= %.2fx plain's throughput): %s %s it (%.2fx)", targetLong, c.scenario, v, c.ratio.Med)
}

// writeJSON writes every measurement.
func (b *bench) writeJSON(path string) error {
	out := struct {
		Started   time.Time     `json:"started"`
		Go        string        `json:"go"`
		Kernel    string        `json:"kernel"`
		CPUs      int           `json:"cpus"`
		WarmupNS  time.Duration `json:"warmup_ns"`
		Duration  time.Duration `json:"duration_ns"`
		Concs     []int         `json:"concurrency"`
		HTTP      bool          `json:"http"`
		Results   []result      `json:"results"`
		Long      []longResult  `json:"long_flows"`
		Micro     []microResult `json:"hot_paths"`
		Scenarios []string      `json:"scenarios"`
	}{b.started, runtime.Version(), kernelRelease(), runtime.NumCPU(), b.o.warmup, b.o.duration, b.o.concs, b.o.http, b.results, b.long, b.micro, b.o.scenarios}
	data, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}
