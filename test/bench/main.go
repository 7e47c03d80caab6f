// Command benchlab measures what egressd costs a new TLS connection, in the
// namespace lab of test/lab: connections per second and handshake latency
// (connect start to handshake done) through plain NAT forwarding, through
// egressd, and through the tools an operator would pick instead (Squid
// peek-and-splice, nginx ssl_preread), each in a lab of its own, measured
// in one run and interleaved so the ratios are fair on a noisy machine.
//
// `make bench-lab` runs it; test/bench/README.md says how to read the
// output. It needs root, iproute2 and iptables; squid-openssl, nginx and
// libnginx-mod-stream for the peers (a peer that cannot start is reported,
// not measured), and perf for -perf.
//
// Everything it starts (namespaces, egressd, squid, nginx, the client) is
// stopped and removed when it ends, also on SIGINT/SIGTERM.
//
// `benchlab client ...` is the load generator, which benchlab runs in the
// lab's client namespace; `benchlab perf-report [-handshakes N] FILE`
// breaks a perf record of egressd down by what the CPU did.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/egressd/egressd/test/lab"
)

const (
	benchName = "allowed.example.test" // the name every connection asks for
	clientNet = "198.18.1.0/24"        // the lab's private side
	// extraSources are added to the client (besides lab.ClientAddr) and
	// used in turn, so that a 5-tuple comes back only minutes later:
	// ports would run short at thousands of connections/s, and every
	// connection should be a new flow for the NAT's conntrack.
	extraSources = 15
)

// benchPolicy allows the bench's name on 443, the long flows' server on
// iperfPort by address, and nothing else.
const benchPolicy = `version: 1
default: deny
rules:
  - name: bench-allowed
    domains: [` + benchName + `]
    ports: [443]
    action: allow
  - name: bench-long-flow
    cidrs: [` + lab.ServerAddr + `/32]
    ports: [5201]
    proto: tcp
    action: allow
`

type options struct {
	warmup, duration time.Duration
	reps             int
	concs            []int    // connections at a time, one table each
	hellos           []string // x25519, mlkem
	scenarios        []string // plain, egressd, squid, nginx, and the variants' names
	variants         map[string]variant
	http             bool
	egressd          string // prebuilt binary; "" builds ./cmd/egressd
	jsonOut          string
	perfDir          string
	longFlow         time.Duration // iperf3 per scenario and round; 0: none
	mdOut, svgOut    string
	micro            bool // the hot paths' Go benchmarks after the lab
}

// variant is egressd set up differently, measured beside the others in
// the same run (an A/B of a lever): more arguments to the rules script,
// more EGRESSD_* environment, or another binary.
type variant struct {
	rules []string // egressd-iptables.sh apply arguments
	env   []string // EGRESSD_KEY=VALUE
	bin   string   // "" is the run's egressd binary
}

// parseVariant reads NAME=SPEC, SPEC being space-separated words:
// --flag and --flag=value go to the rules script (--flag=value as two
// arguments), EGRESSD_KEY=VALUE to egressd's environment, bin=PATH names
// another binary.
func parseVariant(arg string) (string, variant, error) {
	var v variant
	name, spec, ok := strings.Cut(arg, "=")
	if !ok || name == "" || strings.ContainsAny(name, ", ") {
		return "", v, fmt.Errorf("-variant %q: want NAME=SPEC", arg)
	}
	if _, taken := setups[name]; taken {
		return "", v, fmt.Errorf("-variant %q: %s is a scenario's name", arg, name)
	}
	for _, w := range strings.Fields(spec) {
		switch {
		case strings.HasPrefix(w, "--"):
			flag, val, hasVal := strings.Cut(w, "=")
			v.rules = append(v.rules, flag)
			if hasVal {
				v.rules = append(v.rules, val)
			}
		case (strings.HasPrefix(w, "EGRESSD_") || strings.HasPrefix(w, "GOMAXPROCS=") || strings.HasPrefix(w, "GOGC=")) && strings.Contains(w, "="):
			v.env = append(v.env, w)
		case strings.HasPrefix(w, "bin="):
			v.bin = strings.TrimPrefix(w, "bin=")
		default:
			return "", v, fmt.Errorf("-variant %q: %q is neither --flag[=value], EGRESSD_KEY=VALUE (or GOMAXPROCS=, GOGC=) nor bin=PATH", arg, w)
		}
	}
	return name, v, nil
}

// variantFlags collects repeated -variant flags.
type variantFlags []string

func (f *variantFlags) String() string     { return strings.Join(*f, " ") }
func (f *variantFlags) Set(s string) error { *f = append(*f, s); return nil }

func parseFlags(args []string) (options, error) {
	fs := flag.NewFlagSet("benchlab", flag.ContinueOnError)
	var o options
	var concs, hellos, scenarios string
	var variants variantFlags
	fs.DurationVar(&o.warmup, "warmup", time.Second, "warm-up before each measurement, not counted")
	fs.DurationVar(&o.duration, "duration", 5*time.Second, "length of each measurement")
	fs.IntVar(&o.reps, "reps", 3, "repetitions of each measurement (interleaved across scenarios); medians are reported")
	fs.StringVar(&concs, "conc", "1,16,64", "connections at a time: one table per value")
	fs.StringVar(&hellos, "hellos", "x25519,mlkem", "ClientHello variants: x25519 (one segment) and/or mlkem (Go's default, X25519MLKEM768: two segments)")
	fs.StringVar(&scenarios, "scenarios", "plain,egressd,squid,nginx", "what the NAT runs; plain is the baseline and always runs; a -variant's NAME is one more")
	fs.Var(&variants, "variant", "NAME=SPEC: egressd set up differently, measured as scenario NAME (repeatable); SPEC: space-separated --rules-flag[=value], EGRESSD_KEY=VALUE (or GOMAXPROCS=N, GOGC=N), bin=PATH")
	fs.DurationVar(&o.longFlow, "long-flow", 5*time.Second, "one long TCP flow (iperf3) per scenario and round, for this long; 0: none")
	fs.StringVar(&o.mdOut, "md", "", "write the report as Markdown (BENCHMARKS.md) to this file")
	fs.StringVar(&o.svgOut, "svg", "", "write the chart (SVG) to this file")
	fs.BoolVar(&o.micro, "micro", true, "after the lab, run the hot paths' Go benchmarks (go test -bench) for the report")
	fs.BoolVar(&o.http, "http", true, "after the handshake, GET / and read the response (the server closes); false: close after the handshake")
	fs.StringVar(&o.egressd, "egressd", "", "egressd binary to measure (default: build ./cmd/egressd)")
	fs.StringVar(&o.jsonOut, "json", "", "also write every measurement as JSON to this file")
	fs.StringVar(&o.perfDir, "perf", "", "after the measurements, profile egressd with perf record under the parallel load, into this directory")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	o.hellos = splitList(hellos)
	for _, c := range splitList(concs) {
		n, err := strconv.Atoi(c)
		if err != nil || n < 1 || n > 1024 {
			return o, fmt.Errorf("-conc: %q is not a number of connections (1..1024)", c)
		}
		o.concs = append(o.concs, n)
	}
	o.variants = map[string]variant{}
	for _, arg := range variants {
		name, v, err := parseVariant(arg)
		if err != nil {
			return o, err
		}
		o.variants[name] = v
	}
	o.scenarios = splitList(scenarios)
	for _, arg := range variants {
		if name, _, _ := strings.Cut(arg, "="); !contains(o.scenarios, name) {
			o.scenarios = append(o.scenarios, name)
		}
	}
	if len(o.scenarios) == 0 || o.scenarios[0] != scenPlain {
		o.scenarios = append([]string{scenPlain}, without(o.scenarios, scenPlain)...)
	}
	for _, h := range o.hellos {
		if h != helloX25519 && h != helloMLKEM {
			return o, fmt.Errorf("-hellos: %q is neither %s nor %s", h, helloX25519, helloMLKEM)
		}
	}
	for _, s := range o.scenarios {
		_, scen := setups[s]
		if _, vari := o.variants[s]; !scen && !vari {
			return o, fmt.Errorf("-scenarios: unknown %q (plain, egressd, squid, nginx, or a -variant's name)", s)
		}
	}
	if o.reps < 1 || len(o.concs) == 0 || o.duration <= 0 || o.warmup < 0 || o.longFlow < 0 {
		return o, errors.New("-reps >= 1, -conc not empty, -duration > 0, -warmup >= 0 and -long-flow >= 0 are needed")
	}
	return o, nil
}

func splitList(s string) []string {
	var out []string
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func without(list []string, x string) []string {
	var out []string
	for _, s := range list {
		if s != x {
			out = append(out, s)
		}
	}
	return out
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	var code int
	switch {
	case len(os.Args) > 1 && os.Args[1] == "client":
		code = clientMain(ctx, os.Args[2:])
	case len(os.Args) > 1 && os.Args[1] == "perf-report":
		code = perfReportMain(os.Args[2:])
	default:
		code = benchMain(ctx, os.Args[1:])
	}
	stop()
	os.Exit(code)
}

func benchMain(ctx context.Context, args []string) int {
	o, err := parseFlags(args)
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchlab:", err)
		return 2
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "benchlab: needs root (network namespaces, iptables, NFQUEUE)")
		return 2
	}
	for _, c := range []string{"ip", "iptables", "iptables-restore", "ip6tables"} {
		if _, err := exec.LookPath(c); err != nil {
			fmt.Fprintf(os.Stderr, "benchlab: needs %s on PATH\n", c)
			return 2
		}
	}
	b := &bench{o: o}
	err = b.run(ctx)
	b.close()
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchlab:", err)
		if ctx.Err() != nil {
			return 130
		}
		return 1
	}
	return 0
}

// bench is one run: its labs, and what it measured.
type bench struct {
	o       options
	self    string // this binary, for the client
	tmp     string
	scens   []*scenario
	results []result
	long    []longResult
	micro   []microResult
	// profiles are -perf's breakdowns of egressd's CPU, one per hello.
	profiles []profile
	started  time.Time
	// loadStart is the load average when the run began: the machine may
	// be shared, and the report says how busy it was.
	loadStart string
}

func (b *bench) run(ctx context.Context) error {
	b.started = time.Now()
	b.loadStart = loadAvg()
	var err error
	if b.self, err = os.Executable(); err != nil {
		return err
	}
	if strings.HasSuffix(b.self, ".test") {
		// A test binary given "client" would run its tests, each making
		// labs and starting clients: never start one as the client.
		return fmt.Errorf("%s is a test binary, not benchlab", b.self)
	}
	if b.tmp, err = os.MkdirTemp("", "egressd-benchlab-"); err != nil {
		return err
	}
	bin := b.o.egressd
	if bin == "" && (contains(b.o.scenarios, scenEgressd) || len(b.o.variants) > 0) {
		fmt.Fprintln(os.Stderr, "benchlab: building ./cmd/egressd")
		if bin, err = lab.BuildEgressd(b.tmp); err != nil {
			return err
		}
	}
	// Every scenario asked for must run: a peer that cannot start fails
	// the run (make bench-lab installs the peers first), so a table never
	// silently lacks the comparison it was run for.
	for _, name := range b.o.scenarios {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		fmt.Fprintf(os.Stderr, "benchlab: setting up %s\n", name)
		s, err := newScenario(ctx, name, bin, b.self, b.o.variants)
		if s != nil {
			b.scens = append(b.scens, s)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	if err := b.measureAll(ctx); err != nil {
		return err
	}
	var microErr error
	if b.o.micro {
		fmt.Fprintln(os.Stderr, "benchlab: the hot paths' Go benchmarks (go test -bench, 200ms each)")
		if b.micro, err = runMicro(); err != nil {
			// The lab's figures are reported all the same; the run fails
			// at the end.
			fmt.Fprintln(os.Stderr, "benchlab: the Go benchmarks failed:", err)
			microErr = fmt.Errorf("the Go benchmarks: %w", err)
		}
	}
	b.report(os.Stdout)
	if b.o.jsonOut != "" {
		if err := b.writeJSON(b.o.jsonOut); err != nil {
			return err
		}
	}
	if b.o.perfDir != "" {
		if err := b.profile(ctx); err != nil {
			return err
		}
	}
	if err := b.writeDocs(); err != nil {
		return err
	}
	return microErr
}

// measureAll runs every measurement: per concurrency and hello, reps
// rounds of every scenario in turn (A B C D A B C D ...), then the long
// flows, reps rounds of every scenario in turn.
func (b *bench) measureAll(ctx context.Context) error {
	total := len(b.o.concs) * len(b.o.hellos) * b.o.reps * len(b.scens)
	n := 0
	for _, conc := range b.o.concs {
		for _, hello := range b.o.hellos {
			for rep := 1; rep <= b.o.reps; rep++ {
				for _, s := range b.scens {
					n++
					fmt.Fprintf(os.Stderr, "benchlab: [%d/%d] conc %d %s %s rep %d ... ", n, total, conc, hello, s.name, rep)
					r, err := b.measure(ctx, s, conc, hello, rep)
					if err != nil {
						fmt.Fprintln(os.Stderr, "failed")
						return fmt.Errorf("%s conc %d %s rep %d: %w", s.name, conc, hello, rep, err)
					}
					fmt.Fprintf(os.Stderr, "%.0f conn/s, p50 %s, p99 %s, errors %d\n",
						r.ConnPerSec, us(r.Client.P50), us(r.Client.P99), r.Client.Errors)
					b.results = append(b.results, r)
				}
			}
		}
	}
	if b.o.longFlow == 0 {
		return nil
	}
	for rep := 1; rep <= b.o.reps; rep++ {
		for _, s := range b.scens {
			fmt.Fprintf(os.Stderr, "benchlab: long flow %s rep %d ... ", s.name, rep)
			r, err := b.measureLong(ctx, s, rep)
			if err != nil {
				fmt.Fprintln(os.Stderr, "failed")
				return fmt.Errorf("long flow %s rep %d: %w", s.name, rep, err)
			}
			fmt.Fprintf(os.Stderr, "%.2f Gbit/s\n", r.BitsPerSec/1e9)
			b.long = append(b.long, r)
		}
	}
	return nil
}

// close stops every peer and egressd and removes every lab, also after a
// failure or an interrupt.
func (b *bench) close() {
	for i := len(b.scens) - 1; i >= 0; i-- {
		if err := b.scens[i].close(); err != nil {
			fmt.Fprintf(os.Stderr, "benchlab: cleanup %s: %v\n", b.scens[i].name, err)
		}
	}
	if b.tmp != "" {
		os.RemoveAll(b.tmp)
	}
}

func contains(list []string, x string) bool {
	for _, s := range list {
		if s == x {
			return true
		}
	}
	return false
}

// clientArgs are the client subcommand's arguments for one measurement.
func (b *bench) clientArgs(s *scenario, workers int, hello string, warmup, duration time.Duration) []string {
	return []string{"client",
		"-addr", lab.ServerAddr + ":443", "-sni", benchName, "-ca", s.lab.CA.PEMPath,
		"-hello", hello, "-workers", fmt.Sprint(workers),
		"-warmup", warmup.String(), "-duration", duration.String(),
		fmt.Sprintf("-http=%t", b.o.http), "-src", strings.Join(s.sources, ","),
	}
}

// runClient runs the load generator in s's client namespace and returns
// its result and the CPU time it used.
func (b *bench) runClient(ctx context.Context, s *scenario, args []string) (clientResult, time.Duration, error) {
	cmd := lab.Command(ctx, s.lab.Client, b.self, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if ctx.Err() != nil {
		return clientResult{}, 0, fmt.Errorf("interrupted: %w", ctx.Err())
	}
	if err != nil {
		return clientResult{}, 0, fmt.Errorf("client: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	r, err := decodeClient(out)
	return r, cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime(), err
}

// profile runs one extra measurement per hello at the highest concurrency
// against egressd with perf record attached to it; these are not in the
// tables.
func (b *bench) profile(ctx context.Context) error {
	var s *scenario
	for _, x := range b.scens {
		if x.name == scenEgressd {
			s = x
		}
	}
	if s == nil {
		return errors.New("-perf: egressd did not run")
	}
	if _, err := exec.LookPath("perf"); err != nil {
		return errors.New("-perf: perf is not installed (apt-get install linux-perf)")
	}
	if err := os.MkdirAll(b.o.perfDir, 0o755); err != nil {
		return err
	}
	for _, hello := range b.o.hellos {
		out := filepath.Join(b.o.perfDir, "egressd-"+hello+".perf.data")
		pid, err := s.egressdPID()
		if err != nil {
			return err
		}
		// cpu-clock: VMs often have no hardware counters. Go keeps frame
		// pointers, so -g gives whole stacks, kernel ones included.
		perf := exec.Command("perf", "record", "-e", "cpu-clock", "-F", "1999", "-g", "-p", fmt.Sprint(pid), "-o", out)
		var perfLog strings.Builder
		perf.Stdout, perf.Stderr = &perfLog, &perfLog
		if err := perf.Start(); err != nil {
			return fmt.Errorf("perf record: %w", err)
		}
		time.Sleep(500 * time.Millisecond) // perf attaches
		conc := slices.Max(b.o.concs)
		fmt.Fprintf(os.Stderr, "benchlab: profiling egressd, conc %d %s ... ", conc, hello)
		r, merr := b.measure(ctx, s, conc, hello, 0)
		_ = perf.Process.Signal(syscall.SIGINT)
		_ = perf.Wait() // ends with the SIGINT it was sent
		if merr != nil {
			return merr
		}
		if _, err := os.Stat(out); err != nil {
			return fmt.Errorf("perf record wrote no %s: %s", out, perfLog.String())
		}
		fmt.Fprintf(os.Stderr, "%.0f conn/s, %d handshakes\n", r.ConnPerSec, r.Client.Handshakes)
		fmt.Printf("\nprofile %s: conc %d %s, %.0f conn/s, %d handshakes; egressd used %s of CPU (%s per handshake, from /proc)\n",
			out, conc, hello, r.ConnPerSec, r.Client.Handshakes, r.ProcCPU, us(perConn(r.ProcCPU, r.Client.Handshakes)))
		pb, err := perfBreakdownOf(out)
		if err != nil {
			return err
		}
		pb.print(os.Stdout, out, r.Client.Handshakes)
		b.profiles = append(b.profiles, profile{conc: conc, hello: hello, connPerSec: r.ConnPerSec,
			handshakes: r.Client.Handshakes, procCPU: r.ProcCPU, breakdown: pb})
	}
	return nil
}

// profile is one -perf measurement and where egressd's CPU went in it.
type profile struct {
	conc       int
	hello      string
	connPerSec float64
	handshakes int
	procCPU    time.Duration // egressd's CPU from /proc while recording
	breakdown  perfBreakdown
}

// perfReportMain is the perf-report subcommand: the breakdown of a
// perf.data file recorded with -g, per handshake if given.
func perfReportMain(args []string) int {
	fs := flag.NewFlagSet("perf-report", flag.ContinueOnError)
	handshakes := fs.Int("handshakes", 0, "connections completed while recording, for µs per connection")
	if err := fs.Parse(args); err != nil || fs.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: benchlab perf-report [-handshakes N] PERF.DATA")
		return 2
	}
	if err := perfReport(os.Stdout, fs.Arg(0), *handshakes); err != nil {
		fmt.Fprintln(os.Stderr, "benchlab:", err)
		return 1
	}
	return 0
}
