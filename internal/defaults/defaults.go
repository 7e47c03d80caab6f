// Package defaults is the one table of egressd's defaults: what a config
// key, an engine field or a policy option means when it is not set. The
// daemon's config, the engine, the policy compiler, the head parsers and
// the subcommands' flags all read them here, so they cannot disagree.
// design.md's config section and the README show the same values.
package defaults

import "time"

// Ports that carry a name (inspect_ports).
var (
	InspectTCP = []uint16{80, 443}
	InspectUDP = []uint16{443}
)

// TCPPorts and UDPPorts return fresh copies of the inspected ports.
func TCPPorts() []uint16 { return append([]uint16(nil), InspectTCP...) }
func UDPPorts() []uint16 { return append([]uint16(nil), InspectUDP...) }

const (
	// HelloMaxBytes bounds the flow head read per flow (hello.max_bytes).
	HelloMaxBytes = 16384
	// HelloTimeout bounds a flow's time from its first packet to its
	// decision (hello.timeout).
	HelloTimeout = 3 * time.Second
	// MaxFlows bounds the undecided flows (limits.flows).
	MaxFlows = 65536
	// MaxHeld bounds the packets held per undecided flow, and the SYNs
	// counted per flow (limits.held_packets).
	MaxHeld = 64
	// Linger is how long a decided flow stays in the table to answer
	// packets already queued.
	Linger = 10 * time.Second
	// MaxVerifications bounds the DNS verifications in flight.
	MaxVerifications = 4096
	// QueueLen is the kernel's queue length per NFQUEUE (queue.len).
	QueueLen = 8192
	// HeldShare is the part of a queue's length that egressd may hold
	// (limits.held_total is HeldShare of queue.len per queue): the rest is
	// room for packets the kernel queues while egressd reads, so the queue
	// never overflows because of what egressd holds.
	HeldShare = 0.75
	// MaxBufferBytes bounds the flow-head bytes buffered across all flows
	// (limits.buffer_bytes).
	MaxBufferBytes = 128 << 20
	// VerifyRate and VerifyBurst bound each source's DNS lookups per
	// second (limits.dns_per_source).
	VerifyRate  = 20.0
	VerifyBurst = 40
	// QueueCount is the number of queues, one reader each (queue.count).
	QueueCount = 2
	// SYNLogGroup is the NFLOG group of the SYNs the rules forward
	// without queueing (syn_log.group, egressd-iptables.sh --syn-log-group).
	SYNLogGroup = 10
	// DecisionFlushDelay is how long the decision log gathers the lines
	// of denied flows before it writes them (log.flush_delay); an allowed
	// flow's line is always written before its verdict. 0: each as soon
	// as the writer sees it. A delay saves a write and wake-ups per
	// denied flow, but a crash (SIGKILL, OOM) loses up to that long of
	// them: the record of what was blocked comes first.
	DecisionFlushDelay = time.Duration(0)
)
