package resolve

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/internal/dnstest"
)

// flipStep is one moment of a flip scenario, at a time on the scenario's
// clock (from the moment the name began to flip). One of:
//   - egressd: a flow to that address starts and is verified now (its
//     client resolved it a moment ago); this is how egressd gets answers
//     of its own;
//   - resolve: the client resolves the name (A) now and must be given
//     that address;
//   - connect: the client connects to dst (default: what it was given) at
//     once: its first packet arrives as it resolved (since), and the
//     verification starts now;
//   - zone: the server's zone changes.
//
// egressd and connect steps check the outcome and whether the
// verification asked again (Result.Requeried).
type flipStep struct {
	at      time.Duration
	egressd string
	resolve string
	connect bool
	dst     string
	zone    func(*dnstest.Server)
	want    Outcome
	requery bool
}

// TestFlip: the server's answer for a name flips between A and B within
// its TTL, per query or per period. A client resolves the name just
// before, at or just after egressd's own last answer, which holds the
// other address, and connects at once: it is not denied, whether egressd
// asks again (the flow began after its answer), holds the address from an
// earlier answer (fresh, or in grace), or asks once more because its
// answer was news (the name flipped under it). An address the name never
// had stays a mismatch at every boundary, and so does one that left the
// name longer than Grace ago; within Grace it is Grace.
func TestFlip(t *testing.T) {
	const (
		a   = "203.0.113.10"
		b   = "203.0.113.11"
		c   = "198.18.0.66" // never an answer of the name
		ms  = time.Millisecond
		sec = time.Second
	)
	// Per period: A in [0,10s), B in [10s,20s), A in [20s,30s), ...
	// Per query: A, B, A, ... to whoever asks, egressd or the client.
	const period = 10 * sec
	onlyB := func(s *dnstest.Server) { s.SetAddrs(allowed, 30, addrs(b)...) }
	tests := []struct {
		name   string
		period time.Duration // 0: per query
		steps  []flipStep
	}{
		{
			// The lab's failure: egressd's answer (B) came a moment before
			// the flip, the client's (A) a moment after; the query for
			// the flow waits for the name's slot, 1s after egressd's.
			name:   "per period: client just after egressd's last answer, the name flipped between",
			period: period,
			steps: []flipStep{
				{at: 20*sec - ms, egressd: b, want: Match, requery: true},
				{at: 20 * sec, resolve: a},
				{at: 20 * sec, connect: true, want: Match, requery: true},
			},
		},
		{
			name: "per period: client at egressd's last answer", period: period,
			steps: []flipStep{
				{at: 20 * sec, egressd: a, want: Match, requery: true},
				{at: 20 * sec, resolve: a},
				{at: 20 * sec, connect: true, want: Match},
			},
		},
		{
			name: "per period: client just before egressd's last answer, held fresh from before", period: period,
			steps: []flipStep{
				{at: 10*sec + 500*ms, egressd: b, want: Match, requery: true}, // B until 40.5s
				{at: 20*sec - ms, resolve: b},
				{at: 20 * sec, egressd: a, want: Match, requery: true},
				{at: 20 * sec, connect: true, want: Match},
			},
		},
		{
			name: "per period: client just before egressd's last answer, held in grace", period: period,
			steps: []flipStep{
				{at: 10*sec + 500*ms, egressd: b, want: Match, requery: true}, // B until 40.5s, in grace until 160.5s
				{at: 60*sec - ms, resolve: b},
				{at: 60 * sec, egressd: a, want: Match, requery: true},
				{at: 60 * sec, connect: true, want: Grace},
			},
		},
		{
			name: "per query: client just before egressd's first answer (news: asked once more)",
			steps: []flipStep{
				{at: 0, resolve: a},
				{at: ms, connect: true, want: Match, requery: true}, // egressd: B, then A 1s later
			},
		},
		{
			name: "per query: client at egressd's first answer (news: asked once more)",
			steps: []flipStep{
				{at: 0, resolve: a},
				{at: 0, connect: true, want: Match, requery: true},
			},
		},
		{
			name: "per query: client just after egressd's last answer, held fresh from before",
			steps: []flipStep{
				{at: 0, egressd: a, want: Match, requery: true},
				{at: 5 * sec, egressd: b, want: Match, requery: true},
				{at: 5*sec + ms, resolve: a},
				{at: 5*sec + ms, connect: true, want: Match},
			},
		},
		{
			name: "per query: client just after egressd's last answer, held in grace",
			steps: []flipStep{
				{at: 0, egressd: a, want: Match, requery: true}, // A until 30s
				{at: 40 * sec, egressd: b, want: Match, requery: true},
				{at: 40*sec + ms, resolve: a},
				{at: 40*sec + ms, connect: true, want: Grace},
			},
		},
		{
			// Asked again (the flow began after egressd's answer), and the
			// new answer (A) is news, so once more.
			name: "never an answer, just after egressd's last answer", period: period,
			steps: []flipStep{
				{at: 20*sec - ms, egressd: b, want: Match, requery: true},
				{at: 20 * sec, connect: true, dst: c, want: Mismatch, requery: true},
			},
		},
		{
			// egressd's answer was its first, so news: asked once more.
			name: "never an answer, at egressd's last answer", period: period,
			steps: []flipStep{
				{at: 20 * sec, egressd: a, want: Match, requery: true},
				{at: 20 * sec, connect: true, dst: c, want: Mismatch, requery: true},
			},
		},
		{
			name: "never an answer, just before egressd's last answer", period: period,
			steps: []flipStep{
				{at: 20*sec - ms, resolve: b},
				{at: 20 * sec, egressd: a, want: Match, requery: true},
				{at: 20 * sec, connect: true, dst: c, want: Mismatch, requery: true},
			},
		},
		{
			// egressd's last answer brought nothing new: no second look.
			name: "never an answer, at egressd's last answer, not news", period: period,
			steps: []flipStep{
				{at: 20 * sec, egressd: a, want: Match, requery: true},
				{at: 25 * sec, egressd: a, want: Match},
				{at: 26 * sec, connect: true, dst: c, want: Mismatch, requery: true}, // asks: its flow began after the answer
				{at: 26 * sec, connect: true, dst: c, want: Mismatch},
			},
		},
		{
			name: "never an answer, per query", steps: []flipStep{
				{at: 0, egressd: a, want: Match, requery: true},
				{at: 5 * sec, egressd: b, want: Match, requery: true},
				{at: 5*sec + ms, connect: true, dst: c, want: Mismatch, requery: true},
			},
		},
		{
			// A was last seen at 5s with TTL 30s: fresh until 35s, in
			// grace until 155s; the name stopped flipping at 20s.
			name: "left the name: within Grace it is Grace", period: period,
			steps: []flipStep{
				{at: 5 * sec, egressd: a, want: Match, requery: true},
				{at: 15 * sec, egressd: b, want: Match, requery: true},
				{at: 20 * sec, zone: onlyB},
				{at: 155*sec - ms, egressd: b, want: Match, requery: true},
				{at: 155*sec - ms, connect: true, dst: a, want: Grace},
			},
		},
		{
			name: "left the name: longer than Grace ago it is a mismatch", period: period,
			steps: []flipStep{
				{at: 5 * sec, egressd: a, want: Match, requery: true},
				{at: 15 * sec, egressd: b, want: Match, requery: true},
				{at: 20 * sec, zone: onlyB},
				{at: 155 * sec, egressd: b, want: Match, requery: true},
				{at: 155 * sec, connect: true, dst: a, want: Mismatch},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			start := e.clk.Now()
			e.dns.SetFlip(allowed, 30, tc.period, addrs(a, b)...)
			var got netip.Addr // what the client was given
			var resolved time.Time
			for i, s := range tc.steps {
				if d := start.Add(s.at).Sub(e.clk.Now()); d < 0 {
					t.Fatalf("step %d at %v: the clock is already at %v", i, s.at, e.clk.Now().Sub(start))
				} else {
					e.clk.Advance(d)
				}
				var dst netip.Addr
				since := e.clk.Now()
				switch {
				case s.zone != nil:
					s.zone(e.dns)
					continue
				case s.resolve != "":
					got, resolved = resolveA(t, e.dns), e.clk.Now()
					if got != netip.MustParseAddr(s.resolve) {
						t.Fatalf("step %d: the client was given %v, want %s", i, got, s.resolve)
					}
					continue
				case s.egressd != "":
					dst = netip.MustParseAddr(s.egressd)
				case s.connect:
					dst, since = got, resolved
					if s.dst != "" {
						dst = netip.MustParseAddr(s.dst)
					}
					if since.IsZero() {
						since = e.clk.Now()
					}
				}
				var res Result
				var err error
				e.onClock(t, func() {
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					defer cancel()
					res, err = e.r.VerifySince(ctx, allowed, dst, since)
				})
				if err != nil {
					t.Fatalf("step %d: VerifySince(%v): %v", i, dst, err)
				}
				if res.Outcome != s.want || res.Requeried != s.requery {
					t.Errorf("step %d at %v: VerifySince(%v) = %v (requeried %t), want %v (requeried %t); %+v",
						i, s.at, dst, res.Outcome, res.Requeried, s.want, s.requery, res)
				}
			}
		})
	}
}

// resolveA asks srv for allowed's A records as a client would, and
// returns the first.
func resolveA(t *testing.T, srv *dnstest.Server) netip.Addr {
	t.Helper()
	as, err := srv.Lookup(allowed, dns.TypeA)
	if err != nil || len(as) == 0 {
		t.Fatalf("the client's lookup: %v, %v", as, err)
	}
	return as[0]
}
