package resolve

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/internal/dnstest"
)

// TestBudgetTake: the bucket's floors per class, the wait it reports, and
// its refill on the clock.
func TestBudgetTake(t *testing.T) {
	const ms = int64(time.Millisecond)
	// 32 packets/s: 16 tokens (the minimum), floors 4 (unlisted), 2
	// (watched), 0 (refresh); a token every 31.25ms.
	steps := []struct {
		name string
		now  int64
		n    int
		c    class
		ok   bool
		wait time.Duration
		left int64 // tokens after, rounded down
	}{
		{name: "full", n: 2, c: classUnlisted, ok: true, left: 14},
		{name: "unlisted down to its floor", n: 10, c: classUnlisted, ok: true, left: 4},
		{name: "unlisted refused at its floor", n: 1, c: classUnlisted, wait: 31250 * time.Microsecond, left: 4},
		{name: "watched down to its floor", n: 2, c: classWatched, ok: true, left: 2},
		{name: "watched refused at its floor", n: 2, c: classWatched, wait: 62500 * time.Microsecond, left: 2},
		{name: "refresh may empty it", n: 2, c: classRefresh, ok: true, left: 0},
		{name: "refresh waits for a token", n: 1, c: classRefresh, wait: 31250 * time.Microsecond, left: 0},
		{name: "one token later", now: 31250 * 1000, n: 1, c: classRefresh, ok: true, left: 0},
		{name: "refill: a second fills it", now: 1031 * ms, n: 0, c: classRefresh, ok: true, left: 16},
		{name: "never above its size", now: 10_000 * ms, n: 16, c: classRefresh, ok: true, left: 0},
	}
	b := newBudget(32, 0)
	for _, s := range steps {
		ok, wait := b.take(s.now, s.n, s.c)
		if ok != s.ok || wait != s.wait || b.level/perToken != s.left {
			t.Errorf("%s: take(%d) = %t, %v, leaving %d tokens; want %t, %v, %d",
				s.name, s.n, ok, wait, b.level/perToken, s.ok, s.wait, s.left)
		}
	}
}

// TestBudgetVerify: once verifications have spent the budget down to
// their floors they fail at once with ErrBudget, sending nothing, while
// the refresh of watched names still gets its queries (waiting for the
// refill); and the bucket refills on the clock.
func TestBudgetVerify(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxQueriesPerSecond = 32 }) // 16 tokens; floors 4 and 2
	watched := []string{"w1.example.test", "w2.example.test"}
	for _, n := range watched {
		e.dns.SetAddrs(n, 60, addrs("203.0.113.10")...)
	}
	if err := e.r.Watch(watched); err != nil {
		t.Fatal(err)
	}
	label := func(i int) string { return fmt.Sprintf("x%d.wild.example.test", i) }
	verify := func(name string) error {
		_, err := e.r.VerifySince(context.Background(), name, netip.MustParseAddr("203.0.113.10"), e.clk.Now())
		return err
	}
	// Unlisted names: six lookups of two queries leave the floor of 4.
	for i := range 6 {
		if err := verify(label(i)); err != nil {
			t.Fatalf("%s: %v", label(i), err)
		}
	}
	sent := e.dns.Total()
	if err := verify(label(6)); !errors.Is(err, ErrBudget) {
		t.Fatalf("seventh unlisted name: %v, want ErrBudget", err)
	}
	// A watched name may go down to an eighth (2), once.
	if err := verify(watched[0]); err != nil {
		t.Fatalf("watched name: %v", err)
	}
	if err := verify(watched[1]); !errors.Is(err, ErrBudget) {
		t.Fatalf("second watched name: %v, want ErrBudget", err)
	}
	if n := e.dns.Total(); n != sent+2 {
		t.Errorf("%d queries sent by the refused verifications", n-sent-2)
	}

	// The refresher asks both watched names: two tokens are left, the
	// rest it waits for.
	asked := func(n string) int { return e.dns.Queries(n, dns.TypeA) + e.dns.Queries(n, dns.TypeAAAA) }
	before := map[string]int{}
	for _, n := range watched {
		before[n] = asked(n)
	}
	sched := map[string]*watchItem{}
	e.r.reconcile(sched)
	moved := e.onClock(t, func() { e.r.refreshDue(context.Background(), sched) })
	for _, n := range watched {
		if got := asked(n) - before[n]; got != 2 {
			t.Errorf("refresh sent %d queries for %s, want 2", got, n)
		}
		if sched[n].fails != 0 {
			t.Errorf("refresh of %s failed", n)
		}
	}
	st := e.r.Stats()
	if st.BudgetWaits == 0 || moved < 31*time.Millisecond || moved > time.Second {
		t.Errorf("refresh: %d budget waits, clock moved %v; want some, about 62.5ms", st.BudgetWaits, moved)
	}
	if st.BudgetRefused != 2 || st.Errors != 2 {
		t.Errorf("Stats: %d refused by the budget, %d errors; want 2, 2", st.BudgetRefused, st.Errors)
	}
	if err := verify(label(7)); !errors.Is(err, ErrBudget) {
		t.Errorf("unlisted name right after the refresh: %v, want ErrBudget", err)
	}

	// A second refills the bucket.
	e.clk.Advance(time.Second)
	for i := 8; i < 14; i++ {
		if err := verify(label(i)); err != nil {
			t.Errorf("%s after a second: %v", label(i), err)
		}
	}
}

// TestBudgetSecondLook: the second look is taken only while the bucket is
// at least half full.
func TestBudgetSecondLook(t *testing.T) {
	for _, tc := range []struct {
		name    string
		level   int64 // tokens before the verification
		queries int
	}{
		{name: "half full", level: 10, queries: 4},
		{name: "under half", level: 9, queries: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(c *Config) { c.MaxQueriesPerSecond = 32 }) // 16 tokens
			e.dns.SetAddrs(allowed, 60, addrs("203.0.113.10")...)
			e.r.budget.level = tc.level * perToken
			var res Result
			var err error
			e.onClock(t, func() {
				res, err = e.r.VerifySince(context.Background(), allowed, netip.MustParseAddr("198.18.0.66"), e.clk.Now())
			})
			if err != nil || res.Outcome != Mismatch {
				t.Fatalf("VerifySince = %+v, %v; want a mismatch", res, err)
			}
			if n := e.dns.Total(); n != tc.queries {
				t.Errorf("%d queries, want %d", n, tc.queries)
			}
		})
	}
}

// TestBudgetTCP: NetTransport's TCP fallback is charged to the budget,
// six packets, and refused like any query when there is no room.
func TestBudgetTCP(t *testing.T) {
	srv := dnstest.New()
	srv.SetAddrs(allowed, 60, addrs("203.0.113.10", "2001:db8::10")...)
	// Over pipes: every "udp" answer is truncated, so every query is asked
	// again over "tcp".
	tr := NetTransport{Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		c, s := net.Pipe()
		go func() {
			defer s.Close()
			conn := &dns.Conn{Conn: s}
			q, err := conn.ReadMsg()
			if err != nil {
				return
			}
			m := new(dns.Msg)
			m.SetReply(q)
			if network == "udp" {
				m.Truncated = true
			} else {
				b, _ := q.Pack()
				if b, err = srv.Exchange(ctx, "", b); err != nil || m.Unpack(b) != nil {
					return
				}
			}
			_ = conn.WriteMsg(m)
		}()
		return c, nil
	}}
	tests := []struct {
		name     string
		rate     int
		level    int64 // tokens before
		wantErr  error
		left     int64
		tcp      uint64
		refusals uint64
	}{
		// Two UDP queries and two TCP fallbacks of six: 14 of 32.
		{name: "room for all", rate: 64, level: 32, left: 18, tcp: 2},
		// The launch takes 2 of 8, leaving 6: a fallback needs 6 above
		// the floor of 4.
		{name: "no room for the fallback", rate: 32, level: 8, wantErr: ErrBudget, left: 6, refusals: 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(c *Config) { c.MaxQueriesPerSecond = tc.rate; c.Transport = tr; c.Timeout = 5 * time.Second })
			e.r.budget.level = tc.level * perToken
			_, err := e.r.VerifySince(context.Background(), allowed, netip.MustParseAddr("203.0.113.10"), e.clk.Now())
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("VerifySince: %v, want %v", err, tc.wantErr)
			}
			st := e.r.Stats()
			if left := e.r.budget.level / perToken; left != tc.left || st.TCPFallbacks != tc.tcp || st.BudgetRefused != tc.refusals {
				t.Errorf("%d tokens left, %d TCP fallbacks, %d refusals; want %d, %d, %d",
					left, st.TCPFallbacks, st.BudgetRefused, tc.left, tc.tcp, tc.refusals)
			}
		})
	}
}

// TestNegativeLabels (issue 13): random labels under one parent, each a
// name that does not exist, cost one lookup each and are then cached: no
// second query for a label within NegativeTTL, and no second look.
func TestNegativeLabels(t *testing.T) {
	const labels = 50
	e := newEnv(t, func(c *Config) { c.MaxQueriesPerSecond = 10_000 })
	e.dns.SetNegativeTTL(30)
	label := func(i int) string { return fmt.Sprintf("r%04x.wild.example.test", i*7919) }
	verifyAll := func() {
		t.Helper()
		for i := range labels {
			got, err := e.verifyErr(label(i), "203.0.113.10")
			if err != nil || got != Mismatch {
				t.Fatalf("%s: %v, %v; want a mismatch", label(i), got, err)
			}
		}
	}
	verifyAll()
	e.clk.Advance(29 * time.Second)
	verifyAll()
	for i := range labels {
		if a, aaaa := e.dns.Queries(label(i), dns.TypeA), e.dns.Queries(label(i), dns.TypeAAAA); a != 1 || aaaa != 1 {
			t.Fatalf("%s: %d A and %d AAAA queries within NegativeTTL, want 1 and 1", label(i), a, aaaa)
		}
	}
	want := Stats{
		Verifies: 2 * labels, NegativeHits: labels, Misses: labels,
		Mismatches: 2 * labels, MismatchesRequeried: labels, MismatchesCached: labels,
		Lookups: labels, Queries: 2 * labels, NegativeAnswers: 2 * labels, Names: labels,
	}
	if got := e.r.Stats(); got != want {
		t.Errorf("Stats = %+v\nwant    %+v", got, want)
	}
	e.clk.Advance(time.Second) // NegativeTTL has passed: asked again
	verifyAll()
	if n := e.r.Stats().Lookups; n != 2*labels {
		t.Errorf("%d lookups after NegativeTTL, want %d", n, 2*labels)
	}
}
