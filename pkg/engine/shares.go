package engine

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// Fair shares. Every budget that undecided flows draw on (the flow table,
// the packets held in the kernel's queue, the flow-head bytes buffered,
// the DNS verifications in flight) is a pool per shard, and every source
// address has a share of each: while a pool has room anyone may take from
// it; when it is full, a source under its fair share (the pool divided
// among the sources that use it) takes room from the source that uses the
// most, whose oldest undecided flow is denied (reason limit), and a source
// at or over its share is refused (reason limit). So one host can fill an
// idle pool but can never keep another host out of it. DNS verifications
// are also rate limited per source (a token bucket), since each costs the
// VPC resolver queries that every host shares.
//
// A shard's held-packet pool is its share of limits.held_total, and the
// packets held in each kernel queue are bounded by the same share
// (Engine.queueCap) whichever shards' flows they belong to: kept below the
// queue's length, the kernel never drops or (with fail_open) bypasses
// packets because egressd holds too many. A flow the policy decides on its first packet draws on
// no pool (Shard.start decides it first).

// Resource is a budget undecided flows draw on.
type Resource uint8

const (
	ResFlows  Resource = iota // undecided flows (limits.flows)
	ResHeld                   // packets held in the kernel's queue (limits.held_total)
	ResBytes                  // flow-head bytes buffered (limits.buffer_bytes)
	ResVerify                 // DNS verifications in flight (limits.dns_in_flight)
	numResources
)

var resourceNames = [...]string{ResFlows: "flows", ResHeld: "held_packets", ResBytes: "buffer_bytes", ResVerify: "dns_in_flight"}

func (r Resource) String() string {
	if int(r) < len(resourceNames) {
		return resourceNames[r]
	}
	return fmt.Sprintf("unknown(%d)", uint8(r))
}

// Limit is why a flow was denied at a limit: a pool or a per-flow bound.
// Its String is the metric's label and the debug log's "limit".
type Limit uint8

const (
	LimitFlows      Limit = iota // the flow table, this source over its share
	LimitHeld                    // the held-packet pool, this source over its share
	LimitBytes                   // the buffer pool, this source over its share
	LimitVerify                  // DNS verifications in flight, this source over its share
	LimitEvicted                 // evicted: another source under its share needed the room
	LimitVerifyRate              // this source's DNS verifications per second
	LimitResolver                // the resolver's query budget is spent (pkg/resolve)
	LimitFlowHeld                // packets held for one flow (limits.held_packets)
	LimitSYNs                    // SYN retransmissions of one flow
	LimitHello                   // the flow head over hello.max_bytes, or cut by the queue's copy range
	LimitSYNLog                  // to a port whose SYNs are logged: the flow's SYN is not in the log (lost, or before egressd started), or the log lost SYNs while it was undecided
	LimitNoSYN                   // egressd never saw the flow's SYN (it started after it): where its stream starts is unknown
	numLimits
)

var limitNames = [...]string{
	LimitFlows: "flows", LimitHeld: "held_packets", LimitBytes: "buffer_bytes", LimitVerify: "dns_in_flight",
	LimitEvicted: "evicted", LimitVerifyRate: "dns_rate", LimitResolver: "dns_budget",
	LimitFlowHeld: "flow_held_packets", LimitSYNs: "syn_retransmissions", LimitHello: "hello_bytes",
	LimitSYNLog: "syn_log", LimitNoSYN: "no_syn",
}

func (l Limit) String() string {
	if int(l) < len(limitNames) {
		return limitNames[l]
	}
	return fmt.Sprintf("unknown(%d)", uint8(l))
}

// Limits lists every limit, in order (for metrics).
func Limits() []Limit {
	out := make([]Limit, numLimits)
	for i := range out {
		out[i] = Limit(i)
	}
	return out
}

// source is one source address's use of a shard's pools.
type source struct {
	addr [4]byte
	use  [numResources]int
	// Its undecided flows, oldest first: the one to deny when another
	// source needs room.
	oldest, newest *flow
	// DNS verifications: a token bucket, refilled on the engine's clock.
	tokens float64
	filled time.Time
	// limited counts this source's limit denials since the last report.
	limited [numLimits]uint32
}

// idle reports whether the source holds nothing and owes nothing, so it
// can be forgotten (its bucket full again).
func (src *source) idle(now time.Time, burst float64, rate float64) bool {
	if src.use != [numResources]int{} || src.limited != [numLimits]uint32{} {
		return false
	}
	return src.tokens+rate*now.Sub(src.filled).Seconds() >= burst
}

// pools is a shard's budgets.
type pools struct {
	cap    [numResources]int
	used   [numResources]int
	active [numResources]int // sources with use > 0
	srcs   map[[4]byte]*source
	free   []*source // forgotten sources, for reuse
}

func (s *Shard) sourceOf(a [4]byte) *source {
	src := s.pools.srcs[a]
	if src == nil {
		if n := len(s.pools.free); n > 0 {
			src, s.pools.free = s.pools.free[n-1], s.pools.free[:n-1]
		} else {
			src = new(source)
		}
		*src = source{addr: a, tokens: float64(s.e.cfg.VerifyBurst), filled: s.e.cfg.Now()}
		s.pools.srcs[a] = src
	}
	return src
}

// take draws n from pool r for flow f (of source src). It reports false
// when src is at or over its share of a full pool; a source under its
// share takes room from the source using the most, whose oldest undecided
// flows are denied (at most a few: a pool's room comes back in whole flows).
func (s *Shard) take(f *flow, r Resource, n int) bool {
	p := &s.pools
	src := f.src
	if p.used[r]+n > p.cap[r] {
		users := p.active[r]
		if src.use[r] == 0 {
			users++
		}
		share := p.cap[r] / max(users, 1)
		if src.use[r]+n > share {
			return false
		}
		for range 16 {
			if p.used[r]+n <= p.cap[r] {
				break
			}
			big := s.biggest(r, src)
			if big == nil || big.use[r] <= share || big.oldest == nil {
				return false
			}
			s.evictOldest(big)
		}
		if p.used[r]+n > p.cap[r] {
			return false
		}
	}
	s.add(f, r, n)
	return true
}

// add counts n of pool r to flow f and its source; n may be negative.
func (s *Shard) add(f *flow, r Resource, n int) {
	p, src := &s.pools, f.src
	before := src.use[r]
	src.use[r] += n
	f.use[r] += n
	p.used[r] += n
	switch {
	case before == 0 && src.use[r] > 0:
		p.active[r]++
	case before > 0 && src.use[r] == 0:
		p.active[r]--
	}
}

// release gives back everything flow f holds of every pool.
func (s *Shard) release(f *flow) {
	for r := Resource(0); r < numResources; r++ {
		if f.use[r] != 0 {
			s.add(f, r, -f.use[r])
		}
	}
}

// biggest returns the source other than not that uses the most of pool r.
func (s *Shard) biggest(r Resource, not *source) *source {
	var big *source
	for _, src := range s.pools.srcs {
		if src != not && (big == nil || src.use[r] > big.use[r]) {
			big = src
		}
	}
	return big
}

// evictOldest denies src's oldest undecided flow: room for a source under
// its share.
func (s *Shard) evictOldest(src *source) {
	s.deny(src.oldest, LimitEvicted)
}

// link and unlink keep a source's undecided flows in order.
func (src *source) link(f *flow) {
	f.prev, f.next = src.newest, nil
	if src.newest != nil {
		src.newest.next = f
	} else {
		src.oldest = f
	}
	src.newest = f
}

func (src *source) unlink(f *flow) {
	if f.prev != nil {
		f.prev.next = f.next
	} else if src.oldest == f {
		src.oldest = f.next
	}
	if f.next != nil {
		f.next.prev = f.prev
	} else if src.newest == f {
		src.newest = f.prev
	}
	f.prev, f.next = nil, nil
}

// verifyToken takes one of src's DNS verifications for now.
func (s *Shard) verifyToken(src *source, now time.Time) bool {
	cfg := &s.e.cfg
	src.tokens = min(float64(cfg.VerifyBurst), src.tokens+cfg.VerifyRate*now.Sub(src.filled).Seconds())
	src.filled = now
	if src.tokens < 1 {
		return false
	}
	src.tokens--
	return true
}

// pruneSources forgets sources that hold nothing and owe nothing.
func (s *Shard) pruneSources(now time.Time) {
	cfg := &s.e.cfg
	for a, src := range s.pools.srcs {
		if src.idle(now, float64(cfg.VerifyBurst), cfg.VerifyRate) {
			delete(s.pools.srcs, a)
			if len(s.pools.free) < 1024 {
				s.pools.free = append(s.pools.free, src)
			}
		}
	}
}

// SourceCount is one source's limit denials in a report window.
type SourceCount struct {
	Src   netip.Addr
	Count uint64
}

// TopLimited returns, for every limit any source hit since the last call,
// the n sources that hit it most, most first; and starts a new window.
// The daemon logs it every 10s: the sources an operator should look at,
// without an address ever becoming a metric label.
func (e *Engine) TopLimited(n int) map[Limit][]SourceCount {
	sums := map[Limit]map[[4]byte]uint64{}
	for _, s := range e.shards {
		s.mu.Lock()
		for a, src := range s.pools.srcs {
			for l, c := range src.limited {
				if c == 0 {
					continue
				}
				if sums[Limit(l)] == nil {
					sums[Limit(l)] = map[[4]byte]uint64{}
				}
				sums[Limit(l)][a] += uint64(c)
			}
			src.limited = [numLimits]uint32{}
		}
		s.mu.Unlock()
	}
	out := map[Limit][]SourceCount{}
	for l, m := range sums {
		list := make([]SourceCount, 0, len(m))
		for a, c := range m {
			list = append(list, SourceCount{Src: netip.AddrFrom4(a), Count: c})
		}
		slices.SortFunc(list, func(x, y SourceCount) int {
			if c := cmp.Compare(y.Count, x.Count); c != 0 {
				return c
			}
			return x.Src.Compare(y.Src)
		})
		out[l] = list[:min(n, len(list))]
	}
	return out
}
