package replay

import (
	"time"

	"github.com/egressd/egressd/pkg/declog"
	"github.com/egressd/egressd/pkg/engine"
	"github.com/egressd/egressd/pkg/policy"
)

// The tracker stands in for conntrack and the iptables rules in front of
// the engine (design.md, "Rule layout"): it knows each connection's
// direction, sends the engine only what the rules queue (the client's SYN
// and its packets with payload, while the flow is undecided), and, once
// the engine has decided a flow, keeps its later packets away from the
// engine as the connection mark does. With nf_conntrack_tcp_loose=0 a TCP
// flow whose handshake is not in the capture would be INVALID on the NAT:
// replay reports it as midstream and decides nothing for it.

// connKey is a connection's 5-tuple, client side first.
type connKey struct {
	client, server [4]byte
	cport, sport   uint16
	proto          policy.Proto
}

func (k connKey) reverse() connKey {
	return connKey{client: k.server, server: k.client, cport: k.sport, sport: k.cport, proto: k.proto}
}

func keyOfPacket(p *engine.Packet) connKey {
	return connKey{client: p.Src.As4(), server: p.Dst.As4(), cport: p.SrcPort, sport: p.DstPort, proto: p.Proto}
}

type tcpState uint8

const (
	tcpSynSent tcpState = iota
	tcpEstablished
	tcpClosing  // a FIN one way
	tcpTimeWait // FINs both ways
	tcpClosed   // reset
)

// Conntrack's default timeouts (net.netfilter.nf_conntrack_*_timeout*).
var tcpTimeouts = [...]time.Duration{
	tcpSynSent:     120 * time.Second,
	tcpEstablished: 432000 * time.Second,
	tcpClosing:     120 * time.Second,
	tcpTimeWait:    120 * time.Second,
	tcpClosed:      10 * time.Second,
}

const (
	udpTimeout       = 30 * time.Second
	udpStreamTimeout = 120 * time.Second
	sweepEvery       = 10 * time.Second
)

// conn is one tracked connection.
type conn struct {
	key         connKey
	first, last time.Time
	tcp         tcpState
	fins        uint8 // 1: the client's FIN, 2: the server's
	replied     bool
	midstream   bool  // its start is not in the capture: never decided
	cut         bool  // the capture cut a packet the engine needed
	reused      bool  // an engine gave it an earlier connection's verdict
	pending     uint8 // engines (bit i) that have not decided it
	recs        *[2]declog.Record
	prev, next  *conn // recency list, most recent first
	inList      bool
}

func (c *conn) expires() time.Time {
	switch {
	case c.key.proto == policy.UDP && c.replied:
		return c.last.Add(udpStreamTimeout)
	case c.key.proto == policy.UDP:
		return c.last.Add(udpTimeout)
	}
	return c.last.Add(tcpTimeouts[c.tcp])
}

// tracker is replay's connection table. It is bounded: past max entries
// the least recently seen decided connection is forgotten (its later
// packets then look midstream, as they would to a NAT whose table
// overflowed).
type tracker struct {
	conns      map[connKey]*conn
	head, tail *conn
	max        int
	all        uint8 // pending bits of a new connection
	undecided  int   // connections some engine has not decided
	nextSweep  time.Time
	inspected  func(policy.Proto, uint16) bool
	counts     *Counts
	free       []*conn
}

func newTracker(max int, engines int, inspected func(policy.Proto, uint16) bool, c *Counts) *tracker {
	return &tracker{conns: make(map[connKey]*conn, min(max, 1024)), max: max, all: uint8(1)<<engines - 1, inspected: inspected, counts: c}
}

// observation is what the tracker makes of one packet.
type observation struct {
	c         *conn // nil: the packet belongs to no connection replay follows
	queue     bool  // the rules would queue it to egressd if its flow is undecided
	midstream bool  // c was just created for a flow whose start is missing
}

// observe files a packet under its connection. hasPayload is whether the
// packet carries payload (known even when the capture cut it).
func (t *tracker) observe(p *engine.Packet, hasPayload bool, now time.Time) observation {
	t.sweep(now)
	k := keyOfPacket(p)
	c, fromClient := t.conns[k], true
	if c == nil {
		if c = t.conns[k.reverse()]; c != nil {
			fromClient = false
		}
	}
	if c != nil && c.pending == 0 && now.After(c.expires()) {
		t.remove(c)
		c = nil
	}
	if p.Proto == policy.UDP {
		return t.udp(c, k, fromClient, p, now)
	}
	return t.tcp(c, k, fromClient, p, hasPayload, now)
}

// validTCPFlags is conntrack's table of flag combinations (without URG,
// which the engine does not see); any other is INVALID and dropped.
func validTCPFlags(p *engine.Packet) bool {
	switch {
	case p.SYN && !p.FIN && !p.RST: // SYN, SYN-ACK
		return true
	case p.RST && !p.SYN && !p.FIN: // RST, RST-ACK
		return true
	case p.ACK && !p.SYN && !p.RST: // ACK, FIN-ACK
		return true
	}
	return false
}

func (t *tracker) tcp(c *conn, k connKey, fromClient bool, p *engine.Packet, hasPayload bool, now time.Time) observation {
	if !validTCPFlags(p) {
		t.counts.Invalid++
		return observation{}
	}
	syn := p.SYN && !p.ACK
	if c == nil {
		switch {
		case syn:
			return observation{c: t.create(k, now, false), queue: true}
		case p.RST:
			t.counts.Stray++ // a reset for a connection already gone
			return observation{}
		}
		if p.SYN || t.serverSide(policy.TCP, p.SrcPort, p.DstPort) {
			k = k.reverse() // a SYN-ACK or a reply: the receiver is the client
		}
		c = t.create(k, now, true)
		c.tcp = tcpEstablished
		return observation{c: c, midstream: true}
	}
	if fromClient && syn && c.pending == 0 && c.tcp >= tcpClosing {
		// A new connection on the 5-tuple of a closing one: conntrack
		// starts it afresh, and the engine decides it again.
		t.remove(c)
		return observation{c: t.create(k, now, false), queue: true}
	}
	t.touch(c, now)
	switch {
	case p.RST:
		c.tcp = tcpClosed
	case p.FIN:
		if fromClient {
			c.fins |= 1
		} else {
			c.fins |= 2
		}
		if c.fins == 3 {
			c.tcp = tcpTimeWait
		} else if c.tcp < tcpClosing {
			c.tcp = tcpClosing
		}
	case p.SYN && p.ACK && !fromClient && c.tcp == tcpSynSent:
		c.tcp = tcpEstablished
	}
	if !fromClient {
		c.replied = true
	}
	return observation{c: c, queue: fromClient && !c.midstream && (syn || hasPayload)}
}

func (t *tracker) udp(c *conn, k connKey, fromClient bool, p *engine.Packet, now time.Time) observation {
	if c == nil {
		if t.serverSide(policy.UDP, p.SrcPort, p.DstPort) {
			// A reply without its request in the capture.
			return observation{c: t.create(k.reverse(), now, true), midstream: true}
		}
		return observation{c: t.create(k, now, false), queue: true}
	}
	t.touch(c, now)
	if !fromClient {
		c.replied = true
	}
	return observation{c: c, queue: fromClient && !c.midstream}
}

// serverSide guesses, for a flow whose first packet is not its start,
// whether the sender is the server: it sends from a well-known or
// inspected port to an ephemeral one.
func (t *tracker) serverSide(proto policy.Proto, src, dst uint16) bool {
	return (src < 1024 || t.inspected(proto, src)) && dst >= 1024 && !t.inspected(proto, dst)
}

func (t *tracker) create(k connKey, now time.Time, midstream bool) *conn {
	if len(t.conns) >= t.max {
		t.evict()
	}
	var c *conn
	if n := len(t.free); n > 0 {
		c = t.free[n-1]
		t.free = t.free[:n-1]
		*c = conn{recs: c.recs}
	} else {
		c = &conn{}
	}
	c.key, c.first, c.last, c.midstream = k, now, now, midstream
	if !midstream {
		c.pending = t.all
		t.undecided++
	}
	t.conns[k] = c
	t.pushFront(c)
	return c
}

// decided records that engine i decided c; it reports whether every
// engine now has.
func (t *tracker) decided(c *conn, i int) bool {
	bit := uint8(1) << i
	if c.pending&bit == 0 {
		return c.pending == 0
	}
	c.pending &^= bit
	if c.pending == 0 {
		t.undecided--
		return true
	}
	return false
}

func (t *tracker) touch(c *conn, now time.Time) {
	if now.After(c.last) {
		c.last = now
	}
	if t.head != c {
		t.unlink(c)
		t.pushFront(c)
	}
}

func (t *tracker) remove(c *conn) {
	if c.pending != 0 {
		t.undecided--
	}
	delete(t.conns, c.key)
	t.unlink(c)
	t.free = append(t.free, c)
}

// evict forgets the least recently seen connection that every engine has
// decided. Undecided ones stay: the engine bounds them (limits.flows).
func (t *tracker) evict() {
	for c, n := t.tail, 0; c != nil && n < 256; c, n = c.prev, n+1 {
		if c.pending == 0 {
			t.counts.Evicted++
			t.remove(c)
			return
		}
	}
}

// sweep forgets expired connections, every sweepEvery of capture time.
func (t *tracker) sweep(now time.Time) {
	if now.Before(t.nextSweep) {
		return
	}
	t.nextSweep = now.Add(sweepEvery)
	for _, c := range t.conns {
		if c.pending == 0 && now.After(c.expires()) {
			t.remove(c)
		}
	}
}

func (t *tracker) pushFront(c *conn) {
	c.prev, c.next, c.inList = nil, t.head, true
	if t.head != nil {
		t.head.prev = c
	}
	t.head = c
	if t.tail == nil {
		t.tail = c
	}
}

func (t *tracker) unlink(c *conn) {
	if !c.inList {
		return
	}
	if c.prev != nil {
		c.prev.next = c.next
	} else {
		t.head = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	} else {
		t.tail = c.prev
	}
	c.prev, c.next, c.inList = nil, nil, false
}
