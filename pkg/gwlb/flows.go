package gwlb

import (
	"encoding/binary"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// Key is an inner IPv4 flow as the load balancer hashes it: addresses,
// protocol and, for TCP, UDP and SCTP, the ports (0 for other protocols
// and for fragments after the first, which carry none).
type Key struct {
	Src, Dst         [4]byte
	SrcPort, DstPort uint16
	Proto            uint8
}

// Reverse is the key of the other direction of the flow.
func (k Key) Reverse() Key {
	return Key{Src: k.Dst, Dst: k.Src, SrcPort: k.DstPort, DstPort: k.SrcPort, Proto: k.Proto}
}

// KeyOf reads the flow key of an IPv4 packet; false if p is not a whole
// IPv4 header (or, where ports belong, lacks them).
func KeyOf(p []byte) (Key, bool) {
	if len(p) < 20 || p[0]>>4 != 4 {
		return Key{}, false
	}
	ihl := int(p[0]&0x0f) * 4
	if ihl < 20 || len(p) < ihl {
		return Key{}, false
	}
	k := Key{Proto: p[9]}
	copy(k.Src[:], p[12:16])
	copy(k.Dst[:], p[16:20])
	fragOff := binary.BigEndian.Uint16(p[6:8]) & 0x1fff
	switch k.Proto {
	case 6, 17, 132: // TCP, UDP, SCTP: the ports are the first 4 bytes
		if fragOff != 0 {
			return k, true
		}
		if len(p) < ihl+4 {
			return Key{}, false
		}
		k.SrcPort = binary.BigEndian.Uint16(p[ihl : ihl+2])
		k.DstPort = binary.BigEndian.Uint16(p[ihl+2 : ihl+4])
	}
	return k, true
}

// Path is how to send a packet of a flow back to the load balancer: the
// outer addresses and ports to swap and keep, and the GENEVE header to
// repeat byte for byte.
type Path struct {
	LB        [4]byte // the load balancer's address: the reply's destination
	Local     [4]byte // the address it sent to: the reply's source
	LBPort    uint16  // its source port, kept as the reply's source port
	LocalPort uint16  // the port it sent to (6081), kept as the reply's destination port
	Endpoint  uint64  // the endpoint id, for counting
	HeaderLen uint8
	Header    [MaxHeader]byte
}

// Bytes is the GENEVE header to repeat.
func (p *Path) Bytes() []byte { return p.Header[:p.HeaderLen] }

const shards = 64

// Cache holds the latest Path of each inner flow that came in from the
// load balancer, so that what the kernel sends back for the flow goes out
// under the same header. It is bounded (a new flow past its size is
// not learnt, and counted) and forgets a flow once it has been idle longer
// than the load balancer keeps it (Expire). Learn and Lookup take no
// allocation once the cache has been sized; they are safe for concurrent
// use.
type Cache struct {
	tcpIdle int64 // nanoseconds
	idle    int64
	n       atomic.Int64
	full    atomic.Uint64
	shard   [shards]struct {
		mu sync.RWMutex
		m  map[Key]*cached
		_  [32]byte // keep shards' locks off one cache line
	}
	// The entries, allocated once: a new flow takes one from free.
	slab   []cached
	freeMu sync.Mutex
	free   []*cached
}

type cached struct {
	path Path
	seen atomic.Int64 // unix nanoseconds of the latest inbound packet
}

// NewCache returns a cache of at most size flows; a TCP flow is forgotten
// after tcpIdle without an inbound packet, any other after idle (the load
// balancer's own idle timeouts: 350 s and 120 s by default).
func NewCache(size int, tcpIdle, idle time.Duration) *Cache {
	size = max(size, 1)
	c := &Cache{tcpIdle: int64(tcpIdle), idle: int64(idle)}
	for i := range c.shard {
		// Room for twice a fair share, so that an uneven spread over
		// the shards seldom grows a map on the packet path.
		c.shard[i].m = make(map[Key]*cached, 2*size/shards+16)
	}
	c.slab = make([]cached, size)
	c.free = make([]*cached, size)
	for i := range c.slab {
		c.free[i] = &c.slab[size-1-i]
	}
	return c
}

func shardOf(k Key) int {
	// FNV-1a over the key's fields, folded: cheap, and the same both ways
	// of nothing (each direction is its own entry).
	h := uint32(2166136261)
	for _, b := range k.Src {
		h = (h ^ uint32(b)) * 16777619
	}
	for _, b := range k.Dst {
		h = (h ^ uint32(b)) * 16777619
	}
	h = (h ^ uint32(k.SrcPort)) * 16777619
	h = (h ^ uint32(k.DstPort)) * 16777619
	h = (h ^ uint32(k.Proto)) * 16777619
	return int(h % shards)
}

// Learn records p as the latest path of flow k, seen at now (unix
// nanoseconds). It returns false when k is new and the cache is full.
func (c *Cache) Learn(k Key, p *Path, now int64) bool {
	s := &c.shard[shardOf(k)]
	s.mu.RLock()
	e := s.m[k]
	if e != nil {
		// The common case: a known flow. Its path only changes when
		// the load balancer changes something (a new cookie for a
		// reused 5-tuple, another source port), so compare first.
		if e.path != *p {
			s.mu.RUnlock()
			s.mu.Lock()
			if e = s.m[k]; e != nil {
				e.path = *p
				e.seen.Store(now)
				s.mu.Unlock()
				return true
			}
			s.mu.Unlock()
			return c.insert(k, p, now)
		}
		e.seen.Store(now)
		s.mu.RUnlock()
		return true
	}
	s.mu.RUnlock()
	return c.insert(k, p, now)
}

func (c *Cache) insert(k Key, p *Path, now int64) bool {
	s := &c.shard[shardOf(k)]
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.m[k]; e != nil {
		e.path = *p
		e.seen.Store(now)
		return true
	}
	c.freeMu.Lock()
	if len(c.free) == 0 {
		c.freeMu.Unlock()
		c.full.Add(1)
		return false
	}
	e := c.free[len(c.free)-1]
	c.free = c.free[:len(c.free)-1]
	c.freeMu.Unlock()
	e.path = *p
	e.seen.Store(now)
	s.m[k] = e
	c.n.Add(1)
	return true
}

// Lookup finds the path for a packet of flow k that the kernel sends
// toward the load balancer: the flow's own (one-arm: the packet goes back
// the way it came), else its reverse's (two-arm: a reply to a flow that
// came in). It copies the path into p.
func (c *Cache) Lookup(k Key, p *Path) bool {
	return c.get(k, p) || c.get(k.Reverse(), p)
}

func (c *Cache) get(k Key, p *Path) bool {
	s := &c.shard[shardOf(k)]
	s.mu.RLock()
	e := s.m[k]
	if e != nil {
		*p = e.path
	}
	s.mu.RUnlock()
	return e != nil
}

// Expire forgets the flows idle for longer than their timeout at now and
// returns how many it forgot.
func (c *Cache) Expire(now int64) int {
	n := 0
	for i := range c.shard {
		s := &c.shard[i]
		s.mu.Lock()
		for k, e := range s.m {
			idle := c.idle
			if k.Proto == 6 {
				idle = c.tcpIdle
			}
			if now-e.seen.Load() > idle {
				delete(s.m, k)
				c.freeMu.Lock()
				c.free = append(c.free, e)
				c.freeMu.Unlock()
				n++
			}
		}
		s.mu.Unlock()
	}
	c.n.Add(int64(-n))
	return n
}

// Len is the number of flows held.
func (c *Cache) Len() int { return int(c.n.Load()) }

// Full counts the new flows not learnt because the cache was full.
func (c *Cache) Full() uint64 { return c.full.Load() }

// MemoryBound is a cache of size flows at its worst: every entry in use,
// each in its shard's map and on the free list's slab.
func MemoryBound(size int) int64 {
	const mapEntry = 2 * 64 // two maps' worth of slack: a key, a pointer, the swiss table's control
	return int64(max(size, 1)) * (int64(unsafe.Sizeof(cached{})) + int64(unsafe.Sizeof(Key{})) + 8 + mapEntry)
}
