package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/test/lab"
)

// namePolicy is the lab's rules by name only: it decides no SYN on 80 or
// 443, so the rules log and forward those SYNs instead of queueing them.
const namePolicy = labPolicyHead + labNameRules

// synSet lists the ports in the NAT's SYN port set.
func synSet(t *testing.T, s *setup) []string {
	t.Helper()
	out, err := lab.Exec(context.Background(), s.NAT, "ipset", "list", "egressd-syn")
	if err != nil {
		t.Fatalf("ipset list: %v: %s", err, out)
	}
	_, m, _ := strings.Cut(string(out), "Members:\n")
	return strings.Fields(m)
}

// waitSYNSet waits until the SYN port set holds want.
func waitSYNSet(t *testing.T, s *setup, want ...string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := synSet(t, s)
		if slices.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("SYN port set %q, want %q", got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// queuedSince is how many packets the NAT's queues took since before.
func queuedSince(t *testing.T, s *setup, before map[uint64]queueState) uint64 {
	t.Helper()
	var n uint64
	for num, q := range natQueues(t, s) {
		n += q.lastID - before[num].lastID
	}
	return n
}

// TestSYNLog: where the policy decides no SYN, a new flow's SYN is logged
// and forwarded, not queued: a TLS flow costs one trip to user space (its
// hello is still read from the true ISN: TestReassembly); where the policy
// may decide a SYN, SYNs stay queued, and a denied one never reaches its
// server; a reload moves the port between the two; a flow whose SYN
// egressd never saw is denied.
func TestSYNLog(t *testing.T) {
	s := start(t, namePolicy, lab.Rules{}, lab.EgressdOptions{Env: []string{metricsEnv}})
	waitSYNSet(t, s, "80", "443")
	hello := clientHello(t, &tls.Config{ServerName: "allowed.example.test"})

	t.Run("one queued packet per TLS flow", func(t *testing.T) {
		before := natQueues(t, s)
		const flows = 5
		for range flows {
			// X25519 alone: a hello of about 250 bytes, one segment
			// whatever the stack does (Go's default, with ML-KEM, is about
			// 1.5 KB: one segment or two, as GSO and pacing have it).
			c := dial(t, s, lab.ServerAddr+":443")
			tc := tls.Client(c, &tls.Config{ServerName: "allowed.example.test", RootCAs: s.CA.Pool, CurvePreferences: []tls.CurveID{tls.X25519}})
			tc.SetDeadline(time.Now().Add(8 * time.Second))
			err := tc.Handshake()
			d, werr := s.E.WaitDecision(byConn(c), 8*time.Second)
			if err != nil || werr != nil || d.Verdict != "allow" {
				t.Fatalf("handshake %v, decision %s (%v)", err, d, werr)
			}
			tc.Close()
		}
		if n := queuedSince(t, s, before); n != flows {
			t.Errorf("%d packets queued for %d TLS flows with one-segment hellos, want one each (the hello)", n, flows)
		}
	})

	t.Run("a SYN with payload is queued, dropped, and its bytes never cross", func(t *testing.T) {
		c, err := s.NewRawTCP(lab.ServerAddr, 443)
		must(t, err)
		defer c.Close()
		cap, err := s.StartCapture(s.Inet, "i0", fmt.Sprintf("tcp and src port %d", c.SrcPort()))
		must(t, err)
		before := natQueues(t, s)
		small := clientHello(t, &tls.Config{ServerName: "allowed.example.test", CurvePreferences: []tls.CurveID{tls.X25519}})
		must(t, c.SYNWithPayload(small))
		// Whether a server reads a SYN's data depends on its stack, so
		// egressd reads no name from it: the SYN is dropped, counted.
		deadline := time.Now().Add(5 * time.Second)
		dropped := func() float64 {
			_, body := natGet(t, s, "/metrics")
			return metric(t, body, `egressd_engine_errors_total{kind="syn_payload"}`)
		}
		for dropped() < 1 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if n := dropped(); n != 1 {
			t.Errorf("egressd_engine_errors_total{kind=\"syn_payload\"} = %v, want 1", n)
		}
		if n := queuedSince(t, s, before); n != 1 {
			t.Errorf("%d packets queued for a SYN with payload, want it (1)", n)
		}
		time.Sleep(200 * time.Millisecond)
		pkts, err := cap.Stop()
		must(t, err)
		if len(pkts) > 0 {
			t.Errorf("a SYN with payload crossed: %+v", pkts[0])
		}
		for _, d := range s.E.Decisions() {
			if bySport(c.SrcPort())(d) {
				t.Errorf("a SYN with payload was decided: %s", d)
			}
		}
	})

	t.Run("a SYN the policy denies stays queued and never reaches its server", func(t *testing.T) {
		cap, err := s.StartCapture(s.Inet, "i0", "tcp and dst host "+lab.OtherAddr+" and dst port 443")
		must(t, err)
		writeAtomically(t, s.E.PolicyPath, namePolicy+"  - {name: blackhole, cidrs: [\""+lab.OtherAddr+"/32\"], ports: [443], action: deny}\n")
		waitSYNSet(t, s, "80")
		c, err := s.NewRawTCP(lab.OtherAddr, 443)
		must(t, err)
		defer c.Close()
		if err := c.Handshake(2 * time.Second); err == nil {
			t.Fatal("the handshake to a destination denied on its SYN completed")
		}
		d, err := s.E.WaitDecision(bySport(c.SrcPort()), 5*time.Second)
		if err != nil || d.Verdict != "deny" || d.Rule != "blackhole" {
			t.Fatalf("decision %s: %v", d, err)
		}
		pkts, err := cap.Stop()
		must(t, err)
		if len(pkts) != 0 {
			t.Fatalf("%d packets of a flow denied on its SYN reached inet: %+v", len(pkts), pkts)
		}
		// An allowed name on 443 still works, its SYN queued.
		if d, err := tlsHandshake(t, s, lab.ServerAddr+":443", "allowed.example.test"); err != nil || d.Verdict != "allow" {
			t.Fatalf("handshake %v, decision %s", err, d)
		}
		writeAtomically(t, s.E.PolicyPath, namePolicy)
		waitSYNSet(t, s, "80", "443")
	})

	t.Run("a flow whose SYN egressd never saw is denied", func(t *testing.T) {
		c := rawClient(t, s, lab.ServerAddr, 443) // its SYN logged to this egressd
		s.E.Kill()
		e, err := s.StartEgressd(lab.EgressdOptions{Binary: egressdBin, Policy: namePolicy, Env: []string{metricsEnv}})
		must(t, err)
		s.E = e
		waitSYNSet(t, s, "80", "443")
		must(t, c.SendAll(0, hello))
		d, err := s.E.WaitDecision(bySport(c.SrcPort()), 5*time.Second)
		if err != nil || d.Verdict != "deny" || d.Reason != "limit" {
			t.Fatalf("decision %s: %v", d, err)
		}
		if r := c.Wait(time.Second); !r.RST || r.Payload != 0 {
			t.Fatalf("want a reset and no byte from the server: %+v", r)
		}
		_, body := natGet(t, s, "/metrics")
		if v := metric(t, body, `egressd_limit_denials_total{limit="syn_log"}`); v != 1 {
			t.Errorf("syn_log denials counted %v, want 1", v)
		}
	})

	t.Run("a clean stop empties the set", func(t *testing.T) {
		must(t, s.E.Stop())
		waitSYNSet(t, s)
	})
}
