package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/test/lab"
)

// The adversary as a test suite (issue 13). A compromised host must not
// deny the others their egress, push egressd into the kernel's fail-open
// or out of memory. In each test one host of the private side
// (lab.AttackerAddr) floods egressd while another (lab.ClientAddr, the
// victim) makes its three kinds of flow, each of which must get through
// within 2s with its allow line: an allowed name over TLS, a flow allowed
// by address, a QUIC flow. Each flood is a fixed number of packets at a
// fixed rate, a few seconds at most, and asserts how the attacker's flows
// were decided and what of them crossed; each logs its figures (go test
// -v): the victim's latencies, the attacker's packets and the decisions
// per reason and limit, egressd's RSS, the kernel queue's drops.

// attackerFilter is a capture filter for the attacker's flows as they
// leave the NAT (masqueraded, the flooder's ports kept).
func attackerFilter(proto string) string {
	return fmt.Sprintf("%s and src host %s and src portrange %d-%d", proto, lab.NATPublic, lab.FloodPortMin, lab.FloodPortMax)
}

// attackerDecisions returns the attacker's decision lines for proto, and
// how many flows they are for.
func attackerDecisions(f *flood, proto string) ([]lab.Decision, int) {
	var lines []lab.Decision
	flows := map[string]bool{}
	for _, d := range f.E.Decisions() {
		if d.Src == lab.AttackerAddr && d.Proto == proto {
			lines = append(lines, d)
			flows[fmt.Sprint(d.Dst, d.Sport)] = true
		}
	}
	return lines, len(flows)
}

// waitAttackerFlows waits until n flows of proto from the attacker have
// their decision line, and returns those lines; it fails t if they do not
// within timeout, or if a flow has two.
func waitAttackerFlows(t *testing.T, f *flood, n int, proto string, timeout time.Duration) []lab.Decision {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		lines, flows := attackerDecisions(f, proto)
		if flows >= n || time.Now().After(deadline) {
			if flows < n {
				t.Errorf("%d of the attacker's %d %s flows have a decision line after %s", flows, n, proto, timeout)
			}
			if len(lines) != flows {
				t.Errorf("%d decision lines for %d flows of the attacker's: a flow decided twice", len(lines), flows)
			}
			return lines
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// wantNoPayload fails t if a captured packet carries payload.
func wantNoPayload(t *testing.T, pkts []lab.CapturedPacket, what string) {
	t.Helper()
	for _, p := range pkts {
		if p.Payload > 0 {
			t.Errorf("%s reached inet: %+v", what, p)
		}
	}
}

// wantDenied fails t unless every line is a deny for one of reasons.
func wantDenied(t *testing.T, lines []lab.Decision, reasons ...string) {
	t.Helper()
	for _, d := range lines {
		if d.Verdict != "deny" || !slices.Contains(reasons, d.Reason) {
			t.Errorf("the attacker's flow: %s; want a deny for %s", d, strings.Join(reasons, " or "))
		}
	}
}

// TestFloodSYN: bare SYNs from the attacker to random addresses of
// 203.0.113.128/25 (where inet answers for every address) on 443, from
// random ports, never a handshake, at about the rate one raw socket
// reaches here. Each starts an undecided flow (443 carries a name), so the
// attacker fills the flow table (limits.flows 512) within a tenth of a
// second and keeps it full past hello.timeout, when its first flows time
// out. Its SYNs past its share are denied at once (limit flows) and do not
// cross; the victim's flows still get a place in the table, an attacker's
// flow evicted for each (limit evicted).
func TestFloodSYN(t *testing.T) {
	const (
		n    = 20000
		rate = 6000 // per second: about what one raw socket reaches here
	)
	f := startFlood(t, false, "", "EGRESSD_LIMITS_FLOWS=512")
	must(t, f.AnyIPInet("203.0.113.128/25"))
	inet := capture(t, f.setup, f.Inet, "i0", attackerFilter("tcp"))
	type flow struct {
		dst   byte // 203.0.113.dst
		sport uint16
	}
	random := func() flow { return flow{byte(128 + rand.IntN(127)), lab.RandomPort()} }
	used := map[flow]bool{} // one SYN per flow
	r := f.run(t, []time.Duration{time.Second, 2 * time.Second, 3200 * time.Millisecond}, func() (int, error) {
		return n, pace(n, rate, func(int) error {
			k := random()
			for used[k] {
				k = random()
			}
			used[k] = true
			return f.fl.SYN(netip.AddrFrom4([4]byte{203, 0, 113, k.dst}), k.sport, 443)
		})
	})
	pkts := stop(t, inet)
	r.logFigures(t, f)

	lines, _ := attackerDecisions(f, "tcp")
	wantDenied(t, lines, "limit", "incomplete")
	refused := r.limits["flows"]
	if refused == 0 {
		t.Errorf("no SYN was refused at the flow table's limit: the flood did not fill it")
	}
	if r.limits["evicted"] == 0 {
		t.Errorf("no flow of the attacker's was evicted for the victim's")
	}
	syns := 0
	for _, p := range pkts {
		if p.SYN {
			syns++
		}
		if p.Payload > 0 || !p.SYN {
			t.Errorf("a packet of the attacker's that is not a bare SYN reached inet: %+v", p)
		}
	}
	t.Logf("the attacker's SYNs that reached inet: %d of %d; refused at the table's limit: %v", syns, n, refused)
	if float64(syns) > n-refused {
		t.Errorf("%d of the attacker's SYNs reached inet, but %v of the %d were refused: a refused SYN crossed", syns, refused, n)
	}
}

// TestFloodKernelFailOpen: the same bare SYNs as TestFloodSYN, from four
// raw sockets at once (what one host sends here, several times what
// egressd reads under -race), with fail_open. A flood must not fill the
// kernel's queue: once it is full, the kernel accepts every further packet
// unmarked (NFQA_CFG_F_FAIL_OPEN; it counts them nowhere, not even in
// queue_dropped), so anyone's packets, the attacker's among them, cross
// undecided. Meanwhile the attacker sends hellos naming
// denied.example.test on 64 flows it opened before the flood: each must be
// denied by rule, and none of their bytes may reach the server. The
// victim must still get through. Fails while nothing bounds what one source
// puts in the queue: the engine's fair shares bound what it holds, not
// what arrives.
func TestFloodKernelFailOpen(t *testing.T) {
	const (
		senders, each = 4, 8000
		hellos        = 64
		queueLen      = 8192 // queue.len's default
	)
	// The rules' per-source rate in front of the queue, set below what
	// egressd (built with -race, on these shared cores) decides per
	// second, as an operator sets it below what the instance decides.
	f := startFloodRules(t, lab.Rules{FailOpen: true, SourceRate: 1000}, "", "EGRESSD_LIMITS_FLOWS=512")
	must(t, f.AnyIPInet("203.0.113.128/25"))
	hello := clientHello(t, &tls.Config{ServerName: "denied.example.test"})
	cs, err := f.fl.Handshakes(lab.OtherAddr, 443, hellos, 3*time.Second)
	must(t, err)
	if len(cs) != hellos {
		t.Fatalf("%d of %d handshakes completed", len(cs), hellos)
	}
	inet := capture(t, f.setup, f.Inet, "i0", attackerFilter("tcp")+" and dst host "+lab.OtherAddr)
	r := f.run(t, []time.Duration{500 * time.Millisecond}, func() (int, error) {
		var wg sync.WaitGroup
		errs := make(chan error, senders+1)
		for range senders {
			wg.Go(func() {
				for range each {
					if err := f.fl.SYN(netip.AddrFrom4([4]byte{203, 0, 113, byte(128 + rand.IntN(127))}), lab.RandomPort(), 443); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Go(func() {
			for _, c := range cs {
				time.Sleep(15 * time.Millisecond)
				if err := f.fl.Send(c, 0, hello); err != nil {
					errs <- err
					return
				}
			}
		})
		wg.Wait()
		close(errs)
		return senders*each + hellos, <-errs
	})
	pkts := stop(t, inet)
	r.logFigures(t, f)

	var denied []lab.Decision
	for _, d := range f.E.Decisions() {
		if d.Src == lab.AttackerAddr && d.Dst == lab.OtherAddr {
			denied = append(denied, d)
		}
	}
	// The victim's flows may evict the attacker's oldest undecided ones,
	// and those are these (opened before the flood): denied limit, one
	// per eviction, never more.
	wantDenied(t, denied, "rule", "incomplete", "limit")
	limited := 0
	for _, d := range denied {
		if d.Reason == "limit" {
			limited++
		}
	}
	if float64(limited) > r.limits["evicted"] {
		t.Errorf("%d of the attacker's hellos denied limit, more than the %v flows evicted", limited, r.limits["evicted"])
	}
	crossed := map[int]bool{}
	for _, p := range pkts {
		if p.Payload > 0 {
			crossed[p.SrcPort] = true
		}
	}
	snis := 0
	for _, name := range f.Servers.SNIs() {
		if name == "denied.example.test" {
			snis++
		}
	}
	t.Logf("figures: of the attacker's %d hellos for denied.example.test, %v denied by rule (egressd_decisions_total; the lines are folded), %d crossed the NAT; the server read %d",
		hellos, r.decided["tcp deny rule"], len(crossed), snis)
	if r.maxWaiting >= queueLen {
		t.Errorf("the kernel queue filled (%d packets waiting, queue.len %d): past it the kernel accepts packets unmarked", r.maxWaiting, queueLen)
	}
	if len(crossed) > 0 || snis > 0 {
		t.Errorf("%d of the attacker's hellos for a denied name crossed the NAT undecided, and the server read %d", len(crossed), snis)
	}
}

// TestFloodHeldBytes: the attacker opens real handshakes to the lab's
// server and sends the first byte of a ClientHello on each again and
// again: identical overlaps, each accepted and held in the kernel's queue
// until the flow is decided. The held-packet pool (3/4 of queue.len, 1024)
// is what bounds them: the attacker's flows are denied at it (limit
// held_packets) long before any flow's own bound (limits.held_packets 64),
// the kernel queue never drops a packet, the victim gets through, and no
// byte of the attacker's reaches the server. With fail_open too: a full
// kernel queue would accept packets unmarked, so egressd must keep it
// from filling.
func TestFloodHeldBytes(t *testing.T) {
	const (
		flows    = 64
		copies   = 48 // per flow, under limits.held_packets (64)
		rate     = 3000
		queueLen = 1024
	)
	for _, failOpen := range []bool{false, true} {
		t.Run(fmt.Sprintf("fail_open=%t", failOpen), func(t *testing.T) {
			f := startFlood(t, failOpen, "hello: {timeout: 2s}\n", fmt.Sprintf("EGRESSD_QUEUE_LEN=%d", queueLen), "EGRESSD_LOG_FOLD_PER_SOURCE=0")
			hello := clientHello(t, &tls.Config{ServerName: "allowed.example.test"})
			cs, err := f.fl.Handshakes(lab.ServerAddr, 443, flows, 3*time.Second)
			must(t, err)
			if len(cs) != flows {
				t.Fatalf("%d of %d handshakes completed", len(cs), flows)
			}
			inet := capture(t, f.setup, f.Inet, "i0", attackerFilter("tcp"))
			r := f.run(t, []time.Duration{400 * time.Millisecond, 900 * time.Millisecond}, func() (int, error) {
				return flows, pace(flows*copies, rate, func(i int) error { return f.fl.Send(cs[i%flows], 0, hello[:1]) })
			})
			lines := waitAttackerFlows(t, f, flows, "tcp", 4*time.Second)
			pkts := stop(t, inet)
			r.logFigures(t, f)

			wantDenied(t, lines, "limit", "incomplete")
			r.wantHeldPool(t, queueLen)
			if r.limits["flow_held_packets"] != 0 {
				t.Errorf("%v flows denied at their own held-packet bound: the flood was not the one intended", r.limits["flow_held_packets"])
			}
			wantNoPayload(t, pkts, "a byte of the attacker's held flows")
		})
	}
}

// TestFloodHeadBuffers: the flow-head bytes pool (limits.buffer_bytes).
// A flow is lent buffer space as its head grows (pkg/classify's size
// classes, from 512 bytes), and the pool counts what it is lent. The
// attacker opens 1200 flows to port 80 and sends on each one segment of
// 1,400 bytes of an HTTP request head that never ends (a 2 KiB buffer
// each: 2.4 MiB in all), all held. With limits.buffer_bytes at 1 MiB the
// attacker's flows past its share are denied buffer_bytes, while the
// victim's flows go on, and nothing of the attacker's crosses.
func TestFloodHeadBuffers(t *testing.T) {
	const (
		flows, batch = 1200, 200
		bufferBytes  = 1 << 20
	)
	f := startFlood(t, false, "", fmt.Sprintf("EGRESSD_LIMITS_BUFFER_BYTES=%d", bufferBytes))
	rss, _, err := lab.VmRSS(f.E.PID())
	must(t, err)
	head := []byte("GET / HTTP/1.1\r\nHost: allowed.example.test\r\nX-Pad: ")
	head = append(head, bytes.Repeat([]byte("a"), 1400-len(head))...)
	inet := capture(t, f.setup, f.Inet, "i0", attackerFilter("tcp"))
	r := f.run(t, []time.Duration{time.Second, 2 * time.Second}, func() (int, error) {
		opened := 0
		for opened < flows {
			cs, err := f.fl.Handshakes(lab.ServerAddr, 80, batch, time.Second)
			if err != nil {
				return opened, err
			}
			for _, c := range cs {
				if err := f.fl.Send(c, 0, head); err != nil {
					return opened, err
				}
			}
			opened += len(cs)
		}
		return opened, nil
	})
	wantNoPayload(t, stop(t, inet), "a byte of the attacker's undecided flows")
	r.logFigures(t, f)
	t.Logf("figures: egressd's RSS grew by %d KiB (from %d KiB) for the attacker's %d flows of %d bytes each", r.maxRSS-rss, rss, r.flows, len(head))
	if r.limits["buffer_bytes"] == 0 {
		t.Errorf("none of the attacker's %d flows of %d bytes was denied at limits.buffer_bytes (%d KiB): the pool bounds nothing (limits %s)",
			r.flows, len(head), bufferBytes>>10, formatCounts(r.limits))
	}
}

// wantHeldPool fails t unless the flood filled the held-packet pool (flows
// denied at held_packets) and the kernel queue never filled: no drop, and
// never as many packets waiting as it holds.
func (r *floodRun) wantHeldPool(t *testing.T, queueLen int) {
	t.Helper()
	if r.dropped != 0 || r.maxWaiting >= queueLen {
		t.Errorf("the kernel queue dropped %d packets, at most %d waiting (queue.len %d)", r.dropped, r.maxWaiting, queueLen)
	}
	if r.limits["held_packets"] == 0 {
		t.Errorf("no flow was denied at the held-packet pool: the flood did not fill it")
	}
}

// partialInitial is the first datagram of quic-go's ClientHello in a
// recording (pkg/classify/testdata/quic): a valid Initial whose hello
// needs a second one.
func partialInitial(t *testing.T) []byte {
	t.Helper()
	root, err := lab.Root()
	must(t, err)
	pkts, err := lab.ReadPcap(filepath.Join(root, "pkg/classify/testdata/quic/quic-go-default.pcap"))
	must(t, err)
	if len(pkts) == 0 || pkts[0].DstPort != 443 || pkts[0].Payload < 1200 {
		t.Fatalf("the recording does not start with a client Initial: %+v", pkts)
	}
	p := pkts[0]
	return p.Data[len(p.Data)-p.Payload:]
}

// TestFloodPartialQUIC: copies of a valid but partial QUIC Initial (the
// first of the two datagrams of quic-go's ClientHello), from the attacker
// to the lab's server on UDP 443, no handshake: many flows, one after the
// other, and many copies per flow, each held until its flow is decided.
// The held-packet pool fills and stays full; the attacker's flows are
// denied at it (or time out), the kernel queue never drops, the victim
// gets through, and no datagram of the attacker's crosses.
func TestFloodPartialQUIC(t *testing.T) {
	const (
		flows    = 300
		copies   = 16
		rate     = 4000
		queueLen = 1024
	)
	f := startFlood(t, false, "hello: {timeout: 2s}\n", fmt.Sprintf("EGRESSD_QUEUE_LEN=%d", queueLen), "EGRESSD_LOG_FOLD_PER_SOURCE=0")
	initial := partialInitial(t)
	ports := make([]uint16, flows)
	for i := range ports {
		ports[i] = f.fl.Port()
	}
	server := netip.MustParseAddr(lab.ServerAddr)
	inet := capture(t, f.setup, f.Inet, "i0", attackerFilter("udp"))
	r := f.run(t, []time.Duration{400 * time.Millisecond, time.Second}, func() (int, error) {
		return flows, pace(flows*copies, rate, func(i int) error { return f.fl.UDP(server, ports[i/copies], 443, initial) })
	})
	lines := waitAttackerFlows(t, f, flows, "udp", 4*time.Second)
	pkts := stop(t, inet)
	r.logFigures(t, f)

	wantDenied(t, lines, "limit", "incomplete")
	r.wantHeldPool(t, queueLen)
	if len(pkts) > 0 {
		t.Errorf("%d datagrams of the attacker's crossed the NAT; the first: %+v", len(pkts), pkts[0])
	}
}

// TestFloodDNSLabels: under a wildcard allow (.wild.test), the attacker
// sends hellos naming <random label>.wild.test to the lab's server, in
// batches of real handshakes. Each name is new, so the cache cannot answer
// and each would cost the resolver a query (the lab's answers NXDOMAIN);
// the attacker's lookups are rate limited (limit dns_rate), and the
// resolver sees no more of its queries than its rate allows. Meanwhile a
// name the victim has never asked, set in DNS just before, is verified and
// allowed within 2s.
func TestFloodDNSLabels(t *testing.T) {
	const (
		batches  = 20
		perBatch = 100
		every    = 100 * time.Millisecond // a batch
		label    = 12
		// limits.dns_per_source's default, and its burst (twice as many).
		rate, burst = 20, 40
		// A lookup asks for A and AAAA (pkg/resolve fills both families).
		perLookup = 2
	)
	f := startFlood(t, false, "", "EGRESSD_LOG_FOLD_PER_SOURCE=0")
	var newNames []string
	f.checks = append(f.checks, victimCheck{"TLS to a new name under .wild.test", func(ctx context.Context) (func(lab.Decision) bool, error) {
		name := fmt.Sprintf("v%d.wild.test", len(newNames)+1)
		newNames = append(newNames, name)
		if n := f.DNS.Queries(name, dns.TypeA); n != 0 {
			return nil, fmt.Errorf("%s was asked before (%d queries)", name, n)
		}
		f.DNS.SetAddrs(name, 60, netip.MustParseAddr(lab.ServerAddr))
		match, err := f.victimTLS(name)(ctx)
		if err == nil && f.DNS.Queries(name, dns.TypeA) == 0 {
			err = fmt.Errorf("%s allowed without a DNS query", name)
		}
		return match, err
	}, "wild", "tcp"})

	stars := strings.Repeat("x", label)
	template := clientHello(t, &tls.Config{ServerName: stars + ".wild.test", CurvePreferences: []tls.CurveID{tls.X25519}})
	at := bytes.Index(template, []byte(stars))
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	queries := f.DNS.Total()
	inet := capture(t, f.setup, f.Inet, "i0", attackerFilter("tcp"))
	r := f.run(t, []time.Duration{700 * time.Millisecond, 1700 * time.Millisecond}, func() (int, error) {
		began, flows := time.Now(), 0
		for b := range batches {
			cs, err := f.fl.Handshakes(lab.ServerAddr, 443, perBatch, time.Second)
			if err != nil {
				return flows, err
			}
			for _, c := range cs {
				h := bytes.Clone(template)
				for i := range label {
					h[at+i] = alphabet[rand.IntN(len(alphabet))]
				}
				if err := f.fl.Send(c, 0, h); err != nil {
					return flows, err
				}
				flows++
			}
			time.Sleep(time.Until(began.Add(time.Duration(b+1) * every)))
		}
		return flows, nil
	})
	// The attacker's flows, decided: every hello is read at once.
	lines := waitAttackerFlows(t, f, r.flows, "tcp", 3*time.Second)
	wantNoPayload(t, stop(t, inet), "a byte of the attacker's denied hellos")
	r.logFigures(t, f)

	wantDenied(t, lines, "limit", "dns-mismatch", "dns-error")
	asked := f.DNS.Total() - queries
	for _, name := range newNames {
		asked -= f.DNS.Queries(name, dns.TypeA) + f.DNS.Queries(name, dns.TypeAAAA)
	}
	allowed := perLookup * (burst + rate*(r.took.Seconds()+1))
	t.Logf("figures: the attacker's %d hellos with a random name cost the resolver %d queries (its rate allows %.0f); limited at dns_rate: %v",
		r.flows, asked, allowed, r.limits["dns_rate"])
	if float64(asked) > allowed {
		t.Errorf("the resolver got %d queries from the attacker's names in %s, more than its rate allows (%.0f)", asked, r.took.Round(time.Millisecond), allowed)
	}
	// The victim's few lookups are far within its burst: every dns_rate
	// denial is the attacker's.
	if r.limits["dns_rate"] == 0 || r.decided["tcp deny limit"] < r.limits["dns_rate"] {
		t.Errorf("the attacker's lookups were not rate limited: decisions %s, limits %s", formatCounts(r.decided), formatCounts(r.limits))
	}
	for _, v := range f.victims {
		if strings.Contains(v.what, "new name") && v.err == nil {
			return
		}
	}
	t.Errorf("the victim's new name was never tried")
}

// TestFloodKillMidHandshakes: egressd killed (SIGKILL) while 100 of the
// victim's handshakes are being decided, allowed and denied names mixed.
// No flow crosses without its allow line: every hello a server read, every
// handshake that completed and every payload captured on its way to a
// server belongs to a flow with an allow line, and no denied name reaches a
// server. (With fail_open, flows would pass while egressd is down: that is
// what it says.) Restarted, egressd decides new flows again, and the
// flows it finds half-way (their hellos retransmitted) too.
func TestFloodKillMidHandshakes(t *testing.T) {
	const (
		n      = 100
		spread = time.Second // long enough that the kill lands mid-way on a loaded machine
	)
	opts := lab.EgressdOptions{Config: "hello: {timeout: 1s}\n"}
	s := start(t, labPolicy, lab.Rules{}, opts)
	inet := capture(t, s, s.Inet, "i0", "tcp dst port 443 and src host "+lab.NATPublic)
	type hs struct {
		name string
		c    net.Conn
		err  error
	}
	flows := make([]*hs, n)
	for i := range flows {
		name := "allowed.example.test"
		if i%2 == 1 {
			name = "denied.example.test"
		}
		flows[i] = &hs{name: name, c: dial(t, s, lab.ServerAddr+":443")}
	}
	// The hellos go out over a second (egressd decides 100 at once in
	// a few), and egressd is killed once about half are decided.
	began := time.Now()
	var wg sync.WaitGroup
	for i, h := range flows {
		wg.Go(func() {
			time.Sleep(time.Until(began.Add(time.Duration(i) * spread / n)))
			tc := tls.Client(h.c, &tls.Config{ServerName: h.name, RootCAs: s.CA.Pool})
			tc.SetDeadline(time.Now().Add(6 * time.Second))
			h.err = tc.Handshake()
		})
	}
	for deadline := began.Add(3 * time.Second); len(s.E.Decisions()) < n/2 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	first := s.E
	first.Kill()
	killed := time.Now()
	before := first.Decisions()
	t.Logf("%d of the %d flows decided before the kill", len(before), n)
	if len(before) == 0 || len(before) >= n {
		t.Fatalf("the kill did not land in the middle of the handshakes: %d of %d decided", len(before), n)
	}
	// With no reader and no bypass, nothing more crosses.
	time.Sleep(500 * time.Millisecond)
	wantAllowLines(t, s.Servers.SNIs(), before, "with egressd killed")

	opts.Binary, opts.Policy = egressdBin, labPolicy
	e, err := s.StartEgressd(opts)
	must(t, err)
	s.E = e
	restarted := time.Now()
	wg.Wait()
	all := append(before, e.Decisions()...)
	wantAllowLines(t, s.Servers.SNIs(), all, "after the restart")

	allow := map[int]bool{}
	for _, d := range all {
		if d.Verdict == "allow" {
			allow[d.Sport] = true
		}
	}
	completed := 0
	for _, h := range flows {
		port := h.c.LocalAddr().(*net.TCPAddr).Port
		switch {
		case h.err == nil && h.name != "allowed.example.test":
			t.Errorf("a handshake for %s completed", h.name)
		case h.err == nil && !allow[port]:
			t.Errorf("the handshake from port %d completed without an allow line", port)
		case h.err == nil:
			completed++
		}
	}
	after := map[string]float64{}
	for _, d := range e.Decisions() {
		after[d.Verdict+" "+d.Reason]++
	}
	t.Logf("figures: %d of %d handshakes completed (half of them for a denied name); %d decided before the kill, after the restart (%s down) %s",
		completed, n, len(before), restarted.Sub(killed).Round(time.Millisecond), formatCounts(after))
	for _, p := range stop(t, inet) {
		if p.Payload > 0 && !allow[p.SrcPort] {
			t.Errorf("payload of a flow without an allow line reached inet: %+v", p)
		}
	}

	// New flows are decided again.
	if d, err := tlsHandshake(t, s, lab.ServerAddr+":443", "allowed.example.test"); err != nil || d.Verdict != "allow" || d.Rule != "lab-web" {
		t.Errorf("after the restart, an allowed name: handshake %v, decision %s", err, d)
	}
	if d, err := tlsHandshake(t, s, lab.ServerAddr+":443", "denied.example.test"); err == nil || d.Verdict != "deny" || d.Reason != "rule" || d.Rule != "lab-deny" {
		t.Errorf("after the restart, a denied name: handshake %v, decision %s", err, d)
	}
}

// wantAllowLines fails t unless the servers read no more hellos for each
// name than there are allow lines for it, and none for a denied name.
func wantAllowLines(t *testing.T, snis []string, lines []lab.Decision, when string) {
	t.Helper()
	allowed := map[string]int{}
	for _, d := range lines {
		if d.Verdict == "allow" {
			allowed[d.Name]++
		}
	}
	read := map[string]int{}
	for _, name := range snis {
		read[name]++
	}
	for name, k := range read {
		if k > allowed[name] {
			t.Errorf("%s: the servers read %d hellos for %q, and %d flows for it have an allow line", when, k, name, allowed[name])
		}
	}
}
