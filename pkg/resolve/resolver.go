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
	// Mismatch: the destination is not among the name's current answers
	// (including a name that does not exist or has no address). The zero
	// value, so an Outcome that was never set denies.
	Mismatch Outcome = iota
	// Match: the destination is among the name's current answers.
	Match
)

func (o Outcome) String() string {
	switch o {
	case Mismatch:
		return "mismatch"
	case Match:
		return "match"
	}
	return fmt.Sprintf("unknown(%d)", uint8(o))
}

// Stats are counters since New, read with Resolver.Stats. The metrics
// layer exports them; nothing here carries a name or an address.
type Stats struct {
	Verifies          uint64 // Verify calls
	Hits              uint64 // Verify answered Match from the cache, no I/O
	NegativeHits      uint64 // Verify answered Mismatch from a cached NXDOMAIN/NODATA
	Misses            uint64 // Verify waited for a lookup (its own or one in flight)
	RequerySuppressed uint64 // Verify answered Mismatch without asking again (RequeryInterval)
	Matches           uint64 // Verify returned Match
	Mismatches        uint64 // Verify returned Mismatch without error
	Errors            uint64 // Verify returned an error (reason dns-error)
	Lookups           uint64 // name lookups started (each asks A and AAAA)
	Queries           uint64 // DNS queries sent (per type, per server tried)
	QueryErrors       uint64 // queries that failed (timeout, unreachable, bad answer)
	Refreshes         uint64 // lookups started by the refresher (Run)
	Evictions         uint64 // names evicted to stay within CacheMax
	Names             uint64 // names cached now
}

// Resolver verifies destinations against DNS answers. Its methods are safe
// for concurrent use.
type Resolver struct {
	cfg   Config
	base  time.Time // time origin of the cache's int64 clock
	cache *cache

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

	// Counters; Verifies and Matches are sums of these, so that a hit
	// adds to one counter only.
	stats struct {
		hits, negHits, misses, suppressed, slowMatches, mismatches, errors,
		lookups, queries, queryErrors, refreshes atomic.Uint64
	}
}

// New returns a Resolver for cfg, or the first problems found in cfg.
func New(cfg Config) (*Resolver, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	r := &Resolver{
		cfg:     cfg,
		base:    cfg.Now(),
		cache:   newCache(cfg.CacheMax, cfg.MaxAddrs),
		flights: make(map[string]*flight),
		wake:    make(chan struct{}, 1),
	}
	r.watched.Store(&map[string]struct{}{})
	r.ctx, r.cancel = context.WithCancel(context.Background())
	return r, nil
}

// Close ends the lookups in flight and waits for them; their waiters get
// an error. Verify, Contains and Stats still work after Close, from the
// cache, but every lookup fails with ErrClosed. Close does not stop Run; its context
// does.
func (r *Resolver) Close() {
	r.fmu.Lock()
	r.closed = true
	r.fmu.Unlock()
	r.cancel()
	r.flying.Wait()
}

// now reads the clock as the cache keeps it.
func (r *Resolver) now() int64 { return int64(r.cfg.Now().Sub(r.base)) }

// Verify reports whether addr is among the current A/AAAA answers for name.
//
// A cached address answers Match without I/O or allocation. Otherwise
// Verify looks the name up (or waits for the lookup already in flight) and
// answers from the result, but a name whose fresh cached answers lack addr
// is asked again at most once per Config.RequeryInterval, and a fresh
// negative answer is not asked again at all (the resolver would give the
// same from its own negative cache).
//
// A non-nil error means no decision could be made (reason dns-error): the
// lookup for addr's family failed, ctx ended while waiting, or name or
// addr is invalid. The Outcome is then Mismatch. An IPv4-mapped IPv6 addr
// is verified as IPv4; a zone is ignored.
func (r *Resolver) Verify(ctx context.Context, name string, addr netip.Addr) (Outcome, error) {
	// The hit path: one clock read, one map lookup under a read lock, one
	// counter. Names from pkg/classify are already normalised, so the name
	// is tried as given before it is validated.
	addr = addr.Unmap().WithZone("")
	if addr.IsValid() && r.cache.has(name, addr, r.now()) {
		r.stats.hits.Add(1)
		return Match, nil
	}
	out, hit, err := r.verifySlow(ctx, name, addr)
	switch {
	case hit:
		r.stats.hits.Add(1)
	case err != nil:
		r.stats.errors.Add(1)
	case out == Match:
		r.stats.slowMatches.Add(1)
	default:
		r.stats.mismatches.Add(1)
	}
	return out, err
}

// verifySlow is Verify after a miss on the name as given. hit reports a
// Match found in the cache after all (the name normalised, or a lookup
// that ended meanwhile).
func (r *Resolver) verifySlow(ctx context.Context, name string, addr netip.Addr) (out Outcome, hit bool, err error) {
	if !addr.IsValid() {
		return Mismatch, false, ErrInvalidAddr
	}
	now := r.now()
	n, err := normalize(name)
	if err != nil {
		return Mismatch, false, err
	}
	if n != name && r.cache.has(n, addr, now) {
		return Match, true, nil
	}

	fam := family(addr)
	r.fmu.Lock()
	f := r.flights[n]
	if f == nil {
		st := r.cache.state(n, fam, now)
		switch {
		case st.negFresh && !st.famFresh:
			r.fmu.Unlock()
			r.stats.negHits.Add(1)
			return Mismatch, false, nil
		case st.famFresh && now-st.asked < int64(r.cfg.RequeryInterval):
			r.fmu.Unlock()
			r.stats.suppressed.Add(1)
			return Mismatch, false, nil
		}
		// A lookup may have finished between the check above and fmu.
		if r.cache.has(n, addr, now) {
			r.fmu.Unlock()
			return Match, true, nil
		}
		r.stats.misses.Add(1)
		f = r.launchLocked(n, now)
	} else {
		r.fmu.Unlock()
		r.stats.misses.Add(1)
	}

	res, err := f.wait(ctx)
	if err != nil {
		return Mismatch, false, &LookupError{Name: n, Err: err}
	}
	if res[fam].err != nil {
		return Mismatch, false, res[fam].err
	}
	if res[fam].has(addr) || r.cache.has(n, addr, r.now()) {
		return Match, false, nil
	}
	return Mismatch, false, nil
}

// Contains reports whether addr is a fresh cached address of name. It
// never does I/O or blocks on a lookup: it is for decisions on the SYN of
// a port that carries no name, whose names Watch keeps resolved.
func (r *Resolver) Contains(name string, addr netip.Addr) bool {
	if !addr.IsValid() {
		return false
	}
	addr = addr.Unmap().WithZone("")
	now := r.now()
	if r.cache.has(name, addr, now) {
		return true
	}
	n, err := normalize(name)
	return err == nil && n != name && r.cache.has(n, addr, now)
}

// Stats returns the counters.
func (r *Resolver) Stats() Stats {
	s := &r.stats
	// Load the parts of the sums once, so that each sum adds up.
	hits, slowMatches, mismatches, errs := s.hits.Load(), s.slowMatches.Load(), s.mismatches.Load(), s.errors.Load()
	return Stats{
		Verifies:          hits + slowMatches + mismatches + errs,
		Hits:              hits,
		NegativeHits:      s.negHits.Load(),
		Misses:            s.misses.Load(),
		RequerySuppressed: s.suppressed.Load(),
		Matches:           hits + slowMatches,
		Mismatches:        mismatches,
		Errors:            errs,
		Lookups:           s.lookups.Load(),
		Queries:           s.queries.Load(),
		QueryErrors:       s.queryErrors.Load(),
		Refreshes:         s.refreshes.Load(),
		Evictions:         r.cache.evictions.Load(),
		Names:             uint64(r.cache.len()),
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
	done chan struct{} // closed when res is set
	res  [2]famResult
}

func (f *flight) wait(ctx context.Context) ([2]famResult, error) {
	select {
	case <-f.done:
		return f.res, nil
	case <-ctx.Done():
		return [2]famResult{}, ctx.Err()
	}
}

// launchLocked registers a lookup of name, releases fmu, and starts the
// lookup in a goroutine of its own. The caller holds fmu and found no
// flight for name.
//
// The lookup does not run in the caller's goroutine, nor under its
// context: others may join it, and every caller must be able to leave on
// its own context without failing the rest. It runs under the Resolver's
// context (ended by Close) and is bounded by len(Servers) × Timeout.
func (r *Resolver) launchLocked(name string, now int64) *flight {
	f := &flight{done: make(chan struct{})}
	if r.closed {
		r.fmu.Unlock()
		err := &LookupError{Name: name, Err: ErrClosed}
		f.res = [2]famResult{{err: err}, {err: err}}
		close(f.done)
		return f
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
	ctx := r.ctx
	started := r.now()
	var answers [2]answer
	var errs [2]error
	var wg sync.WaitGroup
	wg.Go(func() { answers[famAAAA], errs[famAAAA] = r.lookupType(ctx, name, dns.TypeAAAA) })
	answers[famA], errs[famA] = r.lookupType(ctx, name, dns.TypeA)
	wg.Wait()

	_, pinned := (*r.watched.Load())[name]
	now := r.now()
	for fam := range f.res {
		if errs[fam] != nil {
			f.res[fam].err = errs[fam]
			continue
		}
		f.res[fam] = r.expiries(answers[fam], now)
		r.cache.merge(name, fam, f.res[fam].addrs, now+int64(f.res[fam].ttl), started, now, pinned)
	}
	r.fmu.Lock()
	delete(r.flights, name)
	r.fmu.Unlock()
	close(f.done)
}

// lookupType asks each server in turn for name's qtype records until one
// gives a valid answer.
func (r *Resolver) lookupType(ctx context.Context, name string, qtype uint16) (answer, error) {
	var errs []error
	for _, server := range r.cfg.Servers {
		a, err := r.ask(ctx, server, name, qtype)
		if err == nil {
			return a, nil
		}
		if ctx.Err() != nil { // Close, while this lookup was in flight
			errs = append(errs, fmt.Errorf("%w: %s: %w", ErrClosed, server, err))
			break
		}
		r.stats.queryErrors.Add(1)
		errs = append(errs, fmt.Errorf("%s: %w", server, err))
	}
	return answer{}, &LookupError{Name: name, Type: qtype, Err: errors.Join(errs...)}
}

// ask sends one query to one server and reads its answer.
func (r *Resolver) ask(ctx context.Context, server, name string, qtype uint16) (answer, error) {
	q := question{id: uint16(rand.Uint32()), name: name + ".", qtype: qtype}
	query, err := q.pack()
	if err != nil {
		return answer{}, fmt.Errorf("%w: packing the query: %v", ErrMalformed, err)
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
	if errors.Is(err, ErrMalformed) {
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
