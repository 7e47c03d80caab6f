package engine

import (
	"context"
	"github.com/egressd/egressd/pkg/decide"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/pkg/declog"
	"github.com/egressd/egressd/pkg/policy"
)

// fakeSYNs is a SYNSource: the SYNs the kernel logged, waiting to be
// drained.
type fakeSYNs struct {
	mu      sync.Mutex
	pending []Packet
	drains  int
	lost    bool // the next Drain reports SYNs lost
}

func (s *fakeSYNs) log(p Packet) {
	s.mu.Lock()
	p.Logged, p.ID, p.Queue = true, 0, 0
	s.pending = append(s.pending, p)
	s.mu.Unlock()
}

func (s *fakeSYNs) Drain(fn func(*Packet)) (empty, lost bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drains++
	for len(s.pending) > 0 {
		p := s.pending[0]
		s.pending = s.pending[1:]
		fn(&p)
	}
	lost, s.lost = s.lost, false
	return true, lost
}

// newSYNHarness is a harness whose SYNs to 443 are logged, not queued.
func newSYNHarness(t *testing.T, policyText string) (*harness, *fakeSYNs) {
	syns := &fakeSYNs{}
	h := newHarness(t, policyText, func(c *Config) { c.SYNs = syns })
	h.e.SetSYNLogged([]uint16{443})
	return h, syns
}

// loggedSYN has the kernel forward f's SYN and log it.
func (f *tcpFlow) loggedSYN(syns *fakeSYNs) {
	syns.log(*f.packet(true, f.isn, nil))
}

// TestLoggedSYN: a flow whose SYN was logged, not queued, is read from its
// true ISN: its first queued packet is its hello, which decides it in one
// trip to user space.
func TestLoggedSYN(t *testing.T) {
	h, syns := newSYNHarness(t, labPolicy)
	hello := clientHello(t, "allowed.example.test")
	f := h.tcp(server, 443)
	f.loggedSYN(syns)
	h.wantVerdict(f.send(hello), policy.Allow)
	h.wantLine("allow", "web", "rule", "allowed.example.test", "sni")
	if n := h.e.Stats().SYNsLogged.Load(); n != 1 {
		t.Errorf("%d logged SYNs reached a shard, want 1", n)
	}
	if n := len(h.rec.passed); n != 0 {
		t.Errorf("%d packets passed: a logged SYN has no verdict to give", n)
	}
}

// TestLoggedSYNOutOfOrder is TestReassembly's first case with the SYN
// logged: the first segment egressd sees is the hello's third quarter, and
// only the ISN from the log places it; a guess from it would misread the
// stream.
func TestLoggedSYNOutOfOrder(t *testing.T) {
	h, syns := newSYNHarness(t, labPolicy)
	hello := clientHello(t, "allowed.example.test")
	f := h.tcp(server, 443)
	f.loggedSYN(syns)
	q := uint32(len(hello) / 4)
	seg := func(from, to uint32) uint32 {
		f.offset = from
		return f.send(hello[from:to])
	}
	ids := []uint32{seg(2*q, 3*q), seg(0, q), seg(3*q, uint32(len(hello))), seg(0, q)}
	for _, id := range ids {
		h.wantHeld(id)
	}
	last := seg(q, 2*q)
	for _, id := range append(ids, last) {
		h.wantVerdict(id, policy.Allow)
	}
	h.wantLine("allow", "web", "rule", "allowed.example.test", "sni")
}

// TestLoggedSYNMissing: a data segment of a flow to a logged port whose SYN
// never reached egressd (the log overflowed; egressd started after it) is
// denied, limit syn_log, never read from a guessed ISN; on a port whose
// SYNs are queued, limit no_syn (egressd started after the SYN).
func TestLoggedSYNMissing(t *testing.T) {
	h, syns := newSYNHarness(t, labPolicy)
	hello := clientHello(t, "allowed.example.test")
	f := h.tcp(server, 443)
	h.wantVerdict(f.send(hello), policy.Deny)
	h.wantLine("deny", "", "limit", "", "none")
	if n := h.e.Stats().Limited(LimitSYNLog); n != 1 {
		t.Errorf("syn_log limit counted %d times, want 1", n)
	}
	if syns.drains == 0 {
		t.Error("the log was not drained before the flow was refused")
	}
	g := h.tcp(server, 80)
	h.wantVerdict(g.send([]byte("GET / HTTP/1.1\r\nHost: allowed.example.test\r\n\r\n")), policy.Deny)
	if n := h.e.Stats().Limited(LimitNoSYN); n != 1 {
		t.Errorf("no_syn limit counted %d times, want 1", n)
	}
}

// TestLoggedSYNDecided: a logged SYN the policy decides (the policy
// changed since the port's SYNs were logged) is decided when it is
// drained, its verdict written to the connection.
func TestLoggedSYNDecided(t *testing.T) {
	h, syns := newSYNHarness(t, labPolicy+"  - {name: blackhole, cidrs: [192.0.2.0/24], action: deny}\n")
	f := h.tcp(netip.MustParseAddr("192.0.2.7"), 443) // denied by address, on its SYN
	f.loggedSYN(syns)
	h.e.DrainSYNs()
	if v, ok := h.rec.concluded[f.sport]; !ok || v != policy.Deny {
		t.Fatalf("the connection was not told deny: %v %v", v, ok)
	}
	h.wantLine("deny", "blackhole", "rule", "", "none")
}

// TestLoggedSYNOtherISN: a second logged SYN with another ISN for a flow
// being read is another connection attempt: malformed, denied on the
// connection (no packet is held).
func TestLoggedSYNOtherISN(t *testing.T) {
	h, syns := newSYNHarness(t, labPolicy)
	f := h.tcp(server, 443)
	f.loggedSYN(syns)
	f.loggedSYN(syns) // a retransmission: the same ISN
	f.isn += 1000
	f.loggedSYN(syns)
	h.e.DrainSYNs()
	if v, ok := h.rec.concluded[f.sport]; !ok || v != policy.Deny {
		t.Fatalf("the connection was not told deny: %v %v", v, ok)
	}
	h.wantLine("deny", "", "malformed", "", "none")
}

// TestFlowAcrossQueues: with two shards, a flow's packets may come from
// different queues (--queue-cpu-fanout, a logged SYN); the engine keeps
// the flow in one shard and gives each packet's verdict to the queue it
// came from.
func TestFlowAcrossQueues(t *testing.T) {
	p, err := policy.Parse("p.yaml", []byte(labPolicy), policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	recs := []*recorder{newRecorder(), newRecorder()}
	var lines []string
	var mu sync.Mutex
	e, err := New(Config{Log: func(r *declog.Record) { mu.Lock(); lines = append(lines, r.Name); mu.Unlock() }}, p, 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	e.Attach(0, recs[0])
	e.Attach(1, recs[1])
	hello := clientHello(t, "allowed.example.test")
	for i := range 20 {
		pk := func(id uint32, q uint16, syn bool, seq uint32, payload []byte) *Packet {
			return &Packet{ID: id, Queue: q, Src: client, Dst: server, SrcPort: uint16(30000 + i), DstPort: 443,
				Proto: policy.TCP, SYN: syn, Seq: seq, Payload: payload}
		}
		id := uint32(100 * i)
		e.Handle(pk(id+1, 0, true, 1000, nil))
		e.Handle(pk(id+2, 1, false, 1001, hello[:100]))
		e.Handle(pk(id+3, 0, false, 1101, hello[100:]))
		if _, ok := recs[0].verdicts[id+3]; !ok {
			t.Fatalf("flow %d: the last segment's verdict did not go to queue 0", i)
		}
		if v, ok := recs[1].verdicts[id+2]; !ok || v != policy.Allow {
			t.Fatalf("flow %d: the first segment's verdict did not go to queue 1: %v %v", i, v, ok)
		}
	}
	if len(lines) != 20 {
		t.Errorf("%d decision lines for 20 flows", len(lines))
	}
	used := 0
	for _, s := range e.shards {
		if len(s.flows) > 0 {
			used++
		}
	}
	if used != 2 {
		t.Errorf("flows in %d shards, want both", used)
	}
	for q := range e.queued {
		if n := e.queued[q].Load(); n != 0 {
			t.Errorf("queue %d: %d packets still counted as held", q, n)
		}
	}
}

// oneSYN is a SYNSource that holds at most one logged SYN, without
// allocating.
type oneSYN struct {
	p    Packet
	full bool
}

func (o *oneSYN) Drain(fn func(*Packet)) (empty, lost bool) {
	if o.full {
		o.full = false
		fn(&o.p)
	}
	return true, false
}

// TestEngineHandleAllocs: a flow through Engine.Handle, over two shards,
// its SYN logged and its hello queued, allocates only the name's string.
func TestEngineHandleAllocs(t *testing.T) {
	p, err := policy.Parse("p.yaml", []byte(labPolicy), policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{now: time.Unix(1_800_000_000, 0)}
	syn := &oneSYN{}
	e, err := New(Config{Now: clock.Now, Log: func(*declog.Record) {}, SYNs: syn}, p, 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	e.Attach(0, nopSink{})
	e.Attach(1, nopSink{})
	e.SetSYNLogged([]uint16{443})
	hello := clientHello(t, "allowed.example.test")
	sport := uint16(1000)
	var pk Packet
	run := func() {
		sport++
		syn.p = Packet{Src: client, Dst: server, SrcPort: sport, DstPort: 443, Proto: policy.TCP, Seq: 100, SYN: true, Logged: true}
		syn.full = true
		pk = Packet{Queue: uint16(sport % 2), Src: client, Dst: server, SrcPort: sport, DstPort: 443, Proto: policy.TCP, Seq: 101, Payload: hello}
		e.Handle(&pk)
		clock.Add(time.Minute)
		e.Tick(clock.Now())
	}
	run()
	if n := testing.AllocsPerRun(50, run); n > 1 {
		t.Errorf("a flow through Engine.Handle costs %v allocations, want at most 1", n)
	}
}

// TestLoggedSYNDrainsToTheEnd: a flow's data drains the whole log, the
// other flows' SYNs with it.
func TestLoggedSYNDrainsToTheEnd(t *testing.T) {
	h, syns := newSYNHarness(t, labPolicy)
	hello := clientHello(t, "allowed.example.test")
	a, b := h.tcp(server, 443), h.tcp(server, 443)
	a.loggedSYN(syns)
	b.loggedSYN(syns)
	h.wantVerdict(a.send(hello), policy.Allow)
	if n := len(syns.pending); n != 0 || h.e.Stats().SYNsLogged.Load() != 2 {
		t.Fatalf("%d SYNs left in the log after a's data, want none", n)
	}
	h.wantVerdict(b.send(hello), policy.Allow)
}

// TestLoggedSecondISN: SYN a logged, a reset, SYN b logged on the same
// 5-tuple (the server now at b), then a hello at a+1, which the server
// discards as old: both SYNs are drained before the hello is read, and
// the flow is denied malformed. (When the log was drained only up to the
// flow's first SYN, the hello at a+1 was allowed.)
func TestLoggedSecondISN(t *testing.T) {
	h, syns := newSYNHarness(t, labPolicy)
	f := h.tcp(server, 443)
	f.loggedSYN(syns)
	b := *f
	b.isn += 5000
	b.loggedSYN(syns)
	id := f.send(clientHello(t, "allowed.example.test"))
	if v, ok := h.rec.verdict(id); ok && v == policy.Allow {
		t.Fatalf("the hello at a+1 was allowed with SYN b in the log")
	}
	if ls := h.rec.logged(); len(ls) != 1 || ls[0].Reason != policy.ReasonMalformed {
		t.Errorf("lines %+v, want one deny malformed", ls)
	}
}

// TestQueuedSYNToLoggedPort: SYN a logged (the server at a), then a SYN b
// of the same 5-tuple that the rules queue (IP options, say) and a hello
// at b+1: the queued SYN is dropped (on a logged port where the stream
// starts comes from the log alone), the flow stays at a, and the hello at
// b+1, before a+1, is malformed. The same when the log lost SYN a: the
// queued SYN cannot anchor the flow, the hello is denied. (Started from b,
// the hello at b+1 was allowed.)
func TestQueuedSYNToLoggedPort(t *testing.T) {
	for _, lost := range []bool{false, true} {
		h, syns := newSYNHarness(t, labPolicy)
		f := h.tcp(server, 443)
		if lost {
			syns.lost = true
		} else {
			f.loggedSYN(syns)
		}
		f.isn -= 5000
		syn := f.syn()
		h.rec.mu.Lock()
		dropped := slices.Contains(h.rec.dropped, syn)
		h.rec.mu.Unlock()
		if !dropped || h.e.Stats().SYNsQueuedLogged.Load() != 1 {
			t.Errorf("lost %v: the queued SYN to a logged port: dropped %v, counted %d", lost, dropped, h.e.Stats().SYNsQueuedLogged.Load())
		}
		id := f.send(clientHello(t, "allowed.example.test"))
		if v, ok := h.rec.verdict(id); !ok || v != policy.Deny {
			t.Errorf("lost %v: the hello at b+1: verdict %v %v, want deny", lost, v, ok)
		}
	}
}

// TestSecondISNWhileReading: SYN a logged, part of a hello at a+1 read,
// then a reset and SYN b logged (the server now at b), then the rest of
// the hello at a+1: the log is drained before that segment is read, and
// the flow is denied malformed. (Drained only for a flow's first segment,
// the hello was allowed.)
func TestSecondISNWhileReading(t *testing.T) {
	h, syns := newSYNHarness(t, labPolicy)
	hello := clientHello(t, "allowed.example.test")
	f := h.tcp(server, 443)
	f.loggedSYN(syns)
	h.wantHeld(f.send(hello[:100]))
	b := *f
	b.isn += 60000
	b.loggedSYN(syns)
	id := f.send(hello[100:])
	if v, ok := h.rec.verdict(id); !ok || v != policy.Deny {
		t.Fatalf("the rest of the hello: verdict %v %v, want deny", v, ok)
	}
	if ls := h.rec.logged(); len(ls) != 1 || ls[0].Reason != policy.ReasonMalformed {
		t.Errorf("lines %+v, want one deny malformed", ls)
	}
}

// TestNewConnectionOnDecidedTuple: a connection allowed, then a new one on
// the same 5-tuple (another ISN; conntrack starts it afresh) whose hello
// names a denied name, with the first still lingering in the table: the
// new one is a flow of its own and denied by rule, SYN logged or queued.
// (It inherited the lingering allow.) A legitimate reuse after a deny gets
// its own decision too.
func TestNewConnectionOnDecidedTuple(t *testing.T) {
	for _, logged := range []bool{true, false} {
		h, syns := newSYNHarness(t, labPolicy)
		if !logged {
			h.e.SetSYNLogged(nil)
		}
		syn := func(f *tcpFlow) {
			if logged {
				f.loggedSYN(syns)
				return
			}
			f.syn()
		}
		f := h.tcp(server, 443)
		syn(f)
		h.wantVerdict(f.send(clientHello(t, "allowed.example.test")), policy.Allow)
		b := *f
		b.isn, b.offset = f.isn+123456, 0
		syn(&b)
		if v, ok := h.rec.verdict(b.send(clientHello(t, "denied.example.test"))); !ok || v != policy.Deny {
			t.Errorf("logged %v: a new connection's hello naming a denied name: %v %v, want deny", logged, v, ok)
		}
		c := b
		c.isn, c.offset = b.isn+777, 0
		syn(&c)
		if v, ok := h.rec.verdict(c.send(clientHello(t, "allowed.example.test"))); !ok || v != policy.Allow {
			t.Errorf("logged %v: a new connection after a deny, allowed name: %v %v, want allow", logged, v, ok)
		}
	}
}

// TestSecondISNWhileVerifying: SYN b logged while the flow's name is
// verified: the log is drained before the answer decides, and the flow is
// denied malformed.
func TestSecondISNWhileVerifying(t *testing.T) {
	release := make(chan struct{})
	syns := &fakeSYNs{}
	h := newHarness(t, labPolicy, func(c *Config) { c.SYNs = syns; c.Verifier = &heldVerifier{release: release} })
	h.e.SetSYNLogged([]uint16{443})
	f := h.tcp(server, 443)
	f.loggedSYN(syns)
	id := f.send(clientHello(t, "allowed.example.test"))
	b := *f
	b.isn += 60000
	b.loggedSYN(syns)
	close(release)
	h.e.verifyWG.Wait()
	if v, ok := h.rec.verdict(id); !ok || v != policy.Deny {
		t.Fatalf("the verified hello with SYN b logged meanwhile: %v %v, want deny", v, ok)
	}
}

// heldVerifier verifies every name once release is closed.
type heldVerifier struct{ release chan struct{} }

func (v *heldVerifier) Cached(string, netip.Addr) decide.Answer { return 0 }
func (v *heldVerifier) Verify(ctx context.Context, _ string, _ netip.Addr, _ time.Time) (Verification, error) {
	<-v.release
	return Verification{Answer: decide.Match}, nil
}

// TestSYNLogLost: when the log reports SYNs lost, every undecided flow to a
// logged port is denied, limit syn_log (its later SYN, another ISN, may be
// among them); flows to other ports are left alone.
func TestSYNLogLost(t *testing.T) {
	h, syns := newSYNHarness(t, labPolicy)
	f := h.tcp(server, 443)
	f.loggedSYN(syns)
	g := h.tcp(server, 80) // SYNs to 80 are queued here
	g.syn()
	h.e.Tick(h.clock.Now())
	syns.lost = true
	h.e.Tick(h.clock.Now())
	ls := h.rec.logged()
	if len(ls) != 1 || ls[0].SrcPort != f.sport || ls[0].Reason != policy.ReasonLimit {
		t.Fatalf("lines %+v, want flow %d denied limit", ls, f.sport)
	}
	if n := h.e.Stats().Limited(LimitSYNLog); n != 1 {
		t.Errorf("limit syn_log counted %d, want 1", n)
	}
	h.wantVerdict(g.send(clientHello(t, "allowed.example.test")), policy.Allow)
}

// TestSYNPayloadDropped: a SYN carrying a hello to an inspected port is
// dropped and decides nothing (a server may or may not read the data: a
// name read from it may not be the server's); the flow goes on from the
// client's plain SYN. On a port decided by address it is the SYN's
// verdict as always.
func TestSYNPayloadDropped(t *testing.T) {
	h := newHarness(t, labPolicy, nil)
	hello := clientHello(t, "allowed.example.test")
	f := h.tcp(server, 443)
	p := f.packet(true, f.isn, hello)
	h.s.Handle(p)
	h.rec.mu.Lock()
	dropped := slices.Contains(h.rec.dropped, p.ID)
	h.rec.mu.Unlock()
	if !dropped || len(h.rec.logged()) != 0 || h.e.Stats().SYNPayloads.Load() != 1 {
		t.Fatalf("a SYN with a hello: dropped %v, lines %+v, counted %d", dropped, h.rec.logged(), h.e.Stats().SYNPayloads.Load())
	}
	h.wantPassed(f.syn())
	h.wantVerdict(f.send(hello), policy.Allow)

	partner := h.tcp(netip.MustParseAddr("198.51.100.7"), 22)
	q := partner.packet(true, partner.isn, []byte("SSH-2.0-x\r\n"))
	h.s.Handle(q)
	h.wantVerdict(q.ID, policy.Allow)
}

// TestNoGuessedISN: a flow whose first packet egressd sees is data (it
// started after the SYN) is denied, limit no_syn, never read from a
// guessed ISN: here the hello lies wholly before the stream's first byte,
// where a server discards it. The same on a port whose SYNs are logged is
// limit syn_log.
func TestNoGuessedISN(t *testing.T) {
	h := newHarness(t, labPolicy, nil)
	hello := clientHello(t, "allowed.example.test")
	f := h.tcp(server, 443)
	f.offset = -uint32(len(hello)) - 1
	h.wantVerdict(f.send(hello), policy.Deny)
	if n := h.e.Stats().Limited(LimitNoSYN); n != 1 {
		t.Errorf("limit no_syn counted %d, want 1", n)
	}
	g := h.tcp(netip.MustParseAddr("198.51.100.7"), 22) // decided by address: no SYN needed
	h.wantVerdict(g.send([]byte("SSH-2.0-x\r\n")), policy.Allow)

	hs, _ := newSYNHarness(t, labPolicy)
	l := hs.tcp(server, 443)
	hs.wantVerdict(l.send(hello), policy.Deny)
	if n := hs.e.Stats().Limited(LimitSYNLog); n != 1 {
		t.Errorf("limit syn_log counted %d, want 1", n)
	}
}
