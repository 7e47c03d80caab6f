package engine

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/egressd/egressd/pkg/classify"
	"github.com/egressd/egressd/pkg/decide"
	"github.com/egressd/egressd/pkg/policy"
)

// flowKey is a flow's 5-tuple, packed so it is comparable and hashes fast.
// Only IPv4 reaches the engine (IPv6 is not forwarded).
type flowKey struct {
	src, dst     [4]byte
	sport, dport uint16
	proto        policy.Proto
}

func keyOf(p *Packet) flowKey {
	return flowKey{src: p.Src.As4(), dst: p.Dst.As4(), sport: p.SrcPort, dport: p.DstPort, proto: p.Proto}
}

func (k flowKey) tuple() Tuple {
	return Tuple{Src: netip.AddrFrom4(k.src), Dst: netip.AddrFrom4(k.dst), SrcPort: k.sport, DstPort: k.dport, Proto: k.proto}
}

// state is where a flow is in its life. A flow moves only along the arrows
// of transitions, and only through Shard.to:
//
//	free ──> reading ──> verifying ──> decided ──> free
//	            └──────────────────────────^
//
// decided is the terminal state of one flow: reached once, with the verdict
// written to the kernel (a packet that carries it, or the connection's
// mark), and left only when the flow is forgotten and its memory reused.
type state uint8

const (
	free      state = iota // on the free list, or new: no flow
	reading                // undecided: the head is read (or its first packet decides it)
	verifying              // undecided: the policy allows it by name; DNS is asked
	decided                // the verdict is given; the flow lingers for packets already queued
)

var stateNames = [...]string{free: "free", reading: "reading", verifying: "verifying", decided: "decided"}

func (s state) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("unknown(%d)", uint8(s))
}

// transitions[from] has bit 1<<to set for every legal move.
var transitions = [...]uint8{
	free:      1 << reading,
	reading:   1<<verifying | 1<<decided,
	verifying: 1 << decided,
	decided:   1 << free,
}

func (s state) canMoveTo(to state) bool {
	return int(s) < len(transitions) && transitions[s]&(1<<to) != 0
}

// flow is one tracked flow. Flows are reused through the shard's free
// list; gen changes on every reuse so that stale references (fifo
// entries, verifications in flight) can tell.
type flow struct {
	gen  uint32
	st   state
	held []heldPacket // the packets held, oldest first; reused

	flowVars
}

// heldPacket is a packet held in a kernel queue: its id there, and the
// queue (the Sink it came through, Packet.Queue).
type heldPacket struct {
	id    uint32
	queue uint16
}

// flowVars is everything a flow knows about itself. It is zeroed whole
// when the flow is reused, so nothing of one flow survives into the next.
type flowVars struct {
	key       flowKey
	info      decide.Flow // what the flow told: addresses, port, its head
	mark      policy.Verdict
	start     time.Time // first packet
	waitSince time.Time // arrival of the oldest held packet, or of the deciding packet
	syns      int
	isn       uint32             // TCP: its SYN's sequence number (kept once the parser is given back)
	pending   decide.Outcome     // while verifying: the decision DNS is to confirm
	cancel    context.CancelFunc // while verifying: ends the lookup
	// While reading, the head parser of the flow's protocol, lent from
	// the shard: a decided flow that lingers is a few hundred bytes, not
	// a parser's kilobyte or two. Parsers keep their pooled buffers
	// across flows; Reset makes them new.
	tcp  *classify.TCPFlow
	quic *classify.QUICFlow

	// Fair shares (shares.go): the flow's source, what it holds of each
	// pool, and its place among the source's undecided flows.
	src        *source
	use        [numResources]int
	prev, next *flow
}
