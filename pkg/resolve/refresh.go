package resolve

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

const (
	// refreshParallel bounds the lookups one refresh round runs at once.
	refreshParallel = 8
	// refreshFloor is the shortest interval between two refreshes of a
	// name, whatever MinTTL is configured.
	refreshFloor = 100 * time.Millisecond
	// retryFirst and retryMax bound the backoff after a failed refresh.
	// The cached addresses stay valid until their own expiry meanwhile.
	retryFirst = time.Second
	retryMax   = 30 * time.Second
)

// ErrRunning is returned by Run when another Run of the Resolver is active.
var ErrRunning = errors.New("resolve: Run is already running")

// Watch replaces the set of names that Run keeps resolved ahead of need,
// for rules whose domains match by address on ports that carry no name
// (design.md, Matching): their SYN is decided with Contains, which never
// waits for a lookup. Call it again on every policy reload.
//
// Names are literal host names ("example.com"; for ".example.com" the apex;
// "*." entries cannot be resolved and are refused). If any name is
// invalid, Watch returns the problems and keeps the previous set. Watched
// names are evicted from the cache last. Watch may be called before Run.
func (r *Resolver) Watch(names []string) error {
	set := make(map[string]struct{}, len(names))
	var errs []error
	for _, name := range names {
		n, err := normalize(name)
		if err != nil {
			errs = append(errs, fmt.Errorf("watch: %w", err))
			continue
		}
		set[n] = struct{}{}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	r.wmu.Lock()
	defer r.wmu.Unlock()
	old := r.watched.Swap(&set)
	r.cache.setPinned(*old, false)
	r.cache.setPinned(set, true)
	select {
	case r.wake <- struct{}{}:
	default:
	}
	return nil
}

// watchItem is the refresher's schedule for one watched name.
type watchItem struct {
	due   int64 // next refresh, on the cache's clock
	fails int   // refreshes failed in a row
}

// Run keeps the watched names (Watch) resolved until ctx ends: each is
// looked up when it is added and again after half of its answer's TTL (the
// smallest TTL of the A and AAAA addresses, clamped as the cache clamps it;
// the negative TTL when it has none), so its addresses are renewed before
// they expire. A failed refresh is retried after 1s,
// doubling to 30s; the cached addresses stay until their own expiry.
//
// Its queries wait for the query budget (Config.MaxQueriesPerSecond),
// where verifications would fail: verifications leave room for them, and
// what refills while that room is used goes to the refresher first.
//
// Run returns nil when ctx ends, or ErrRunning if it is already running.
// It logs a name's first failed refresh and its recovery.
func (r *Resolver) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer r.running.Store(false)
	sched := make(map[string]*watchItem)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		r.reconcile(sched)
		timer.Reset(r.refreshDue(ctx, sched))
		select {
		case <-ctx.Done():
			return nil
		case <-r.wake:
		case <-timer.C:
		}
	}
}

// reconcile makes sched follow the watched set: new names are due now.
func (r *Resolver) reconcile(sched map[string]*watchItem) {
	set := *r.watched.Load()
	for n := range sched {
		if _, ok := set[n]; !ok {
			delete(sched, n)
		}
	}
	now := r.now()
	for n := range set {
		if _, ok := sched[n]; !ok {
			sched[n] = &watchItem{due: now}
		}
	}
}

// refreshDue refreshes the names in sched that are due, waits for them,
// reschedules them, and returns how long until the next is due (an hour
// when nothing is watched).
func (r *Resolver) refreshDue(ctx context.Context, sched map[string]*watchItem) time.Duration {
	now := r.now()
	sem := make(chan struct{}, refreshParallel)
	var wg sync.WaitGroup
	for name, it := range sched {
		if it.due > now || ctx.Err() != nil {
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			r.refreshOne(ctx, name, it)
		})
	}
	wg.Wait()

	next := int64(time.Hour)
	now = r.now()
	for _, it := range sched {
		next = min(next, it.due-now)
	}
	return time.Duration(max(next, 0))
}

// refreshOne looks name up (or joins the lookup in flight) and sets when
// it is due next.
func (r *Resolver) refreshOne(ctx context.Context, name string, it *watchItem) {
	r.stats.refreshes.Add(1)
	r.fmu.Lock()
	f := r.flights[name]
	if f == nil {
		f = r.launchLocked(name, r.now(), classRefresh)
	} else {
		// A verification's lookup: its queries wait for the budget now.
		f.class.Store(uint32(classRefresh))
		r.fmu.Unlock()
	}
	res, err := f.wait(ctx)
	if ctx.Err() != nil {
		return // Run is ending; the lookup goes on without it
	}
	// The addresses set the pace; a family without any (NODATA, often with
	// a short negative TTL) only when no family has addresses.
	const forever = time.Duration(1<<63 - 1)
	posTTL, negTTL := forever, forever
	for _, fr := range res {
		switch {
		case fr.err != nil:
			err = cmp.Or(err, fr.err)
		case len(fr.addrs) > 0:
			posTTL = min(posTTL, fr.ttl)
		default:
			negTTL = min(negTTL, fr.ttl)
		}
	}
	ttl := posTTL
	if ttl == forever {
		ttl = negTTL
	}
	now := r.now()
	if err != nil {
		it.fails++
		if it.fails == 1 {
			r.cfg.Logger.Warn("dns refresh failed", "name", name, "err", err)
		}
		it.due = now + int64(min(retryFirst<<min(it.fails-1, 5), retryMax))
		return
	}
	if it.fails > 0 {
		r.cfg.Logger.Info("dns refresh recovered", "name", name, "failures", it.fails)
	}
	it.fails = 0
	it.due = now + int64(max(ttl/2, refreshFloor))
}
