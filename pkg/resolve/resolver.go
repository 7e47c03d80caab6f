package resolve

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// Outcome is the result of a verification that did not fail.
type Outcome uint8

const (
	// Mismatch: the destination is not among the name's answers
	// (including a name that does not exist or has no address), fresh or
	// in grace, and an answer obtained since the flow began says so. The
	// zero value, so an Outcome that was never set denies.
	Mismatch Outcome = iota
	// Match: the destination is among the name's current answers.
	Match
	// Grace: the destination was among the name's answers, whose TTL
	// has ended less than Config.Grace ago, and no answer since has it.
	// It verifies (see Verified); the decision log should say it did so
	// through grace.
	Grace
)

func (o Outcome) String() string {
	switch o {
	case Mismatch:
		return "mismatch"
	case Match:
		return "match"
	case Grace:
		return "grace"
	}
	return fmt.Sprintf("unknown(%d)", uint8(o))
}

// Verified reports whether o ties the destination to the name: Match or
// Grace.
func (o Outcome) Verified() bool { return o == Match || o == Grace }

// Result is a verification's outcome and what it was decided on, so that
// every mismatch explains itself in the decision log.
type Result struct {
	Outcome Outcome
	// AnswerAge is the age, when decided, of the newest answer the
	// resolver held for the name in the destination's family (A or
	// AAAA), counted from when its lookup started. 0 when it held none.
	AnswerAge time.Duration
	// Addrs is how many addresses the resolver held for the name, fresh
	// or in grace, both families, when decided.
	Addrs int
	// Requeried: the verification waited for a lookup (its own, or one
	// in flight it joined) or for the name's query slot: the cache lacked
	// the destination and held no answer obtained since the flow began,
	// or it held one that lacked it and the verification looked once
	// more (see VerifySince), or the destination was in grace and the
	// name's answers had expired. False: decided from the cache alone.
	Requeried bool
}

// Stats are counters since New, read with Resolver.Stats. The metrics
// layer exports them; nothing here carries a name or an address.
//
// Verifies = Matches + Graces + Mismatches + Errors, and Mismatches =
// MismatchesRequeried + MismatchesCached.
type Stats struct {
	Verifies            uint64 // Verify and VerifySince calls
	Hits                uint64 // answered Match from the cache, no I/O
	Graces              uint64 // answered Grace (always from the cache)
	NegativeHits        uint64 // answered Mismatch from a cached NXDOMAIN/NODATA
	Misses              uint64 // lookups waited for (its own or one in flight; a verification may wait for two)
	SlotWaits           uint64 // waited for a name's query slot (RequeryInterval)
	SecondLooks         uint64 // looked once more after an answer, since the flow began, with addresses but not the destination (see VerifySince)
	Matches             uint64 // returned Match
	Mismatches          uint64 // returned Mismatch without error
	MismatchesRequeried uint64 // ... after waiting for a lookup made since the flow began
	MismatchesCached    uint64 // ... from the cache: a negative answer, or one obtained since the flow began with no room or time for a second look
	Errors              uint64 // returned an error (reason dns-error; limit for ErrBudget, also in BudgetRefused)
	Lookups             uint64 // name lookups started (each asks A and AAAA)
	Queries             uint64 // DNS queries sent (per type, per server tried)
	TCPFallbacks        uint64 // of those, asked again over TCP (NetTransport, on TC)
	QueryErrors         uint64 // queries that failed (timeout, unreachable, bad answer)
	NegativeAnswers     uint64 // answers that were NXDOMAIN or NODATA (per type), then cached
	Refreshes           uint64 // lookups started by the refresher (Run)
	BudgetRefused       uint64 // verification lookups and queries the query budget refused (ErrBudget)
	BudgetWaits         uint64 // refresher queries that waited for the budget
	Evictions           uint64 // names evicted to stay within CacheMax
	Names               uint64 // names cached now
}

// Resolver verifies destinations against DNS answers. Its methods are safe
// for concurrent use.
type Resolver struct {
	cfg    Config
	base   time.Time // time origin of the cache's int64 clock
	cache  *cache
	budget *budget

	fmu     sync.Mutex
	flights map[string]*flight
	closed  bool // set by Close; no lookup starts after it

	wmu     sync.Mutex                          // serialises Watch
	watched atomic.Pointer[map[string]struct{}] // immutable; replaced by Watch
	wake    chan struct{}                       // tells Run the watched set changed
	running atomic.Bool

	ctx    context.Context // parent of every lookup; ended by Close
	cancel context.CancelFunc
	flying sync.WaitGroup // lookups in flight

	// Counters; Verifies, Matches and Mismatches are sums of these, so
	// that a hit adds to one counter only.
	stats struct {
		hits, graces, negHits, misses, slotWaits, secondLooks, slowMatches,
		mismatchesAsked, mismatchesHeld, errors,
		lookups, queries, tcpFallbacks, queryErrors, negAnswers, refreshes,
		budgetRefused, budgetWaits atomic.Uint64
	}
}

// New returns a Resolver for cfg, or the first problems found in cfg.
func New(cfg Config) (*Resolver, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	base := cfg.Now()
	r := &Resolver{
		cfg:     cfg,
		base:    base,
		budget:  newBudget(cfg.MaxQueriesPerSecond, 0),
		cache:   newCache(cfg.CacheMax, cfg.MaxAddrs, cfg.Grace),
		flights: make(map[string]*flight),
		wake:    make(chan struct{}, 1),
	}
	r.watched.Store(&map[string]struct{}{})
	r.ctx, r.cancel = context.WithCancel(context.Background())
	return r, nil
}

// Close ends the lookups in flight and waits for them; their waiters get
// an error. Verify, Cached and Stats still work after Close, from the
// cache, but every lookup fails with ErrClosed. Close does not stop Run;
// its context does.
func (r *Resolver) Close() {
	r.fmu.Lock()
	r.closed = true
	r.fmu.Unlock()
	r.cancel()
	r.flying.Wait()
}

// now reads the clock as the cache keeps it.
func (r *Resolver) now() int64 { return r.at(r.cfg.Now()) }

// at converts t to the cache's clock.
func (r *Resolver) at(t time.Time) int64 { return int64(t.Sub(r.base)) }

// Verify is VerifySince with since = now: the outcome of a verification
// that needs an answer obtained no earlier than the call.
func (r *Resolver) Verify(ctx context.Context, name string, addr netip.Addr) (Outcome, error) {
	res, err := r.VerifySince(ctx, name, addr, time.Time{})
	return res.Outcome, err
}

// VerifySince reports whether addr is among the A/AAAA answers for name,
// for a flow whose first packet arrived at since (read on the clock of
// Config.Now; zero, or a time after the call, means now).
//
// A fresh cached address answers Match at once, without I/O or
// allocation. An address within Config.Grace after its TTL answers Grace
// at once too if the name has a fresh answer for its family, positive
// (which lacks it) or negative; if the
// name's answers have all expired, it is looked up first, and the address
// answers Match if the new answer has it, else Grace, also when the
// lookup fails (the stale answer serves while the resolver fails, as in
// RFC 8767). Otherwise the
// resolver denies only on an answer obtained at or after since: the
// client resolved the name before its first packet, so an older answer
// of egressd's may predate the client's and lack what it got. When the
// newest answer held for addr's family is older than that, VerifySince
// looks the name up (or joins the lookup in flight); when the name was
// asked less than Config.RequeryInterval ago, it waits for the name's next
// slot rather than deny, and every verification waiting for that slot
// shares one lookup. It answers Mismatch only if that answer and the
// cache, grace included, both lack addr.
//
// An answer obtained since the flow began that has addresses but not
// addr is not enough to deny: the name is looked up once more, at its
// next slot, and the flow is denied only if that answer lacks addr too
// (or fails: the first look stands). The client's answer came from an
// earlier query, and a name's answer may change within its TTL (a
// resolver fleet whose caches disagree, a load balancer moving the name,
// a rotation) in an order as regular as clients' queries and egressd's
// taking turns, where every answer egressd gets is one it already holds;
// so the second look is taken whether or not egressd's answer brought an
// address the name did not hold. It is one more lookup per verification
// at most, shared by every flow waiting for the slot, so no more per name
// than one per RequeryInterval; it is not taken while the query budget is
// under half full, nor when ctx ends before the slot (the flow is then
// denied on the first look, without waiting).
//
// A fresh negative answer (NXDOMAIN, NODATA) is Mismatch without asking
// again: the resolver would give the same from its own negative cache
// (RFC 2308), and asking per flow would let random labels under an
// allowed wildcard cost a lookup each time.
//
// A non-nil error means no decision could be made: the lookup for addr's
// family failed, ctx ended while waiting (for a lookup or a slot), or
// name or addr is invalid (reason dns-error); or, wrapping ErrBudget, the
// query budget had no room for the lookup (reason limit): that fails at
// once, it never waits for the budget. The Result's Outcome is then
// Mismatch. An IPv4-mapped IPv6 addr is verified as IPv4; a zone is
// ignored.
func (r *Resolver) VerifySince(ctx context.Context, name string, addr netip.Addr, since time.Time) (Result, error) {
	// The hit path: one clock read, one map lookup under a read lock, one
	// counter. Names from pkg/classify are already normalised, so the name
	// is tried as given before it is validated.
	addr = addr.Unmap().WithZone("")
	if addr.IsValid() {
		now := r.now()
		// An address in grace answers here only if the name has a fresh
		// answer (that lacks it); an expired name is looked up first.
		if v := r.cache.look(name, addr, now, true); v.cached == CachedFresh || v.cached == CachedGrace && v.current() {
			r.countHit(v.cached)
			return v.result(now, false), nil
		}
	}
	res, hit, err := r.verifySlow(ctx, name, addr, since)
	switch {
	case err != nil:
		r.stats.errors.Add(1)
	case hit:
		r.countHit(res.Outcome.cached())
	case res.Outcome == Match:
		r.stats.slowMatches.Add(1)
	case res.Outcome == Grace:
		r.stats.graces.Add(1)
	case res.Requeried:
		r.stats.mismatchesAsked.Add(1)
	default:
		r.stats.mismatchesHeld.Add(1)
	}
	return res, err
}

func (r *Resolver) countHit(c Cached) {
	if c == CachedGrace {
		r.stats.graces.Add(1)
	} else {
		r.stats.hits.Add(1)
	}
}

// cached is the standing that answers o from the cache.
func (o Outcome) cached() Cached {
	switch o {
	case Match:
		return CachedFresh
	case Grace:
		return CachedGrace
	}
	return CachedNone
}

// current reports whether the name has a fresh answer for addr's family,
// positive or negative.
func (v view) current() bool { return v.famFresh || v.negFresh }

// result is the Result that v gives at now.
func (v view) result(now int64, requeried bool) Result {
	res := Result{Outcome: Mismatch, Addrs: v.held, Requeried: requeried}
	switch v.cached {
	case CachedFresh:
		res.Outcome = Match
	case CachedGrace:
		res.Outcome = Grace
	}
	if v.answered != noAnswer {
		res.AnswerAge = time.Duration(now - v.answered)
	}
	return res
}

// verifySlow is VerifySince after a miss on the name as given. hit
// reports an outcome found in the cache after all, without waiting (the
// name normalised, or a lookup that ended meanwhile).
func (r *Resolver) verifySlow(ctx context.Context, name string, addr netip.Addr, since time.Time) (res Result, hit bool, err error) {
	if !addr.IsValid() {
		return Result{}, false, ErrInvalidAddr
	}
	n, err := normalize(name)
	if err != nil {
		return Result{}, false, err
	}
	fam := family(addr)
	now := r.now()
	// anchor: the oldest start of a lookup whose answer may deny.
	anchor := now
	if !since.IsZero() {
		anchor = min(r.at(since), now)
	}
	var (
		waited bool // for a slot or a lookup
		tried  bool // waited for a lookup that started at or after anchor
		second bool // the second look is taken
	)
	for {
		r.fmu.Lock()
		v := r.cache.look(n, addr, now, true)
		switch {
		case v.cached == CachedFresh, v.cached == CachedGrace && (v.current() || tried):
			r.fmu.Unlock()
			return v.result(now, waited), !waited, nil
		case v.cached == CachedNone && v.negFresh && !v.famFresh:
			r.fmu.Unlock()
			r.stats.negHits.Add(1)
			return v.result(now, waited), false, nil
		case v.cached == CachedNone && v.answered >= anchor && !r.secondLook(ctx, v, now, &second, &anchor):
			// An answer obtained since the flow began lacks addr.
			r.fmu.Unlock()
			return v.result(now, waited), false, nil
		}
		// A miss without an answer since the flow began, or an address in
		// grace whose name has no fresh answer: look it up. Only a name
		// with a fresh answer waits for its slot; one without (expired,
		// or a failed lookup, which is not cached) needs the lookup
		// whoever asks. A second look also waits for the clock to pass
		// the lookup it follows (anchor), which only a clock that has not
		// moved since makes it do: a lookup that starts at the same time
		// as the one before could never decide.
		f := r.flights[n]
		if f == nil {
			wait := time.Duration(anchor - now)
			if v.famFresh {
				wait = max(wait, r.slotWait(v, now))
			}
			if wait > 0 {
				r.fmu.Unlock()
				waited = true
				r.stats.slotWaits.Add(1)
				if err := r.sleep(ctx, wait); err != nil {
					return Result{}, false, &LookupError{Name: n, Err: err}
				}
				now = r.now()
				continue
			}
			if f = r.launchLocked(n, now, r.classOf(n)); f == nil {
				if second { // the first look stands
					return v.result(now, true), false, nil
				}
				return r.orGrace(n, addr, &LookupError{Name: n, Err: ErrBudget})
			}
		} else {
			r.fmu.Unlock()
		}
		waited = true
		r.stats.misses.Add(1)
		got, err := f.wait(ctx)
		if err != nil {
			return r.orGrace(n, addr, &LookupError{Name: n, Err: err})
		}
		now = r.now()
		if got[fam].err == nil && got[fam].has(addr) {
			v := r.cache.look(n, addr, now, false)
			return Result{Outcome: Match, AnswerAge: time.Duration(now - f.started), Addrs: v.held, Requeried: true}, false, nil
		}
		if f.started < anchor {
			continue // it answers a question asked before the flow began
		}
		tried = true
		v = r.cache.look(n, addr, now, false)
		if got[fam].err != nil {
			if second { // the first look stands: an answer lacked addr
				return v.result(now, true), false, nil
			}
			return r.orGrace(n, addr, got[fam].err)
		}
		// The cache holds this answer, unless it was evicted meanwhile.
		v.answered = max(v.answered, f.started)
		v.negative = len(got[fam].addrs) == 0
		if v.cached == CachedNone && r.secondLook(ctx, v, now, &second, &anchor) {
			continue
		}
		return v.result(now, true), false, nil
	}
}

// slotWait is how long from now until the name of v may be looked up
// again (Config.RequeryInterval after its last lookup started), if it has
// a fresh answer; 0 or less when it may be now.
func (r *Resolver) slotWait(v view, now int64) time.Duration {
	return time.Duration(v.asked + int64(r.cfg.RequeryInterval) - now)
}

// orGrace is the end of a verification whose lookup failed with err:
// Grace if addr is in grace for name (a stale answer serves while the
// resolver fails, RFC 8767), else err.
func (r *Resolver) orGrace(name string, addr netip.Addr, err error) (Result, bool, error) {
	now := r.now()
	if v := r.cache.look(name, addr, now, false); v.cached == CachedGrace {
		return v.result(now, true), false, nil
	}
	return Result{}, false, err
}

// secondLook reports whether a verification whose address is missing
// from the answer v describes (the one merged last for its family,
// obtained by a lookup that started at v.answered, at or after anchor)
// asks once more before it denies, and if so takes the second look: it
// moves anchor past that lookup, so that only a later one may decide.
//
// The answer lacking addr is not enough to deny: the client resolved
// before its flow began, and a resolver whose answer changes within the
// TTL (a fleet of caches, a load balancer moving the name, a rotation)
// may have given it what the next query gives, however regular the order
// (a batch of clients between two of egressd's queries to a resolver that
// alternates keeps every one of egressd's answers on the same address).
// So every flow gets one second look, whether or not that answer brought
// the name an address it did not hold. The look is at the name's next
// slot, shared by every flow waiting for it, so a name costs no more than
// one lookup per RequeryInterval however many flows ask.
//
// It is not taken:
//   - a second time for the same verification;
//   - after a negative answer (NXDOMAIN, NODATA): the resolver would give
//     the same from its own negative cache (RFC 2308), and a random label
//     under an allowed wildcard must stay one lookup;
//   - while the query budget is under half full: under a flood of new
//     names it would double their cost;
//   - when ctx ends before the name's next slot (hello.timeout): the
//     flow could not wait for it, and a mismatch decided on the first
//     look explains itself where a timeout would not. The deadline is
//     read on the real clock, as ctx itself is.
func (r *Resolver) secondLook(ctx context.Context, v view, now int64, taken *bool, anchor *int64) bool {
	if *taken || v.negative || !r.budget.roomy(now) {
		return false
	}
	if dl, ok := ctx.Deadline(); ok && v.famFresh && time.Until(dl) <= r.slotWait(v, now) {
		return false
	}
	*taken = true
	*anchor = v.answered + 1
	r.stats.secondLooks.Add(1)
	return true
}

// sleep waits d on the resolver's clock, or until ctx ends or Close.
func (r *Resolver) sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-r.cfg.After(d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-r.ctx.Done():
		return ErrClosed
	}
}

// Cached says, from the cache alone, whether addr is a fresh or in-grace
// address of name. It never does I/O, blocks on a lookup or allocates (for
// a name already normalised, as pkg/classify gives them): it is the
// engine's fast path, and decides the SYN of a port that carries no name,
// whose names Watch keeps resolved.
func (r *Resolver) Cached(name string, addr netip.Addr) Cached {
	if !addr.IsValid() {
		return CachedNone
	}
	addr = addr.Unmap().WithZone("")
	now := r.now()
	if c := r.cache.cached(name, addr, now); c != CachedNone {
		return c
	}
	if n, err := normalize(name); err == nil && n != name {
		return r.cache.cached(n, addr, now)
	}
	return CachedNone
}

// Contains reports whether Cached is CachedFresh or CachedGrace.
func (r *Resolver) Contains(name string, addr netip.Addr) bool {
	return r.Cached(name, addr) != CachedNone
}

// Stats returns the counters.
func (r *Resolver) Stats() Stats {
	s := &r.stats
	// Load the parts of the sums once, so that each sum adds up.
	hits, graces, slowMatches, asked, held, errs := s.hits.Load(), s.graces.Load(), s.slowMatches.Load(),
		s.mismatchesAsked.Load(), s.mismatchesHeld.Load(), s.errors.Load()
	return Stats{
		Verifies:            hits + graces + slowMatches + asked + held + errs,
		Hits:                hits,
		Graces:              graces,
		NegativeHits:        s.negHits.Load(),
		Misses:              s.misses.Load(),
		SlotWaits:           s.slotWaits.Load(),
		SecondLooks:         s.secondLooks.Load(),
		Matches:             hits + slowMatches,
		Mismatches:          asked + held,
		MismatchesRequeried: asked,
		MismatchesCached:    held,
		Errors:              errs,
		Lookups:             s.lookups.Load(),
		Queries:             s.queries.Load(),
		TCPFallbacks:        s.tcpFallbacks.Load(),
		QueryErrors:         s.queryErrors.Load(),
		NegativeAnswers:     s.negAnswers.Load(),
		Refreshes:           s.refreshes.Load(),
		BudgetRefused:       s.budgetRefused.Load(),
		BudgetWaits:         s.budgetWaits.Load(),
		Evictions:           r.cache.evictions.Load(),
		Names:               uint64(r.cache.len()),
	}
}

// famResult is the outcome of one lookup for one family: the addresses
// with their expiries (empty for a negative answer), or err.
type famResult struct {
	addrs []cachedAddr
	ttl   time.Duration // clamped TTL of the answer (the smallest); valid iff err == nil
	err   error
}

func (f famResult) has(a netip.Addr) bool {
	for _, c := range f.addrs {
		if c.addr == a {
			return true
		}
	}
	return false
}

// flight is one lookup of one name that any number of callers wait on.
type flight struct {
	started int64         // when the lookup started, on the cache's clock
	class   atomic.Uint32 // the budget class its queries spend as; the refresher joining raises it
	prepaid atomic.Int32  // queries paid for at launch (a verification's A and AAAA)
	done    chan struct{} // closed when res is set
	res     [2]famResult
}

func (f *flight) wait(ctx context.Context) ([2]famResult, error) {
	select {
	case <-f.done:
		return f.res, nil
	case <-ctx.Done():
		return [2]famResult{}, ctx.Err()
	}
}

// launchLocked registers a lookup of name for class c, releases fmu, and
// starts the lookup in a goroutine of its own. The caller holds fmu and
// found no flight for name. A verification's lookup (c is not
// classRefresh) pays for its A and AAAA queries first: when the budget
// refuses them, launchLocked returns nil and starts nothing.
//
// The lookup does not run in the caller's goroutine, nor under its
// context: others may join it, and every caller must be able to leave on
// its own context without failing the rest. It runs under the Resolver's
// context (ended by Close) and is bounded by len(Servers) × Timeout.
func (r *Resolver) launchLocked(name string, now int64, c class) *flight {
	f := &flight{started: now, done: make(chan struct{})}
	f.class.Store(uint32(c))
	if r.closed {
		r.fmu.Unlock()
		err := &LookupError{Name: name, Err: ErrClosed}
		f.res = [2]famResult{{err: err}, {err: err}}
		close(f.done)
		return f
	}
	if c != classRefresh {
		if ok, _ := r.budget.take(now, 2, c); !ok {
			r.fmu.Unlock()
			r.stats.budgetRefused.Add(1)
			return nil
		}
		f.prepaid.Store(2)
	}
	r.flights[name] = f
	r.cache.markAsked(name, now)
	r.fmu.Unlock()
	r.stats.lookups.Add(1)
	r.flying.Go(func() { r.fly(name, f) })
	return f
}

// fly runs the lookup of f, A and AAAA concurrently, records the result in
// the cache, and releases the waiters.
func (r *Resolver) fly(name string, f *flight) {
	ctx := context.WithValue(r.ctx, meterKey{}, &meter{r: r, f: f})
	var answers [2]answer
	var errs [2]error
	var wg sync.WaitGroup
	wg.Go(func() { answers[famAAAA], errs[famAAAA] = r.lookupType(ctx, f, name, dns.TypeAAAA) })
	answers[famA], errs[famA] = r.lookupType(ctx, f, name, dns.TypeA)
	wg.Wait()

	_, pinned := (*r.watched.Load())[name]
	now := r.now()
	for fam := range f.res {
		if errs[fam] != nil {
			f.res[fam].err = errs[fam]
			continue
		}
		f.res[fam] = r.expiries(answers[fam], now)
		if len(f.res[fam].addrs) == 0 {
			r.stats.negAnswers.Add(1)
		}
		r.cache.merge(name, fam, f.res[fam].addrs, now+int64(f.res[fam].ttl), f.started, now, pinned)
	}
	r.fmu.Lock()
	delete(r.flights, name)
	r.fmu.Unlock()
	close(f.done)
}

// lookupType asks each server in turn for name's qtype records until one
// gives a valid answer, or the budget refuses a query.
func (r *Resolver) lookupType(ctx context.Context, f *flight, name string, qtype uint16) (answer, error) {
	var errs []error
	for _, server := range r.cfg.Servers {
		a, err := r.ask(ctx, f, server, name, qtype)
		if err == nil {
			return a, nil
		}
		if ctx.Err() != nil { // Close, while this lookup was in flight
			errs = append(errs, fmt.Errorf("%w: %s: %w", ErrClosed, server, err))
			break
		}
		if errors.Is(err, ErrBudget) { // the next server would cost the same
			errs = append(errs, fmt.Errorf("%s: %w", server, err))
			break
		}
		r.stats.queryErrors.Add(1)
		errs = append(errs, fmt.Errorf("%s: %w", server, err))
	}
	return answer{}, &LookupError{Name: name, Type: qtype, Err: errors.Join(errs...)}
}

// ask sends one query of f's lookup to one server, once the budget has
// it, and reads its answer.
func (r *Resolver) ask(ctx context.Context, f *flight, server, name string, qtype uint16) (answer, error) {
	q := question{id: uint16(rand.Uint32()), name: name + ".", qtype: qtype}
	query, err := q.pack()
	if err != nil {
		return answer{}, fmt.Errorf("%w: packing the query: %v", ErrMalformed, err)
	}
	// Before the timeout starts: it is the server's time, not the wait.
	if err := r.spend(ctx, f, 1); err != nil {
		return answer{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	r.stats.queries.Add(1)
	resp, err := r.cfg.Transport.Exchange(ctx, server, query)
	if err != nil {
		return answer{}, transportError(err)
	}
	return readAnswer(q, resp)
}

// transportError sorts an error from a Transport into ErrTimeout or
// ErrUnreachable, keeping the original for the message.
func transportError(err error) error {
	if errors.Is(err, ErrMalformed) || errors.Is(err, ErrBudget) {
		return err
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("%w: %w", ErrTimeout, err)
	}
	return fmt.Errorf("%w: %w", ErrUnreachable, err)
}

// expiries turns an answer received at now into cache entries: addresses
// live for their TTL clamped to [MinTTL, MaxTTL]; a negative answer for its
// SOA's TTL clamped to [MinTTL, NegativeTTL], or MinTTL without an SOA.
func (r *Resolver) expiries(a answer, now int64) famResult {
	c := &r.cfg
	if len(a.addrs) == 0 {
		ttl := c.MinTTL
		if a.hasSOA {
			ttl = min(max(time.Duration(a.negTTL)*time.Second, c.MinTTL), c.NegativeTTL)
		}
		return famResult{ttl: ttl}
	}
	res := famResult{addrs: make([]cachedAddr, 0, len(a.addrs)), ttl: c.MaxTTL}
	for _, ta := range a.addrs {
		ttl := min(max(time.Duration(ta.ttl)*time.Second, c.MinTTL), c.MaxTTL)
		res.ttl = min(res.ttl, ttl)
		res.addrs = append(res.addrs, cachedAddr{addr: ta.addr, exp: now + int64(ttl)})
	}
	return res
}
