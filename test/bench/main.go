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
	"strings"
	"syscall"
	"time"

	"github.com/egressd/egressd/test/lab"
)

const (
	benchName = "allowed.example.test" // the name every connection asks for
	clientNet = "198.18.1.0/24"        // the lab's private side
	// extraSources are added to the client (besides lab.ClientAddr) and
	// used in turn, so that a 5-tuple comes back only minutes later: a
	// reused one would meet egressd's lingering decision and skip the
	// queue, and ports would run short at thousands of connections/s.
	extraSources = 15
)

// benchPolicy allows the bench's name on 443 and nothing else.
const benchPolicy = `version: 1
default: deny
rules:
  - name: bench-allowed
    domains: [` + benchName + `]
    ports: [443]
    action: allow
`

type options struct {
	warmup, duration time.Duration
	reps, workers    int
	modes            []string // seq, par
	hellos           []string // x25519, mlkem
	scenarios        []string // plain, egressd, squid, nginx
	http             bool
	egressd          string // prebuilt binary; "" builds ./cmd/egressd
	jsonOut          string
	perfDir          string
}

func parseFlags(args []string) (options, error) {
	fs := flag.NewFlagSet("benchlab", flag.ContinueOnError)
	var o options
	var modes, hellos, scenarios string
	fs.DurationVar(&o.warmup, "warmup", time.Second, "warm-up before each measurement, not counted")
	fs.DurationVar(&o.duration, "duration", 5*time.Second, "length of each measurement")
	fs.IntVar(&o.reps, "reps", 3, "repetitions of each measurement (interleaved across scenarios); medians are reported")
	fs.IntVar(&o.workers, "workers", 16, "concurrent connections in the parallel mode")
	fs.StringVar(&modes, "modes", "seq,par", "seq (1 connection at a time) and/or par (-workers at a time)")
	fs.StringVar(&hellos, "hellos", "x25519,mlkem", "ClientHello variants: x25519 (one segment) and/or mlkem (Go's default, X25519MLKEM768: two segments)")
	fs.StringVar(&scenarios, "scenarios", "plain,egressd,squid,nginx", "what the NAT runs; plain is the baseline and always runs")
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
	o.modes, o.hellos = splitList(modes), splitList(hellos)
	o.scenarios = splitList(scenarios)
	if len(o.scenarios) == 0 || o.scenarios[0] != scenPlain {
		o.scenarios = append([]string{scenPlain}, without(o.scenarios, scenPlain)...)
	}
	for _, m := range o.modes {
		if m != modeSeq && m != modePar {
			return o, fmt.Errorf("-modes: %q is neither %s nor %s", m, modeSeq, modePar)
		}
	}
	for _, h := range o.hellos {
		if h != helloX25519 && h != helloMLKEM {
			return o, fmt.Errorf("-hellos: %q is neither %s nor %s", h, helloX25519, helloMLKEM)
		}
	}
	for _, s := range o.scenarios {
		if _, ok := setups[s]; !ok {
			return o, fmt.Errorf("-scenarios: unknown %q (plain, egressd, squid, nginx)", s)
		}
	}
	if o.reps < 1 || o.workers < 1 || o.duration <= 0 || o.warmup < 0 {
		return o, errors.New("-reps and -workers must be >= 1, -duration > 0, -warmup >= 0")
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
	skipped map[string]string // scenario -> why it did not run
	results []result
	started time.Time
}

func (b *bench) run(ctx context.Context) error {
	b.started = time.Now()
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
	if bin == "" && contains(b.o.scenarios, scenEgressd) {
		fmt.Fprintln(os.Stderr, "benchlab: building ./cmd/egressd")
		if bin, err = lab.BuildEgressd(b.tmp); err != nil {
			return err
		}
	}
	b.skipped = map[string]string{}
	for _, name := range b.o.scenarios {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		fmt.Fprintf(os.Stderr, "benchlab: setting up %s\n", name)
		s, err := newScenario(ctx, name, bin, b.self)
		if s != nil {
			b.scens = append(b.scens, s)
		}
		if err != nil {
			if name == scenPlain || name == scenEgressd || ctx.Err() != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			b.skipped[name] = err.Error()
			fmt.Fprintf(os.Stderr, "benchlab: %s does not run: %v\n", name, err)
		}
	}
	if err := b.measureAll(ctx); err != nil {
		return err
	}
	b.report(os.Stdout)
	if b.o.jsonOut != "" {
		if err := b.writeJSON(b.o.jsonOut); err != nil {
			return err
		}
	}
	if b.o.perfDir != "" {
		return b.profile(ctx)
	}
	return nil
}

// measureAll runs every measurement: per mode and hello, reps rounds of
// every scenario in turn (A B C D A B C D ...).
func (b *bench) measureAll(ctx context.Context) error {
	var live []*scenario
	for _, s := range b.scens {
		if s.err == nil {
			live = append(live, s)
		}
	}
	total := len(b.o.modes) * len(b.o.hellos) * b.o.reps * len(live)
	n := 0
	for _, mode := range b.o.modes {
		for _, hello := range b.o.hellos {
			for rep := 1; rep <= b.o.reps; rep++ {
				for _, s := range live {
					n++
					fmt.Fprintf(os.Stderr, "benchlab: [%d/%d] %s %s %s rep %d ... ", n, total, mode, hello, s.name, rep)
					r, err := b.measure(ctx, s, mode, hello, rep)
					if err != nil {
						fmt.Fprintln(os.Stderr, "failed")
						return fmt.Errorf("%s %s %s rep %d: %w", s.name, mode, hello, rep, err)
					}
					fmt.Fprintf(os.Stderr, "%.0f conn/s, p50 %s, p99 %s, errors %d\n",
						r.ConnPerSec, us(r.Client.P50), us(r.Client.P99), r.Client.Errors)
					b.results = append(b.results, r)
				}
			}
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
func (b *bench) clientArgs(s *scenario, mode, hello string, warmup, duration time.Duration) []string {
	workers := 1
	if mode == modePar {
		workers = b.o.workers
	}
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

// profile runs one extra parallel measurement per hello against egressd
// with perf record attached to it; these are not in the tables.
func (b *bench) profile(ctx context.Context) error {
	var s *scenario
	for _, x := range b.scens {
		if x.name == scenEgressd && x.err == nil {
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
		fmt.Fprintf(os.Stderr, "benchlab: profiling egressd, par %s ... ", hello)
		r, merr := b.measure(ctx, s, modePar, hello, 0)
		_ = perf.Process.Signal(syscall.SIGINT)
		_ = perf.Wait() // ends with the SIGINT it was sent
		if merr != nil {
			return merr
		}
		if _, err := os.Stat(out); err != nil {
			return fmt.Errorf("perf record wrote no %s: %s", out, perfLog.String())
		}
		fmt.Fprintf(os.Stderr, "%.0f conn/s, %d handshakes\n", r.ConnPerSec, r.Client.Handshakes)
		fmt.Printf("\nprofile %s: par %s, %.0f conn/s, %d handshakes; egressd used %s of CPU (%s per handshake, from /proc)\n",
			out, hello, r.ConnPerSec, r.Client.Handshakes, r.ProcCPU, us(perConn(r.ProcCPU, r.Client.Handshakes)))
		if err := perfReport(os.Stdout, out, r.Client.Handshakes); err != nil {
			return err
		}
	}
	return nil
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
