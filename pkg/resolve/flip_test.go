package resolve

import (
	"context"
	"net/netip"
	"sync"
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
// egressd and connect steps check the outcome, whether the verification
// asked again (Result.Requeried), how long it waited on the clock (for
// the name's query slots) and egressd's lookups of the name so far.
type flipStep struct {
	at      time.Duration
	egressd string
	resolve string
	connect bool
	dst     string
	zone    func(*dnstest.Server)
	want    Outcome
	requery bool
	waited  time.Duration
	lookups uint64
}

// TestFlip: the server's answer for a name flips between A and B within
// its TTL, per query or per period. A client resolves the name just
// before, at or just after egressd's own last answer, which holds the
// other address, and connects at once: it is not denied, whether egressd
// asks again (the flow began after its answer), holds the address from an
// earlier answer (fresh, or in grace), or asks once more because an
// answer since the flow began lacked it (the name flipped under it). An
// address the name never had stays a mismatch at every boundary, after
// one second look, and so does one that left the name longer than Grace
// ago; within Grace it is Grace.
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
				{at: 20*sec - ms, egressd: b, want: Match, requery: true, lookups: 1},
				{at: 20 * sec, resolve: a},
				{at: 20 * sec, connect: true, want: Match, requery: true, waited: 999 * ms, lookups: 2},
			},
		},
		{
			name: "per period: client at egressd's last answer", period: period,
			steps: []flipStep{
				{at: 20 * sec, egressd: a, want: Match, requery: true, lookups: 1},
				{at: 20 * sec, resolve: a},
				{at: 20 * sec, connect: true, want: Match, lookups: 1},
			},
		},
		{
			name: "per period: client just before egressd's last answer, held fresh from before", period: period,
			steps: []flipStep{
				{at: 10*sec + 500*ms, egressd: b, want: Match, requery: true, lookups: 1}, // B until 40.5s
				{at: 20*sec - ms, resolve: b},
				{at: 20 * sec, egressd: a, want: Match, requery: true, lookups: 2},
				{at: 20 * sec, connect: true, want: Match, lookups: 2},
			},
		},
		{
			name: "per period: client just before egressd's last answer, held in grace", period: period,
			steps: []flipStep{
				{at: 10*sec + 500*ms, egressd: b, want: Match, requery: true, lookups: 1}, // B until 40.5s, in grace until 160.5s
				{at: 60*sec - ms, resolve: b},
				{at: 60 * sec, egressd: a, want: Match, requery: true, lookups: 2},
				{at: 60 * sec, connect: true, want: Grace, lookups: 2},
			},
		},
		{
			// egressd: B, then A at the next slot, 1s later.
			name: "per query: client just before egressd's first answer (asked once more)",
			steps: []flipStep{
				{at: 0, resolve: a},
				{at: ms, connect: true, want: Match, requery: true, waited: sec, lookups: 2},
			},
		},
		{
			name: "per query: client at egressd's first answer (asked once more)",
			steps: []flipStep{
				{at: 0, resolve: a},
				{at: 0, connect: true, want: Match, requery: true, waited: sec, lookups: 2},
			},
		},
		{
			name: "per query: client just after egressd's last answer, held fresh from before",
			steps: []flipStep{
				{at: 0, egressd: a, want: Match, requery: true, lookups: 1},
				{at: 5 * sec, egressd: b, want: Match, requery: true, lookups: 2},
				{at: 5*sec + ms, resolve: a},
				{at: 5*sec + ms, connect: true, want: Match, lookups: 2},
			},
		},
		{
			name: "per query: client just after egressd's last answer, held in grace",
			steps: []flipStep{
				{at: 0, egressd: a, want: Match, requery: true, lookups: 1}, // A until 30s
				{at: 40 * sec, egressd: b, want: Match, requery: true, lookups: 2},
				{at: 40*sec + ms, resolve: a},
				{at: 40*sec + ms, connect: true, want: Grace, lookups: 2},
			},
		},
		{
			// Asked again at the slot (the flow began after egressd's
			// answer), A, and once more at the next: A.
			name: "never an answer, just after egressd's last answer", period: period,
			steps: []flipStep{
				{at: 20*sec - ms, egressd: b, want: Match, requery: true, lookups: 1},
				{at: 20 * sec, connect: true, dst: c, want: Mismatch, requery: true, waited: 1999 * ms, lookups: 3},
			},
		},
		{
			// egressd's answer came since the flow began: asked once more.
			name: "never an answer, at egressd's last answer", period: period,
			steps: []flipStep{
				{at: 20 * sec, egressd: a, want: Match, requery: true, lookups: 1},
				{at: 20 * sec, connect: true, dst: c, want: Mismatch, requery: true, waited: sec, lookups: 2},
			},
		},
		{
			name: "never an answer, just before egressd's last answer", period: period,
			steps: []flipStep{
				{at: 20*sec - ms, resolve: b},
				{at: 20 * sec, egressd: a, want: Match, requery: true, lookups: 1},
				{at: 20 * sec, connect: true, dst: c, want: Mismatch, requery: true, waited: sec, lookups: 2},
			},
		},
		{
			// egressd's answer at 26s brought nothing new, and lacks C:
			// asked once more all the same, at 27s. (Until an answer
			// that was not news took a second look too, this flow was
			// denied on the first, and the next one, at 26s, from the
			// cache.) The next flow, at 27s, began no later than that
			// second answer, which lacks C: it too asks once more, at
			// 28s; each flow gets one second look.
			name: "never an answer, at egressd's last answer, not news", period: period,
			steps: []flipStep{
				{at: 20 * sec, egressd: a, want: Match, requery: true, lookups: 1},
				{at: 25 * sec, egressd: a, want: Match, lookups: 1},
				{at: 26 * sec, connect: true, dst: c, want: Mismatch, requery: true, waited: sec, lookups: 3},
				{at: 27 * sec, connect: true, dst: c, want: Mismatch, requery: true, waited: sec, lookups: 4},
			},
		},
		{
			// Asked at the slot (6s): A, and once more (7s): B.
			name: "never an answer, per query", steps: []flipStep{
				{at: 0, egressd: a, want: Match, requery: true, lookups: 1},
				{at: 5 * sec, egressd: b, want: Match, requery: true, lookups: 2},
				{at: 5*sec + ms, connect: true, dst: c, want: Mismatch, requery: true, waited: 1999 * ms, lookups: 4},
			},
		},
		{
			// A was last seen at 5s with TTL 30s: fresh until 35s, in
			// grace until 155s; the name stopped flipping at 20s.
			name: "left the name: within Grace it is Grace", period: period,
			steps: []flipStep{
				{at: 5 * sec, egressd: a, want: Match, requery: true, lookups: 1},
				{at: 15 * sec, egressd: b, want: Match, requery: true, lookups: 2},
				{at: 20 * sec, zone: onlyB},
				{at: 155*sec - ms, egressd: b, want: Match, requery: true, lookups: 3},
				{at: 155*sec - ms, connect: true, dst: a, want: Grace, lookups: 3},
			},
		},
		{
			// egressd's answer at 155s (B) lacks A, as does the second
			// look at 156s. (It was denied from the cache, not asked
			// again, until an answer that was not news, B, took a second
			// look too.)
			name: "left the name: longer than Grace ago it is a mismatch", period: period,
			steps: []flipStep{
				{at: 5 * sec, egressd: a, want: Match, requery: true, lookups: 1},
				{at: 15 * sec, egressd: b, want: Match, requery: true, lookups: 2},
				{at: 20 * sec, zone: onlyB},
				{at: 155 * sec, egressd: b, want: Match, requery: true, lookups: 3},
				{at: 155 * sec, connect: true, dst: a, want: Mismatch, requery: true, waited: sec, lookups: 4},
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
				waited := e.onClock(t, func() {
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
				if n := e.r.Stats().Lookups; waited != s.waited || n != s.lookups {
					t.Errorf("step %d at %v: VerifySince(%v) waited %v, %d lookups so far; want %v, %d",
						i, s.at, dst, waited, n, s.waited, s.lookups)
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

// TestFlipLockstep: a name whose answer alternates per query between A
// and B, and a batch of clients that resolve it just before egressd asks
// (the lab's first failure: 61 false denies in 204). With an odd number
// of clients between two of egressd's queries, egressd's next answer is
// the one it already holds (A), however many batches come: no answer is
// news, and only a second look after an answer that was not news gives
// egressd B. Every client connects at once to what it was given, with one
// flow to an address the name never had among them: no client is denied,
// the stranger is, after one second look, and the name costs one lookup
// per slot whatever the number of flows.
//
// The batch comes either within the name's slot after egressd's last
// lookup (every flow that lacks its address waits for the next slot) or
// after it (the first of them asks at once, the rest join its lookup or
// find its answer in the cache).
func TestFlipLockstep(t *testing.T) {
	const (
		a        = "203.0.113.10"
		b        = "203.0.113.11"
		stranger = "198.18.0.66"
		sec      = time.Second
	)
	// waitStep: the flows that wait for a slot, all of them waiting, then
	// the clock moves to it.
	type waitStep struct {
		what      string
		slotWaits uint64 // so far
		waiting   int
		lookups   uint64 // so far
		advance   time.Duration
	}
	tests := []struct {
		name        string
		clients     int
		gap         time.Duration // from egressd's first lookup to the batch
		steps       []waitStep
		secondLooks uint64
	}{
		{
			name: "1 client within the slot", clients: 1, gap: 500 * time.Millisecond,
			steps: []waitStep{
				{what: "B and the stranger wait for the slot at 1s", slotWaits: 2, waiting: 2, lookups: 1, advance: 500 * time.Millisecond},
				{what: "A again: both look once more at 2s", slotWaits: 4, waiting: 2, lookups: 2, advance: sec},
			},
			secondLooks: 2,
		},
		{
			// Not in lockstep: egressd's answer at 1s is B.
			name: "4 clients within the slot", clients: 4, gap: 500 * time.Millisecond,
			steps: []waitStep{
				{what: "2 to B and the stranger wait for the slot at 1s", slotWaits: 3, waiting: 3, lookups: 1, advance: 500 * time.Millisecond},
				{what: "B: the stranger looks once more at 2s", slotWaits: 4, waiting: 1, lookups: 2, advance: sec},
			},
			secondLooks: 1,
		},
		{
			name: "5 clients within the slot (the lab's batch)", clients: 5, gap: 500 * time.Millisecond,
			steps: []waitStep{
				{what: "3 to B and the stranger wait for the slot at 1s", slotWaits: 4, waiting: 4, lookups: 1, advance: 500 * time.Millisecond},
				{what: "A again: all look once more at 2s", slotWaits: 8, waiting: 4, lookups: 2, advance: sec},
			},
			secondLooks: 4,
		},
		{
			name: "9 clients within the slot", clients: 9, gap: 500 * time.Millisecond,
			steps: []waitStep{
				{what: "5 to B and the stranger wait for the slot at 1s", slotWaits: 6, waiting: 6, lookups: 1, advance: 500 * time.Millisecond},
				{what: "A again: all look once more at 2s", slotWaits: 12, waiting: 6, lookups: 2, advance: sec},
			},
			secondLooks: 6,
		},
		{
			name: "1 client after the slot", clients: 1, gap: 5 * sec,
			steps: []waitStep{
				{what: "A again at 5s: B and the stranger look once more at 6s", slotWaits: 2, waiting: 2, lookups: 2, advance: sec},
			},
			secondLooks: 2,
		},
		{
			name: "4 clients after the slot", clients: 4, gap: 5 * sec,
			steps: []waitStep{
				{what: "B at 5s: the stranger looks once more at 6s", slotWaits: 1, waiting: 1, lookups: 2, advance: sec},
			},
			secondLooks: 1,
		},
		{
			name: "5 clients after the slot (the lab's batch)", clients: 5, gap: 5 * sec,
			steps: []waitStep{
				{what: "A again at 5s: 3 to B and the stranger look once more at 6s", slotWaits: 4, waiting: 4, lookups: 2, advance: sec},
			},
			secondLooks: 4,
		},
		{
			name: "9 clients after the slot", clients: 9, gap: 5 * sec,
			steps: []waitStep{
				{what: "A again at 5s: 5 to B and the stranger look once more at 6s", slotWaits: 6, waiting: 6, lookups: 2, advance: sec},
			},
			secondLooks: 6,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			e.dns.SetFlip(allowed, 30, 0, addrs(a, b)...)
			// egressd's first answer, A (TTL 30s), from a flow of its own.
			if got := e.verify(t, allowed, a); got != Match {
				t.Fatalf("egressd's first flow: %v, want match", got)
			}
			e.clk.Advance(tc.gap)
			since := e.clk.Now()
			var dsts []netip.Addr
			for range tc.clients {
				dsts = append(dsts, resolveA(t, e.dns))
			}
			dsts = append(dsts, netip.MustParseAddr(stranger))

			outcomes := make([]Outcome, len(dsts))
			errs := make([]error, len(dsts))
			var wg sync.WaitGroup
			for i, dst := range dsts {
				wg.Go(func() {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					var res Result
					res, errs[i] = e.r.VerifySince(ctx, allowed, dst, since)
					outcomes[i] = res.Outcome
				})
			}
			finished := make(chan struct{})
			go func() {
				wg.Wait()
				close(finished)
			}()
		steps:
			for _, s := range tc.steps {
				deadline := time.Now().Add(10 * time.Second)
				for e.r.Stats().SlotWaits != s.slotWaits || e.clk.Waiters() != s.waiting {
					select {
					case <-finished: // decided without the waits, the outcomes say how
						t.Errorf("every flow decided before %s (%d slot waits)", s.what, e.r.Stats().SlotWaits)
						break steps
					case <-time.After(time.Millisecond):
					}
					if time.Now().After(deadline) {
						t.Fatalf("timed out waiting for %s: %d slot waits, %d waiting", s.what, e.r.Stats().SlotWaits, e.clk.Waiters())
					}
				}
				if n := e.r.Stats().Lookups; n != s.lookups {
					t.Errorf("%s: %d lookups so far, want %d", s.what, n, s.lookups)
				}
				e.clk.Advance(s.advance)
			}
			<-finished
			for i, dst := range dsts {
				want := Match
				if i == len(dsts)-1 {
					want = Mismatch
				}
				if errs[i] != nil || outcomes[i] != want {
					t.Errorf("flow to %v (client %d): %v, %v; want %v", dst, i, outcomes[i], errs[i], want)
				}
			}
			// Three lookups in every case, whatever the number of flows:
			// egressd's first, the one at the batch's slot, and the
			// second look at the slot after.
			const lookups = 3
			st := e.r.Stats()
			if st.Lookups != lookups || st.Queries != 2*lookups || st.SecondLooks != tc.secondLooks || st.SlotWaits != tc.steps[len(tc.steps)-1].slotWaits {
				t.Errorf("Stats: %d lookups, %d queries, %d second looks, %d slot waits; want %d, %d, %d, %d",
					st.Lookups, st.Queries, st.SecondLooks, st.SlotWaits, lookups, 2*lookups, tc.secondLooks, tc.steps[len(tc.steps)-1].slotWaits)
			}
		})
	}
}
