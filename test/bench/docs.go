package main

import (
	"bytes"
	"fmt"
	"html"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

// writeDocs writes the Markdown report (-md) and the chart (-svg).
func (b *bench) writeDocs() error {
	if b.o.svgOut != "" {
		if err := os.WriteFile(b.o.svgOut, b.chart(), 0o644); err != nil {
			return err
		}
	}
	if b.o.mdOut != "" {
		svg := ""
		if b.o.svgOut != "" {
			if rel, err := filepath.Rel(filepath.Dir(b.o.mdOut), b.o.svgOut); err == nil {
				svg = filepath.ToSlash(rel)
			}
		}
		return os.WriteFile(b.o.mdOut, b.markdown(svg), 0o644)
	}
	return nil
}

// machine describes where the run took place, for the report.
func machine() [][2]string {
	first := func(out []byte) string {
		l, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		return strings.TrimSpace(l)
	}
	version := func(name string, args ...string) string {
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil && len(out) == 0 {
			return "not installed"
		}
		return first(out)
	}
	cpu := "?"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for l := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	osName := "?"
	if b, err := os.ReadFile("/etc/os-release"); err == nil {
		for l := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "PRETTY_NAME="); ok {
				osName = strings.Trim(v, `"`)
			}
		}
	}
	mem := "?"
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		mem = strings.Join(strings.Fields(first(b))[1:], " ")
	}
	return [][2]string{
		{"CPU", fmt.Sprintf("%d × %s", runtime.NumCPU(), cpu)},
		{"memory", mem},
		{"OS", osName},
		{"kernel", kernelRelease()},
		{"Go", runtime.Version()},
		{"iptables", version("iptables", "--version")},
		{"squid", version("squid", "-v")},
		{"nginx", version("nginx", "-v")},
		{"iperf3", version("iperf3", "--version")},
	}
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func mdRow(cols []string) string {
	return "| " + strings.Join(cols, " | ") + " |\n"
}

func mdTable(w *bytes.Buffer, header []string, rows [][]string) {
	w.WriteString(mdRow(header))
	sep := make([]string, len(header))
	for i := range sep {
		sep[i] = "---:"
	}
	sep[0] = "---"
	w.WriteString(mdRow(sep))
	for _, r := range rows {
		w.WriteString(mdRow(r))
	}
}

// markdown is BENCHMARKS.md: the run's conditions, the tables, the
// verdicts against the targets and how to read them.
func (b *bench) markdown(svg string) []byte {
	var w bytes.Buffer
	fmt.Fprintf(&w, "# egressd benchmarks\n\n")
	fmt.Fprintf(&w, "Written by `make bench-lab` (test/bench) on %s; every figure below is from that one run. ",
		b.started.UTC().Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&w, "Regenerate with `make bench-lab` (as root, about %d minutes).\n\n", b.estimateMinutes())
	if svg != "" {
		fmt.Fprintf(&w, "![new TLS connections per second against plain NAT, and the latency added to a handshake, per system and hello](%s)\n\n", svg)
	}
	w.WriteString("## Machine\n\n")
	rows := [][]string{}
	for _, m := range machine() {
		rows = append(rows, []string{m[0], m[1]})
	}
	rows = append(rows, []string{"load average", fmt.Sprintf("%s at the start, %s at the end", b.loadStart, loadAvg())})
	w.WriteString(mdRow([]string{"", ""}) + mdRow([]string{"---", "---"}))
	for _, r := range rows {
		w.WriteString(mdRow(r))
	}
	w.WriteString("\nThe machine was shared: other work ran on the same two CPUs during the run (the load average says how much). " +
		"Absolute figures are noisy; what counts is each system's ratio to plain NAT measured in the same round " +
		"(the rounds interleave the systems: plain, egressd, squid, nginx, plain, ...), and the range [min–max] over the rounds beside each median.\n\n")
	for _, l := range b.header()[1:] {
		fmt.Fprintf(&w, "- %s\n", l)
	}
	w.WriteString("\n## Systems\n\n")
	sys := [][]string{
		{scenPlain, "forwarding and MASQUERADE only: the baseline"},
		{scenEgressd, "egressd-iptables.sh apply and egressd run (2 queues, verify_dns on the lab's resolver), the policy allows the bench's name on 443 and the long flows' server on 5201 by address"},
		{scenSquid, "Debian's squid-openssl, one worker: https_port intercept ssl-bump, peek at step 1, splice the allowed name, terminate the rest; 443 REDIRECTed to it"},
		{scenNginx, "Debian's nginx with libnginx-mod-stream, a worker per CPU: stream, ssl_preread, map of the name to its upstream; 443 REDIRECTed to it"},
	}
	for _, name := range b.o.scenarios {
		if v, ok := b.o.variants[name]; ok {
			sys = append(sys, []string{name, "egressd with " + v.describe()})
		}
	}
	w.WriteString(mdRow([]string{"system", "the NAT namespace runs"}) + mdRow([]string{"---", "---"}))
	for _, s := range sys {
		if contains(b.o.scenarios, s[0]) {
			w.WriteString(mdRow([]string{"`" + s[0] + "`", s[1]}))
		}
	}
	w.WriteString("\n## Against the targets (issue 15)\n\n")
	fmt.Fprintf(&w, "egressd within %.0f%% of plain NAT's new connections/s at every concurrency, at most +%s at p50 and +%s at p99 at concurrency 1 for both hellos, ahead of nginx and Squid, a long flow at plain NAT's throughput:\n\n",
		100*(1-targetRatio), us(targetAddedP50), us(targetAddedP99))
	tables := b.tables()
	for _, t := range tables {
		for _, n := range t.notes {
			if strings.HasPrefix(n, "target") {
				fmt.Fprintf(&w, "- %s: %s\n", t.title(), n)
			}
		}
	}
	lc := b.longCells()
	for _, c := range lc {
		if b.isEgressd(c.scenario) {
			fmt.Fprintf(&w, "- %s\n", longVerdict(c))
		}
	}
	w.WriteString("\n## New TLS connections\n")
	for _, t := range tables {
		fmt.Fprintf(&w, "\n### %s\n\n", t.title())
		var rows [][]string
		for _, c := range t.cells {
			rows = append(rows, c.row())
		}
		mdTable(&w, tableHeader, rows)
		w.WriteString("\n")
		for _, n := range t.notes {
			if !strings.HasPrefix(n, "target") {
				fmt.Fprintf(&w, "- %s\n", n)
			}
		}
	}
	if len(lc) > 0 {
		fmt.Fprintf(&w, "\n## A long flow\n\nOne iperf3 TCP stream, client to server, for %s; egressd decides it on its SYN (an address rule on port 5201) and the kernel carries the rest, nginx relays it (stream proxy), Squid tunnels it (on_unsupported_protocol).\n\n", b.o.longFlow)
		var rows [][]string
		for _, c := range lc {
			rows = append(rows, c.row())
		}
		mdTable(&w, longHeader, rows)
	}
	b.profilesMarkdown(&w)
	if len(b.micro) > 0 {
		microTable(&w, b.micro)
	}
	w.WriteString(howToRead)
	return w.Bytes()
}

// estimateMinutes is how long a run with these options takes, roughly.
func (b *bench) estimateMinutes() int {
	n := len(b.o.concs) * len(b.o.hellos) * b.o.reps * len(b.o.scenarios)
	total := time.Duration(n)*(b.o.warmup+b.o.duration) + time.Duration(b.o.reps*len(b.o.scenarios))*b.o.longFlow
	return int(math.Ceil(total.Minutes() * 1.3)) // setup and settling
}

func (v variant) describe() string {
	var parts []string
	if len(v.rules) > 0 {
		parts = append(parts, "rules `"+strings.Join(v.rules, " ")+"`")
	}
	if len(v.env) > 0 {
		parts = append(parts, "`"+strings.Join(v.env, " ")+"`")
	}
	if v.bin != "" {
		parts = append(parts, "binary "+v.bin)
	}
	if len(parts) == 0 {
		return "nothing changed"
	}
	return strings.Join(parts, ", ")
}

const howToRead = `
## How to read the tables

- ` + "`conn/s`" + `: connections completed per second (TLS 1.3 full handshake, one GET, the server closes).
  ` + "`×plain`" + `: that over plain NAT's in the same round, median over the rounds.
- ` + "`p50 µs`" + `, ` + "`p99 µs`" + `: handshake latency, connect start to handshake done. ` + "`+p50 µs`" + `, ` + "`+p99 µs`" + `: minus plain
  NAT's in the same round. At concurrency 1 the CPUs are mostly idle, and this is what a connection
  pays for passing through; with 16 or 64 at a time the two CPUs are saturated by the endpoints'
  TLS work and latency is mostly queueing, so the latency targets are judged at concurrency 1.
- ` + "`CPU µs/conn`" + `, per completed handshake: ` + "`NAT procs`" + ` is the user + system time of every process
  in the NAT namespace (egressd; squid; nginx's master and workers), the kernel work done in their
  system calls included (a verdict re-injects the packet, and the kernel forwards it inside
  egressd's write). It is the CPU per new flow that bounds a NAT instance's capacity: 2 vCPUs /
  100 µs per connection is about 20,000 new connections per second. ` + "`client+servers`" + ` is the load
  generator's and the lab's servers' CPU; ` + "`host`" + ` is the whole machine's busy time, everyone
  else's included.
- ` + "`queued pkts/conn`" + ` (egressd): packets the kernel handed to egressd's queues per connection (from
  /proc/net/netfilter/nfnetlink_queue). ` + "`q/u drops`" + `: that file's queue_dropped and user_dropped;
  anything but 0/0 means lost packets (a 1 s retransmission each).
- ` + "`errors`" + `: failed connections. Under each table: egressd's decision lines against handshakes and
  the client's reused 5-tuples (each is decided as a flow of its own: decision lines = handshakes), and
  egressd's own decision latency from its log (first held packet to verdict): the rest of the
  added latency is the trips through the kernel and the wake-ups.
- The client and the servers share the two CPUs with the NAT. On a NAT instance the endpoints are
  elsewhere, so a higher ` + "`×plain`" + ` here at 16 and 64 at a time mostly means less CPU per connection.
- Long flow: iperf3's received throughput over plain NAT's in the same round, and CPU per GB
  carried: egressd's should be nothing (the kernel carries the flow), a proxy's is its copying.
`

// chart draws the run as SVG: new connections/s against plain NAT per
// concurrency and hello, and the latency added at concurrency 1 (p50 and
// p99), per system, each bar the median with its range over the rounds.
func (b *bench) chart() []byte {
	var systems []string
	for _, s := range b.o.scenarios {
		if s != scenPlain {
			systems = append(systems, s)
		}
	}
	type group struct {
		label string
		conc  int
		hello string
	}
	var rate []group
	for _, conc := range b.o.concs {
		for _, hello := range b.o.hellos {
			rate = append(rate, group{fmt.Sprintf("%s, %d at a time", hello, conc), conc, hello})
		}
	}
	var lat []group
	if slices.Contains(b.o.concs, 1) {
		for _, hello := range b.o.hellos {
			lat = append(lat, group{hello, 1, hello})
		}
	}
	cells := map[[3]string]cell{}
	for _, g := range rate {
		for _, s := range systems {
			if c, ok := b.cell(s, g.conc, g.hello); ok {
				cells[[3]string{s, fmt.Sprint(g.conc), g.hello}] = c
			}
		}
	}
	get := func(g group, s string, f func(cell) spread) (spread, bool) {
		c, ok := cells[[3]string{s, fmt.Sprint(g.conc), g.hello}]
		if !ok {
			return spread{}, false
		}
		return f(c), true
	}
	const width = 980
	var body bytes.Buffer
	y := 60
	panel := func(title string, groups []group, f func(cell) spread, target float64, targetLabel string, unit string) {
		if len(groups) == 0 {
			return
		}
		var vals []float64
		for _, g := range groups {
			for _, s := range systems {
				if v, ok := get(g, s, f); ok {
					vals = append(vals, v.Min, v.Max, v.Med)
				}
			}
		}
		lo, hi := 0.0, target
		for _, v := range vals {
			lo, hi = math.Min(lo, v), math.Max(hi, v)
		}
		hi *= 1.1
		if lo < 0 {
			lo *= 1.1
		}
		const left, plotW, plotH = 70, width - 90, 220
		top := y + 30
		scale := func(v float64) float64 { return float64(top) + plotH*(hi-v)/(hi-lo) }
		fmt.Fprintf(&body, `<text x="%d" y="%d" class="title">%s</text>`+"\n", left, y+12, html.EscapeString(title))
		fmt.Fprintf(&body, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" class="axis"/>`+"\n", left, scale(0), left+plotW, scale(0))
		for _, tk := range ticks(lo, hi) {
			fmt.Fprintf(&body, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" class="grid"/><text x="%d" y="%.1f" class="tick">%s</text>`+"\n",
				left, scale(tk), left+plotW, scale(tk), left-6, scale(tk)+4, fmtTick(tk))
		}
		fmt.Fprintf(&body, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" class="target"/><text x="%d" y="%.1f" class="targetlabel">%s</text>`+"\n",
			left, scale(target), left+plotW, scale(target), left+plotW, scale(target)-4, html.EscapeString(targetLabel))
		gw := float64(plotW) / float64(len(groups))
		bw := gw * 0.8 / float64(len(systems))
		for gi, g := range groups {
			gx := float64(left) + gw*float64(gi) + gw*0.1
			for si, s := range systems {
				v, ok := get(g, s, f)
				if !ok {
					continue
				}
				x := gx + bw*float64(si)
				y0, y1 := scale(0), scale(v.Med)
				fmt.Fprintf(&body, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" class="s%d"><title>%s, %s: %s%s [%s–%s]</title></rect>`+"\n",
					x+1, math.Min(y0, y1), bw-2, math.Abs(y1-y0), si%6, html.EscapeString(s), html.EscapeString(g.label),
					fmtTick(v.Med), unit, fmtTick(v.Min), fmtTick(v.Max))
				cx := x + bw/2
				fmt.Fprintf(&body, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" class="range"/>`+"\n", cx, scale(v.Min), cx, scale(v.Max))
			}
			fmt.Fprintf(&body, `<text x="%.1f" y="%d" class="group">%s</text>`+"\n", gx+gw*0.4, top+plotH+18, html.EscapeString(g.label))
		}
		y = top + plotH + 50
	}
	panel("new TLS connections per second, × plain NAT in the same round (higher is better)", rate,
		func(c cell) spread { return c.ratio }, targetRatio, fmt.Sprintf("target %.2f×", targetRatio), "×")
	panel("latency added to the handshake at p50, one connection at a time, µs (lower is better)", lat,
		func(c cell) spread { return c.added }, micros(targetAddedP50), "target +"+us(targetAddedP50), " µs")
	panel("latency added to the handshake at p99, one connection at a time, µs (lower is better)", lat,
		func(c cell) spread { return c.added99 }, micros(targetAddedP99), "target +"+us(targetAddedP99), " µs")
	var legend bytes.Buffer
	for i, s := range systems {
		fmt.Fprintf(&legend, `<rect x="%d" y="30" width="12" height="12" class="s%d"/><text x="%d" y="40" class="legend">%s</text>`+"\n",
			70+i*150, i%6, 88+i*150, html.EscapeString(s))
	}
	var out bytes.Buffer
	fmt.Fprintf(&out, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif">`+"\n", width, y, width, y)
	out.WriteString(`<style>
.title{font-size:14px;font-weight:bold}.tick{font-size:11px;text-anchor:end;fill:#444}
.group{font-size:11px;text-anchor:middle;fill:#222}.legend{font-size:12px}
.axis{stroke:#000;stroke-width:1}.grid{stroke:#ddd;stroke-width:1}
.target{stroke:#c00;stroke-width:1.5;stroke-dasharray:6 4}.targetlabel{font-size:11px;fill:#c00;text-anchor:end}
.range{stroke:#000;stroke-width:1.5}
.s0{fill:#1f77b4}.s1{fill:#ff7f0e}.s2{fill:#2ca02c}.s3{fill:#9467bd}.s4{fill:#8c564b}.s5{fill:#17becf}
</style>
<rect width="100%" height="100%" fill="#fff"/>
`)
	fmt.Fprintf(&out, `<text x="70" y="20" class="title">egressd bench-lab, %s, %d CPUs (shared): medians over %d rounds, bars show the range</text>`+"\n",
		b.started.UTC().Format("2006-01-02"), runtime.NumCPU(), b.o.reps)
	out.Write(legend.Bytes())
	out.Write(body.Bytes())
	out.WriteString("</svg>\n")
	return out.Bytes()
}

// ticks returns about five round values between lo and hi.
func ticks(lo, hi float64) []float64 {
	span := hi - lo
	if span <= 0 {
		return nil
	}
	step := math.Pow(10, math.Floor(math.Log10(span/5)))
	for _, m := range []float64{1, 2, 5, 10} {
		if span/(step*m) <= 6 {
			step *= m
			break
		}
	}
	var out []float64
	for v := math.Ceil(lo/step) * step; v <= hi; v += step {
		out = append(out, v)
	}
	return out
}

func fmtTick(v float64) string {
	if math.Abs(v) < 10 && v != math.Trunc(v) {
		return fmt.Sprintf("%.2f", v)
	}
	return fmt.Sprintf("%.0f", v)
}

// profilesMarkdown writes -perf's breakdowns: what egressd's CPU per new
// flow is spent on, which is what bounds the targets it misses.
func (b *bench) profilesMarkdown(w *bytes.Buffer) {
	if len(b.profiles) == 0 {
		return
	}
	w.WriteString("\n## Where egressd's CPU goes\n\n" +
		"One more measurement per hello, not in the tables, with `perf record -e cpu-clock -g` attached to egressd; " +
		"each sample's stack is counted in the first category one of its frames matches (test/bench/perfreport.go), " +
		"overlays count samples across the categories. The re-injected packet's forwarding is work a plain NAT does too " +
		"(there in softirq, charged to no NAT process); the rest is the price of the one trip to user space per new flow.\n")
	for _, p := range b.profiles {
		fmt.Fprintf(w, "\n### concurrency %d, hello %s\n\n%.0f conn/s, %d handshakes; egressd used %s of CPU (%s per connection, from /proc), %s per connection sampled.\n\n",
			p.conc, p.hello, p.connPerSec, p.handshakes, p.procCPU.Round(time.Millisecond), us(perConn(p.procCPU, p.handshakes)),
			us(perConn(p.breakdown.total(), p.handshakes)))
		mdTable(w, []string{"share", "µs/conn", "category"}, p.breakdown.rows(p.handshakes))
	}
}
