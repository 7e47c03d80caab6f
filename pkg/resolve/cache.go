package resolve

import (
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
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

// cachedAddr is one address seen in an answer for a name, valid until exp.
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
	// until its own expiry: a round-robin name rotates through its
	// addresses, and a client may connect to any one it was given while
	// that answer's TTL lasts. Expired ones are pruned on the next merge.
	addrs []cachedAddr
	// neg[f] is when a negative answer (NXDOMAIN or NODATA) for family f
	// stops being valid; 0 when there is none.
	neg [2]int64
	// asked is when the last lookup of name started (RequeryInterval).
	asked int64
	// ref is the CLOCK reference bit: set by readers (under the read
	// lock, hence atomic), cleared by the eviction hand.
	ref atomic.Bool
	// pinned: the name is watched (Resolver.Watch); the hand skips it.
	pinned bool
}

// fresh reports whether e holds a valid address or negative answer for fam.
func (e *entry) fresh(fam int, now int64) (addrs, neg bool) {
	for _, a := range e.addrs {
		if a.exp > now && family(a.addr) == fam {
			addrs = true
			break
		}
	}
	return addrs, e.neg[fam] > now
}

func (e *entry) expired(now int64) bool {
	if e.neg[famA] > now || e.neg[famAAAA] > now {
		return false
	}
	for _, a := range e.addrs {
		if a.exp > now {
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

	evictions atomic.Uint64
}

func newCache(maxNames, maxAddrs int) *cache {
	return &cache{idx: make(map[string]int32), max: maxNames, maxAddrs: maxAddrs}
}

// has reports whether addr is a fresh address of name. It does not
// allocate; it is the cost of Verify on a cache hit.
func (c *cache) has(name string, addr netip.Addr, now int64) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	i, ok := c.idx[name]
	if !ok {
		return false
	}
	e := &c.ents[i]
	for _, a := range e.addrs {
		if a.addr == addr && a.exp > now {
			if !e.ref.Load() {
				e.ref.Store(true)
			}
			return true
		}
	}
	return false
}

// entryState is what Verify needs to know about a name it missed.
type entryState struct {
	famFresh bool  // a fresh address of the destination's family is cached
	negFresh bool  // a fresh negative answer for that family is cached
	asked    int64 // when the last lookup started; valid iff famFresh
}

func (c *cache) state(name string, fam int, now int64) entryState {
	c.mu.RLock()
	defer c.mu.RUnlock()
	i, ok := c.idx[name]
	if !ok {
		return entryState{}
	}
	e := &c.ents[i]
	addrs, neg := e.fresh(fam, now)
	return entryState{famFresh: addrs, negFresh: neg, asked: e.asked}
}

// markAsked records that a lookup of name starts now, if name is cached.
func (c *cache) markAsked(name string, now int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if i, ok := c.idx[name]; ok {
		c.ents[i].asked = now
	}
}

// merge records a successful answer for one family of name: its addresses
// join the union (negExp is ignored), or, when addrs is empty, the family
// is negative until negExp. asked is when the lookup started.
func (c *cache) merge(name string, fam int, addrs []cachedAddr, negExp, asked, now int64, pinned bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.lookupOrInsert(name, now, pinned)
	e.asked = max(e.asked, asked)
	e.addrs = slices.DeleteFunc(e.addrs, func(a cachedAddr) bool { return a.exp <= now })
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
// there. When e is full the soonest-expiring address makes room, unless a
// expires sooner still: what is kept is what stays valid longest.
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
	e.asked = 0
	e.ref.Store(false)
	e.pinned = pinned
	c.idx[name] = int32(i)
	return e
}

// victim picks the entry to evict: the first the hand reaches that has
// fully expired, or else is neither pinned nor referenced since the hand
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
		case e.expired(now):
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
