package engine

import (
	"unsafe"

	"github.com/egressd/egressd/internal/defaults"
	"github.com/egressd/egressd/pkg/classify"
)

// MemoryPart is one part of a worst-case memory bound.
type MemoryPart struct {
	What  string // what it is, in words
	Bytes int64
}

// Memory is a worst case, part by part: every pool full, the table at its
// bound, every buffer at its size.
type Memory []MemoryPart

// Total is the sum of the parts.
func (m Memory) Total() int64 {
	var t int64
	for _, p := range m {
		t += p.Bytes
	}
	return t
}

// Costs of the engine's structures, measured on the types themselves.
const (
	// mapEntryBytes is a Go map entry of the flow table (packed key,
	// pointer, and the swiss table's control and slack), rounded up.
	mapEntryBytes = 64
	// VerificationBytes is a DNS verification in flight: its goroutine's
	// stack (8 KiB at most for a lookup's depth), context and timer.
	VerificationBytes = 9 << 10
	// pendingPerSecond bounds the flows the pending queue may hold stale
	// entries for (flows decided before their deadline stay queued until
	// it): far above what the queues can admit on one instance.
	pendingPerSecond = 100_000
)

// MemoryBound is the engine's worst case for this configuration with the
// given number of shards: the flow table at its bound (undecided flows
// with their head parsers, and as many again lingering), every packet id
// held, the buffer pool full (twice, for the pooled copies the GC has not
// reclaimed), every source tracked, every verification in flight.
func (c Config) MemoryBound(shards int) Memory {
	c.setDefaults()
	if c.MaxHeldTotal == 0 {
		c.MaxHeldTotal = defaultHeldTotal(shards)
	}
	return append(c.flowTable(),
		MemoryPart{"flow-head buffers (limits.buffer_bytes, twice: pooled copies)", 2 * int64(c.MaxBufferBytes)},
		MemoryPart{"DNS verifications in flight (limits.dns_in_flight)", int64(c.MaxVerifications) * VerificationBytes},
	)
}

// FlowTableBound is the worst case of the parts that grow with MaxFlows.
func (c Config) FlowTableBound() int64 {
	c.setDefaults()
	return c.flowTable().Total()
}

func (c Config) flowTable() Memory {
	flows := int64(c.MaxFlows)
	flowSize := int64(unsafe.Sizeof(flow{})) + int64(c.MaxHeld+1)*int64(unsafe.Sizeof(heldPacket{})) // the held packets keep their capacity
	fifo := int64(unsafe.Sizeof(fifoEntry{}))
	return Memory{
		{"flow table: undecided and lingering flows (limits.flows, twice)", 2 * flows * (flowSize + mapEntryBytes)},
		{"head parsers of undecided flows", flows * int64(max(unsafe.Sizeof(classify.TCPFlow{}), unsafe.Sizeof(classify.QUICFlow{})))},
		{"timeout queues", (3*flows + int64(c.HelloTimeout.Seconds()+1)*pendingPerSecond) * fifo},
		{"sources", flows * int64(unsafe.Sizeof(source{})+mapEntryBytes)},
	}
}

// defaultHeldTotal is MaxHeldTotal's default: three quarters of the
// default queue length per queue.
func defaultHeldTotal(shards int) int {
	return int(defaults.HeldShare*defaults.QueueLen) * shards
}
