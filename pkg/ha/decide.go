package ha

import (
	"fmt"
	"time"
)

// Owner is who the routes name, as this member sees it.
type Owner uint8

const (
	OwnerUnknown Owner = iota // the EC2 API could not be read
	OwnerNone                 // the route names neither member (or is missing)
	OwnerSelf
	OwnerPeer
)

func (o Owner) String() string {
	switch o {
	case OwnerUnknown:
		return "unknown"
	case OwnerNone:
		return "none"
	case OwnerSelf:
		return "self"
	case OwnerPeer:
		return "peer"
	}
	return fmt.Sprintf("unknown(%d)", uint8(o))
}

// Action is what a member does about the routes.
type Action uint8

const (
	None     Action = iota
	Failover        // the active member is down: take the routes
	Failback        // the routes return to the preferred member
	Claim           // the routes name neither member: take them
	Repair          // this member is active but a route table or the EIP lags: finish the move
)

func (a Action) String() string {
	switch a {
	case None:
		return "none"
	case Failover:
		return "failover"
	case Failback:
		return "failback"
	case Claim:
		return "claim"
	case Repair:
		return "repair"
	}
	return fmt.Sprintf("unknown(%d)", uint8(a))
}

// Actions lists every action but None, for metrics.
func Actions() []Action { return []Action{Failover, Failback, Claim, Repair} }

// Decision is an action and why (a short fixed reason: logs and /status
// share it).
type Decision struct {
	Action Action
	Reason string
}

// maxDeposed caps the split-brain backoff: at most 2^3 = 8 hold-downs.
const maxDeposed = 3

// Decider decides, from what this member observed and when, whether to move
// the routes. It holds no clock: every call says what time it is, so tests
// drive it with a fake one. Not safe for concurrent use.
type Decider struct {
	preferred, failback bool
	threshold           int
	holdDown            time.Duration

	ready         bool
	readySince    time.Time
	peerFailures  int // consecutive failed checks of the peer
	peerOK        bool
	peerDownSince time.Time // when the failures reached the threshold (zero while up)
	selfSeenAt    time.Time // the last view that named this member

	owner     Owner     // last known owner (OwnerUnknown before the first view)
	changedAt time.Time // when the owner last changed, as seen here
	deposed   int       // times this member lost the routes while ready, its peer unseen
}

// NewDecider returns a Decider for cfg. A member that just started counts
// its start as the last change of owner: it waits one hold-down before its
// first move, so one that restarts in a loop cannot flap the routes.
func NewDecider(cfg *Config, now time.Time) *Decider {
	return &Decider{
		preferred: cfg.Preferred, failback: cfg.Failback,
		threshold: cfg.FailureThreshold, holdDown: cfg.HoldDown,
		changedAt: now,
	}
}

// Observe records one round of checks: whether this member can filter, and
// whether the peer answered ready.
func (d *Decider) Observe(now time.Time, ready, peerOK bool) {
	if ready && !d.ready {
		d.readySince = now
	}
	d.ready = ready
	d.peerOK = peerOK
	if peerOK {
		d.peerFailures = 0
		d.peerDownSince = time.Time{}
		d.deposed = 0 // seeing the peer ends a suspected split brain
	} else if d.peerFailures++; d.peerFailures == d.threshold {
		d.peerDownSince = now
	}
}

// NotReady records that a check within the round found this member
// unable to filter after all (the rules, checked afresh before a move).
func (d *Decider) NotReady() { d.ready = false }

// PeerDown reports whether the peer failed FailureThreshold checks in a row.
func (d *Decider) PeerDown() bool { return d.peerFailures >= d.threshold }

// PeerFailures is the number of consecutive failed checks of the peer.
func (d *Decider) PeerFailures() int { return d.peerFailures }

// Wait is how long after the last change of owner this member may take
// the routes from a peer it sees down.
func (d *Decider) Wait() time.Duration { return d.holdDown << d.deposed }

// NextMove is the earliest time a failover by this member may happen.
func (d *Decider) NextMove() time.Time { return d.changedAt.Add(d.Wait()) }

// Decide says what to do given the routes' owner and whether the move is
// complete (every route table and the EIP name this member). Calling it
// again with the same view changes nothing.
func (d *Decider) Decide(now time.Time, owner Owner, complete bool) Decision {
	if owner == OwnerUnknown {
		return Decision{None, "ec2-unreadable"}
	}
	if owner != d.owner {
		if d.owner == OwnerSelf && owner == OwnerPeer && d.ready && d.PeerDown() && !d.peerDownSince.After(d.selfSeenAt) {
			// Deposed while able to filter, by a peer this member has not
			// seen since before it last saw itself active: either the peer
			// is dead (and took the routes while alive) or the path between
			// us is cut. Back off before taking them back.
			d.deposed = min(d.deposed+1, maxDeposed)
		}
		if d.owner != OwnerUnknown {
			// When the change happened is not known, only when it was
			// seen: the hold-down counts from then (the later of the two).
			d.changedAt = now
		}
		d.owner = owner
	}
	if owner == OwnerSelf {
		d.selfSeenAt = now
	}
	if !d.ready {
		return Decision{None, "not-ready"}
	}
	switch owner {
	case OwnerSelf:
		if !complete {
			return Decision{Repair, "incomplete"}
		}
		return Decision{None, "active"}
	case OwnerNone:
		if d.preferred || d.PeerDown() {
			return Decision{Claim, "no-owner"}
		}
		return Decision{None, "no-owner-peer-preferred"}
	}
	if d.PeerDown() {
		if now.Before(d.NextMove()) {
			return Decision{None, "hold-down"}
		}
		return Decision{Failover, "peer-down"}
	}
	if d.preferred && d.failback && d.peerOK {
		if now.Sub(d.readySince) < d.holdDown || now.Sub(d.changedAt) < d.holdDown {
			return Decision{None, "failback-hold-down"}
		}
		return Decision{Failback, "preferred-ready"}
	}
	return Decision{None, "standby"}
}

// Moved records a move of the routes to this member at now.
func (d *Decider) Moved(now time.Time) {
	if d.owner != OwnerSelf {
		d.changedAt = now
	}
	d.owner, d.selfSeenAt = OwnerSelf, now
}
