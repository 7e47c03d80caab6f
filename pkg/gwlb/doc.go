// Package gwlb makes egressd a target of an AWS Gateway Load Balancer: it
// terminates GENEVE (RFC 8926) on UDP port 6081, hands the inner packets
// to the kernel through a tun device, and sends back to the load balancer
// what the kernel routes to that device, under the GENEVE header of the
// latest packet of the same flow.
//
// The kernel sees the inner packets as if they had arrived on an ordinary
// interface, so egressd's rules apply to them unchanged: conntrack,
// NFQUEUE for the first packets of a flow, the connection mark, the
// MASQUERADE of the two-arm topology. Only GENEVE framing passes through
// this package; no verdict is made here.
//
// What it refuses, and counts (Stats): datagrams that are not GENEVE
// version 0, whose option lengths do not add up, that carry an unknown
// critical option or the OAM bit, that lack one of the load balancer's three
// options (class 0x0108: endpoint id, attachment id, flow cookie) or carry
// one twice, whose protocol is neither IPv4 nor IPv6 or disagrees with the
// inner packet, whose inner packet is longer than 8,500 bytes, or that come
// from an endpoint not in the configured list. IPv6 inside GENEVE is
// dropped as well: egressd does not filter IPv6, so it must never reach a
// forwarding path. Toward the load balancer, a packet whose flow has not
// come in from it is dropped: an appliance cannot start flows of its own,
// and the load balancer would refuse it anyway.
//
// The parser and the flow cache are pure and allocation-free on the packet
// path; the I/O (a UDP socket per reader with SO_REUSEPORT and recvmmsg, a
// multi-queue tun device, a raw socket for the replies) is Linux only and
// needs CAP_NET_ADMIN (tun) and CAP_NET_RAW (the raw socket).
package gwlb
