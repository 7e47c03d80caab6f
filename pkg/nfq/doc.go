// Package nfq is egressd's verdict engine: it receives the first packets
// of new flows from netfilter NFQUEUE, reads each flow's name with
// pkg/classify, decides with pkg/policy, verifies the name against DNS, and
// hands the kernel a verdict in the packet mark, which iptables saves to
// the connection (this kernel has no NFQUEUE conntrack glue). The rest of a
// decided flow never leaves the kernel.
//
// The engine (Engine, Shard) is free of sockets: it takes decoded packets
// and gives verdicts to a Sink. The NFQUEUE readers (Queue) are the only
// code here that touches the network; `egressd replay` drives the same
// engine from a capture.
//
// What it refuses: a flow it cannot decide within its limits (bytes of
// flow head, time, flows in the table, packets held per flow) is denied
// with reason "limit" or "incomplete", never let through. IP fragments and
// packets it cannot decode are dropped. Reading the queues needs
// CAP_NET_ADMIN in the NAT's network namespace.
package nfq
