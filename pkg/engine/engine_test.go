package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"github.com/egressd/egressd/internal/pcapgen"
	"github.com/egressd/egressd/pkg/decide"
	"github.com/egressd/egressd/pkg/declog"
	"github.com/egressd/egressd/pkg/policy"
)

// recorder is a Sink that remembers every verdict, and a decision log.
type recorder struct {
	mu       sync.Mutex
	passed   []uint32
	verdicts map[uint32]policy.Verdict
	dropped  []uint32
	lines    []declog.Record
	// linesBefore is how many lines were logged when each packet got its
	// verdict (or each connection its mark), by id (by client port).
	linesBefore      map[uint32]int
	linesBeforeMarks map[uint16]int
	// concluded are the verdicts written to connections with no packet
	// in hand, by the connection's client port.
	concluded map[uint16]policy.Verdict
}

func newRecorder() *recorder {
	return &recorder{verdicts: map[uint32]policy.Verdict{}, concluded: map[uint16]policy.Verdict{},
		linesBefore: map[uint32]int{}, linesBeforeMarks: map[uint16]int{}}
}

func (r *recorder) Conclude(t Tuple, v policy.Verdict) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.concluded[t.SrcPort]; dup {
		panic(fmt.Sprintf("connection from port %d concluded twice", t.SrcPort))
	}
	r.concluded[t.SrcPort] = v
	r.linesBeforeMarks[t.SrcPort] = len(r.lines)
	return nil
}

func (r *recorder) Pass(id uint32) { r.mu.Lock(); r.passed = append(r.passed, id); r.mu.Unlock() }
func (r *recorder) Drop(id uint32) { r.mu.Lock(); r.dropped = append(r.dropped, id); r.mu.Unlock() }
func (r *recorder) Verdict(id uint32, v policy.Verdict) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.verdicts[id]; dup {
		panic(fmt.Sprintf("packet %d got two verdicts", id))
	}
	r.verdicts[id] = v
	r.linesBefore[id] = len(r.lines)
}
func (r *recorder) log(rec *declog.Record) {
	r.mu.Lock()
	r.lines = append(r.lines, *rec)
	r.mu.Unlock()
}

func (r *recorder) verdict(id uint32) (policy.Verdict, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	v, ok := r.verdicts[id]
	return v, ok
}

func (r *recorder) logged() []declog.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]declog.Record(nil), r.lines...)
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

const labPolicy = `
version: 1
default: deny
rules:
  - {name: web, domains: [allowed.example.test, .api.example.test], ports: [443, 80], action: allow}
  - {name: blocked, domains: [denied.example.test], action: deny}
  - {name: partner, cidrs: [198.51.100.0/24], ports: [22, 443], action: allow}
  - {name: ssh-by-name, domains: [git.example.test], ports: [22], action: allow}
`

type harness struct {
	t     *testing.T
	e     *Engine
	s     *Shard
	rec   *recorder
	clock *fakeClock
	id    uint32
	sport uint16
}

func newHarness(t *testing.T, policyText string, mutate func(*Config)) *harness {
	t.Helper()
	p, err := policy.Parse("p.yaml", []byte(policyText), policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, rec: newRecorder(), clock: &fakeClock{now: time.Unix(1_800_000_000, 0)}, sport: 40000}
	cfg := Config{Log: h.rec.log, Now: h.clock.Now}
	if mutate != nil {
		mutate(&cfg)
	}
	h.e, err = New(cfg, p, 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.e.Close)
	h.s = h.e.Shard(0)
	h.s.Attach(h.rec)
	return h
}

var (
	client = netip.MustParseAddr("10.0.1.7")
	server = netip.MustParseAddr("203.0.113.10")
)

// tcpFlow is one client's TCP connection, sending segments to the engine.
type tcpFlow struct {
	h      *harness
	src    netip.Addr
	dst    netip.Addr
	sport  uint16
	dport  uint16
	isn    uint32
	offset uint32
}

func (h *harness) tcp(dst netip.Addr, dport uint16) *tcpFlow {
	h.sport++
	return &tcpFlow{h: h, src: client, dst: dst, sport: h.sport, dport: dport, isn: 0xfffffff0} // wraps during the hello
}

func (f *tcpFlow) packet(syn bool, seq uint32, payload []byte) *Packet {
	f.h.id++
	return &Packet{
		ID: f.h.id, Time: f.h.clock.Now(), Src: f.src, Dst: f.dst, SrcPort: f.sport, DstPort: f.dport,
		Proto: policy.TCP, Seq: seq, SYN: syn, ACK: !syn, Payload: payload,
	}
}

// syn sends the SYN and returns its packet id.
func (f *tcpFlow) syn() uint32 {
	p := f.packet(true, f.isn, nil)
	f.h.s.Handle(p)
	return p.ID
}

// send sends the next payload bytes of the stream as one segment.
func (f *tcpFlow) send(b []byte) uint32 {
	p := f.packet(false, f.isn+1+f.offset, b)
	f.offset += uint32(len(b))
	f.h.s.Handle(p)
	return p.ID
}

func (h *harness) wantVerdict(id uint32, want policy.Verdict) {
	h.t.Helper()
	got, ok := h.rec.verdict(id)
	if !ok {
		h.t.Fatalf("packet %d has no verdict (want %s)", id, want)
	}
	if got != want {
		h.t.Fatalf("packet %d: verdict %s, want %s", id, got, want)
	}
}

func (h *harness) wantHeld(id uint32) {
	h.t.Helper()
	if v, ok := h.rec.verdict(id); ok {
		h.t.Fatalf("packet %d got verdict %s, want it held", id, v)
	}
}

func (h *harness) wantPassed(id uint32) {
	h.t.Helper()
	h.rec.mu.Lock()
	defer h.rec.mu.Unlock()
	for _, p := range h.rec.passed {
		if p == id {
			return
		}
	}
	h.t.Fatalf("packet %d was not passed unmarked", id)
}

func (h *harness) lastLine() declog.Record {
	h.t.Helper()
	lines := h.rec.logged()
	if len(lines) == 0 {
		h.t.Fatal("no decision logged")
	}
	return lines[len(lines)-1]
}

func (h *harness) wantLine(verdict, rule, reason, name, from string) declog.Record {
	h.t.Helper()
	l := h.lastLine()
	if l.Verdict.String() != verdict || l.Rule != rule || l.Reason.String() != reason || l.Name != name || l.NameFrom.String() != from {
		h.t.Fatalf("decision %+v; want verdict %s rule %q reason %s name %q from %s", l, verdict, rule, reason, name, from)
	}
	return l
}

// clientHello returns the ClientHello record Go's crypto/tls sends for name.
func clientHello(t testing.TB, name string) []byte {
	t.Helper()
	h, err := pcapgen.ClientHello(name)
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), h...) // pcapgen's is shared; tests change theirs
}

func TestAllowedHelloHeldThenReleased(t *testing.T) {
	h := newHarness(t, labPolicy, nil)
	f := h.tcp(server, 443)
	h.wantPassed(f.syn()) // the handshake proceeds; the flow is undecided
	hello := clientHello(t, "allowed.example.test")
	a := f.send(hello[:100])
	b := f.send(hello[100:300])
	h.wantHeld(a)
	h.wantHeld(b)
	c := f.send(hello[300:])
	for _, id := range []uint32{a, b, c} {
		h.wantVerdict(id, policy.Allow)
	}
	l := h.wantLine("allow", "web", "rule", "allowed.example.test", "sni")
	if !l.Enforced || l.DNSCheck != declog.CheckTrusted || l.Src != client || l.DstPort != 443 || l.Proto != policy.TCP {
		t.Errorf("decision line: %+v", l)
	}
	// A retransmission queued before the connmark took effect gets the
	// same verdict.
	f.offset = 0
	h.wantVerdict(f.send(hello[:100]), policy.Allow)
	if n := len(h.rec.logged()); n != 1 {
		t.Errorf("%d decision lines for one flow", n)
	}
}

func TestDeniedName(t *testing.T) {
	h := newHarness(t, labPolicy, nil)
	f := h.tcp(server, 443)
	f.syn()
	h.wantVerdict(f.send(clientHello(t, "denied.example.test")), policy.Deny)
	h.wantLine("deny", "blocked", "rule", "denied.example.test", "sni")

	f = h.tcp(server, 443)
	f.syn()
	h.wantVerdict(f.send(clientHello(t, "unlisted.example.test")), policy.Deny)
	h.wantLine("deny", "default", "default", "unlisted.example.test", "sni")
}

func TestHTTPHost(t *testing.T) {
	h := newHarness(t, labPolicy, nil)
	f := h.tcp(server, 80)
	f.syn()
	a := f.send([]byte("GET / HTTP/1.1\r\nHo"))
	h.wantHeld(a)
	b := f.send([]byte("st: x.api.example.test\r\nAccept: */*\r\n\r\n"))
	h.wantVerdict(a, policy.Allow)
	h.wantVerdict(b, policy.Allow)
	h.wantLine("allow", "web", "rule", "x.api.example.test", "host")
}

func TestDecidedOnTheSYN(t *testing.T) {
	h := newHarness(t, labPolicy, nil)
	// A CIDR rule on a port without a name: the SYN carries the verdict.
	f := h.tcp(netip.MustParseAddr("198.51.100.9"), 22)
	h.wantVerdict(f.syn(), policy.Allow)
	h.wantLine("allow", "partner", "rule", "", "none")
	// Nothing allows port 22 elsewhere.
	f = h.tcp(server, 22)
	h.wantVerdict(f.syn(), policy.Deny)
	h.wantLine("deny", "default", "default", "", "none")
}

func TestNotTLSOrHTTP(t *testing.T) {
	h := newHarness(t, labPolicy, nil)
	f := h.tcp(server, 443)
	f.syn()
	h.wantVerdict(f.send([]byte("SSH-2.0-OpenSSH_9.6\r\n")), policy.Deny)
	h.wantLine("deny", "", "not-tls-or-http", "", "none")

	// Unless an address rule allows the destination whatever the name.
	f = h.tcp(netip.MustParseAddr("198.51.100.9"), 443)
	f.syn() // web's domains make the name matter: read it
	h.wantVerdict(f.send([]byte("SSH-2.0-OpenSSH_9.6\r\n")), policy.Allow)
	h.wantLine("allow", "partner", "rule", "", "none")
}

// TestLineBeforeVerdict: a flow's line is logged before the kernel gets
// its verdict, whether packets carry it or the connection's mark does, so
// that (with declog.Writer writing an allowed flow's line before Log
// returns) no allowed flow crosses without its line, even if egressd is
// killed between the two (the lab's TestFloodKillMidHandshakes found one).
func TestLineBeforeVerdict(t *testing.T) {
	h := newHarness(t, labPolicy, func(c *Config) { c.HelloTimeout = time.Second })
	f := h.tcp(server, 443)
	f.syn()
	hello := clientHello(t, "allowed.example.test")
	a := f.send(hello[:100])
	b := f.send(hello[100:])
	h.wantVerdict(b, policy.Allow)
	h.rec.mu.Lock()
	if n := h.rec.linesBefore[a]; n != 1 {
		t.Errorf("the allowed flow's held packet got its verdict with %d lines logged, want 1", n)
	}
	if n := h.rec.linesBefore[b]; n != 1 {
		t.Errorf("the allowed flow's last packet got its verdict with %d lines logged, want 1", n)
	}
	h.rec.mu.Unlock()

	g := h.tcp(server, 443)
	g.syn()
	h.clock.Add(2 * time.Second)
	h.e.Tick(h.clock.Now())
	h.rec.mu.Lock()
	defer h.rec.mu.Unlock()
	if v, ok := h.rec.concluded[g.sport]; !ok || v != policy.Deny {
		t.Fatalf("the silent flow's connection: %v %v, want deny", v, ok)
	}
	if n := h.rec.linesBeforeMarks[g.sport]; n != 2 {
		t.Errorf("the silent flow's connection got its mark with %d lines logged, want 2", n)
	}
}

func TestMalformedHello(t *testing.T) {
	h := newHarness(t, labPolicy, nil)
	f := h.tcp(server, 443)
	f.syn()
	hello := clientHello(t, "allowed.example.test")
	hello[5] = 0x02 // a ServerHello type where the ClientHello belongs
	h.wantVerdict(f.send(hello), policy.Deny)
	h.wantLine("deny", "", "malformed", "", "none")
}

func TestIncompleteTimesOut(t *testing.T) {
	h := newHarness(t, labPolicy, func(c *Config) { c.HelloTimeout = time.Second })
	f := h.tcp(server, 443)
	f.syn()
	a := f.send(clientHello(t, "allowed.example.test")[:50])
	h.clock.Add(900 * time.Millisecond)
	h.e.Tick(h.clock.Now())
	h.wantHeld(a)
	h.clock.Add(200 * time.Millisecond)
	h.e.Tick(h.clock.Now())
	h.wantVerdict(a, policy.Deny)
	l := h.wantLine("deny", "", "incomplete", "", "none")
	if l.Latency != 1100*time.Millisecond {
		t.Errorf("latency %s, want the time the held packet waited (1.1s)", l.Latency)
	}
}

func TestLimits(t *testing.T) {
	t.Run("held packets", func(t *testing.T) {
		h := newHarness(t, labPolicy, func(c *Config) { c.MaxHeld = 3 })
		f := h.tcp(server, 443)
		f.syn()
		hello := clientHello(t, "allowed.example.test")
		var ids []uint32
		for i := 0; i < 4; i++ {
			ids = append(ids, f.send(hello[i:i+1]))
		}
		for _, id := range ids {
			h.wantVerdict(id, policy.Deny)
		}
		h.wantLine("deny", "", "limit", "", "none")
	})
	t.Run("flow table", func(t *testing.T) {
		h := newHarness(t, labPolicy, func(c *Config) { c.MaxFlows = 2 })
		h.tcp(server, 443).syn()
		h.tcp(server, 443).syn()
		id := h.tcp(server, 443).syn()
		h.wantVerdict(id, policy.Deny)
		h.wantLine("deny", "", "limit", "", "none")
		if n := h.e.Stats().Limited(LimitFlows); n != 1 {
			t.Errorf("Limited(LimitFlows) = %d", n)
		}
	})
	t.Run("hello bytes", func(t *testing.T) {
		h := newHarness(t, labPolicy, func(c *Config) { c.HelloMaxBytes = 512 })
		f := h.tcp(server, 443)
		f.syn()
		h.wantVerdict(f.send(clientHello(t, "allowed.example.test")), policy.Deny)
		h.wantLine("deny", "", "limit", "", "none")
	})
}

func TestMonitorMode(t *testing.T) {
	h := newHarness(t, labPolicy, func(c *Config) { c.Mode = Monitor })
	f := h.tcp(server, 443)
	f.syn()
	h.wantVerdict(f.send(clientHello(t, "denied.example.test")), policy.Allow) // nothing is blocked
	l := h.wantLine("deny", "blocked", "rule", "denied.example.test", "sni")
	if l.Enforced {
		t.Errorf("a monitor-mode line says enforced: %+v", l)
	}
}

func TestShadowRule(t *testing.T) {
	h := newHarness(t, labPolicy+`
  - {name: trial, domains: [allowed.example.test], action: deny, shadow: true}
`, nil)
	f := h.tcp(server, 443)
	f.syn()
	h.wantVerdict(f.send(clientHello(t, "allowed.example.test")), policy.Allow) // the trial enforces nothing
	l := h.wantLine("deny", "trial", "rule", "allowed.example.test", "sni")
	if l.Enforced {
		t.Errorf("a shadow rule's line says enforced: %+v", l)
	}
	// Where the policy denies anyway, the enforced deny is what is logged.
	f = h.tcp(server, 443)
	f.syn()
	h.wantVerdict(f.send(clientHello(t, "denied.example.test")), policy.Deny)
	if l := h.wantLine("deny", "blocked", "rule", "denied.example.test", "sni"); !l.Enforced {
		t.Errorf("%+v", l)
	}
	// A switch to monitor mode applies to the next flows.
	h.e.SetMode(Monitor)
	f = h.tcp(server, 443)
	f.syn()
	h.wantVerdict(f.send(clientHello(t, "denied.example.test")), policy.Allow)
	if l := h.lastLine(); l.Enforced || l.Verdict != policy.Deny {
		t.Errorf("after SetMode(Monitor): %+v", l)
	}
}

// fakeVerifier answers from a table; Verify blocks until released.
type fakeVerifier struct {
	mu      sync.Mutex
	known   map[string]netip.Addr
	release chan struct{}
	err     error
	calls   int
}

func (v *fakeVerifier) Cached(name string, a netip.Addr) decide.Answer {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.known[name] == a {
		return decide.Match
	}
	return 0
}

func (v *fakeVerifier) Verify(ctx context.Context, name string, a netip.Addr, _ time.Time) (Verification, error) {
	v.mu.Lock()
	v.calls++
	v.mu.Unlock()
	select {
	case <-v.release:
	case <-ctx.Done():
		return Verification{}, ctx.Err()
	}
	if v.err != nil {
		return Verification{}, v.err
	}
	if v.Cached(name, a) == decide.Match {
		return Verification{Answer: decide.Match}, nil
	}
	return Verification{Answer: decide.Mismatch, Evidence: decide.Evidence{AnswerAge: time.Second, Addrs: 1, Requeried: true}}, nil
}

func TestDNSVerification(t *testing.T) {
	for _, tc := range []struct {
		name       string
		known      map[string]netip.Addr
		err        error
		wantV      policy.Verdict
		wantReason string
		wantRule   string
		wantCalls  int
	}{
		{"cache hit: no lookup", map[string]netip.Addr{"allowed.example.test": server}, nil, policy.Allow, "rule", "web", 0},
		{"answers elsewhere: dns-mismatch", map[string]netip.Addr{"allowed.example.test": netip.MustParseAddr("203.0.113.99")}, nil, policy.Deny, "dns-mismatch", "", 1},
		{"resolver fails: dns-error", nil, errors.New("SERVFAIL"), policy.Deny, "dns-error", "", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := &fakeVerifier{known: tc.known, release: make(chan struct{}), err: tc.err}
			h := newHarness(t, labPolicy, func(c *Config) { c.Verifier = v })
			f := h.tcp(server, 443)
			f.syn()
			id := f.send(clientHello(t, "allowed.example.test"))
			if tc.wantCalls > 0 {
				h.wantHeld(id) // waiting for DNS
				close(v.release)
				h.e.verifyWG.Wait()
			}
			h.wantVerdict(id, tc.wantV)
			l := h.lastLine()
			if l.Reason.String() != tc.wantReason || l.Rule != tc.wantRule || l.Name != "allowed.example.test" {
				t.Errorf("decision %+v", l)
			}
			if v.calls != tc.wantCalls {
				t.Errorf("Verify called %d times, want %d", v.calls, tc.wantCalls)
			}
		})
	}
	t.Run("a deny by name needs no lookup", func(t *testing.T) {
		v := &fakeVerifier{release: make(chan struct{})}
		h := newHarness(t, labPolicy, func(c *Config) { c.Verifier = v })
		f := h.tcp(server, 443)
		f.syn()
		h.wantVerdict(f.send(clientHello(t, "denied.example.test")), policy.Deny)
		if v.calls != 0 {
			t.Errorf("Verify called for a denied name")
		}
	})
	t.Run("resolver slower than hello.timeout: dns-error", func(t *testing.T) {
		v := &fakeVerifier{release: make(chan struct{})}
		h := newHarness(t, labPolicy, func(c *Config) { c.Verifier = v; c.HelloTimeout = time.Second })
		f := h.tcp(server, 443)
		f.syn()
		id := f.send(clientHello(t, "allowed.example.test"))
		h.clock.Add(2 * time.Second)
		h.e.Tick(h.clock.Now())
		h.wantVerdict(id, policy.Deny)
		if l := h.lastLine(); l.Reason != policy.ReasonDNSError {
			t.Errorf("decision %+v", l)
		}
		close(v.release)
	})
	t.Run("port without a name matches by DNS", func(t *testing.T) {
		v := &fakeVerifier{known: map[string]netip.Addr{"git.example.test": server}}
		h := newHarness(t, labPolicy, func(c *Config) { c.Verifier = v })
		h.wantVerdict(h.tcp(server, 22).syn(), policy.Allow)
		h.wantLine("allow", "ssh-by-name", "rule", "git.example.test", "dns")
		h.wantVerdict(h.tcp(netip.MustParseAddr("203.0.113.11"), 22).syn(), policy.Deny)
	})
}

// quicDatagrams reads the client's datagrams from a recording.
func quicDatagrams(t testing.TB, path string) [][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	var client string
	for {
		data, _, err := r.ReadPacketData()
		if err != nil {
			break
		}
		pkt := gopacket.NewPacket(data, r.LinkType(), gopacket.Default)
		udp, ok := pkt.Layer(layers.LayerTypeUDP).(*layers.UDP)
		if !ok || udp.DstPort != 443 {
			continue
		}
		src := pkt.NetworkLayer().NetworkFlow().Src().String() + fmt.Sprint(udp.SrcPort)
		if client == "" {
			client = src
		}
		if src == client {
			out = append(out, append([]byte(nil), udp.Payload...))
		}
	}
	if len(out) == 0 {
		t.Fatalf("%s: no client datagrams", path)
	}
	return out
}

func TestQUIC(t *testing.T) {
	h := newHarness(t, `
version: 1
default: deny
rules:
  - {name: quic, domains: [.example.test], ports: [443], proto: udp, action: allow}
`, nil)
	dgs := quicDatagrams(t, "../classify/testdata/quic/quic-go-default.pcap")
	h.sport++
	var ids []uint32
	for _, d := range dgs {
		h.id++
		ids = append(ids, h.id)
		h.s.Handle(&Packet{ID: h.id, Time: h.clock.Now(), Src: client, Dst: server, SrcPort: h.sport, DstPort: 443, Proto: policy.UDP, Payload: d})
		if _, ok := h.rec.verdict(h.id); ok {
			break
		}
	}
	for _, id := range ids {
		h.wantVerdict(id, policy.Allow)
	}
	l := h.lastLine()
	if l.Verdict != policy.Allow || l.NameFrom != declog.FromQUIC || l.Proto != policy.UDP || l.Name == "" {
		t.Errorf("decision %+v", l)
	}
	// Random bytes to UDP 443.
	h.sport++
	h.id++
	h.s.Handle(&Packet{ID: h.id, Src: client, Dst: server, SrcPort: h.sport, DstPort: 443, Proto: policy.UDP, Payload: []byte("not quic at all")})
	h.wantVerdict(h.id, policy.Deny)
	h.wantLine("deny", "", "not-tls-or-http", "", "none")
}

func TestLingerThenForget(t *testing.T) {
	h := newHarness(t, labPolicy, func(c *Config) { c.Linger = time.Second })
	f := h.tcp(netip.MustParseAddr("198.51.100.9"), 22)
	f.syn()
	h.clock.Add(2 * time.Second)
	h.e.Tick(h.clock.Now())
	if n := len(h.s.flows); n != 0 {
		t.Fatalf("%d flows left after the linger", n)
	}
	// The same 5-tuple again is a new flow with its own decision.
	f.syn()
	if n := len(h.rec.logged()); n != 2 {
		t.Fatalf("%d decisions, want 2", n)
	}
}

type nopSink struct{}

func (nopSink) Pass(uint32)                          {}
func (nopSink) Verdict(uint32, policy.Verdict)       {}
func (nopSink) Drop(uint32)                          {}
func (nopSink) Conclude(Tuple, policy.Verdict) error { return nil }

// BenchmarkFlow is the engine's cost per TLS flow: SYN, then a ClientHello
// in two segments, decided and logged. "log=none" logs nowhere;
// "log=writing" through a decision-log Writer that writes (to io.Discard);
// an allowed flow's line is written before its verdict, so there is no
// stalled case here: a stalled output holds allowed flows (declog's
// BenchmarkLogStalled is the denied flows' path, which never waits).
func BenchmarkFlow(b *testing.B) {
	writing := declog.NewWriter(declog.WriterConfig{Outputs: []io.Writer{io.Discard}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go writing.Run(ctx)
	for _, tc := range []struct {
		name string
		log  func(*declog.Record)
	}{
		{"log=none", nil},
		{"log=writing", writing.Log},
	} {
		b.Run(tc.name, func(b *testing.B) { benchmarkFlow(b, tc.log) })
	}
}

func benchmarkFlow(b *testing.B, log func(*declog.Record)) {
	p, _ := policy.Parse("p.yaml", []byte(labPolicy), policy.Options{})
	clock := &fakeClock{now: time.Unix(1_800_000_000, 0)}
	e, _ := New(Config{Now: clock.Now, Log: log}, p, 1)
	s := e.Shard(0)
	s.Attach(nopSink{})
	hello := clientHello(b, "allowed.example.test")
	var id uint32
	sport := uint16(1)
	b.ReportAllocs()
	for range b.N {
		sport++
		pk := Packet{Src: client, Dst: server, SrcPort: sport, DstPort: 443, Proto: policy.TCP, Seq: 100, SYN: true}
		id++
		pk.ID = id
		s.Handle(&pk)
		pk.SYN, pk.Seq, pk.Payload = false, 101, hello[:200]
		id++
		pk.ID = id
		s.Handle(&pk)
		pk.Seq, pk.Payload = 301, hello[200:]
		id++
		pk.ID = id
		s.Handle(&pk)
		if sport%1000 == 0 {
			clock.Add(time.Minute)
			e.Tick(clock.Now())
		}
	}
}
