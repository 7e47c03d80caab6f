package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/egressd/egressd/pkg/engine"
	"github.com/egressd/egressd/pkg/policy"
	"github.com/egressd/egressd/pkg/replay"
)

const replayUsage = `Usage: egressd replay --policy FILE [flags] CAPTURE.pcap|CAPTURE.pcapng|LOG.jsonl

Test a policy against traffic already seen, before rolling it out. replay
runs a capture through the same flow tracking, reassembly, parsers, DNS
check and policy as the daemon and prints one decision-log line (JSON) per
flow on stdout, then a summary on stderr: flows, allowed, denied by reason,
and everything that makes a line less than certain.

With --baseline OLD.yaml it decides every flow with both policies and
prints only the flows whose verdict changes, newly denied first, each with
the baseline's decision in "baseline", and counts them per deciding rule:
what the change would break, and what it would open.

Input (by content, gzipped or not; "-" reads stdin):
  pcap or pcapng    a capture on the NAT's private side, or on a client:
                    tcpdump -i eth0 -s 0 -w cap.pcap 'tcp or udp'
                    Link types: Ethernet (VLAN tags too), Linux cooked
                    (any interface), raw IP, BSD loopback. IPv4 only.
  decision log      the daemon's stdout: each recorded flow is decided again
                    from its addresses, ports and the name the daemon read.
                    Limits, malformed and incomplete heads, and recorded DNS
                    outcomes are kept: no policy changes them, unless the
                    new policy decides the flow before reading its name.

What replay does as the NAT would:
  - a flow starts with its client's SYN (UDP: its first datagram); a flow
    whose start is not in the capture is "midstream": reported, not decided
  - only what the rules queue reaches the engine: the client's SYN and its
    packets with payload while the flow is undecided; a decided flow's later
    packets never do, however long it lasts
  - IP fragments are reassembled (30s, 4 MiB in flight, as the kernel)
  - time is the capture's: hello.timeout, and the order of decisions, are
    as they were; a flow still undecided when the capture ends is reported
    as "capture-ended"
  - checksums are not checked (captures taken on a host carry checksums the
    NIC had yet to fill in) unless --verify-checksums

DNS: the daemon allows a name only if the destination is among its DNS
answers. Give those answers with --resolve NAME=IP,... (repeatable; an
address alone adds to the name before it), or --resolve @FILE with such
items on its lines (# comments). They stand for all of DNS: a name
the policy allows but --resolve lacks is denied dns-error, and the summary
lists it. Without --resolve the check is skipped: names are taken as
verified and such lines say "dns_check":"skipped"; so are decisions on ports
without a name that DNS answers could have changed.

Lines beyond the decision log's schema:
  "replay":"midstream"       the capture lacks the flow's first packet
  "replay":"capture-ended"   the capture ends before the flow was decided
  "replay":"reused"          a connection with the 5-tuple and ISN of one
                             decided less than a linger (10s) ago: the engine
                             gives it the earlier verdict and logs nothing,
                             in the daemon as in replay (with another ISN it
                             is decided on its own)
  "replay":"truncated"       the capture's snap length cut bytes the decision
                             needed (capture with -s 0)
  "baseline":{...}           with --baseline: name, name_from, verdict, rule
                             and reason under the baseline
The first three are not decisions: verdict, rule and reason are "".

Memory is bounded whatever the input's size (the flow tables are, and lines
are streamed); a progress line goes to stderr when it is a terminal.

Exit status: 0 when the input was replayed to its end (also when flows are
denied), 2 on a usage error or an input replay cannot read.

Examples:
  egressd replay --policy new.yaml --resolve github.com=140.82.112.3 cap.pcap
  egressd replay --config /etc/egressd/egressd.yaml --policy new.yaml \
      --baseline /etc/egressd/policy.yaml decisions.jsonl
  egressd replay --policy new.yaml cap.pcap | jq -c 'select(.verdict=="deny")'

Flags:
`

// listFlag collects a repeatable flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

func cmdReplay(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("replay", replayUsage, stderr)
	polPath := fs.String("policy", "", "the policy to test (default: the --config file's policy)")
	basePath := fs.String("baseline", "", "the policy in force: print only the flows whose verdict the new one changes")
	cfgPath := fs.String("config", "", "the daemon's config file: its mode, inspect_ports, hello and limits (flags override it)")
	var resolveSpecs listFlag
	fs.Var(&resolveSpecs, "resolve", "DNS answers, NAME=IP[,IP][,NAME=IP...] or @FILE (repeatable); without it the DNS check is skipped")
	mode := fs.String("mode", "", "enforce or monitor (default: the config's, else enforce): the lines' \"enforced\"")
	helloTimeout := fs.Duration("hello-timeout", 0, "hello.timeout (default: the config's, else 3s)")
	helloMax := fs.Int("hello-max-bytes", 0, "hello.max_bytes (default: the config's, else 16384)")
	verify := fs.Bool("verify-checksums", false, "drop packets with bad IPv4, TCP or UDP checksums, as conntrack does")
	opts := inspectFlags(fs, nil)
	at := atFlag(fs)
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "egressd replay: "+format+"\n", a...)
		return 2
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return fail("give exactly one capture or decision log (\"-\" for stdin)")
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	ro := replay.Options{VerifyChecksums: *verify}
	if *cfgPath != "" {
		cfg, err := loadConfig(*cfgPath)
		if err != nil {
			return fail("%v", err)
		}
		ro.Engine = cfg.engineConfig()
		if *polPath == "" {
			*polPath = cfg.Policy
		}
	}
	if *polPath == "" {
		fs.Usage()
		return fail("--policy is required (or --config, for its policy)")
	}
	if *cfgPath == "" || set["inspect-tcp"] || set["inspect-udp"] {
		o, err := opts()
		if err != nil {
			return fail("%v", err)
		}
		if *cfgPath == "" || set["inspect-tcp"] {
			ro.Engine.InspectTCP = o.InspectTCP
		}
		if *cfgPath == "" || set["inspect-udp"] {
			ro.Engine.InspectUDP = o.InspectUDP
		}
	}
	if *mode != "" {
		m, err := engine.ParseMode(*mode)
		if err != nil {
			return fail("--mode: %v", err)
		}
		ro.Engine.Mode = m
	}
	if set["hello-timeout"] {
		if *helloTimeout < 100*time.Millisecond || *helloTimeout > time.Minute {
			return fail("--hello-timeout %s must be within 100ms..1m", *helloTimeout)
		}
		ro.Engine.HelloTimeout = *helloTimeout
	}
	if set["hello-max-bytes"] {
		if *helloMax < 512 || *helloMax > 1<<20 {
			return fail("--hello-max-bytes %d must be within 512..1048576", *helloMax)
		}
		ro.Engine.HelloMaxBytes = *helloMax
	}
	if len(resolveSpecs) > 0 {
		specs, err := expandAnswerFiles(resolveSpecs)
		if err != nil {
			return fail("--resolve: %v", err)
		}
		a, err := replay.ParseAnswers(specs...)
		if err != nil {
			return fail("--resolve %v", err)
		}
		ro.Resolve = a
	}

	popts := policy.Options{InspectTCP: ro.Engine.InspectTCP, InspectUDP: ro.Engine.InspectUDP}
	var err error
	if popts.At, err = at(); err != nil {
		return fail("%v", err)
	}
	pol, code := loadReplayPolicy(*polPath, popts, stderr)
	if pol == nil {
		return code
	}
	var base *policy.Policy
	if *basePath != "" {
		if base, code = loadReplayPolicy(*basePath, popts, stderr); base == nil {
			return code
		}
	}

	in, size, closeIn, err := openInput(fs.Arg(0))
	if err != nil {
		return fail("%v", err)
	}
	defer closeIn()
	if isTerminal(stderr) {
		ro.Progress = newProgress(stderr, size)
	}
	sum, err := replay.Run(in, stdout, pol, base, ro)
	if ro.Progress != nil {
		fmt.Fprint(stderr, "\r\033[K") // clear the progress line
	}
	if sum != nil && (err == nil || sum.Format != 0) {
		sum.WriteText(stderr)
	}
	if err != nil {
		return fail("%s: %v", fs.Arg(0), err)
	}
	return 0
}

// expandAnswerFiles replaces each "@FILE" by the NAME=IP items the file
// holds, one or more a line ("#" starts a comment).
func expandAnswerFiles(specs []string) ([]string, error) {
	var out []string
	for _, s := range specs {
		path, ok := strings.CutPrefix(s, "@")
		if !ok {
			out = append(out, s)
			continue
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		for line := range strings.Lines(string(b)) {
			line, _, _ = strings.Cut(line, "#")
			if line = strings.TrimSpace(line); line != "" {
				out = append(out, line)
			}
		}
	}
	return out, nil
}

// loadReplayPolicy loads a policy for replay. A policy that fails its own
// tests would be refused by the daemon; replay warns and goes on, since
// seeing what it does is the point.
func loadReplayPolicy(path string, o policy.Options, stderr io.Writer) (*policy.Policy, int) {
	p, err := policy.Load(path, o)
	if err != nil {
		for _, e := range policy.AsList(err) {
			fmt.Fprintln(stderr, e)
		}
		return nil, 2
	}
	if fails := p.RunTests(); len(fails) > 0 {
		fmt.Fprintf(stderr, "egressd replay: warning: %s fails %d of its tests, so the daemon would refuse it (see egressd check)\n", path, len(fails))
	}
	return p, 0
}

// openInput opens the input file ("-": stdin) and returns its size when
// known (0 otherwise).
func openInput(path string) (io.Reader, int64, func(), error) {
	if path == "-" {
		return os.Stdin, 0, func() {}, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, nil, err
	}
	var size int64
	if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
		size = fi.Size()
	}
	return f, size, func() { f.Close() }, nil
}

// isTerminal reports whether w is a terminal (a character device).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// newProgress returns a Progress callback that rewrites one stderr line at
// most twice a second.
func newProgress(w io.Writer, size int64) func(replay.Progress) {
	start := time.Now()
	var last time.Time
	return func(p replay.Progress) {
		now := time.Now()
		if now.Sub(last) < 500*time.Millisecond {
			return
		}
		last = now
		rate := float64(p.Bytes) / (1 << 20) / max(now.Sub(start).Seconds(), 1e-3)
		done := fmt.Sprintf("%.1f MiB", float64(p.Bytes)/(1<<20))
		if size > 0 {
			done += fmt.Sprintf(" of %.1f MiB (%d%%)", float64(size)/(1<<20), p.Bytes*100/size)
		}
		fmt.Fprintf(w, "\r\033[Kreplay: %s, %d flows, %.1f MiB/s", done, p.Flows, rate)
	}
}
