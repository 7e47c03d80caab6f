package nfq

import (
	"sync/atomic"

	"github.com/egressd/egressd/pkg/policy"
)

// Stats are the engine's counters, read by the metrics endpoint.
type Stats struct {
	Packets atomic.Uint64 // packets handled
	Flows   atomic.Uint64 // flows tracked
	Held    atomic.Int64  // packets held now, across flows

	LimitFlows  atomic.Uint64 // new flows denied: flow table full
	LimitHello  atomic.Uint64 // flows denied: flow head over hello.max_bytes
	LimitVerify atomic.Uint64 // flows denied: too many DNS verifications in flight

	VerifyHits       atomic.Uint64 // names verified from the cache
	VerifyMismatches atomic.Uint64 // destination not among the name's answers
	VerifyErrors     atomic.Uint64 // resolver errors and timeouts

	decisions [2][16]atomic.Uint64 // [verdict][reason]
}

func (s *Stats) countDecision(v policy.Verdict, r policy.Reason) {
	if int(v) < len(s.decisions) && int(r) < len(s.decisions[0]) {
		s.decisions[v][r].Add(1)
	}
}

// Decisions returns how many flows got verdict v for reason r.
func (s *Stats) Decisions(v policy.Verdict, r policy.Reason) uint64 {
	if int(v) < len(s.decisions) && int(r) < len(s.decisions[0]) {
		return s.decisions[v][r].Load()
	}
	return 0
}
