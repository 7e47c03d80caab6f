package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/test/lab"
)

// The harness of floods_test.go: a lab where one host (lab.AttackerAddr)
// floods egressd while another (lab.ClientAddr, the victim) uses it, the
// victim's flows, and the figures of a flood.

// victimWithin is how long each of the victim's flows may take, flood or
// not.
const victimWithin = 2 * time.Second

// floodPolicy is the lab's rules and a wildcard whose names DNS must tie to
// an address: a random label under it costs a lookup.
const floodPolicy = labRules + `
  - name: wild
    domains: [".wild.test"]
    ports: [443]
    action: allow
`

// flood is a lab with egressd on one queue (so both sources share one
// shard: its fair shares, not the queue balancing, keep the victim in), its
// metrics served, the QUIC servers up and a flooder at the attacker's
// address.
type flood struct {
	*setup
	fl      *lab.Flooder
	queues  map[uint64]queueState // before the flood
	checks  []victimCheck
	victims []victimResult
}

// startFlood starts egressd over floodPolicy on one queue (with fail_open
// if asked) with config and env added, and runs the victim's flows once
// before any flood: a baseline, and the caches warm.
func startFlood(t *testing.T, failOpen bool, config string, env ...string) *flood {
	t.Helper()
	return startFloodRules(t, lab.Rules{FailOpen: failOpen}, config, env...)
}

// startFloodRules is startFlood with the rules' other options.
func startFloodRules(t *testing.T, rules lab.Rules, config string, env ...string) *flood {
	t.Helper()
	if rules.FailOpen {
		config += "fail_open: true\n"
	}
	env = append([]string{metricsEnv, "EGRESSD_QUEUE_COUNT=1"}, env...)
	rules.Queues = "0:1"
	if rules.SourceRate == 0 {
		// The rules' per-source rate in front of the queue, below what
		// egressd built with -race decides per second on two shared
		// cores (as an operator sets it below the instance's rate): the
		// floods still fill every pool, and the queue stays the pools'.
		rules.SourceRate = 1500
	}
	s := start(t, floodPolicy, rules, lab.EgressdOptions{Config: config, Env: env})
	must(t, s.StartQUIC())
	fl, err := s.NewFlooder(lab.AttackerAddr)
	must(t, err)
	f := &flood{setup: s, fl: fl}
	f.checks = []victimCheck{
		{"TLS allowed.example.test", f.victimTLS("allowed.example.test"), "lab-web", "tcp"},
		{"TCP 203.0.113.20:22", f.victimEcho, "lab-cidr", "tcp"},
		{"QUIC allowed.example.test", f.victimQUIC, "lab-web", "udp"},
	}
	f.victim(t, "before the flood")
	f.queues = queuesOf(t, f.E.PID())
	t.Cleanup(func() {
		// The victim's lines are never folded (it is far under
		// log.fold_per_source), so each of its flows has one.
		for _, d := range f.E.Decisions() {
			if d.Src == lab.ClientAddr && d.Verdict != "allow" {
				t.Errorf("a flow of the victim's was denied: %s", d)
			}
		}
	})
	return f
}

// victimCheck is one of the victim's flows: run makes it and returns how
// to find its decision line, which must be an allow by rule.
type victimCheck struct {
	what  string
	run   func(ctx context.Context) (func(lab.Decision) bool, error)
	rule  string
	proto string
}

// victimResult is one run of a victim's flow.
type victimResult struct {
	what, when string
	took       time.Duration
	err        error
}

// victim runs the victim's flows at once and fails t unless each succeeds
// within victimWithin, with an allow line by its rule.
func (f *flood) victim(t *testing.T, when string) {
	t.Helper()
	results := make([]victimResult, len(f.checks))
	matches := make([]func(lab.Decision) bool, len(f.checks))
	var wg sync.WaitGroup
	for i, c := range f.checks {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 3*victimWithin)
			defer cancel()
			began := time.Now()
			matches[i], results[i].err = c.run(ctx)
			results[i].what, results[i].when, results[i].took = c.what, when, time.Since(began)
		})
	}
	wg.Wait()
	for i, r := range results {
		switch {
		case r.err != nil:
			t.Errorf("%s: victim %s failed after %s: %v", when, r.what, r.took.Round(time.Millisecond), r.err)
			continue
		case r.took > victimWithin:
			t.Errorf("%s: victim %s took %s, more than %s", when, r.what, r.took.Round(time.Millisecond), victimWithin)
		}
		c := f.checks[i]
		d, err := f.E.WaitDecision(matches[i], 2*time.Second)
		if err != nil {
			t.Errorf("%s: victim %s: %v", when, r.what, err)
			continue
		}
		if d.Verdict != "allow" || d.Reason != "rule" || d.Rule != c.rule || d.Proto != c.proto || d.Src != lab.ClientAddr {
			t.Errorf("%s: victim %s: decision %s; want allow by rule %s", when, r.what, d, c.rule)
		}
	}
	f.victims = append(f.victims, results...)
}

// fromVictim matches the decision of the victim's connection c.
func fromVictim(c net.Conn) func(lab.Decision) bool {
	by := byConn(c)
	return func(d lab.Decision) bool { return d.Src == lab.ClientAddr && by(d) }
}

// victimTLS is an HTTPS request for name to the lab's main server.
func (f *flood) victimTLS(name string) func(ctx context.Context) (func(lab.Decision) bool, error) {
	return func(ctx context.Context) (func(lab.Decision) bool, error) {
		c, err := f.Client.DialContext(ctx, "tcp", net.JoinHostPort(lab.ServerAddr, "443"))
		if err != nil {
			return nil, err
		}
		defer c.Close()
		deadline, _ := ctx.Deadline()
		tc := tls.Client(c, &tls.Config{ServerName: name, RootCAs: f.CA.Pool, NextProtos: []string{"http/1.1"}})
		tc.SetDeadline(deadline)
		if _, err := io.WriteString(tc, "GET / HTTP/1.1\r\nHost: "+name+"\r\nConnection: close\r\n\r\n"); err != nil {
			return fromVictim(c), err
		}
		b, err := io.ReadAll(tc)
		if want := lab.Body(name, lab.ServerAddr+":443"); !strings.HasSuffix(string(b), want) {
			return fromVictim(c), fmt.Errorf("response %q (%v), want the body %q", b, err, want)
		}
		return fromVictim(c), nil
	}
}

// victimEcho is a round trip to the echo on 203.0.113.20:22, which the
// lab-cidr rule allows by address: decided on its SYN.
func (f *flood) victimEcho(ctx context.Context) (func(lab.Decision) bool, error) {
	c, err := f.Client.DialContext(ctx, "tcp", net.JoinHostPort(lab.CIDRAddr, "22"))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	deadline, _ := ctx.Deadline()
	c.SetDeadline(deadline)
	if _, err := io.WriteString(c, "ping"); err != nil {
		return fromVictim(c), err
	}
	got := make([]byte, 4)
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "ping" {
		return fromVictim(c), fmt.Errorf("echo %q: %v", got, err)
	}
	return fromVictim(c), nil
}

// victimQUIC is an HTTP/3 request for allowed.example.test.
func (f *flood) victimQUIC(ctx context.Context) (func(lab.Decision) bool, error) {
	const name = "allowed.example.test"
	since := time.Now().Truncate(time.Millisecond) // the lines' times are in milliseconds
	body, err := f.H3Get(ctx, name, lab.ServerAddr, 1)
	match := func(d lab.Decision) bool {
		return d.Src == lab.ClientAddr && d.Proto == "udp" && d.Name == name && !d.Time.Before(since)
	}
	if err == nil && body != lab.Body(name, lab.ServerAddr+":443") {
		err = fmt.Errorf("body %q", body)
	}
	return match, err
}

// floodRun is one flood: what the attacker sent and what came of it.
type floodRun struct {
	sent       uint64 // packets, handshakes included
	flows      int
	took       time.Duration
	maxRSS     int                // KiB, sampled during the flood
	peakRSS    int                // KiB, VmHWM after it
	maxWaiting int                // packets in the kernel queue (waiting for a verdict), sampled
	decided    map[string]float64 // egressd_decisions_total by "proto verdict reason"
	limits     map[string]float64 // egressd_limit_denials_total by limit
	dropped    uint64             // kernel queue drops (queue_dropped + user_dropped) during the flood
}

// run floods with send (which returns how many flows it started, once its
// packets are sent), runs the victim's flows at each of victimAt into the
// flood, and samples egressd's RSS and its kernel queue; then it reads the
// counters.
func (f *flood) run(t *testing.T, victimAt []time.Duration, send func() (flows int, err error)) *floodRun {
	t.Helper()
	r := &floodRun{}
	pid := f.E.PID()
	stop := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Go(func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			if rss, _, err := lab.VmRSS(pid); err == nil {
				r.maxRSS = max(r.maxRSS, rss)
			}
			if qs, err := readQueues(pid); err == nil {
				waiting := 0
				for _, q := range qs {
					waiting += int(q.waiting)
				}
				r.maxWaiting = max(r.maxWaiting, waiting)
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	})
	began := time.Now()
	sent := make(chan error, 1)
	go func() {
		var err error
		r.flows, err = send()
		sent <- err
	}()
	for _, at := range victimAt {
		time.Sleep(time.Until(began.Add(at)))
		f.victim(t, fmt.Sprintf("%s into the flood", at))
	}
	must(t, <-sent)
	r.took = time.Since(began)
	close(stop)
	sampler.Wait()
	r.sent = f.fl.Sent()
	if _, peak, err := lab.VmRSS(pid); err == nil {
		r.peakRSS = peak
	}
	r.dropped = queueDrops(f.queues, queuesOf(t, pid))
	// The last packets are still queued when the flood ends: read the
	// counters once they have stopped moving.
	for deadline := time.Now().Add(2 * time.Second); ; {
		_, body := natGet(t, f.setup, "/metrics")
		decided := series(body, "egressd_decisions_total", "proto", "verdict", "reason")
		limits := series(body, "egressd_limit_denials_total", "limit")
		if maps.Equal(decided, r.decided) && maps.Equal(limits, r.limits) || time.Now().After(deadline) {
			break
		}
		r.decided, r.limits = decided, limits
		time.Sleep(200 * time.Millisecond)
	}
	return r
}

// logFigures logs the flood's figures (go test -v shows them).
func (r *floodRun) logFigures(t *testing.T, f *flood) {
	t.Helper()
	t.Logf("figures: attacker sent %d packets (%d flows) in %s", r.sent, r.flows, r.took.Round(time.Millisecond))
	t.Logf("figures: egressd RSS max %d KiB during the flood (peak %d KiB); kernel queue: drops %d, at most %d packets waiting",
		r.maxRSS, r.peakRSS, r.dropped, r.maxWaiting)
	t.Logf("figures: decisions %s", formatCounts(r.decided))
	t.Logf("figures: limit denials %s", formatCounts(r.limits))
	t.Logf("figures: the attacker's decision lines: %s", formatCounts(attackerLines(f.E)))
	for _, v := range f.victims {
		ok := "ok"
		if v.err != nil {
			ok = "FAILED: " + v.err.Error()
		}
		t.Logf("figures: victim %s, %s: %s in %s", v.what, v.when, ok, v.took.Round(time.Millisecond))
	}
}

func formatCounts(m map[string]float64) string {
	keys := make([]string, 0, len(m))
	for k, v := range m {
		if v != 0 {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "[%s]=%v ", k, m[k])
	}
	if b.Len() == 0 {
		return "none"
	}
	return strings.TrimSpace(b.String())
}

var sampleRE = regexp.MustCompile(`^(\w+)\{([^}]*)\} (\S+)$`)

// series returns every sample of a metric in a Prometheus text exposition,
// keyed by the values of the given labels, space-separated.
func series(body, name string, labels ...string) map[string]float64 {
	out := map[string]float64{}
	for _, line := range strings.Split(body, "\n") {
		m := sampleRE.FindStringSubmatch(line)
		if m == nil || m[1] != name {
			continue
		}
		have := map[string]string{}
		for _, kv := range strings.Split(m[2], ",") {
			k, v, _ := strings.Cut(kv, "=")
			have[k] = strings.Trim(v, `"`)
		}
		key := make([]string, len(labels))
		for i, l := range labels {
			key[i] = have[l]
		}
		v, _ := strconv.ParseFloat(m[3], 64)
		out[strings.Join(key, " ")] += v
	}
	return out
}

// readQueues reads the queues bound in the network namespace of process
// pid (its /proc/<pid>/net is its namespace's), without a subprocess.
func readQueues(pid int) (map[uint64]queueState, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/netfilter/nfnetlink_queue", pid))
	if err != nil {
		return nil, err
	}
	return parseQueues(string(b)), nil
}

func queuesOf(t *testing.T, pid int) map[uint64]queueState {
	t.Helper()
	qs, err := readQueues(pid)
	if err != nil {
		t.Fatal(err)
	}
	return qs
}

// queueDrops is what the kernel dropped at the queues between two reads.
func queueDrops(before, after map[uint64]queueState) uint64 {
	var n uint64
	for num, q := range after {
		b := before[num]
		n += q.dropped - b.dropped + q.userDropped - b.userDropped
	}
	return n
}

// pace calls send n times, at most rate calls per second, and returns the
// first error.
func pace(n, rate int, send func(i int) error) error {
	began := time.Now()
	for i := range n {
		if i%16 == 0 {
			time.Sleep(time.Until(began.Add(time.Duration(i) * time.Second / time.Duration(rate))))
		}
		if err := send(i); err != nil {
			return err
		}
	}
	return nil
}

// attackerLines counts the attacker's decision lines by verdict and
// reason.
func attackerLines(e *lab.Egressd) map[string]float64 {
	out := map[string]float64{}
	for _, d := range e.Decisions() {
		if d.Src == lab.AttackerAddr {
			out[d.Verdict+" "+d.Reason]++
		}
	}
	return out
}
