package e2e

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/egressd/egressd/test/lab"
)

// dial opens a TCP connection from the client namespace.
func dial(t *testing.T, s *setup, addr string) *net.TCPConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := s.Client.DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

func byDst(dst string, port int) func(lab.Decision) bool {
	return func(d lab.Decision) bool { return d.Dst == dst && d.Dport == port }
}

// byConn matches the decision of the flow c is one end of.
func byConn(c net.Conn) func(lab.Decision) bool {
	local := c.LocalAddr().(*net.TCPAddr)
	remote := c.RemoteAddr().(*net.TCPAddr)
	return func(d lab.Decision) bool {
		return d.Sport == local.Port && d.Dst == remote.IP.String() && d.Dport == remote.Port
	}
}

// wantReset reads from c until it fails, and wants the failure to be a TCP
// reset, not a timeout or an orderly close.
func wantReset(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err := io.ReadAll(c)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("want a connection reset, got %v", err)
	}
}

func TestHelloWithoutSNI(t *testing.T) {
	s := start(t, labPolicy, lab.Rules{}, lab.EgressdOptions{})
	noSNI := func(addr string) error {
		c := dial(t, s, addr)
		tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true}) // no ServerName: no SNI
		tc.SetDeadline(time.Now().Add(5 * time.Second))
		return tc.Handshake()
	}
	if err := noSNI(lab.ServerAddr + ":443"); err == nil {
		t.Fatal("a hello without SNI to an address no CIDR rule allows completed")
	}
	d, err := s.E.WaitDecision(byDst(lab.ServerAddr, 443), 5*time.Second)
	if err != nil || d.Verdict != "deny" || d.Reason != "default" || d.Name != "" || d.NameFrom != "none" {
		t.Fatalf("deny line %s: %v", d, err)
	}
	// A CIDR rule allows the address whatever the name, so it is decided
	// on the SYN and the nameless hello goes through.
	if err := noSNI(lab.CIDRAddr + ":443"); err != nil {
		t.Fatalf("a hello without SNI to an address a CIDR rule allows: %v", err)
	}
	d, err = s.E.WaitDecision(byDst(lab.CIDRAddr, 443), 5*time.Second)
	if err != nil || d.Verdict != "allow" || d.Rule != "lab-cidr" {
		t.Fatalf("allow line %s: %v", d, err)
	}
	if got := s.Servers.SNIs(); len(got) != 1 || got[0] != "" {
		t.Errorf("the servers saw hellos for %q; want exactly one, without SNI, at the CIDR address", got)
	}
}

func TestCIDRRuleDecidedOnSYN(t *testing.T) {
	s := start(t, labPolicy, lab.Rules{}, lab.EgressdOptions{})
	c := dial(t, s, lab.CIDRAddr+":22")
	// The decision exists before the client sends a byte.
	d, err := s.E.WaitDecision(byDst(lab.CIDRAddr, 22), 5*time.Second)
	if err != nil || d.Verdict != "allow" || d.Rule != "lab-cidr" || d.NameFrom != "none" {
		t.Fatalf("decision %s: %v", d, err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "ping\n"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping\n" {
		t.Fatalf("echo over the allowed flow: %q, %v", buf, err)
	}
	// Port 22 elsewhere: no rule, refused on the SYN.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = s.Client.DialContext(ctx, "tcp", lab.OtherAddr+":22")
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("a denied SYN: want connection refused (a reset to the SYN), got %v", err)
	}
}

func TestNotTLSOnInspectedPort(t *testing.T) {
	s := start(t, labPolicy, lab.Rules{}, lab.EgressdOptions{})
	c := dial(t, s, lab.ServerAddr+":443")
	io.WriteString(c, "HELLO I AM NOT TLS\r\n")
	wantReset(t, c)
	d, err := s.E.WaitDecision(byDst(lab.ServerAddr, 443), 5*time.Second)
	if err != nil || d.Verdict != "deny" || d.Reason != "not-tls-or-http" {
		t.Fatalf("decision %s: %v", d, err)
	}
}

// trickleConn writes every Write a few bytes at a time, each its own
// segment (TCP_NODELAY, and a pause the stack cannot coalesce across).
type trickleConn struct {
	*net.TCPConn
	chunk    int
	segments int
}

func (c *trickleConn) Write(b []byte) (int, error) {
	n := 0
	for len(b) > 0 {
		k := min(c.chunk, len(b))
		m, err := c.TCPConn.Write(b[:k])
		n += m
		if err != nil {
			return n, err
		}
		c.segments++
		b = b[k:]
		time.Sleep(time.Millisecond)
	}
	return n, nil
}

// TestHelloInManySmallSegments: a hello written a few bytes at a time with
// TCP_NODELAY crosses as many small segments, each held until the last
// one completes the hello.
//
// Held segments are not acknowledged (the server has not seen them), so a
// client can send only its initial congestion window (10 segments on
// Linux) before it waits for an ACK that comes only after the decision. A
// hello split into more segments than that cannot complete: it is denied
// "incomplete" when hello.timeout ends, failing closed (the second case).
func TestHelloInManySmallSegments(t *testing.T) {
	s := start(t, labPolicy, lab.Rules{}, lab.EgressdOptions{Config: "hello: {timeout: 2s}\n"})
	hello := clientHello(t, &tls.Config{ServerName: "allowed.example.test"})
	for _, tc := range []struct {
		name     string
		segments int
		allowed  bool
	}{
		{"within the initial window", 9, true},
		{"beyond the initial window", 60, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, s, lab.ServerAddr+":443")
			c.SetNoDelay(true)
			// The hello is written by crypto/tls; its size varies a little
			// with the key shares, so size the chunks from a sample.
			tr := &trickleConn{TCPConn: c, chunk: (len(hello) + tc.segments - 1) / tc.segments}
			conn := tls.Client(tr, &tls.Config{ServerName: "allowed.example.test", RootCAs: s.CA.Pool})
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			err := conn.Handshake()
			d, werr := s.E.WaitDecision(byConn(c), 5*time.Second)
			if werr != nil {
				t.Fatal(werr)
			}
			switch {
			case tr.segments < 8:
				t.Fatalf("the hello went out in %d writes; the test needs several segments (handshake: %v, decision %s)", tr.segments, err, d)
			case tc.allowed && (err != nil || d.Verdict != "allow"):
				t.Fatalf("hello over %d segments: handshake %v, decision %s", tc.segments, err, d)
			case !tc.allowed && (err == nil || d.Verdict != "deny" || d.Reason != "incomplete"):
				t.Fatalf("hello over %d segments: handshake %v, decision %s", tc.segments, err, d)
			}
		})
	}
}

func TestStalledHelloIsIncomplete(t *testing.T) {
	s := start(t, labPolicy, lab.Rules{}, lab.EgressdOptions{Config: "hello: {timeout: 1s}\n"})
	c := dial(t, s, lab.ServerAddr+":443")
	hello := clientHello(t, &tls.Config{ServerName: "allowed.example.test"})
	c.Write(hello[:len(hello)/2])
	d, err := s.E.WaitDecision(byConn(c), 5*time.Second)
	if err != nil || d.Verdict != "deny" || d.Reason != "incomplete" {
		t.Fatalf("decision %s: %v", d, err)
	}
	if d.LatencyUS < 900_000 {
		t.Errorf("denied after %dus of waiting; hello.timeout is 1s", d.LatencyUS)
	}
	wantReset(t, c) // the held half-hello was released with the deny mark
	if n := s.Servers.Accepted(lab.ServerAddr + ":443"); n != 1 {
		// The server saw the handshake, never a byte: the TLS server
		// counts an accept per connection.
		t.Logf("server accepted %d connections", n)
	}
	if snis := s.Servers.SNIs(); len(snis) != 0 {
		t.Errorf("the server read a hello from a flow that was never decided: %q", snis)
	}
}

// TestAmbiguousHTTP: a request whose name a server could read differently
// (two Host headers; Host against the absolute URI) is denied malformed,
// whatever the names say.
func TestAmbiguousHTTP(t *testing.T) {
	s := start(t, labPolicy, lab.Rules{}, lab.EgressdOptions{})
	for _, req := range []string{
		"GET / HTTP/1.1\r\nHost: allowed.example.test\r\nHost: denied.example.test\r\n\r\n",
		"GET http://denied.example.test/ HTTP/1.1\r\nHost: allowed.example.test\r\n\r\n",
	} {
		c := dial(t, s, lab.ServerAddr+":80")
		io.WriteString(c, req)
		d, err := s.E.WaitDecision(byConn(c), 5*time.Second)
		if err != nil || d.Verdict != "deny" || d.Reason != "malformed" {
			t.Fatalf("%q: decision %s: %v", req, d, err)
		}
		wantReset(t, c)
	}
}

// TestBadPolicyAtStart: egressd refuses to start on a bad policy, says
// where it is wrong, and the rules keep new flows out meanwhile.
func TestBadPolicyAtStart(t *testing.T) {
	l := lab.Start(t)
	if err := l.ApplyRules(lab.Rules{}); err != nil {
		t.Fatal(err)
	}
	_, err := l.StartEgressd(lab.EgressdOptions{Binary: egressdBin, Policy: labPolicy + "  - {src: 198.18.1.2, port: 443, expect: allow, name: \"*.bad\"}\n"})
	if err == nil || !strings.Contains(err.Error(), "policy.yaml:") || !strings.Contains(err.Error(), "exit status 1") {
		t.Fatalf("egressd started on a bad policy, or did not say where: %v", err)
	}
	if r := l.Curl(context.Background(), "https://allowed.example.test/", "allowed.example.test", "443", lab.ServerAddr, "--max-time", "3"); r.Exit == 0 {
		t.Fatalf("with egressd refusing to start, a flow passed: %s", r)
	}
}
