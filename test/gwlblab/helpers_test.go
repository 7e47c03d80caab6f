package gwlblab

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/test/lab"
)

// start builds a GWLB lab of n targets in mode, runs egressd on each and
// waits until the fake judges them all healthy.
func start(t *testing.T, mode string, n int, o lab.GWLBTargetOptions) *lab.GWLBLab {
	t.Helper()
	g := lab.StartGWLB(t, lab.GWLBOptions{Mode: mode, Targets: n})
	if o.Binary == "" {
		o.Binary = egressdBin
	}
	if o.Policy == "" {
		o.Policy = policy
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() { defer wg.Done(); _, errs[i] = g.StartTarget(i, o) }()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("target %d: %v", i, err)
		}
	}
	for i := range n {
		if err := g.Fake.WaitHealth(i, true, 10*time.Second); err != nil {
			code, body, _ := g.Readyz(i)
			t.Fatalf("%v: /readyz %d %s", err, code, body)
		}
	}
	t.Cleanup(func() {
		if t.Failed() {
			logState(t, g)
		}
	})
	return g
}

// logState prints what a failed test needs: the fake's counters and
// refusals, each target's GENEVE counters and decisions.
func logState(t *testing.T, g *lab.GWLBLab) {
	s := &g.Fake.Stats
	t.Logf("fake: sent %d accepted %d delivered %d; refused addr %d port %d header %d no-flow %d malformed %d; oversize %d no-target %d",
		s.Sent.Load(), s.Accepted.Load(), s.Delivered.Load(), s.RejectAddr.Load(), s.RejectPort.Load(), s.RejectHeader.Load(),
		s.RejectNoFlow.Load(), s.RejectMalformed.Load(), s.Oversize.Load(), s.NoTarget.Load())
	for _, r := range g.Fake.Rejects() {
		t.Logf("fake refused: %s", r)
	}
	for i, tg := range g.Targets {
		var b strings.Builder
		for _, m := range []string{`egressd_gwlb_packets_total{direction="decapsulated"}`, `egressd_gwlb_packets_total{direction="encapsulated"}`} {
			v, err := g.Metric(i, m)
			fmt.Fprintf(&b, " %s=%v(%v)", m, v, err)
		}
		t.Logf("target %d healthy=%v%s", i, g.Fake.Targets[i].Healthy(), b.String())
		if tg.Egressd != nil {
			for _, d := range tg.Egressd.Decisions() {
				t.Logf("target %d decision: %s", i, d.Raw)
			}
		}
	}
}

// noRefusals: every reply the targets sent carried the right addresses,
// port and header.
func noRefusals(t *testing.T, g *lab.GWLBLab) {
	t.Helper()
	s := &g.Fake.Stats
	if n := s.RejectAddr.Load() + s.RejectPort.Load() + s.RejectHeader.Load() + s.RejectNoFlow.Load() + s.RejectMalformed.Load(); n != 0 {
		t.Errorf("the fake load balancer refused %d replies: %v", n, g.Fake.Rejects())
	}
}

// decision waits for a decision line on any target.
func decision(t *testing.T, g *lab.GWLBLab, match func(lab.Decision) bool) (int, lab.Decision) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		for i, tg := range g.Targets {
			if tg.Egressd == nil {
				continue
			}
			for _, d := range tg.Egressd.Decisions() {
				if match(d) {
					return i, d
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no matching decision on any target")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func named(name, from, verdict string) func(lab.Decision) bool {
	return func(d lab.Decision) bool { return d.Name == name && d.NameFrom == from && d.Verdict == verdict }
}

// udpFrom sends payload from the client's src:sport to the UDP echo and
// returns the echo, or an error after timeout.
func udpFrom(g *lab.GWLBLab, src string, sport int, payload []byte, timeout time.Duration) ([]byte, error) {
	pc, err := g.Client.ListenPacket("udp4", net.JoinHostPort(src, fmt.Sprint(sport)))
	if err != nil {
		return nil, err
	}
	defer pc.Close()
	to := &net.UDPAddr{IP: net.ParseIP(lab.CIDRAddr), Port: lab.UDPEchoPort}
	if _, err := pc.WriteTo(payload, to); err != nil {
		return nil, err
	}
	pc.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 65536)
	n, _, err := pc.ReadFrom(buf)
	return buf[:n], err
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
