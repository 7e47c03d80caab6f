package resolve

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/miekg/dns"

	"github.com/egressd/egressd/internal/dnstest"
)

const (
	allowed = "allowed.example.test"
	missing = "missing.example.test"
)

// step is one moment of a scenario: move the clock, change the zone, then
// verify one flow and check the outcome and the queries the server has
// seen for the name so far (A and AAAA together).
type step struct {
	advance time.Duration
	zone    func(*dnstest.Server)
	name    string // default allowed
	addr    string
	slots   []time.Duration // the verification waits this long for its query slot, each in turn
	want    Outcome
	wantErr error
	queries int
}

func TestVerifyScenarios(t *testing.T) {
	set := func(ttl uint32, as ...string) func(*dnstest.Server) {
		return func(s *dnstest.Server) { s.SetAddrs(allowed, ttl, addrs(as...)...) }
	}
	tests := []struct {
		name  string
		edit  func(*Config)
		zone  func(*dnstest.Server)
		steps []step
	}{
		{
			name: "first flow looks up, the next ones hit the cache",
			zone: set(300, "203.0.113.10", "203.0.113.11", "2001:db8::10"),
			steps: []step{
				{addr: "203.0.113.10", want: Match, queries: 2},
				{addr: "203.0.113.11", want: Match, queries: 2},
				{addr: "2001:db8::10", want: Match, queries: 2},
				{advance: 299 * time.Second, addr: "203.0.113.10", want: Match, queries: 2},
			},
		},
		{
			// Every answer that lacks the address (none is negative) is
			// followed by a second look at the name's next slot before
			// the flow is denied: the client may have been given another
			// answer in between (see secondLook). Each step is one flow,
			// and each pays for its own second look, as nothing else
			// asks meanwhile.
			name: "a miss waits for the name's query slot, then asks again",
			zone: set(300, "203.0.113.10"),
			steps: []step{
				// t=0: looked up at once, once more at 1s.
				{addr: "198.18.0.66", slots: []time.Duration{time.Second}, want: Mismatch, queries: 4},
				// t=1s: an answer since the flow began (1s) lacks it:
				// once more at 2s. (Until an answer that was not news
				// took a second look too, this was denied from the
				// cache.)
				{addr: "198.18.0.66", slots: []time.Duration{time.Second}, want: Mismatch, queries: 6},
				// t=2.999s: asked at the slot (3s), once more at 4s.
				{advance: 999 * time.Millisecond, addr: "198.18.0.66", slots: []time.Duration{time.Millisecond, time.Second}, want: Mismatch, queries: 10},
				// t=6s: the slot is free, the first look at once, the
				// second at 7s.
				{advance: 2 * time.Second, addr: "198.18.0.66", slots: []time.Duration{time.Second}, want: Mismatch, queries: 14},
				{addr: "203.0.113.10", want: Match, queries: 14},
			},
		},
		{
			name: "answers expire with their TTL",
			zone: set(60, "203.0.113.10"),
			steps: []step{
				{addr: "203.0.113.10", want: Match, queries: 2},
				{advance: 59 * time.Second, addr: "203.0.113.10", want: Match, queries: 2},
				{advance: time.Second, addr: "203.0.113.10", want: Match, queries: 4},
			},
		},
		{
			name: "TTL 0 still verifies the flows that follow, for MinTTL",
			zone: set(0, "203.0.113.10"),
			steps: []step{
				{addr: "203.0.113.10", want: Match, queries: 2},
				{advance: 4999 * time.Millisecond, addr: "203.0.113.10", want: Match, queries: 2},
				{advance: time.Millisecond, addr: "203.0.113.10", want: Match, queries: 4},
			},
		},
		{
			name: "MaxTTL caps a long TTL",
			edit: func(c *Config) { c.MaxTTL = time.Hour },
			zone: set(86400, "203.0.113.10"),
			steps: []step{
				{addr: "203.0.113.10", want: Match, queries: 2},
				{advance: time.Hour, addr: "203.0.113.10", want: Match, queries: 4},
			},
		},
		{
			name: "rotating answers: every address seen verifies until its own TTL, then through grace",
			zone: func(s *dnstest.Server) {
				s.SetRotate(1)
				s.SetAddrs(allowed, 60, addrs("203.0.113.10", "203.0.113.11", "203.0.113.12")...)
			},
			steps: []step{
				{addr: "203.0.113.10", want: Match, queries: 2},                                      // t=0: answer .10
				{addr: "203.0.113.11", slots: []time.Duration{time.Second}, want: Match, queries: 4}, // once more at t=1, answer .11
				{advance: time.Second, addr: "203.0.113.12", want: Match, queries: 6},                // t=2: answer .12
				{addr: "203.0.113.10", want: Match, queries: 6},                                      // the union
				{addr: "203.0.113.11", want: Match, queries: 6},                                      //
				{advance: 58 * time.Second, addr: "203.0.113.11", want: Match, queries: 6},           // t=60: .10 expired
				{addr: "203.0.113.10", want: Grace, queries: 6},                                      // the others are fresh: no lookup
				{advance: 1500 * time.Millisecond, addr: "203.0.113.11", want: Grace, queries: 6},    // t=61.5
				{advance: 119 * time.Second, addr: "203.0.113.10", want: Match, queries: 8},          // t=180.5: .10 gone, none fresh: answer .10
			},
		},
		{
			name: "a withdrawn address verifies until its TTL, then through grace, then not",
			zone: set(60, "203.0.113.10"),
			steps: []step{
				{addr: "203.0.113.10", want: Match, queries: 2},
				{advance: 30 * time.Second, zone: set(600, "203.0.113.20"), addr: "203.0.113.10", want: Match, queries: 2},
				{addr: "203.0.113.20", want: Match, queries: 4},
				{advance: 30 * time.Second, addr: "203.0.113.10", want: Grace, queries: 4},
				{advance: DefaultGrace - time.Nanosecond, addr: "203.0.113.10", want: Grace, queries: 4},
				// t=180s: past its grace; the answer (.20) lacks it, and
				// the second look at 181s too (it used to deny on the
				// first: .20 was not news).
				{advance: time.Nanosecond, addr: "203.0.113.10", slots: []time.Duration{time.Second}, want: Mismatch, queries: 8},
				{addr: "203.0.113.20", want: Match, queries: 8},
			},
		},
		{
			name: "NoGrace: a withdrawn address stops at its TTL",
			edit: func(c *Config) { c.Grace = NoGrace },
			zone: set(60, "203.0.113.10"),
			steps: []step{
				{addr: "203.0.113.10", want: Match, queries: 2},
				{advance: 30 * time.Second, zone: set(60, "203.0.113.20"), addr: "203.0.113.20", want: Match, queries: 4},
				// t=60s: the answer (.20) lacks it, and so does the
				// second look at 61s (it used to deny on the first: .20
				// was not news).
				{advance: 30 * time.Second, addr: "203.0.113.10", slots: []time.Duration{time.Second}, want: Mismatch, queries: 8},
			},
		},
		{
			name: "an address in grace of an expired name: looked up, Match if it is back",
			zone: set(60, "203.0.113.10"),
			steps: []step{
				{addr: "203.0.113.10", want: Match, queries: 2},
				{advance: 90 * time.Second, addr: "203.0.113.10", want: Match, queries: 4},
			},
		},
		{
			name: "an address in grace of an expired name: Grace when the resolver fails",
			zone: set(60, "203.0.113.10"),
			steps: []step{
				{addr: "203.0.113.10", want: Match, queries: 2},
				{advance: 90 * time.Second, zone: func(s *dnstest.Server) { s.SetServFail(true) }, addr: "203.0.113.10", want: Grace, queries: 4},
				{addr: "198.18.0.66", wantErr: ErrServFail, queries: 6},
			},
		},
		{
			// Its answers are NXDOMAIN now, cached: no lookup per flow.
			name: "an address in grace of a name that went away: Grace from the negative cache",
			zone: set(60, "203.0.113.10"),
			steps: []step{
				{addr: "203.0.113.10", want: Match, queries: 2},
				{advance: 90 * time.Second, zone: func(s *dnstest.Server) { s.Remove(allowed); s.SetNegativeTTL(30) }, addr: "203.0.113.10", want: Grace, queries: 4},
				{advance: 29 * time.Second, addr: "203.0.113.10", want: Grace, queries: 4},
				{addr: "203.0.113.11", want: Mismatch, queries: 4},
			},
		},
		{
			name: "NXDOMAIN: a mismatch, cached for the SOA's TTL",
			zone: func(s *dnstest.Server) { s.SetNegativeTTL(10) },
			steps: []step{
				{name: missing, addr: "203.0.113.10", want: Mismatch, queries: 2},
				{advance: 9 * time.Second, name: missing, addr: "203.0.113.10", want: Mismatch, queries: 2},
				{advance: time.Second, name: missing, addr: "203.0.113.10", want: Mismatch, queries: 4},
			},
		},
		{
			name: "NXDOMAIN: the negative TTL is capped at NegativeTTL",
			zone: func(s *dnstest.Server) { s.SetNegativeTTL(3600) },
			steps: []step{
				{name: missing, addr: "203.0.113.10", want: Mismatch, queries: 2},
				{advance: 29 * time.Second, name: missing, addr: "203.0.113.10", want: Mismatch, queries: 2},
				{advance: time.Second, name: missing, addr: "203.0.113.10", want: Mismatch, queries: 4},
			},
		},
		{
			name: "NXDOMAIN: a negative TTL of 0 lasts MinTTL",
			zone: func(s *dnstest.Server) { s.SetNegativeTTL(0) },
			steps: []step{
				{name: missing, addr: "203.0.113.10", want: Mismatch, queries: 2},
				{advance: 4 * time.Second, name: missing, addr: "203.0.113.10", want: Mismatch, queries: 2},
				{advance: time.Second, name: missing, addr: "203.0.113.10", want: Mismatch, queries: 4},
			},
		},
		{
			name: "a name that appears verifies once its negative entry expires",
			zone: func(s *dnstest.Server) { s.SetNegativeTTL(10) },
			steps: []step{
				{addr: "203.0.113.10", want: Mismatch, queries: 2},
				{advance: 5 * time.Second, zone: set(60, "203.0.113.10"), addr: "203.0.113.10", want: Mismatch, queries: 2},
				{advance: 5 * time.Second, addr: "203.0.113.10", want: Match, queries: 4},
			},
		},
		{
			// A negative answer takes no second look, also while the
			// name's older addresses of the family are still fresh.
			name: "a name whose A records go away: no second look on NODATA",
			zone: set(300, "203.0.113.10"),
			steps: []step{
				{addr: "203.0.113.10", want: Match, queries: 2},
				{advance: time.Second, zone: set(300), addr: "198.18.0.66", want: Mismatch, queries: 4},
				{addr: "198.18.0.66", want: Mismatch, queries: 4}, // from the cache: the NODATA came since the flow began
				{addr: "203.0.113.10", want: Match, queries: 4},   // until its TTL
			},
		},
		{
			name: "NODATA for AAAA is cached for IPv6; A still verifies",
			zone: set(300, "203.0.113.10"),
			steps: []step{
				{addr: "2001:db8::10", want: Mismatch, queries: 2},
				{advance: 2 * time.Second, addr: "2001:db8::10", want: Mismatch, queries: 2},
				{addr: "203.0.113.10", want: Match, queries: 2},
			},
		},
		{
			name: "CNAME chain: the addresses of the target, for the chain's smallest TTL",
			zone: func(s *dnstest.Server) {
				s.SetCNAME(allowed, "a.cdn.test", 10)
				s.SetCNAME("a.cdn.test", "b.cdn.test", 300)
				s.SetAddrs("b.cdn.test", 300, addrs("203.0.113.20")...)
			},
			steps: []step{
				{addr: "203.0.113.20", want: Match, queries: 2},
				{advance: 9 * time.Second, addr: "203.0.113.20", want: Match, queries: 2},
				{advance: time.Second, addr: "203.0.113.20", want: Match, queries: 4},
			},
		},
		{
			name: "SERVFAIL is an error and is not cached",
			zone: func(s *dnstest.Server) { s.SetServFail(true) },
			steps: []step{
				{addr: "203.0.113.10", wantErr: ErrServFail, queries: 2},
				{addr: "203.0.113.10", wantErr: ErrServFail, queries: 4},
				{zone: func(s *dnstest.Server) { s.SetServFail(false); s.SetAddrs(allowed, 60, addrs("203.0.113.10")...) }, addr: "203.0.113.10", want: Match, queries: 6},
			},
		},
		{
			name: "resolver fails after a good answer: cached addresses still verify, others are errors",
			zone: set(60, "203.0.113.10"),
			steps: []step{
				{addr: "203.0.113.10", want: Match, queries: 2},
				{advance: time.Second, zone: func(s *dnstest.Server) { s.SetServFail(true) }, addr: "203.0.113.10", want: Match, queries: 2},
				{addr: "198.18.0.66", wantErr: ErrServFail, queries: 4},
			},
		},
		{
			name: "a resolver that does not answer times out",
			zone: func(s *dnstest.Server) { s.SetDrop(true) },
			steps: []step{
				{addr: "203.0.113.10", wantErr: ErrTimeout, queries: 2},
			},
		},
		{
			name: "IPv4-mapped destination is verified as IPv4",
			zone: set(60, "203.0.113.10"),
			steps: []step{
				{addr: "::ffff:203.0.113.10", want: Match, queries: 2},
				{addr: "203.0.113.10", want: Match, queries: 2},
			},
		},
		{
			name: "name with capitals and a trailing dot",
			zone: set(60, "203.0.113.10"),
			steps: []step{
				{name: "Allowed.Example.TEST.", addr: "203.0.113.10", want: Match, queries: 2},
				{name: allowed, addr: "203.0.113.10", want: Match, queries: 2},
			},
		},
		{
			name: "invalid names are refused without a query",
			steps: []step{
				{name: "*.example.test", addr: "203.0.113.10", wantErr: ErrInvalidName},
				{name: "a..example.test", addr: "203.0.113.10", wantErr: ErrInvalidName},
				{name: "a b.example.test", addr: "203.0.113.10", wantErr: ErrInvalidName},
				{name: `a\046b.example.test`, addr: "203.0.113.10", wantErr: ErrInvalidName},
				{name: strings.Repeat("a", 64) + ".test", addr: "203.0.113.10", wantErr: ErrInvalidName},
				{name: strings.Repeat("abcdefg.", 32) + "test", addr: "203.0.113.10", wantErr: ErrInvalidName},
				{name: ".", addr: "203.0.113.10", wantErr: ErrInvalidName},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.edit)
			if tc.zone != nil {
				tc.zone(e.dns)
			}
			for i, s := range tc.steps {
				e.clk.Advance(s.advance)
				if s.zone != nil {
					s.zone(e.dns)
				}
				name := s.name
				if name == "" {
					name = allowed
				}
				got, err := e.verifyWaiting(t, name, s.addr, s.slots...)
				switch {
				case s.wantErr != nil && !errors.Is(err, s.wantErr):
					t.Fatalf("step %d: Verify(%s, %s) error = %v, want %v", i, name, s.addr, err, s.wantErr)
				case s.wantErr == nil && err != nil:
					t.Fatalf("step %d: Verify(%s, %s): %v", i, name, s.addr, err)
				case err != nil && got != Mismatch:
					t.Fatalf("step %d: Verify(%s, %s) = %v with an error, want mismatch", i, name, s.addr, got)
				case err == nil && got != s.want:
					t.Errorf("step %d: Verify(%s, %s) = %v, want %v", i, name, s.addr, got, s.want)
				}
				if q := e.dns.Total(); q != s.queries {
					t.Errorf("step %d: server got %d queries in all, want %d", i, q, s.queries)
				}
			}
		})
	}
}

func TestVerifyStats(t *testing.T) {
	e := newEnv(t, nil)
	e.dns.SetAddrs(allowed, 60, addrs("203.0.113.10")...)
	e.verify(t, allowed, "203.0.113.10") // miss, lookup, match
	e.verify(t, allowed, "203.0.113.10") // hit
	e.clk.Advance(time.Second)           //
	// Miss, lookup, no .66: a second look, though the answer was not
	// news (it used to deny here): it waits for the slot at 2s, then
	// miss, lookup, mismatch.
	var out Outcome
	var err error
	e.onClock(t, func() { out, err = e.verifyErr(allowed, "198.18.0.66") })
	if err != nil || out != Mismatch {
		t.Fatalf("Verify(198.18.0.66) = %v, %v; want a mismatch", out, err)
	}
	// An answer since the flow began lacks it, and the deadline comes
	// before the next slot (3s): no second look, mismatch from the cache.
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if res, err := e.r.VerifySince(ctx, allowed, netip.MustParseAddr("198.18.0.66"), e.clk.Now()); err != nil || res.Outcome != Mismatch || res.Requeried {
		t.Fatalf("VerifySince with no time for a second look = %+v, %v; want a mismatch from the cache", res, err)
	}
	e.verify(t, missing, "203.0.113.10")         // miss, lookup, NXDOMAIN: no second look
	e.verify(t, missing, "203.0.113.10")         // negative hit
	e.dns.SetServFail(true)                      //
	e.clk.Advance(time.Second)                   //
	_, err = e.verifyErr(allowed, "198.18.0.66") // miss, lookup, error
	if !errors.Is(err, ErrServFail) {
		t.Fatalf("Verify on SERVFAIL: %v", err)
	}
	// The second look's lookup is one more miss, lookup, two queries and
	// a NODATA for AAAA than before, when the answer not being news
	// spared it.
	want := Stats{
		Verifies: 7, Hits: 1, NegativeHits: 1, Misses: 5, SlotWaits: 1, SecondLooks: 1,
		Matches: 2, Mismatches: 4, MismatchesRequeried: 2, MismatchesCached: 2, Errors: 1,
		Lookups: 5, Queries: 10, QueryErrors: 2, NegativeAnswers: 5, Names: 2,
	}
	if diff := cmp.Diff(want, e.r.Stats()); diff != "" {
		t.Errorf("Stats (-want +got):\n%s", diff)
	}
}

// TestVerifyFamilyError: a failure of the AAAA lookup does not fail IPv4
// flows, whose answer is the A lookup's.
func TestVerifyFamilyError(t *testing.T) {
	srv := dnstest.New()
	srv.SetAddrs(allowed, 60, addrs("203.0.113.10", "2001:db8::10")...)
	tr := transportFunc(func(ctx context.Context, server string, q []byte) ([]byte, error) {
		if queryType(q) == dns.TypeAAAA {
			return nil, errors.New("connection refused")
		}
		return srv.Exchange(ctx, server, q)
	})
	e := newEnv(t, func(c *Config) { c.Transport = tr })
	if got := e.verify(t, allowed, "203.0.113.10"); got != Match {
		t.Errorf("IPv4 destination: %v, want match", got)
	}
	// The A answer lacks it: a second look at the next slot (its AAAA
	// fails again, and does not matter either), then a mismatch.
	e.clk.Advance(time.Second)
	if got, err := e.verifyWaiting(t, allowed, "198.18.0.66", time.Second); err != nil || got != Mismatch {
		t.Errorf("other IPv4 destination: %v, %v; want mismatch", got, err)
	}
	if n := srv.Queries(allowed, dns.TypeA); n != 3 {
		t.Errorf("server got %d A queries, want 3: the first lookup, the one for the flow, its second look", n)
	}
	_, err := e.verifyErr(allowed, "2001:db8::10")
	var le *LookupError
	if !errors.Is(err, ErrUnreachable) || !errors.As(err, &le) || le.Type != dns.TypeAAAA || le.Name != allowed {
		t.Errorf("IPv6 destination: error %v, want a LookupError for AAAA wrapping ErrUnreachable", err)
	}
}

// TestVerifyServers: servers are tried in order; the error names each.
func TestVerifyServers(t *testing.T) {
	const dead, slow, live = "198.18.0.1:53", "198.18.0.2:53", "198.18.0.3:53"
	srv := dnstest.New()
	srv.SetAddrs(allowed, 60, addrs("203.0.113.10")...)
	var mu sync.Mutex
	asked := map[string]int{}
	tr := transportFunc(func(ctx context.Context, server string, q []byte) ([]byte, error) {
		mu.Lock()
		asked[server]++
		mu.Unlock()
		switch server {
		case dead:
			return nil, errors.New("connect: connection refused")
		case slow:
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return srv.Exchange(ctx, server, q)
	})
	tests := []struct {
		name      string
		servers   []string
		want      Outcome
		wantErrs  []error
		wantAsked map[string]int
	}{
		{name: "first fails, second answers", servers: []string{dead, live}, want: Match, wantAsked: map[string]int{dead: 2, live: 2}},
		{name: "first times out, second answers", servers: []string{slow, live}, want: Match, wantAsked: map[string]int{slow: 2, live: 2}},
		{name: "first answers, second is not asked", servers: []string{live, dead}, want: Match, wantAsked: map[string]int{live: 2}},
		{name: "all fail", servers: []string{dead, slow}, wantErrs: []error{ErrUnreachable, ErrTimeout}, wantAsked: map[string]int{dead: 2, slow: 2}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mu.Lock()
			clear(asked)
			mu.Unlock()
			e := newEnv(t, func(c *Config) { c.Servers = tc.servers; c.Transport = tr })
			got, err := e.verifyErr(allowed, "203.0.113.10")
			for _, want := range tc.wantErrs {
				if !errors.Is(err, want) {
					t.Errorf("error %v, want one wrapping %v", err, want)
				}
			}
			if tc.wantErrs == nil && (err != nil || got != tc.want) {
				t.Errorf("Verify = %v, %v; want %v", got, err, tc.want)
			}
			for _, s := range tc.servers {
				if err != nil && !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not name server %s", err, s)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if diff := cmp.Diff(tc.wantAsked, asked); diff != "" {
				t.Errorf("queries per server (-want +got):\n%s", diff)
			}
		})
	}
}

// TestVerifyGarbled: whatever a server sends that is not a valid answer to
// the query is an error, and leaves nothing in the cache.
func TestVerifyGarbled(t *testing.T) {
	attacker := netip.MustParseAddr("198.18.0.66")
	// answerWith answers the query with A 198.18.0.66 after edit.
	answerWith := func(edit func(q, m *dns.Msg)) func([]byte) ([]byte, error) {
		return func(query []byte) ([]byte, error) {
			var q dns.Msg
			if err := q.Unpack(query); err != nil {
				return nil, err
			}
			m := new(dns.Msg)
			m.SetReply(&q)
			hdr := dns.RR_Header{Name: q.Question[0].Name, Rrtype: q.Question[0].Qtype, Class: dns.ClassINET, Ttl: 60}
			if q.Question[0].Qtype == dns.TypeA {
				m.Answer = []dns.RR{&dns.A{Hdr: hdr, A: attacker.AsSlice()}}
			} else {
				m.Answer = []dns.RR{&dns.AAAA{Hdr: hdr, AAAA: netip.MustParseAddr("2001:db8::66").AsSlice()}}
			}
			edit(&q, m)
			return m.Pack()
		}
	}
	tests := []struct {
		name    string
		respond func(query []byte) ([]byte, error)
		want    error
	}{
		{name: "random bytes", respond: func([]byte) ([]byte, error) { return []byte("\x00\x01garbage, not DNS at all"), nil }, want: ErrMalformed},
		{name: "empty datagram", respond: func([]byte) ([]byte, error) { return nil, nil }, want: ErrMalformed},
		{name: "the query echoed back (QR clear)", respond: func(q []byte) ([]byte, error) { return q, nil }, want: ErrMalformed},
		{name: "answer with another ID", respond: answerWith(func(_, m *dns.Msg) { m.Id ^= 0x5a5a }), want: ErrMalformed},
		{name: "answer to another name", respond: answerWith(func(_, m *dns.Msg) {
			m.Question[0].Name = "attacker.test."
			m.Answer[0].Header().Name = "attacker.test."
		}), want: ErrMalformed},
		{name: "truncated answer with an address", respond: answerWith(func(_, m *dns.Msg) { m.Truncated = true }), want: ErrTruncated},
		{name: "answer cut in the middle", respond: func(q []byte) ([]byte, error) {
			b, err := answerWith(func(_, _ *dns.Msg) {})(q)
			return b[:len(b)-3], err
		}, want: ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := transportFunc(func(_ context.Context, _ string, q []byte) ([]byte, error) { return tc.respond(q) })
			e := newEnv(t, func(c *Config) { c.Transport = tr })
			got, err := e.verifyErr(allowed, attacker.String())
			if !errors.Is(err, tc.want) || got != Mismatch {
				t.Fatalf("Verify = %v, %v; want mismatch and an error wrapping %v", got, err, tc.want)
			}
			if e.r.Contains(allowed, attacker) {
				t.Errorf("the attacker's address is cached")
			}
			if n := e.r.Stats().Names; n != 0 {
				t.Errorf("%d names cached after failed lookups, want 0", n)
			}
		})
	}
}

// TestVerifyContextCancel: a caller that gives up gets an error at once,
// even the one whose miss started the lookup; the lookup goes on for the
// others and fills the cache.
func TestVerifyContextCancel(t *testing.T) {
	srv := dnstest.New()
	srv.SetAddrs(allowed, 60, addrs("203.0.113.10")...)
	release := make(chan struct{})
	tr := transportFunc(func(ctx context.Context, server string, q []byte) ([]byte, error) {
		select {
		case <-release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return srv.Exchange(ctx, server, q)
	})
	e := newEnv(t, func(c *Config) { c.Transport = tr; c.Timeout = 10 * time.Second })
	addr := netip.MustParseAddr("203.0.113.10")

	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() {
		_, err := e.r.Verify(ctx, allowed, addr)
		first <- err
	}()
	waitFor(t, "the first lookup to start", func() bool { return e.r.Stats().Misses == 1 })
	second := make(chan error, 1)
	go func() {
		_, err := e.r.Verify(context.Background(), allowed, addr)
		second <- err
	}()
	waitFor(t, "the second caller to wait", func() bool { return e.r.Stats().Misses == 2 })

	cancel()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled caller: error %v, want context.Canceled", err)
	}
	close(release)
	if err := <-second; err != nil {
		t.Errorf("second caller: %v", err)
	}
	if got := e.verify(t, allowed, "203.0.113.10"); got != Match {
		t.Errorf("after the lookup: %v, want match", got)
	}
	if got := e.r.Stats().Lookups; got != 1 {
		t.Errorf("%d lookups, want 1", got)
	}
}

// TestClose: Close ends the lookups in flight; their waiters get an error,
// and later lookups fail at once. The cache still answers.
func TestClose(t *testing.T) {
	srv := dnstest.New()
	srv.SetAddrs(allowed, 60, addrs("203.0.113.10")...)
	srv.SetAddrs("slow.example.test", 60, addrs("203.0.113.10")...)
	tr := transportFunc(func(ctx context.Context, server string, q []byte) ([]byte, error) {
		if m := new(dns.Msg); m.Unpack(q) == nil && m.Question[0].Name == "slow.example.test." {
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return srv.Exchange(ctx, server, q)
	})
	e := newEnv(t, func(c *Config) { c.Transport = tr; c.Timeout = time.Minute })
	e.verify(t, allowed, "203.0.113.10")

	waiting := make(chan error, 1)
	go func() {
		_, err := e.r.Verify(context.Background(), "slow.example.test", netip.MustParseAddr("203.0.113.10"))
		waiting <- err
	}()
	waitFor(t, "the slow lookup to start", func() bool { return e.r.Stats().Misses == 2 })
	e.r.Close()
	if err := <-waiting; !errors.Is(err, ErrClosed) {
		t.Errorf("waiter after Close: %v, want ErrClosed", err)
	}
	if _, err := e.verifyErr("other.example.test", "203.0.113.10"); !errors.Is(err, ErrClosed) {
		t.Errorf("lookup after Close: %v, want ErrClosed", err)
	}
	if n := e.r.Stats().Lookups; n != 2 {
		t.Errorf("%d lookups started, want 2 (none after Close)", n)
	}
	if got := e.verify(t, allowed, "203.0.113.10"); got != Match {
		t.Errorf("cached name after Close: %v, want match", got)
	}
}

// waitFor polls cond for up to 10s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestSingleflight: 1,000 flows waiting on one uncached name cause one
// lookup: one A and one AAAA query reach the server.
func TestSingleflight(t *testing.T) {
	const waiters = 1000
	srv := dnstest.New()
	srv.SetAddrs(allowed, 60, addrs("203.0.113.10")...)
	var r *Resolver
	tr := transportFunc(func(ctx context.Context, server string, q []byte) ([]byte, error) {
		// Hold the answer until every caller is waiting on this lookup.
		deadline := time.Now().Add(10 * time.Second)
		for r.Stats().Misses < waiters {
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("only %d of %d callers waiting after 10s", r.Stats().Misses, waiters)
			}
			time.Sleep(time.Millisecond)
		}
		return srv.Exchange(ctx, server, q)
	})
	e := newEnv(t, func(c *Config) { c.Transport = tr; c.Timeout = 20 * time.Second })
	r = e.r
	addr := netip.MustParseAddr("203.0.113.10")
	var wg sync.WaitGroup
	errs := make(chan error, waiters)
	for range waiters {
		wg.Go(func() {
			out, err := r.Verify(context.Background(), allowed, addr)
			if err == nil && out != Match {
				err = fmt.Errorf("outcome %v", out)
			}
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("a waiter: %v", err)
	}
	if a, aaaa := srv.Queries(allowed, dns.TypeA), srv.Queries(allowed, dns.TypeAAAA); a != 1 || aaaa != 1 {
		t.Errorf("server got %d A and %d AAAA queries, want 1 and 1", a, aaaa)
	}
	st := r.Stats()
	if st.Lookups != 1 || st.Misses != waiters || st.Matches != waiters {
		t.Errorf("Stats: %d lookups, %d misses, %d matches; want 1, %d, %d", st.Lookups, st.Misses, st.Matches, waiters, waiters)
	}
}

// TestCached: cache only, never a query; Contains is Cached != CachedNone.
func TestCached(t *testing.T) {
	e := newEnv(t, nil)
	e.dns.SetAddrs(allowed, 60, addrs("203.0.113.10")...)
	addr := netip.MustParseAddr("203.0.113.10")
	if got := e.r.Cached(allowed, addr); got != CachedNone {
		t.Errorf("Cached before any lookup = %v", got)
	}
	if n := e.dns.Total(); n != 0 {
		t.Errorf("Cached sent %d queries", n)
	}
	e.verify(t, allowed, "203.0.113.10")
	tests := []struct {
		name    string
		advance time.Duration
		host    string
		addr    netip.Addr
		want    Cached
	}{
		{name: "cached", host: allowed, addr: addr, want: CachedFresh},
		{name: "cached, name not normalised", host: "ALLOWED.example.test.", addr: addr, want: CachedFresh},
		{name: "IPv4-mapped", host: allowed, addr: netip.MustParseAddr("::ffff:203.0.113.10"), want: CachedFresh},
		{name: "other address", host: allowed, addr: netip.MustParseAddr("203.0.113.11")},
		{name: "other name", host: "other.example.test", addr: addr},
		{name: "invalid name", host: "*.example.test", addr: addr},
		{name: "zero address", host: allowed},
		{name: "last moment of the TTL", advance: 60*time.Second - 1, host: allowed, addr: addr, want: CachedFresh},
		{name: "TTL ended: grace", advance: 1, host: allowed, addr: addr, want: CachedGrace},
		{name: "grace, name not normalised", host: "Allowed.Example.Test", addr: addr, want: CachedGrace},
		{name: "last moment of the grace", advance: DefaultGrace - 1, host: allowed, addr: addr, want: CachedGrace},
		{name: "grace ended", advance: 1, host: allowed, addr: addr},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e.clk.Advance(tc.advance)
			if got := e.r.Cached(tc.host, tc.addr); got != tc.want {
				t.Errorf("Cached(%q, %v) = %v, want %v", tc.host, tc.addr, got, tc.want)
			}
			if got := e.r.Contains(tc.host, tc.addr); got != (tc.want != CachedNone) {
				t.Errorf("Contains(%q, %v) = %t, want %t", tc.host, tc.addr, got, tc.want != CachedNone)
			}
		})
	}
	if n := e.dns.Total(); n != 2 {
		t.Errorf("server got %d queries, want the 2 of the one Verify", n)
	}
}

func TestNewConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string // substring of the error; "" for none
	}{
		{name: "zero value", cfg: Config{}},
		{name: "IPv6 server", cfg: Config{Servers: []string{"[2001:db8::53]:53"}}},
		{name: "host name server", cfg: Config{Servers: []string{"resolver.example:53"}}, want: `server "resolver.example:53"`},
		{name: "server without port", cfg: Config{Servers: []string{"169.254.169.253"}}, want: "want IP:port"},
		{name: "negative CacheMax", cfg: Config{CacheMax: -1}, want: "CacheMax -1 is negative"},
		{name: "negative Timeout", cfg: Config{Timeout: -time.Second}, want: "Timeout -1s is negative"},
		{name: "MinTTL above MaxTTL", cfg: Config{MinTTL: time.Hour, MaxTTL: time.Minute}, want: "MinTTL 1h0m0s is above MaxTTL 1m0s"},
		{name: "MinTTL above NegativeTTL", cfg: Config{MinTTL: time.Minute}, want: "is above NegativeTTL"},
		{name: "NoGrace", cfg: Config{Grace: NoGrace}},
		{name: "negative MaxQueriesPerSecond", cfg: Config{MaxQueriesPerSecond: -1}, want: "MaxQueriesPerSecond -1 is negative"},
		{name: "negative Grace other than NoGrace", cfg: Config{Grace: -time.Second}, want: "Grace -1s is negative"},
		{name: "Now without After", cfg: Config{Now: time.Now}, want: "set both Now and After"},
		{name: "After without Now", cfg: Config{After: time.After}, want: "set both Now and After"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("New: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("New error = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestOutcomeString(t *testing.T) {
	for o, want := range map[Outcome]string{Match: "match", Mismatch: "mismatch", Grace: "grace", 7: "unknown(7)"} {
		if got := o.String(); got != want {
			t.Errorf("Outcome(%d).String() = %q, want %q", uint8(o), got, want)
		}
	}
	for o, want := range map[Outcome]bool{Match: true, Grace: true, Mismatch: false, 7: false} {
		if got := o.Verified(); got != want {
			t.Errorf("%v.Verified() = %t, want %t", o, got, want)
		}
	}
	for c, want := range map[Cached]string{CachedNone: "none", CachedFresh: "fresh", CachedGrace: "grace", 9: "unknown(9)"} {
		if got := c.String(); got != want {
			t.Errorf("Cached(%d).String() = %q, want %q", uint8(c), got, want)
		}
	}
}
