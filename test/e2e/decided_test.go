package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket/layers"

	"github.com/egressd/egressd/test/lab"
)

// Every flow ends with one decision, and the kernel knows it: these tests
// look at what conntrack and the kernel queues hold after egressd decided,
// not only at the decision lines.

// queueState is one line of /proc/net/netfilter/nfnetlink_queue.
type queueState struct {
	num, waiting, dropped, userDropped, lastID uint64
}

// natQueues reads the NAT namespace's bound queues, by number.
func natQueues(t *testing.T, s *setup) map[uint64]queueState {
	t.Helper()
	out, err := lab.Exec(context.Background(), s.NAT, "cat", "/proc/net/netfilter/nfnetlink_queue")
	if err != nil {
		t.Fatalf("nfnetlink_queue: %v: %s", err, out)
	}
	return parseQueues(string(out))
}

// parseQueues reads the lines of /proc/net/netfilter/nfnetlink_queue.
func parseQueues(text string) map[uint64]queueState {
	qs := map[uint64]queueState{}
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		var v [8]uint64
		for i := range v {
			v[i], _ = strconv.ParseUint(f[i], 10, 64)
		}
		qs[v[0]] = queueState{num: v[0], waiting: v[2], dropped: v[5], userDropped: v[6], lastID: v[7]}
	}
	return qs
}

// waitQueuesDrained waits until no packet waits in any of the NAT's queues
// and fails the test if some still do after 2s.
func waitQueuesDrained(t *testing.T, s *setup, want int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		qs := natQueues(t, s)
		waiting := 0
		for _, q := range qs {
			waiting += int(q.waiting)
		}
		if waiting == 0 && len(qs) == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("queues: %+v; want %d bound queues and no packet waiting", qs, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// clientSources adds n more addresses to the client (198.18.1.100 on), so
// that flows spread over the queues: --queue-balance hashes the addresses.
func clientSources(t *testing.T, s *setup, n int) []string {
	t.Helper()
	var out []string
	for i := 0; i < n; i++ {
		a := fmt.Sprintf("198.18.1.%d", 100+i)
		if o, err := lab.Exec(context.Background(), s.Client, "ip", "addr", "add", a+"/24", "dev", "c0"); err != nil {
			t.Fatalf("ip addr add %s: %v: %s", a, err, o)
		}
		out = append(out, a)
	}
	return out
}

// curlFrom fetches name over HTTPS from a client source address.
func curlFrom(s *setup, src, name, addr string) lab.CurlResult {
	return s.Curl(context.Background(), "https://"+name+"/", name, "443", addr, "--interface", src, "--max-time", "3")
}

// TestFailOpenFiltersOnEveryQueue: with fail_open, a running egressd
// filters exactly as without it, on every queue; with egressd gone new
// flows pass; restarted, it filters again; and no packet is left waiting
// in any queue.
func TestFailOpenFiltersOnEveryQueue(t *testing.T) {
	for _, queues := range []int{1, 2, 4} {
		t.Run(fmt.Sprintf("%d queues", queues), func(t *testing.T) {
			env := []string{fmt.Sprintf("EGRESSD_QUEUE_COUNT=%d", queues)}
			s := start(t, labPolicy, lab.Rules{FailOpen: true, Queues: fmt.Sprintf("0:%d", queues)},
				lab.EgressdOptions{Config: "fail_open: true\n", Env: env})
			srcs := clientSources(t, s, 24)
			// queues+1: the reply queue of fail_open.
			filters := func(when string) {
				t.Helper()
				before := natQueues(t, s)
				for _, src := range srcs {
					if r := curlFrom(s, src, "allowed.example.test", lab.ServerAddr); r.Exit != 0 {
						t.Fatalf("%s: an allowed name from %s failed: %s", when, src, r)
					}
					if r := curlFrom(s, src, "denied.example.test", lab.OtherAddr); r.Exit == 0 {
						t.Fatalf("%s: a denied name from %s passed: %s", when, src, r)
					}
				}
				after := natQueues(t, s)
				for q := uint64(0); q < uint64(queues); q++ {
					if after[q].lastID == before[q].lastID {
						t.Errorf("%s: queue %d saw no packet of %d flows: the test did not reach it", when, q, 2*len(srcs))
					}
				}
				waitQueuesDrained(t, s, queues+1)
			}
			filters("egressd running")

			s.E.Kill()
			for _, src := range srcs[:4] {
				for _, name := range []string{"allowed.example.test", "denied.example.test"} {
					if r := curlFrom(s, src, name, lab.ServerAddr); r.Exit != 0 {
						t.Fatalf("egressd down, fail_open: %s from %s did not pass: %s", name, src, r)
					}
				}
			}

			e, err := s.StartEgressd(lab.EgressdOptions{Binary: egressdBin, Policy: labPolicy, Config: "fail_open: true\n", Env: env})
			if err != nil {
				t.Fatal(err)
			}
			s.E = e
			filters("egressd restarted")
		})
	}
}

var ctMark = regexp.MustCompile(`\bmark=(\d+)`)

// conntrackMark returns the mark of the NAT's connection from the client's
// port sport, and false when conntrack holds no such connection.
func conntrackMark(t *testing.T, s *setup, proto string, sport int) (uint32, bool) {
	t.Helper()
	out, err := lab.Exec(context.Background(), s.NAT, "conntrack", "-L", "-p", proto, "--orig-port-src", strconv.Itoa(sport))
	if err != nil && !strings.Contains(string(out), "0 flow entries") {
		t.Fatalf("conntrack -L: %v: %s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if m := ctMark.FindStringSubmatch(line); m != nil {
			v, _ := strconv.ParseUint(m[1], 10, 32)
			return uint32(v), true
		}
	}
	return 0, false
}

// wantKernelDeny fails the test unless the connection from sport is marked
// deny in conntrack (0x2 under the mask 0x3), or gone.
func wantKernelDeny(t *testing.T, s *setup, proto string, sport int, d lab.Decision) {
	t.Helper()
	// The mark is set before the decision is counted; allow the kernel a
	// moment to show it.
	deadline := time.Now().Add(time.Second)
	for {
		mark, ok := conntrackMark(t, s, proto, sport)
		if !ok || mark&0x3 == 0x2 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s, conntrack holds the connection with mark %#x, not deny", d, mark)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestEveryDenyReachesTheKernel: whatever the reason for a deny, and
// whether or not egressd held a packet of the flow when it decided,
// conntrack then holds the connection marked deny (or not at all).
func TestEveryDenyReachesTheKernel(t *testing.T) {
	s := start(t, labPolicy, lab.Rules{}, lab.EgressdOptions{Config: "hello: {timeout: 1s}\nlimits: {held_packets: 3}\n"})
	allowed := clientHello(t, &tls.Config{ServerName: "allowed.example.test"})
	other := clientHello(t, &tls.Config{ServerName: "other.example.test"})
	denied := clientHello(t, &tls.Config{ServerName: "denied.example.test"})
	for _, tc := range []struct {
		name   string
		dst    string
		port   uint16
		reason string
		send   func(c *lab.RawTCP) error
	}{
		{"deny rule", lab.ServerAddr, 443, "rule", func(c *lab.RawTCP) error { return c.SendAll(0, denied) }},
		{"default", lab.OtherAddr, 443, "default", func(c *lab.RawTCP) error { return c.SendAll(0, other) }},
		{"dns-mismatch", lab.OtherAddr, 443, "dns-mismatch", func(c *lab.RawTCP) error { return c.SendAll(0, allowed) }},
		{"incomplete, nothing held", lab.OtherAddr, 443, "incomplete", func(*lab.RawTCP) error { return nil }},
		{"incomplete, half a hello held", lab.ServerAddr, 443, "incomplete", func(c *lab.RawTCP) error { return c.Send(0, allowed[:100]) }},
		{"malformed", lab.ServerAddr, 443, "malformed", func(c *lab.RawTCP) error {
			lie := append([]byte(nil), allowed[50:150]...)
			lie[10] ^= 0xff
			if err := c.Send(0, allowed[:100]); err != nil {
				return err
			}
			return c.Send(50, lie)
		}},
		{"not-tls-or-http", lab.ServerAddr, 443, "not-tls-or-http", func(c *lab.RawTCP) error { return c.Send(0, []byte("\x00\x01not a hello")) }},
		{"limit (held packets)", lab.ServerAddr, 443, "limit", func(c *lab.RawTCP) error {
			for i := 0; i < 5; i++ {
				if err := c.Send(10*i, allowed[10*i:10*i+10]); err != nil {
					return err
				}
			}
			return nil
		}},
		{"deny on the SYN", lab.OtherAddr, 22, "rule", func(*lab.RawTCP) error { return nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := s.NewRawTCP(tc.dst, tc.port)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Handshake(5 * time.Second); err != nil && tc.port != 22 {
				t.Fatal(err)
			}
			must(t, tc.send(c))
			d, err := s.E.WaitDecision(bySport(c.SrcPort()), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if d.Verdict != "deny" || d.Reason != tc.reason {
				t.Fatalf("decision %s; want deny, reason %s", d, tc.reason)
			}
			wantKernelDeny(t, s, "tcp", c.SrcPort(), d)
		})
	}
}

// TestNothingCrossesAfterADeniedHandshake: a handshake to a destination no
// rule allows, then silence. egressd denies it at hello.timeout with no
// packet in hand; ten seconds later the client's pure ACK with a 30-byte
// experimental option must not reach the server (an unmarked connection
// would carry ACKs, and their options, for conntrack's whole ESTABLISHED
// lifetime).
func TestNothingCrossesAfterADeniedHandshake(t *testing.T) {
	s := start(t, labPolicy, lab.Rules{}, lab.EgressdOptions{Config: "hello: {timeout: 1s}\n"})
	c, err := s.NewRawTCP(lab.OtherAddr, 443)
	if err != nil {
		t.Fatal(err)
	}
	must(t, c.Handshake(5*time.Second))
	d, err := s.E.WaitDecision(bySport(c.SrcPort()), 5*time.Second)
	if err != nil || d.Verdict != "deny" || d.Reason != "incomplete" {
		t.Fatalf("decision %s: %v", d, err)
	}
	wantKernelDeny(t, s, "tcp", c.SrcPort(), d)
	capture, err := s.StartCapture(s.Inet, "i0", fmt.Sprintf("tcp and src host %s and src port %d", lab.NATPublic, c.SrcPort()))
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Second)
	// A pure ACK carrying 30 bytes of an experimental option (kind 254).
	covert := layers.TCPOption{OptionType: 254, OptionData: []byte("egressd-covert-channel-bytes")}
	must(t, c.SendACK(lab.WithOptions(covert)))
	c.Wait(500 * time.Millisecond)
	pkts, err := capture.Stop()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pkts {
		// The server's own keepalives meet the deny mark too, and the
		// NAT's REJECT answers them with a reset: that is all that may
		// arrive, and it carries nothing of the client's.
		if !p.RST || p.Payload != 0 {
			t.Errorf("a packet of a denied flow reached the server ten seconds after the deny: %+v", p)
		}
	}
}

// TestSYNRetransmissionsDecideOnce: a flow denied at the held-packet limit
// by a SYN retransmission is decided once: one decision line, and the
// flow table's count is not eroded (a second flow is still decided).
func TestSYNRetransmissionsDecideOnce(t *testing.T) {
	s := start(t, labPolicy, lab.Rules{}, lab.EgressdOptions{Config: "limits: {held_packets: 2}\n"})
	hello := clientHello(t, &tls.Config{ServerName: "allowed.example.test"})
	c, err := s.NewRawTCP(lab.ServerAddr, 443)
	if err != nil {
		t.Fatal(err)
	}
	must(t, c.Handshake(5*time.Second))
	must(t, c.Send(0, hello[:10]))
	must(t, c.Send(10, hello[10:20]))
	for i := 0; i < 3; i++ {
		must(t, c.SYN())
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := s.E.WaitDecision(bySport(c.SrcPort()), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	n := 0
	for _, d := range s.E.Decisions() {
		if d.Sport == c.SrcPort() {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d decision lines for one flow; want 1", n)
	}
}

// TestFalseNameMeetsDenyRules: under an address rule that allows every
// destination and a name rule that denies one, a hello without a name to
// the denied name's address is denied; a hello naming something DNS does
// not put at that address must be denied too (a lie never does better than
// silence); a hello naming a co-tenant that DNS does put there is allowed.
func TestFalseNameMeetsDenyRules(t *testing.T) {
	const pol = `
version: 1
default: deny
rules:
  - {name: anywhere, cidrs: [0.0.0.0/0], action: allow}
  - {name: no-paste, domains: [denied.example.test], action: deny}
`
	s := start(t, pol, lab.Rules{}, lab.EgressdOptions{})
	for _, tc := range []struct {
		name, sni, verdict string
	}{
		{"no name", "", "deny"},
		{"a false name", "foo.example", "deny"},
		{"the denied name", "denied.example.test", "deny"},
		{"a co-tenant DNS puts there", "other.example.test", "allow"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, s, lab.OtherAddr+":443")
			cfg := &tls.Config{ServerName: tc.sni, InsecureSkipVerify: true}
			if tc.sni == "" {
				cfg.ServerName = ""
			}
			c.Write(clientHello(t, cfg))
			d, err := s.E.WaitDecision(byConn(c), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if d.Verdict != tc.verdict {
				t.Fatalf("decision %s; want %s", d, tc.verdict)
			}
			if tc.verdict == "deny" {
				wantReset(t, c)
				return
			}
			c.SetReadDeadline(time.Now().Add(3 * time.Second))
			if n, err := c.Read(make([]byte, 1)); n == 0 {
				t.Fatalf("the allowed flow got no answer: %v", err)
			}
		})
	}
}
