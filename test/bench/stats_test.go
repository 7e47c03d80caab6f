package main

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestPercentile(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		var out []time.Duration
		for _, x := range v {
			out = append(out, time.Duration(x)*time.Millisecond)
		}
		return out
	}
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one sample", ms(7), 99, 7 * time.Millisecond},
		{"median of odd count", ms(1, 2, 3), 50, 2 * time.Millisecond},
		{"median of even count is the lower middle (nearest rank)", ms(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{"p99 of 100", hundred, 99, 99 * time.Millisecond},
		{"p50 of 100", hundred, 50, 50 * time.Millisecond},
		{"p100 is the maximum", hundred, 100, 100 * time.Millisecond},
		{"a tiny p is the minimum", hundred, 0.001, time.Millisecond},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := percentile(tc.sorted, tc.p); got != tc.want {
				t.Errorf("percentile(%v, %v) = %v, want %v", tc.sorted, tc.p, got, tc.want)
			}
		})
	}
}

func TestSpreadOf(t *testing.T) {
	tests := []struct {
		name string
		in   []float64
		want spread
	}{
		{"empty", nil, spread{}},
		{"one", []float64{3}, spread{Med: 3, Min: 3, Max: 3, N: 1}},
		{"odd, unsorted", []float64{5, 1, 3}, spread{Med: 3, Min: 1, Max: 5, N: 3}},
		{"even: mean of the middle two", []float64{4, 1, 2, 10}, spread{Med: 3, Min: 1, Max: 10, N: 4}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := append([]float64(nil), tc.in...)
			if diff := cmp.Diff(tc.want, spreadOf(tc.in)); diff != "" {
				t.Errorf("spreadOf(%v) (-want +got):\n%s", tc.in, diff)
			}
			if diff := cmp.Diff(in, tc.in); diff != "" {
				t.Errorf("spreadOf changed its input (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseProcStat(t *testing.T) {
	tests := []struct {
		name    string
		line    string
		want    time.Duration
		wantErr bool
	}{
		{
			name: "egressd",
			line: "734 (egressd) S 503 734 503 0 -1 4194560 1017 0 0 0 150 25 0 0 20 0 9 0 397 1866160000 4493 18446744073709551615",
			want: 175 * clockTick,
		},
		{
			name: "a command name with spaces and parentheses",
			line: "9 (a (b) c) R 1 9 9 0 -1 0 0 0 0 0 3 4 0 0 20 0 1 0 1 1 1 1",
			want: 7 * clockTick,
		},
		{name: "no command name", line: "9 a R 1", wantErr: true},
		{name: "truncated", line: "9 (x) R 1 9 9 0 -1 0 0 0 0 0 3", wantErr: true},
		{name: "not a number", line: "9 (x) R 1 9 9 0 -1 0 0 0 0 0 x 4 0", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseProcStat(tc.line)
			if (err != nil) != tc.wantErr {
				t.Fatalf("parseProcStat: error %v, want error %t", err, tc.wantErr)
			}
			if got != tc.want {
				t.Errorf("parseProcStat = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestParseHostBusy(t *testing.T) {
	tests := []struct {
		name    string
		line    string
		want    time.Duration
		wantErr bool
	}{
		// user nice system idle iowait irq softirq steal guest guest_nice
		{name: "idle, iowait and guest left out", line: "cpu  100 2 30 5000 40 1 7 3 50 9", want: 143 * clockTick},
		{name: "older kernel, eight columns", line: "cpu  1 1 1 1 1 1 1", want: 5 * clockTick},
		{name: "a per-CPU line", line: "cpu0 1 1 1 1 1 1 1 1", wantErr: true},
		{name: "garbage", line: "cpu  1 x 1 1 1 1 1 1", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseHostBusy(tc.line)
			if (err != nil) != tc.wantErr {
				t.Fatalf("parseHostBusy: error %v, want error %t", err, tc.wantErr)
			}
			if got != tc.want {
				t.Errorf("parseHostBusy = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestParseQueues(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    queueCounters
		wantErr bool
	}{
		{name: "no queue bound", in: "", want: queueCounters{}},
		{
			name: "two queues summed",
			in: "    0 2371951040     0 2 16504     3     1    12000  1\n" +
				"    1 3649208768     2 2 16504     0     4    11000  1\n",
			want: queueCounters{Queued: 23000, QueueDropped: 3, UserDropped: 5},
		},
		{name: "short line", in: "0 1 2 3 4 5 6\n", wantErr: true},
		{name: "not a number", in: "0 1 2 3 4 x 6 7 1\n", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseQueues([]byte(tc.in))
			if (err != nil) != tc.wantErr {
				t.Fatalf("parseQueues: error %v, want error %t", err, tc.wantErr)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("parseQueues (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		want    []string // scenarios
		wantErr bool
	}{
		{name: "defaults", want: []string{"plain", "egressd", "squid", "nginx"}},
		{name: "plain is added first", args: []string{"-scenarios", "nginx,egressd"}, want: []string{"plain", "nginx", "egressd"}},
		{name: "plain moved first", args: []string{"-scenarios", "egressd, plain"}, want: []string{"plain", "egressd"}},
		{name: "unknown scenario", args: []string{"-scenarios", "haproxy"}, wantErr: true},
		{name: "bad concurrency", args: []string{"-conc", "1,many"}, wantErr: true},
		{name: "a variant is a scenario", args: []string{"-scenarios", "egressd", "-variant", "q4=--queues=0:4"}, want: []string{"plain", "egressd", "q4"}},
		{name: "unknown hello", args: []string{"-hellos", "p256"}, wantErr: true},
		{name: "no reps", args: []string{"-reps", "0"}, wantErr: true},
		{name: "stray argument", args: []string{"now"}, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o, err := parseFlags(tc.args)
			if (err != nil) != tc.wantErr {
				t.Fatalf("parseFlags(%q): error %v, want error %t", tc.args, err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if diff := cmp.Diff(tc.want, o.scenarios); diff != "" {
				t.Errorf("scenarios (-want +got):\n%s", diff)
			}
		})
	}
}

// TestHelloSize checks the two hello variants the tables are labelled
// with: Go's default hello carries an X25519MLKEM768 share and does not
// fit one segment; the X25519-only one does.
func TestHelloSize(t *testing.T) {
	const mss = 1448 // 1500-byte MTU, IPv4, TCP timestamps
	for _, tc := range []struct {
		hello    string
		oneSeg   bool
		minBytes int
	}{
		{helloX25519, true, 100},
		{helloMLKEM, false, 1184 + 32}, // ML-KEM-768 key + X25519 key
	} {
		t.Run(tc.hello, func(t *testing.T) {
			cfg, err := tlsConfig(tc.hello, benchName, nil)
			if err != nil {
				t.Fatal(err)
			}
			n, err := helloSize(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if n < tc.minBytes || (n <= mss) != tc.oneSeg {
				t.Errorf("%s hello is %d bytes; want >= %d and one segment (%d) = %t", tc.hello, n, tc.minBytes, mss, tc.oneSeg)
			}
		})
	}
}

func TestVerdict(t *testing.T) {
	med := func(v float64) spread { return spread{Med: v, Min: v, Max: v, N: 1} }
	c := func(conc int, ratio, added, added99 float64) cell {
		return cell{scenario: "egressd", conc: conc, ratio: med(ratio), added: med(added), added99: med(added99)}
	}
	nginx := cell{scenario: "nginx", ratio: med(0.8), added: med(140)}
	tests := []struct {
		name  string
		c     cell
		peers []cell
		want  string
	}{
		{"one at a time, all met", c(1, 0.97, 40, 200), []cell{nginx},
			"target (>= 0.95x plain conn/s, <= +50µs p50, <= +250µs p99, ahead of the peers): egressd MEETS it (0.97x, +40µs, +200µs)"},
		{"one at a time, latency missed", c(1, 0.96, 90, 300), nil,
			"target (>= 0.95x plain conn/s, <= +50µs p50, <= +250µs p99): egressd MISSES it (0.96x, +90µs, +300µs): +p50 +90µs > +50µs (by 40µs); +p99 +300µs > +250µs (by 50µs)"},
		{"16 at a time: latency is queueing, not judged", c(16, 0.99, 5000, 9000), nil,
			"target (>= 0.95x plain conn/s): egressd MEETS it (0.99x)"},
		{"rate missed, behind a peer", c(16, 0.75, 0, 0), []cell{nginx},
			"target (>= 0.95x plain conn/s, ahead of the peers): egressd MISSES it (0.75x): conn/s 0.75x < 0.95x (by 20%); conn/s not ahead of nginx (0.75x vs 0.80x)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, verdict(tc.c, tc.peers)); diff != "" {
				t.Errorf("verdict (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseVariant(t *testing.T) {
	tests := []struct {
		arg     string
		name    string
		want    variant
		wantErr bool
	}{
		{arg: "fanout=--queue-cpu-fanout EGRESSD_QUEUE_COUNT=2", name: "fanout",
			want: variant{rules: []string{"--queue-cpu-fanout"}, env: []string{"EGRESSD_QUEUE_COUNT=2"}}},
		{arg: "q4=--queues=0:4 EGRESSD_QUEUE_COUNT=4 bin=/tmp/e", name: "q4",
			want: variant{rules: []string{"--queues", "0:4"}, env: []string{"EGRESSD_QUEUE_COUNT=4"}, bin: "/tmp/e"}},
		{arg: "nospec", wantErr: true},
		{arg: "egressd=--x", wantErr: true},
		{arg: "x=GODEBUG=x", wantErr: true},
		{arg: "g=GOMAXPROCS=1", name: "g", want: variant{env: []string{"GOMAXPROCS=1"}}},
	}
	for _, tc := range tests {
		t.Run(tc.arg, func(t *testing.T) {
			name, v, err := parseVariant(tc.arg)
			if (err != nil) != tc.wantErr {
				t.Fatalf("parseVariant(%q): error %v, want error %t", tc.arg, err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if name != tc.name {
				t.Errorf("name %q, want %q", name, tc.name)
			}
			if diff := cmp.Diff(tc.want, v, cmp.AllowUnexported(variant{})); diff != "" {
				t.Errorf("variant (-want +got):\n%s", diff)
			}
		})
	}
}

func TestChartAndMarkdown(t *testing.T) {
	o, err := parseFlags([]string{"-conc", "1,16", "-reps", "2"})
	if err != nil {
		t.Fatal(err)
	}
	b := &bench{o: o}
	for _, s := range o.scenarios {
		for _, conc := range o.concs {
			for _, hello := range o.hellos {
				for rep := 1; rep <= 2; rep++ {
					r := result{Scenario: s, Conc: conc, Hello: hello, Rep: rep, ConnPerSec: 100 * float64(rep)}
					r.Client.P50, r.Client.P99, r.Client.Handshakes = time.Millisecond, 3*time.Millisecond, 500
					b.results = append(b.results, r)
				}
			}
		}
		b.long = append(b.long, longResult{Scenario: s, Rep: 1, BitsPerSec: 9e9, Seconds: 5})
	}
	svg := string(b.chart())
	for _, want := range []string{"<svg", "egressd", "nginx", "squid", "target 0.95×", "</svg>"} {
		if !strings.Contains(svg, want) {
			t.Errorf("the chart lacks %q", want)
		}
	}
	pb := perfBreakdown{samples: 4, period: 500 * time.Microsecond,
		counts: map[string]int{perfCategories[0].name: 3, otherCategory: 1}, overlays: map[string]int{}}
	b.profiles = []profile{{conc: 16, hello: "x25519", connPerSec: 1000, handshakes: 100, procCPU: 3 * time.Millisecond, breakdown: pb}}
	md := string(b.markdown("bench.svg"))
	for _, want := range []string{"![", "bench.svg", "## Machine", "shared", "### concurrency 16, hello mlkem", "## A long flow", "MISSES",
		"## Where egressd's CPU goes", "30µs per connection, from /proc", "| 75.0% | 15.0 | kernel: the packet re-injected"} {
		if !strings.Contains(md, want) {
			t.Errorf("BENCHMARKS.md lacks %q", want)
		}
	}
}

func TestParseMicro(t *testing.T) {
	out := []byte(`goos: linux
pkg: github.com/egressd/egressd/pkg/classify
BenchmarkParseClientHello/rfc8448-2         	 1000000	       211.5 ns/op	 1024.00 MB/s	       0 B/op	       0 allocs/op
BenchmarkQUICFlow/one-datagram-2            	   30978	      7440 ns/op	    1808 B/op	       4 allocs/op
pkg: github.com/egressd/egressd/pkg/policy
BenchmarkCompile/rules=1000-2               	      12	  42266672 ns/op	   1.85 MB/s	 4487282 B/op	   45363 allocs/op
PASS
`)
	got := parseMicro(out)
	want := []microResult{
		{Name: "BenchmarkParseClientHello/rfc8448", NsPerOp: 211.5, Package: "pkg/classify"},
		{Name: "BenchmarkQUICFlow/one-datagram", NsPerOp: 7440, BPerOp: 1808, Allocs: 4, Package: "pkg/classify", Why: allocReasons[0].why},
		{Name: "BenchmarkCompile/rules=1000", NsPerOp: 42266672, BPerOp: 4487282, Allocs: 45363, Package: "pkg/policy", Why: "NOT EXPLAINED: a hot path that allocates"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("parseMicro (-want +got):\n%s", diff)
	}
}

// TestPerfCategories: a sample counts in the most specific category of its
// stack (the reader's frames sit above everything it calls), and an
// overlay counts across categories.
func TestPerfCategories(t *testing.T) {
	sample := func(frames ...string) string {
		s := "egressd 19081 22174.244059:     500000 cpu-clock: \n"
		for _, f := range frames {
			s += "\t          7228c6 " + f + "\n"
		}
		return s + "\n"
	}
	const (
		run     = "github.com/egressd/egressd/pkg/nfq.(*Queue).Run"
		packet  = "github.com/egressd/egressd/pkg/nfq.(*Queue).packet"
		handle  = "github.com/egressd/egressd/pkg/engine.(*Engine).Handle"
		hello   = "github.com/egressd/egressd/pkg/classify.ParseClientHello"
		verdict = "github.com/egressd/egressd/pkg/nfq.(*Queue).verdict"
	)
	in := sample("unix.read", run) +
		sample(hello, handle, packet, run) +
		sample("runtime.mallocgc", hello, handle, packet, run) +
		sample("nfqnl_reinject", "nfqnl_recv_verdict", verdict, handle, packet, run) +
		sample(verdict, handle, packet, run) +
		sample("github.com/egressd/egressd/pkg/nfq.(*SYNLog).Drain", handle, packet, run) +
		sample("runtime.futex", "runtime.findRunnable", "runtime.schedule")
	b, err := parsePerfScript(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if b.samples != 7 || b.period != 500*time.Microsecond {
		t.Fatalf("samples %d, period %s; want 7, 500µs", b.samples, b.period)
	}
	want := map[string]int{
		"queue receive": 1, "classify": 2, "kernel: the packet re-injected": 1,
		"verdict send": 1, "SYN log": 1, "Go scheduler": 1,
	}
	got := map[string]int{}
	for name, n := range b.counts {
		for prefix := range want {
			if strings.HasPrefix(name, prefix) {
				got[prefix] += n
			}
		}
	}
	for prefix, n := range want {
		if got[prefix] != n {
			t.Errorf("%q: %d samples, want %d (counts %v)", prefix, got[prefix], n, b.counts)
		}
	}
	rows := b.rows(2)
	var mallocRow []string
	for _, r := range rows {
		if strings.HasPrefix(r[2], overlayPrefix+"memory allocation") {
			mallocRow = r
		}
	}
	if len(mallocRow) != 3 || mallocRow[0] != "14.3%" || mallocRow[1] != "250.0" {
		t.Errorf("allocation overlay %v, want 14.3%% and 250.0 µs per handshake (one 500 µs sample over 2)", mallocRow)
	}
}
