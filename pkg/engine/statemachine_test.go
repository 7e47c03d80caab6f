package engine

import (
	"net/netip"
	"testing"
	"time"

	"github.com/egressd/egressd/pkg/declog"
	"github.com/egressd/egressd/pkg/policy"
)

// TestNothingHeldStillReachesTheKernel: a handshake, then silence. At
// hello.timeout the flow is denied with no packet in hand, so the verdict
// goes to the connection itself (Sink.Conclude), once, before the line.
func TestNothingHeldStillReachesTheKernel(t *testing.T) {
	for _, mode := range []Mode{Enforce, Monitor} {
		t.Run(mode.String(), func(t *testing.T) {
			h := newHarness(t, labPolicy, func(c *Config) { c.HelloTimeout = time.Second; c.Mode = mode })
			f := h.tcp(server, 443)
			h.wantPassed(f.syn())
			h.clock.Add(1100 * time.Millisecond)
			h.e.Tick(h.clock.Now())
			h.wantLine("deny", "", "incomplete", "", "none")
			want := policy.Deny
			if mode == Monitor {
				want = policy.Allow // nothing is blocked, and the rest of the flow stays in the kernel
			}
			if v, ok := h.rec.concluded[f.sport]; !ok || v != want {
				t.Fatalf("connection verdict %v (written: %v), want %s", v, ok, want)
			}
			// A flow whose deciding packet is in hand needs no conclusion.
			g := h.tcp(server, 443)
			g.syn()
			h.wantVerdict(g.send(clientHello(t, "denied.example.test")), want)
			if _, ok := h.rec.concluded[g.sport]; ok {
				t.Errorf("a flow decided with its packet in hand was concluded too")
			}
		})
	}
}

// TestDecidedOnce: a SYN retransmission that takes a flow over the
// held-packet limit denies it once: one line, and the count of undecided
// flows stays true, so the flow table's bound holds.
func TestDecidedOnce(t *testing.T) {
	h := newHarness(t, labPolicy, func(c *Config) { c.MaxHeld = 2; c.MaxFlows = 4 })
	hello := clientHello(t, "allowed.example.test")
	for i := 0; i < 10; i++ {
		f := h.tcp(server, 443)
		f.syn()
		f.send(hello[:10])
		f.send(hello[10:20])
		f.syn()
		f.syn()
	}
	lines := h.rec.logged()
	if len(lines) != 10 {
		t.Fatalf("%d decision lines for 10 flows", len(lines))
	}
	for _, l := range lines {
		if l.Reason != policy.ReasonLimit {
			t.Errorf("line %+v; want limit", l)
		}
	}
	if n := h.e.Stats().Undecided.Load(); n != 0 {
		t.Fatalf("%d undecided flows counted, want 0", n)
	}
	// The bound is intact: 4 undecided flows fit, the 5th does not.
	for i := 0; i < 4; i++ {
		h.wantPassed(h.tcp(server, 443).syn())
	}
	h.wantVerdict(h.tcp(server, 443).syn(), policy.Deny)
	h.wantLine("deny", "", "limit", "", "none")
	if n := h.e.Stats().Internal.Load(); n != 0 {
		t.Errorf("%d internal errors", n)
	}
}

// TestReusedFlowStartsClean: a flow that went through DNS verification
// (name, source, ECH set) is forgotten, and its memory serves the next
// flow, which times out: nothing of the first may show in its line.
func TestReusedFlowStartsClean(t *testing.T) {
	v := &fakeVerifier{known: map[string]netip.Addr{}, release: make(chan struct{})}
	close(v.release)
	h := newHarness(t, labPolicy, func(c *Config) { c.Verifier = v; c.HelloTimeout = time.Second; c.Linger = time.Second })
	f := h.tcp(server, 443)
	f.syn()
	f.send(clientHello(t, "allowed.example.test"))
	h.e.verifyWG.Wait()
	h.wantLine("deny", "", "dns-mismatch", "allowed.example.test", "sni")
	h.clock.Add(2 * time.Second)
	h.e.Tick(h.clock.Now()) // forgotten: back to the free list
	if n := len(h.s.free); n != 1 {
		t.Fatalf("%d flows on the free list, want 1", n)
	}
	g := h.tcp(server, 443)
	g.syn()
	if n := len(h.s.free); n != 0 {
		t.Fatalf("the free flow was not reused")
	}
	h.clock.Add(2 * time.Second)
	h.e.Tick(h.clock.Now())
	l := h.wantLine("deny", "", "incomplete", "", "none")
	if l.ECH || l.DNSCheck != declog.CheckNone || l.SrcPort != g.sport {
		t.Errorf("the reused flow's line carries the old flow's fields: %+v", l)
	}
}

// TestIllegalTransitionsRefused: the state machine's table allows exactly
// the moves of its diagram.
func TestIllegalTransitionsRefused(t *testing.T) {
	legal := map[[2]state]bool{
		{free, reading}: true, {reading, verifying}: true, {reading, decided}: true,
		{verifying, decided}: true, {decided, free}: true,
	}
	for from := free; from <= decided; from++ {
		for to := free; to <= decided; to++ {
			if got := from.canMoveTo(to); got != legal[[2]state{from, to}] {
				t.Errorf("%s -> %s: allowed %v", from, to, got)
			}
		}
	}
	h := newHarness(t, labPolicy, nil)
	f := h.s.alloc()
	if h.s.to(f, decided) || f.st != free {
		t.Fatalf("free -> decided was taken")
	}
	if n := h.e.Stats().Internal.Load(); n != 1 {
		t.Errorf("Internal = %d, want 1", n)
	}
}
