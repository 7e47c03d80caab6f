package engine

import (
	"sync/atomic"

	"github.com/egressd/egressd/pkg/policy"
)

// Stats are the engine's counters, read by the metrics endpoint.
type Stats struct {
	Packets   atomic.Uint64 // packets handled
	Flows     atomic.Uint64 // flows tracked, in all
	Held      atomic.Int64  // packets held now, across flows
	Undecided atomic.Int64  // flows waiting for a decision now
	Tracked   atomic.Int64  // flows in the table now (undecided and lingering)
	// SYNsLogged counts the SYNs the kernel forwarded and logged
	// (SYNSource) that reached their shard.
	SYNsLogged atomic.Uint64

	limits [numLimits]atomic.Uint64 // flows denied at a limit, by limit

	VerifyHits       atomic.Uint64 // names verified from the cache
	VerifyGraces     atomic.Uint64 // names verified only within the grace after their TTL
	VerifyMismatches atomic.Uint64 // destination not among the name's answers
	VerifyErrors     atomic.Uint64 // resolver errors and timeouts

	ShadowDenials atomic.Uint64 // allowed flows a deny rule on trial would have denied

	// ConcludeErrors counts decided flows whose connection the kernel
	// could not be told the verdict of (no packet in hand to carry it,
	// and the conntrack update failed).
	ConcludeErrors atomic.Uint64
	// SYNPayloads counts SYNs that carried data to an inspected port,
	// dropped (Shard.Handle).
	SYNPayloads atomic.Uint64
	// SYNsQueuedLogged counts SYNs queued to a port whose SYNs are
	// logged, dropped (Shard.Handle).
	SYNsQueuedLogged atomic.Uint64
	// Internal counts refused state changes and non-decisions given as
	// decisions: bugs, each failed closed. It should stay 0.
	Internal atomic.Uint64

	decisions [3][2][16]atomic.Uint64 // [proto][verdict][reason]
}

func (s *Stats) countLimit(l Limit) {
	if int(l) < len(s.limits) {
		s.limits[l].Add(1)
	}
}

// Limited returns how many flows were denied at limit l.
func (s *Stats) Limited(l Limit) uint64 {
	if int(l) < len(s.limits) {
		return s.limits[l].Load()
	}
	return 0
}

func (s *Stats) countDecision(p policy.Proto, v policy.Verdict, r policy.Reason) {
	if int(p) < len(s.decisions) && int(v) < len(s.decisions[0]) && int(r) < len(s.decisions[0][0]) {
		s.decisions[p][v][r].Add(1)
	}
}

// Decisions returns how many flows of proto p got verdict v for reason r.
func (s *Stats) Decisions(p policy.Proto, v policy.Verdict, r policy.Reason) uint64 {
	if int(p) < len(s.decisions) && int(v) < len(s.decisions[0]) && int(r) < len(s.decisions[0][0]) {
		return s.decisions[p][v][r].Load()
	}
	return 0
}
