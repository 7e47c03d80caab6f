package resolve

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/internal/dnstest"
)

// TestRequeryWaitCancelled: a verification waiting for its name's query
// slot leaves when its context ends, with an error (dns-error), not a
// mismatch, and sends nothing.
func TestRequeryWaitCancelled(t *testing.T) {
	tests := []struct {
		name string
		end  func(cancel context.CancelFunc, e *testEnv)
		want error
	}{
		{name: "cancelled", end: func(cancel context.CancelFunc, _ *testEnv) { cancel() }, want: context.Canceled},
		{name: "Close", end: func(_ context.CancelFunc, e *testEnv) { e.r.Close() }, want: ErrClosed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			e.dns.SetAddrs(allowed, 60, addrs("203.0.113.10")...)
			e.verify(t, allowed, "203.0.113.10")
			e.clk.Advance(500 * time.Millisecond)

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			type result struct {
				res Result
				err error
			}
			done := make(chan result, 1)
			go func() {
				res, err := e.r.VerifySince(ctx, allowed, netip.MustParseAddr("198.18.0.66"), e.clk.Now())
				done <- result{res, err}
			}()
			waitFor(t, "the verification to wait for its slot", func() bool { return e.clk.Waiters() == 1 })
			tc.end(cancel, e)
			got := <-done
			var le *LookupError
			if !errors.Is(got.err, tc.want) || !errors.As(got.err, &le) || le.Name != allowed {
				t.Errorf("error %v, want a LookupError for %s wrapping %v", got.err, allowed, tc.want)
			}
			if got.res.Outcome != Mismatch {
				t.Errorf("outcome %v with an error, want mismatch", got.res.Outcome)
			}
			if n := e.dns.Total(); n != 2 {
				t.Errorf("server got %d queries, want only the first lookup's 2", n)
			}
			if st := e.r.Stats(); st.Errors != 1 || st.Mismatches != 0 || st.SlotWaits != 1 {
				t.Errorf("Stats: %d errors, %d mismatches, %d slot waits; want 1, 0, 1", st.Errors, st.Mismatches, st.SlotWaits)
			}
		})
	}
}

// TestRequeryWaitShared: the flows that wait for one slot share its
// lookup, and those whose address it lacks share the second look too.
func TestRequeryWaitShared(t *testing.T) {
	const waiters = 50 // of each address
	e := newEnv(t, nil)
	e.dns.SetAddrs(allowed, 60, addrs("203.0.113.10")...)
	e.verify(t, allowed, "203.0.113.10") // t=0
	e.dns.SetAddrs(allowed, 60, addrs("203.0.113.10", "203.0.113.11")...)
	e.clk.Advance(500 * time.Millisecond)

	since := e.clk.Now()
	outcomes := make(map[string][]Outcome)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range waiters {
		for _, a := range []string{"203.0.113.11", "198.18.0.66"} {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				res, err := e.r.VerifySince(ctx, allowed, netip.MustParseAddr(a), since)
				if err != nil {
					t.Errorf("VerifySince(%s): %v", a, err)
				}
				mu.Lock()
				outcomes[a] = append(outcomes[a], res.Outcome)
				mu.Unlock()
			})
		}
	}
	steps := []struct {
		what    string
		waits   uint64 // slot waits so far
		waiting int    // of them, waiting now
		queries int    // so far
	}{
		{what: "every flow waits for the slot at 1s", waits: 2 * waiters, waiting: 2 * waiters, queries: 2},
		// The answer lacks .66: the flows to it ask once more.
		{what: "the flows to .66 wait for the next, at 2s", waits: 3 * waiters, waiting: waiters, queries: 4},
	}
	for _, s := range steps {
		waitFor(t, s.what, func() bool { return e.r.Stats().SlotWaits == s.waits && e.clk.Waiters() == s.waiting })
		if n := e.dns.Total(); n != s.queries {
			t.Errorf("%s: server got %d queries, want %d", s.what, n, s.queries)
		}
		d, _ := e.clk.next()
		e.clk.Advance(d)
	}
	wg.Wait()
	if n := e.dns.Total(); n != 6 {
		t.Errorf("server got %d queries in all, want 6: one lookup per slot", n)
	}
	for a, want := range map[string]Outcome{"203.0.113.11": Match, "198.18.0.66": Mismatch} {
		if len(outcomes[a]) != waiters {
			t.Errorf("%s: %d outcomes, want %d", a, len(outcomes[a]), waiters)
		}
		for _, got := range outcomes[a] {
			if got != want {
				t.Errorf("%s: %v, want %v", a, got, want)
				break
			}
		}
	}
	st := e.r.Stats()
	if st.Lookups != 3 || st.SecondLooks != waiters || st.MismatchesRequeried != waiters {
		t.Errorf("Stats: %d lookups, %d second looks, %d mismatches after a requery; want 3, %d, %d",
			st.Lookups, st.SecondLooks, st.MismatchesRequeried, waiters, waiters)
	}
}

// TestResultExplains: what a Result says of the answer it was decided on.
func TestResultExplains(t *testing.T) {
	e := newEnv(t, nil)
	e.dns.SetAddrs(allowed, 60, addrs("203.0.113.10", "203.0.113.11", "2001:db8::10")...)
	t0 := e.clk.Now()
	const sec = time.Second
	tests := []struct {
		name    string
		advance time.Duration
		zone    func()
		host    string // default allowed
		addr    string
		since   time.Duration // from t0; -1: now
		timeout time.Duration // the caller's context; 0: none
		want    Result
	}{
		{name: "first lookup", since: -1, addr: "203.0.113.10", want: Result{Outcome: Match, Addrs: 3, Requeried: true}},
		{name: "hit", advance: 3 * sec, since: -1, addr: "203.0.113.11", want: Result{Outcome: Match, AnswerAge: 3 * sec, Addrs: 3}},
		// Asked at 5s, and once more at 6s (the second look): the age is
		// that of the second answer.
		{name: "mismatch after asking again", advance: 2 * sec, since: -1, addr: "198.18.0.66", want: Result{Outcome: Mismatch, Addrs: 3, Requeried: true}},
		// At 6.5s the answer of 6s, since the flow began, lacks it. A
		// flow takes a second look at the next slot (7s) unless its
		// deadline comes first, as here: only then is a mismatch on an
		// answer with addresses decided from the cache. (It was 2s
		// later, without a deadline, until every mismatch took a second
		// look, not only one on an answer that was news.)
		{name: "mismatch from the cache", advance: 500 * time.Millisecond, since: 5 * sec, timeout: 100 * time.Millisecond, addr: "198.18.0.66", want: Result{Outcome: Mismatch, AnswerAge: 500 * time.Millisecond, Addrs: 3}},
		{name: "IPv6 hit: the AAAA answer's age", since: -1, addr: "2001:db8::10", want: Result{Outcome: Match, AnswerAge: 500 * time.Millisecond, Addrs: 3}},
		{
			// Every address was last seen at 6s, TTL 60s.
			name: "grace after asking an expired name", advance: 60 * sec, since: -1, addr: "203.0.113.10",
			zone: func() { e.dns.SetAddrs(allowed, 60, addrs("203.0.113.11")...) },
			want: Result{Outcome: Grace, Addrs: 3, Requeried: true},
		},
		{name: "grace from the cache", advance: sec, since: -1, addr: "203.0.113.10", want: Result{Outcome: Grace, AnswerAge: sec, Addrs: 3}},
		{name: "NXDOMAIN", host: missing, since: -1, addr: "203.0.113.10", want: Result{Outcome: Mismatch, Requeried: true}},
		{name: "NXDOMAIN from the cache", advance: sec, host: missing, since: -1, addr: "203.0.113.10", want: Result{Outcome: Mismatch, AnswerAge: sec}},
	}
	for _, tc := range tests {
		e.clk.Advance(tc.advance)
		if tc.zone != nil {
			tc.zone()
		}
		since := e.clk.Now()
		if tc.since >= 0 {
			since = t0.Add(tc.since)
		}
		host := tc.host
		if host == "" {
			host = allowed
		}
		ctx, cancel := context.Background(), context.CancelFunc(func() {})
		if tc.timeout > 0 {
			ctx, cancel = context.WithTimeout(ctx, tc.timeout)
		}
		var got Result
		var err error
		e.onClock(t, func() { got, err = e.r.VerifySince(ctx, host, netip.MustParseAddr(tc.addr), since) })
		cancel()
		if err != nil {
			t.Fatalf("%s: VerifySince(%s): %v", tc.name, tc.addr, err)
		}
		if got != tc.want {
			t.Errorf("%s: VerifySince(%s) = %+v, want %+v", tc.name, tc.addr, got, tc.want)
		}
	}
}

// TestSecondLookFails: a second look whose lookup fails leaves the first
// look's answer standing: the flow is a mismatch, not an error.
func TestSecondLookFails(t *testing.T) {
	e := newEnv(t, nil)
	e.dns.SetAddrs(allowed, 60, addrs("203.0.113.10")...)
	type result struct {
		res Result
		err error
	}
	done := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		res, err := e.r.VerifySince(ctx, allowed, netip.MustParseAddr("198.18.0.66"), e.clk.Now())
		done <- result{res, err}
	}()
	waitFor(t, "the second look to wait for its slot", func() bool { return e.r.Stats().SlotWaits == 1 && e.clk.Waiters() == 1 })
	e.dns.SetServFail(true)
	e.clk.Advance(time.Second)
	got := <-done
	if want := (Result{Outcome: Mismatch, AnswerAge: time.Second, Addrs: 1, Requeried: true}); got.err != nil || got.res != want {
		t.Errorf("VerifySince = %+v, %v; want %+v, no error", got.res, got.err, want)
	}
	st := e.r.Stats()
	if st.Lookups != 2 || st.SecondLooks != 1 || st.QueryErrors != 2 || st.Errors != 0 || st.MismatchesRequeried != 1 {
		t.Errorf("Stats: %d lookups, %d second looks, %d query errors, %d errors, %d mismatches after a requery; want 2, 1, 2, 0, 1",
			st.Lookups, st.SecondLooks, st.QueryErrors, st.Errors, st.MismatchesRequeried)
	}
}

// TestSecondLookFrozenClock: a second look needs a lookup that started
// after the first one. When the family's answer is not held (here the one
// slot of MaxAddrs keeps the AAAA address, which outlives the A one),
// there is no slot to wait for; on a clock that has not moved since the
// first look, the verification waits for it to move (a nanosecond), once,
// rather than look again at once, over and over, with the same start.
func TestSecondLookFrozenClock(t *testing.T) {
	v4, v6 := dnstest.New(), dnstest.New()
	v4.SetAddrs(allowed, 60, addrs("203.0.113.10")...)
	v6.SetAddrs(allowed, 3600, addrs("2001:db8::10")...)
	tr := transportFunc(func(ctx context.Context, server string, q []byte) ([]byte, error) {
		if queryType(q) == dns.TypeAAAA {
			return v6.Exchange(ctx, server, q)
		}
		return v4.Exchange(ctx, server, q)
	})
	e := newEnv(t, func(c *Config) { c.MaxAddrs = 1; c.Transport = tr })
	var res Result
	var err error
	moved := e.onClock(t, func() {
		res, err = e.r.VerifySince(context.Background(), allowed, netip.MustParseAddr("198.18.0.66"), e.clk.Now())
	})
	if err != nil || res.Outcome != Mismatch || !res.Requeried {
		t.Fatalf("VerifySince = %+v, %v; want a mismatch after asking", res, err)
	}
	st := e.r.Stats()
	if moved != time.Nanosecond || st.Lookups != 2 || st.SecondLooks != 1 || st.SlotWaits != 1 {
		t.Errorf("clock moved %v, Stats: %d lookups, %d second looks, %d slot waits; want 1ns, 2, 1, 1",
			moved, st.Lookups, st.SecondLooks, st.SlotWaits)
	}
}
