// Package nfq is egressd's kernel I/O: it reads the first packets of new
// flows from netfilter NFQUEUE, hands them to the engine (pkg/engine), and
// writes the engine's verdicts back, in the packet mark, which iptables
// saves to the connection (this kernel has no NFQUEUE conntrack glue). A
// verdict with no packet to carry it goes to the connection's mark over
// ctnetlink (Conntrack). The rest of a decided flow never leaves the
// kernel.
//
// This is the only package that touches netfilter sockets; the engine,
// the decision procedure and replay link none of it.
//
// What it refuses: packets it cannot decode are dropped; every packet of
// the fail_open drop queue is dropped. Reading the queues and updating
// conntrack needs CAP_NET_ADMIN in the NAT's network namespace.
package nfq
