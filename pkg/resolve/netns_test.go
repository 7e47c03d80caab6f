package resolve

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/internal/dnstest"
	"github.com/egressd/egressd/internal/netnstest"
)

// TestNetTransportNetns runs NetTransport against a dnstest server over
// real sockets, both inside a network namespace the test creates (only
// loopback): UDP answers, the TCP retry on TC, SERVFAIL, silence, a closed
// port, server fallback, rotating answers, cancellation.
func TestNetTransportNetns(t *testing.T) {
	ns := netnstest.New(t, "dns")
	pc, err := ns.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l, err := ns.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		pc.Close()
		t.Fatal(err)
	}
	srv := dnstest.New()
	if err := srv.Start(pc, l); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("dnstest Close: %v", err)
		}
	})
	live := pc.LocalAddr().String()

	// A port nobody listens on: bound, noted, closed.
	closed, err := ns.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := closed.LocalAddr().String()
	closed.Close()

	tr := NetTransport{Dial: ns.DialContext}
	reset := func() {
		srv.SetServFail(false)
		srv.SetDrop(false)
		srv.SetTruncateUDP(false)
		srv.SetRotate(0)
		srv.SetAddrs(allowed, 60, addrs("203.0.113.10", "203.0.113.11", "2001:db8::10")...)
	}
	tests := []struct {
		name    string
		servers []string
		zone    func(*dnstest.Server)
		dsts    []string
		cancel  time.Duration // cancel the caller's context after this long
		timeout time.Duration // Config.Timeout; default 2s, generous for a loaded machine
		want    Outcome
		wantErr error
		queries int // A+AAAA queries the server gets for allowed
	}{
		{name: "UDP answer", dsts: []string{"203.0.113.11", "2001:db8::10"}, want: Match, queries: 2},
		// The answer lacks it, so the mismatch asks once more.
		{name: "UDP answer, other address", dsts: []string{"198.18.0.66"}, want: Mismatch, queries: 4},
		{
			// The UDP answers are empty with TC; a match proves the records
			// came over TCP, and the count shows both were asked twice.
			name: "TC over UDP, answer over TCP", zone: func(s *dnstest.Server) { s.SetTruncateUDP(true) },
			dsts: []string{"203.0.113.10"}, want: Match, queries: 4,
		},
		{name: "SERVFAIL", zone: func(s *dnstest.Server) { s.SetServFail(true) }, dsts: []string{"203.0.113.10"}, wantErr: ErrServFail, queries: 2},
		{name: "no answer", zone: func(s *dnstest.Server) { s.SetDrop(true) }, dsts: []string{"203.0.113.10"}, timeout: 300 * time.Millisecond, wantErr: ErrTimeout, queries: 2},
		{name: "closed port", servers: []string{dead}, dsts: []string{"203.0.113.10"}, wantErr: ErrUnreachable},
		{name: "first server closed, second answers", servers: []string{dead, live}, dsts: []string{"203.0.113.10"}, want: Match, queries: 2},
		{
			name: "rotating answers over the wire", zone: func(s *dnstest.Server) { s.SetRotate(1) },
			dsts: []string{"203.0.113.10", "203.0.113.11", "203.0.113.10"}, want: Match, queries: 4,
		},
		{
			// Per query: .10, then .11; the flow to .11 began after the
			// first answer, so it is asked again.
			name: "flipping answers over the wire", zone: func(s *dnstest.Server) { s.SetFlip(allowed, 60, 0, addrs("203.0.113.10", "203.0.113.11")...) },
			dsts: []string{"203.0.113.10", "203.0.113.11"}, want: Match, queries: 4,
		},
		{
			name: "caller cancels while the server is silent", zone: func(s *dnstest.Server) { s.SetDrop(true) },
			dsts: []string{"203.0.113.10"}, cancel: 50 * time.Millisecond, wantErr: context.Canceled, queries: 2,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reset()
			if tc.zone != nil {
				tc.zone(srv)
			}
			servers := tc.servers
			if servers == nil {
				servers = []string{live}
			}
			before := srv.Queries(allowed, dns.TypeA) + srv.Queries(allowed, dns.TypeAAAA)
			timeout := tc.timeout
			if timeout == 0 {
				timeout = 2 * time.Second
			}
			r, err := New(Config{Servers: servers, Transport: tr, Timeout: timeout, RequeryInterval: time.Nanosecond})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(r.Close)
			for _, dst := range tc.dsts {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				if tc.cancel > 0 {
					time.AfterFunc(tc.cancel, cancel)
				}
				got, err := r.Verify(ctx, allowed, netip.MustParseAddr(dst))
				cancel()
				switch {
				case tc.wantErr != nil && !errors.Is(err, tc.wantErr):
					t.Errorf("Verify(%s) error = %v, want %v", dst, err, tc.wantErr)
				case tc.wantErr == nil && (err != nil || got != tc.want):
					t.Errorf("Verify(%s) = %v, %v; want %v", dst, got, err, tc.want)
				}
			}
			// A cancelled caller leaves the lookup running to its timeout.
			waitFor(t, "the server to count the queries", func() bool {
				return srv.Queries(allowed, dns.TypeA)+srv.Queries(allowed, dns.TypeAAAA)-before >= tc.queries
			})
			if got := srv.Queries(allowed, dns.TypeA) + srv.Queries(allowed, dns.TypeAAAA) - before; got != tc.queries {
				t.Errorf("server got %d queries for %s, want %d", got, allowed, tc.queries)
			}
		})
	}
}
