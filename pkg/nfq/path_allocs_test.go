//go:build !race

package nfq

import (
	"testing"

	"github.com/egressd/egressd/pkg/policy"
)

// Not built under -race: its sync.Pool drops pooled buffers on purpose.
// make test runs the allocation tests again without it.

// TestPacketPathAllocs: a TLS flow through the message path, its SYN
// queued or logged, allocates once: its name's string.
func TestPacketPathAllocs(t *testing.T) {
	for _, logged := range []bool{false, true} {
		pb := newPathBench(t, logged)
		syn, data := pb.messages(logged)
		pb.flow(logged, syn, data) // warm up
		n := testing.AllocsPerRun(50, func() {
			// The same 5-tuple each time: the flow was forgotten.
			pb.flow(logged, syn, data)
		})
		if n > 1 {
			t.Errorf("logged %t: %v allocations per flow, want at most 1 (the name)", logged, n)
		}
		if a := pb.e.Stats().Decisions(policy.TCP, policy.Allow, policy.ReasonRule); a < 50 {
			t.Errorf("logged %t: %d flows allowed, want every one", logged, a)
		}
	}
}
