package e2e

import (
	"context"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket/layers"

	"github.com/egressd/egressd/test/lab"
)

// TestUndecidedICMPErrors: ICMP errors that quote an undecided flow's real
// addresses and ports (so conntrack finds them RELATED to it) cross the NAT
// only as path MTU discovery and unreachables need: destination
// unreachable, toward the client, no longer than the quoted header. Longer
// ones, other types, and anything toward the server are dropped: captured
// where they would arrive, they are not there.
func TestUndecidedICMPErrors(t *testing.T) {
	s := undecided(t)
	// A Linux SYN's options: MSS, SACK-permitted, timestamps, NOP, window
	// scale (20 bytes: a 40-byte header, data offset 10).
	synOptions := []layers.TCPOption{
		{OptionType: layers.TCPOptionKindMSS, OptionData: []byte{0x05, 0xb4}},
		{OptionType: layers.TCPOptionKindSACKPermitted},
		{OptionType: layers.TCPOptionKindTimestamps, OptionData: make([]byte, 8)},
		{OptionType: layers.TCPOptionKindNop},
		{OptionType: layers.TCPOptionKindWindowScale, OptionData: []byte{7}},
	}
	data := func(n int) []byte { return covert("icmp", n) }
	const (
		unreach, fragNeeded, hostUnreach, portUnreach = 3, 4, 1, 3
		sourceQuench, timeExceeded, paramProblem      = 4, 11, 12
	)
	for _, tc := range []struct {
		name       string
		toClient   bool // from inet toward the client (else from the client toward inet)
		e          lab.ICMPError
		wantArrive bool
	}{
		{"frag-needed, quoted header only", true, lab.ICMPError{Type: unreach, Code: fragNeeded, Rest: 1200}, true},
		{"port unreachable, RFC 792's 8 bytes of TCP", true, lab.ICMPError{Type: unreach, Code: portUnreach, QuotedTCP: 8}, true},
		{"host unreachable, quoted header only", true, lab.ICMPError{Type: unreach, Code: hostUnreach}, true},
		{"frag-needed quoting a SYN's whole 40-byte header", true, lab.ICMPError{Type: unreach, Code: fragNeeded, Rest: 1200, QuotedOptions: synOptions}, true},
		{"frag-needed quoting a SYN's header and one byte", true, lab.ICMPError{Type: unreach, Code: fragNeeded, Rest: 1200, QuotedOptions: synOptions, Data: data(1)}, false},
		{"frag-needed, 1000 bytes of data", true, lab.ICMPError{Type: unreach, Code: fragNeeded, Rest: 1200, Data: data(1000)}, false},
		{"host unreachable, 1000 bytes of data", true, lab.ICMPError{Type: unreach, Code: hostUnreach, Data: data(1000)}, false},
		{"frag-needed, quoted header and one byte", true, lab.ICMPError{Type: unreach, Code: fragNeeded, Rest: 1200, Data: data(1)}, false},
		{"8 bytes of TCP and one byte", true, lab.ICMPError{Type: unreach, Code: portUnreach, QuotedTCP: 8, Data: data(1)}, false},
		{"time exceeded, quoted header only", true, lab.ICMPError{Type: timeExceeded}, false},
		{"time exceeded, 1000 bytes of data", true, lab.ICMPError{Type: timeExceeded, Data: data(1000)}, false},
		{"parameter problem, quoted header only", true, lab.ICMPError{Type: paramProblem}, false},
		{"source quench, quoted header only", true, lab.ICMPError{Type: sourceQuench}, false},
		{"to the server: host unreachable, 1000 bytes of data", false, lab.ICMPError{Type: unreach, Code: hostUnreach, Data: data(1000)}, false},
		{"to the server: frag-needed, quoted header only", false, lab.ICMPError{Type: unreach, Code: fragNeeded, Rest: 1200}, false},
		{"to the server: time exceeded, quoted header only", false, lab.ICMPError{Type: timeExceeded}, false},
		{"to the server: parameter problem, 1000 bytes of data", false, lab.ICMPError{Type: paramProblem, Data: data(1000)}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := rawClient(t, s, lab.ServerAddr, 443)
			var cap *lab.Capture
			if tc.toClient {
				cap = capture(t, s, s.Client, "c0", "icmp")
				must(t, c.SendICMPFromInet(tc.e))
			} else {
				cap = capture(t, s, s.Inet, "i0", "icmp")
				must(t, c.SendICMPFromClient(tc.e))
			}
			pkts := stop(t, cap)
			wantUndecided(t, s, c)
			arrived := 0
			for _, p := range pkts {
				if p.ICMP && p.ICMPType == tc.e.Type && p.ICMPCode == tc.e.Code && p.IPLen == tc.e.Len() {
					arrived++
				} else {
					t.Errorf("an ICMP packet the test did not send: type %d code %d, %d bytes", p.ICMPType, p.ICMPCode, p.IPLen)
				}
			}
			switch {
			case tc.wantArrive && arrived != 1:
				t.Errorf("the error (%d bytes) arrived %d times, want once", tc.e.Len(), arrived)
			case !tc.wantArrive && arrived != 0:
				t.Errorf("the error (type %d code %d, %d bytes) crossed the NAT on an undecided flow", tc.e.Type, tc.e.Code, tc.e.Len())
			}
		})
	}
}

// farPolicy allows the far namespace's server by address, on a port that
// carries no name: the flow is decided (allowed) on its SYN.
const farPolicy = labRules + `
  - name: lab-far
    cidrs: [198.18.2.2/32]
    ports: [9000]
    proto: tcp
    action: allow
`

// TestPathMTUAllowedFlow: on an allowed flow every ICMP error passes, so
// path MTU discovery works across the NAT. The client uploads to a server
// behind inet, whose link to it has an MTU of 1200 on inet's end: inet
// answers the client's 1500-byte segments with "fragmentation needed"
// (quoting far more than a header, as RFC 1812 routers do), the error
// crosses the NAT's FORWARD chain toward the client, and the upload
// completes. Without it the client would retransmit full-size segments
// into the hole until its deadline.
func TestPathMTUAllowedFlow(t *testing.T) {
	s := start(t, farPolicy, lab.Rules{}, lab.EgressdOptions{})
	uploadPastSmallMTU(t, s)
	d, err := s.E.WaitDecision(byDst(lab.FarAddr, 9000), 5*time.Second)
	if err != nil || d.Verdict != "allow" || d.Rule != "lab-far" {
		t.Fatalf("decision %s: %v", d, err)
	}
}

// TestPathMTUFailOpenDown: with fail_open and egressd down, flows pass
// undecided, and so do their whole ICMP errors (the bypass of the queue
// that takes what an undecided flow may not pass): path MTU discovery
// still works.
func TestPathMTUFailOpenDown(t *testing.T) {
	s := start(t, labPolicy, lab.Rules{FailOpen: true}, lab.EgressdOptions{Config: "fail_open: true\n"})
	s.E.Kill()
	uploadPastSmallMTU(t, s)
}

// uploadPastSmallMTU adds the far namespace behind a 1200-byte hop and
// uploads 4 MiB to a server there (198.18.2.2:9000) from the client; it
// fails t unless the upload completes and inet's fragmentation-needed
// errors, longer than a quoted header, reached the client.
func uploadPastSmallMTU(t *testing.T, s *setup) {
	t.Helper()
	far, err := s.AddFar(1200)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := far.Listen("tcp", net.JoinHostPort(lab.FarAddr, "9000"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		n, _ := io.Copy(io.Discard, c)
		io.WriteString(c, strconv.FormatInt(n, 10))
	}()

	cap := capture(t, s, s.Client, "c0", "icmp")
	const size = 4 << 20
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	conn, err := s.Client.DialContext(ctx, "tcp", net.JoinHostPort(lab.FarAddr, "9000"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(15 * time.Second))
	began := time.Now()
	if _, err := conn.Write(make([]byte, size)); err != nil {
		t.Fatalf("upload through a 1200-byte hop: %v after %s", err, time.Since(began).Round(time.Millisecond))
	}
	conn.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(conn)
	if err != nil || string(got) != strconv.Itoa(size) {
		t.Fatalf("the server read %q bytes (%v); want %d", got, err, size)
	}
	t.Logf("%d bytes uploaded through the 1200-byte hop in %s", size, time.Since(began).Round(time.Millisecond))

	var frag []string
	for _, p := range stop(t, cap) {
		if p.ICMP && p.ICMPType == 3 && p.ICMPCode == 4 {
			frag = append(frag, strconv.Itoa(p.IPLen))
		}
	}
	if len(frag) == 0 {
		t.Fatal("no fragmentation-needed reached the client: the test did not exercise path MTU discovery")
	}
	t.Logf("fragmentation-needed errors at the client, IPv4 lengths: %s", strings.Join(frag, " "))
	if l, _ := strconv.Atoi(frag[0]); l <= 108 {
		t.Errorf("inet's frag-needed was %d bytes; the test wants one longer than a quoted header (to show the error passes whole)", l)
	}
}
