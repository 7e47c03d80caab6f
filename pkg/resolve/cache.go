package resolve

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// maxCacheMax keeps entry indexes within an int32.
const maxCacheMax = 1 << 30

// Address families, the index of per-family state.
const (
	famA    = 0 // IPv4, A records
	famAAAA = 1 // IPv6, AAAA records
)

func family(a netip.Addr) int {
	if a.Is4() {
		return famA
	}
	return famAAAA
}

// Cached is what the cache alone says of an address of a name.
type Cached uint8

const (
	// CachedNone: not among the name's cached addresses, or past its
	// grace. The zero value.
	CachedNone Cached = iota
	// CachedFresh: within the TTL of an answer that carried it.
	CachedFresh
	// CachedGrace: that TTL has ended, the grace after it (Config.Grace)
	// has not.
	CachedGrace
)

func (c Cached) String() string {
	switch c {
	case CachedNone:
		return "none"
	case CachedFresh:
		return "fresh"
	case CachedGrace:
		return "grace"
	}
	return fmt.Sprintf("unknown(%d)", uint8(c))
}

// noAnswer is entry.answered for a family that has none.
const noAnswer = math.MinInt64

// cachedAddr is one address seen in an answer for a name, fresh until exp
// and in grace until exp plus the cache's grace.
//
// Times in the cache are nanoseconds since the Resolver's base time, read
// from Config.Now with its monotonic clock: int64 compares are cheaper and
// smaller than time.Time, and a wall-clock step cannot expire or revive
// entries.
type cachedAddr struct {
	addr netip.Addr
	exp  int64
}

// entry is everything cached for one name.
type entry struct {
	name string
	// addrs is the union of the addresses seen in answers for name, each
	// until its own expiry and grace: a round-robin name rotates through
	// its addresses, and a client may connect to any one it was given
	// while that answer's TTL lasts (and a while after, see
	// Config.Grace). Addresses past their grace are pruned on the next
	// merge.
	addrs []cachedAddr
	// neg[f] is when a negative answer (NXDOMAIN or NODATA) for family f
	// stops being valid; 0 when there is none.
	neg [2]int64
	// answered[f] is when the lookup whose answer for family f was
	// merged last started (noAnswer: none yet). A verification whose flow
	// began after it must ask again before it may deny.
	answered [2]int64
	// asked is when the last lookup of name started (RequeryInterval).
	asked int64
	// ref is the CLOCK reference bit: set by readers (under the read
	// lock, hence atomic), cleared by the eviction hand.
	ref atomic.Bool
	// pinned: the name is watched (Resolver.Watch); the hand skips it.
	pinned bool
}

// standing says whether a is fresh, in grace or gone at now.
func (c *cache) standing(a cachedAddr, now int64) Cached {
	switch {
	case a.exp > now:
		return CachedFresh
	case a.exp > now-c.grace:
		return CachedGrace
	}
	return CachedNone
}

// expired reports whether nothing of e is valid at now: no negative
// answer, no address fresh or in grace.
func (c *cache) expired(e *entry, now int64) bool {
	if e.neg[famA] > now || e.neg[famAAAA] > now {
		return false
	}
	for _, a := range e.addrs {
		if c.standing(a, now) != CachedNone {
			return false
		}
	}
	return true
}

// cache maps names to entries, bounded in names by CLOCK eviction and in
// addresses per name by maxAddrs.
//
// CLOCK rather than an LRU list: a hit only sets an atomic bit under the
// read lock, so concurrent hits never serialise on a write lock, and the
// entries live in one slice with no list pointers.
type cache struct {
	mu       sync.RWMutex
	idx      map[string]int32
	ents     []entry
	hand     int
	max      int
	maxAddrs int
	grace    int64 // Config.Grace in ns; 0 when off

	evictions atomic.Uint64
}

func newCache(maxNames, maxAddrs int, grace time.Duration) *cache {
	return &cache{idx: make(map[string]int32), max: maxNames, maxAddrs: maxAddrs, grace: int64(max(grace, 0))}
}

// cached says whether addr is a fresh or in-grace address of name. It
// does not allocate: it is the engine's non-blocking check.
func (c *cache) cached(name string, addr netip.Addr, now int64) Cached {
	c.mu.RLock()
	defer c.mu.RUnlock()
	i, ok := c.idx[name]
	if !ok {
		return CachedNone
	}
	e := &c.ents[i]
	for _, a := range e.addrs {
		if a.addr == addr {
			st := c.standing(a, now)
			if st != CachedNone && !e.ref.Load() {
				e.ref.Store(true)
			}
			return st
		}
	}
	return CachedNone
}

// view is what a verification reads of a name at one moment.
type view struct {
	cached   Cached // addr's standing
	held     int    // addresses held for the name, fresh or in grace
	famFresh bool   // a fresh address of addr's family is held
	negFresh bool   // a fresh negative answer for addr's family is held
	answered int64  // entry.answered for addr's family; noAnswer when none
	negative bool   // the answer merged last for addr's family was negative (NXDOMAIN or NODATA), fresh or not
	asked    int64  // entry.asked
}

// look returns the view of name for addr at now, in one pass and without
// allocating (Verify's hit path). touch: a cached addr is a use of the
// name (the CLOCK reference bit), as it is when a verification is
// answered from the cache.
func (c *cache) look(name string, addr netip.Addr, now int64, touch bool) view {
	c.mu.RLock()
	defer c.mu.RUnlock()
	i, ok := c.idx[name]
	if !ok {
		return view{answered: noAnswer}
	}
	e := &c.ents[i]
	// standing, unrolled, on locals (a view is too large to stay in
	// registers): this loop is the hit's cost per address. A fresh addr
	// is a fresh address of its family; only a miss or grace needs the
	// second pass.
	gone := now - c.grace
	held, found := 0, -1
	for j := range e.addrs {
		a := &e.addrs[j]
		if a.exp > gone {
			held++
			if a.addr == addr {
				found = j
			}
		}
	}
	st, famFresh := CachedNone, false
	if found >= 0 {
		st = CachedGrace
		if e.addrs[found].exp > now {
			st, famFresh = CachedFresh, true
		}
	}
	if !famFresh {
		is4 := addr.Is4()
		for j := range e.addrs {
			if a := &e.addrs[j]; a.exp > now && a.addr.Is4() == is4 {
				famFresh = true
				break
			}
		}
	}
	if touch && st != CachedNone && !e.ref.Load() {
		e.ref.Store(true)
	}
	fam := family(addr)
	return view{cached: st, held: held, famFresh: famFresh, negFresh: e.neg[fam] > now, answered: e.answered[fam], negative: e.neg[fam] != 0, asked: e.asked}
}

// markAsked records that a lookup of name starts now, if name is cached.
func (c *cache) markAsked(name string, now int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if i, ok := c.idx[name]; ok {
		c.ents[i].asked = now
	}
}

// merge records a successful answer for one family of name, from a lookup
// that started at started: its addresses join the union (negExp is
// ignored), or, when addrs is empty, the family is negative until negExp.
func (c *cache) merge(name string, fam int, addrs []cachedAddr, negExp, started, now int64, pinned bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.lookupOrInsert(name, now, pinned)
	e.asked = max(e.asked, started)
	e.answered[fam] = max(e.answered[fam], started)
	e.addrs = slices.DeleteFunc(e.addrs, func(a cachedAddr) bool { return c.standing(a, now) == CachedNone })
	if len(addrs) == 0 {
		e.neg[fam] = negExp
		return
	}
	e.neg[fam] = 0
	e.addrs = slices.Grow(e.addrs, min(len(addrs), c.maxAddrs-len(e.addrs)))
	for _, a := range addrs {
		c.add(e, a)
	}
}

// add puts a into e's union, or extends the expiry of an address already
// there. When e is full the address that expires soonest makes room (one
// in grace first, as its TTL has ended), unless a expires sooner still:
// what is kept is what stays valid longest.
func (c *cache) add(e *entry, a cachedAddr) {
	for i := range e.addrs {
		if e.addrs[i].addr == a.addr {
			e.addrs[i].exp = max(e.addrs[i].exp, a.exp)
			return
		}
	}
	if len(e.addrs) < c.maxAddrs {
		e.addrs = append(e.addrs, a)
		return
	}
	soonest := 0
	for i := range e.addrs {
		if e.addrs[i].exp < e.addrs[soonest].exp {
			soonest = i
		}
	}
	if a.exp > e.addrs[soonest].exp {
		e.addrs[soonest] = a
	}
}

// lookupOrInsert returns name's entry, making one (and evicting another
// when the cache is full) if there is none. The caller holds mu.
func (c *cache) lookupOrInsert(name string, now int64, pinned bool) *entry {
	if i, ok := c.idx[name]; ok {
		return &c.ents[i]
	}
	var i int
	if len(c.ents) < c.max {
		if len(c.ents) == cap(c.ents) {
			c.ents = slices.Grow(c.ents, min(max(cap(c.ents), 64), c.max-len(c.ents)))
		}
		c.ents = c.ents[:len(c.ents)+1]
		i = len(c.ents) - 1
	} else {
		i = c.victim(now)
		delete(c.idx, c.ents[i].name)
		c.evictions.Add(1)
	}
	// A copy: the caller's string may point into a larger buffer (a
	// packet) that the cache must not keep alive.
	name = strings.Clone(name)
	e := &c.ents[i]
	e.name = name
	e.addrs = e.addrs[:0]
	e.neg = [2]int64{}
	e.answered = [2]int64{noAnswer, noAnswer}
	e.asked = 0
	e.ref.Store(false)
	e.pinned = pinned
	c.idx[name] = int32(i)
	return e
}

// victim picks the entry to evict: the first the hand reaches that has
// fully expired (grace included), or else is neither pinned nor referenced since the hand
// last passed (CLOCK, second chance). Two turns of the hand clear every
// reference bit; if everything is pinned (more watched names than
// CacheMax), the entry under the hand goes.
func (c *cache) victim(now int64) int {
	n := len(c.ents)
	for range 2*n + 1 {
		i := c.hand
		c.hand = (c.hand + 1) % n
		e := &c.ents[i]
		switch {
		case e.pinned:
		case c.expired(e, now):
			return i
		case e.ref.Swap(false):
		default:
			return i
		}
	}
	return c.hand
}

// setPinned pins or unpins the cached entries of names.
func (c *cache) setPinned(names map[string]struct{}, pinned bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for n := range names {
		if i, ok := c.idx[n]; ok {
			c.ents[i].pinned = pinned
		}
	}
}

func (c *cache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.idx)
}
