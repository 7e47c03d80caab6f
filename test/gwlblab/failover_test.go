package gwlblab

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/egressd/egressd/pkg/gwlb"
	"github.com/egressd/egressd/test/lab"
)

// portFor finds a client source port whose new flow to dst:dport (proto 6
// or 17) the fake would send to target want.
func portFor(t *testing.T, g *lab.GWLBLab, from int, dst string, dport uint16, proto uint8, want int) int {
	t.Helper()
	for p := from; p < from+2000; p++ {
		k := gwlb.Key{Src: netip.MustParseAddr(lab.ClientAddr).As4(), Dst: netip.MustParseAddr(dst).As4(),
			SrcPort: uint16(p), DstPort: dport, Proto: proto}
		if g.Fake.TargetFor(k) == want {
			return p
		}
	}
	t.Fatalf("no port from %d hashes to target %d", from, want)
	return 0
}

// dialFrom opens a TCP connection from the client's port to addr.
func dialFrom(g *lab.GWLBLab, port int, addr string) (net.Conn, error) {
	var c net.Conn
	err := g.Client.Do(func() (err error) {
		d := net.Dialer{Timeout: 3 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(lab.ClientAddr), Port: port}}
		c, err = d.Dial("tcp", addr)
		return err
	})
	return c, err
}

// echoes reports whether one round trip on the echo connection works.
func echoes(c net.Conn, msg string, timeout time.Duration) bool {
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(c, msg); err != nil {
		return false
	}
	buf := make([]byte, len(msg))
	_, err := io.ReadFull(c, buf)
	return err == nil && string(buf) == msg
}

// hammer tries a TLS handshake naming the denied name every 100 ms until
// stop; it returns how many it tried and how many completed.
func hammer(g *lab.GWLBLab, stop <-chan struct{}) (tried, passed *atomic.Int64, done *sync.WaitGroup) {
	tried, passed, done = new(atomic.Int64), new(atomic.Int64), new(sync.WaitGroup)
	done.Add(1)
	go func() {
		defer done.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			tried.Add(1)
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			raw, err := g.Client.DialContext(ctx, "tcp", net.JoinHostPort(lab.OtherAddr, "443"))
			if err == nil {
				c := tls.Client(raw, &tls.Config{ServerName: "denied.example.test", RootCAs: g.CA.Pool})
				if c.HandshakeContext(ctx) == nil {
					passed.Add(1)
				}
				c.Close()
			}
			cancel()
		}
	}()
	return tried, passed, done
}

// TestTargetKilled: a target dies (egressd killed) while flows are open on
// it and on the others, and a client keeps asking for a denied name the
// whole time. New flows go to the healthy targets once the load balancer
// sees the failure. no_rebalance: the failed target's flows stay on it and
// die with it. rebalance: they move to a healthy target, where a TCP flow
// met mid-stream is not adopted (conntrack finds it INVALID: no handshake)
// and stays dead, while a UDP flow is decided afresh and resumes. The
// denied name never passes, and no reply is refused.
func TestTargetKilled(t *testing.T) {
	for _, rebalance := range []bool{false, true} {
		name := "no_rebalance"
		if rebalance {
			name = "rebalance"
		}
		t.Run(name, func(t *testing.T) {
			g := start(t, "one-arm", 3, lab.GWLBTargetOptions{})
			g.Fake.Rebalance.Store(rebalance)
			echo := net.JoinHostPort(lab.CIDRAddr, "22")
			tcp := map[int]net.Conn{}
			for _, tg := range []int{0, 1} {
				c, err := dialFrom(g, portFor(t, g, 41000+tg*2000, lab.CIDRAddr, 22, 6, tg), echo)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				if !echoes(c, "before", 3*time.Second) {
					t.Fatalf("the flow on target %d does not echo", tg)
				}
				tcp[tg] = c
			}
			uport := portFor(t, g, 45000, lab.CIDRAddr, lab.UDPEchoPort, 17, 0)
			if got, err := udpFrom(g, lab.ClientAddr, uport, []byte("before"), 3*time.Second); err != nil || string(got) != "before" {
				t.Fatalf("UDP on target 0: %q %v", got, err)
			}

			stop := make(chan struct{})
			tried, passed, done := hammer(g, stop)
			time.Sleep(300 * time.Millisecond)
			g.Targets[0].Egressd.Kill()
			if err := g.Fake.WaitHealth(0, false, 5*time.Second); err != nil {
				t.Fatal(err)
			}
			// New flows work (on 1 or 2).
			deadline := time.Now().Add(5 * time.Second)
			for {
				c, err := g.Client.DialContext(ctxT(t, 3*time.Second), "tcp", echo)
				if err == nil && echoes(c, "new", 2*time.Second) {
					c.Close()
					break
				}
				if c != nil {
					c.Close()
				}
				if time.Now().After(deadline) {
					t.Fatal("no new flow works after the failure")
				}
			}
			if !echoes(tcp[1], "after", 3*time.Second) {
				t.Error("the flow on a healthy target stopped")
			}
			if echoes(tcp[0], "after", time.Second) {
				t.Error("a TCP flow of the failed target still works: it was adopted mid-stream")
			}
			got, err := udpFrom(g, lab.ClientAddr, uport, []byte("after"), 1500*time.Millisecond)
			switch moved, _, _ := g.Fake.FlowOf(udpKey(lab.ClientAddr, uport)); {
			case !rebalance && err == nil:
				t.Errorf("no_rebalance: the UDP flow of the failed target still works (%q)", got)
			case rebalance && (err != nil || string(got) != "after"):
				t.Errorf("rebalance: the UDP flow did not resume on target %d: %q %v", moved, got, err)
			case rebalance:
				if moved == 0 {
					t.Error("rebalance: the UDP flow is still on the failed target")
				}
				// Decided again where it landed.
				if _, err := g.Targets[moved].Egressd.WaitDecision(func(d lab.Decision) bool {
					return d.Sport == uport && d.Verdict == "allow" && d.Proto == "udp"
				}, 3*time.Second); err != nil {
					t.Errorf("the resumed UDP flow was not decided again on target %d: %v", moved, err)
				}
			}
			time.Sleep(300 * time.Millisecond)
			close(stop)
			done.Wait()
			if passed.Load() != 0 || tried.Load() < 5 {
				t.Errorf("denied name during the failure: %d of %d handshakes completed", passed.Load(), tried.Load())
			}
			if slices.Contains(g.Servers.SNIs(), "denied.example.test") {
				t.Error("a server saw the denied name")
			}
			noRefusals(t, g)
		})
	}
}

// TestDrain: SIGTERM makes a target's /readyz false at once; the load
// balancer then sends it no new flow, while its existing flows keep
// working for the drain (the deregistration delay); then egressd exits 0.
func TestDrain(t *testing.T) {
	const drain = 4 * time.Second
	g := start(t, "one-arm", 2, lab.GWLBTargetOptions{Drain: drain})
	c, err := dialFrom(g, portFor(t, g, 41000, lab.CIDRAddr, 22, 6, 0), net.JoinHostPort(lab.CIDRAddr, "22"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !echoes(c, "before", 3*time.Second) {
		t.Fatal("no echo before the drain")
	}
	e := g.Targets[0].Egressd
	began := time.Now()
	if err := e.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		code, body, err := g.Readyz(0)
		if err == nil && code == 503 && strings.Contains(body, "draining") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz during the drain: %d %q %v", code, body, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := g.Fake.WaitHealth(0, false, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	if v, err := g.Metric(0, "egressd_gwlb_draining"); err != nil || v != 1 {
		t.Errorf("egressd_gwlb_draining = %v %v, want 1", v, err)
	}
	// New flows go to the other target; the old one keeps going.
	for i := range 5 {
		port := 47000 + i
		k := gwlb.Key{Src: netip.MustParseAddr(lab.ClientAddr).As4(), Dst: netip.MustParseAddr(lab.CIDRAddr).As4(), SrcPort: uint16(port), DstPort: 22, Proto: 6}
		if tg := g.Fake.TargetFor(k); tg != 1 {
			t.Errorf("a new flow would go to target %d while 0 drains", tg)
		}
	}
	if nc, err := dialFrom(g, 47100, net.JoinHostPort(lab.CIDRAddr, "22")); err != nil || !echoes(nc, "new", 3*time.Second) {
		t.Errorf("a new flow during the drain: %v", err)
	} else {
		nc.Close()
	}
	if !echoes(c, "during", 2*time.Second) {
		t.Error("an existing flow stopped during the drain")
	}
	select {
	case <-e.Exited():
		t.Fatalf("egressd exited %s after SIGTERM, before the drain of %s", time.Since(began), drain)
	case <-time.After(drain - time.Since(began) - 500*time.Millisecond):
	}
	if !echoes(c, "late", 2*time.Second) {
		t.Error("an existing flow stopped before the drain's end")
	}
	select {
	case <-e.Exited():
		if err := e.ExitErr(); err != nil {
			t.Errorf("egressd after the drain: %v", err)
		}
		if took := time.Since(began); took < drain {
			t.Errorf("exited after %s, before the drain of %s", took, drain)
		}
	case <-time.After(drain + 6*time.Second):
		t.Fatalf("egressd still running %s after SIGTERM", time.Since(began))
	}
	noRefusals(t, g)
}
