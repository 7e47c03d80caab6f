// Package replay is `egressd replay`: it runs captured traffic, or the
// daemon's decision log, through the same engine the daemon runs
// (pkg/nfq's Shard.Handle, with pkg/classify and pkg/policy behind it) and
// writes one decision-log line per flow, in the daemon's schema and
// through its encoder (declog.Record.AppendJSON).
//
// What stands between the wire and the engine on the NAT is played here
// too, so that the engine sees what it would have seen: the link layer
// (Ethernet with VLAN tags, Linux cooked v1 and v2, raw IP, BSD loopback;
// pcap and pcapng through gopacket's pcapgo, gzipped or not), IPv4
// reassembly (gopacket's ip4defrag, with the kernel's time and memory
// bounds), checksums when asked, and conntrack with the iptables rules:
// a flow starts with its client's SYN (UDP: its first datagram), only the
// SYN and the client's packets with payload reach the engine while the
// flow is undecided, and a decided flow's packets never do. Time is the
// capture's: the engine's clock and its ticks follow the packets'
// timestamps, so hello.timeout ends where it did.
//
// What it refuses to guess: a flow whose start is not in the capture is
// reported as midstream, not decided (the NAT, with
// nf_conntrack_tcp_loose=0, would have dropped it as INVALID); a flow the
// capture ends before deciding, or whose bytes the snap length cut, is
// reported as such. DNS answers are given (Options.Resolve) or the check
// is skipped and each line says so.
//
// Memory is bounded whatever the input's size: the input is streamed,
// the engine's tables and replay's connection table are bounded, and
// lines are written as flows are decided (with a baseline, newly allowed
// flows wait in an unlinked temporary file, to be listed after the newly
// denied).
//
// Malformed input yields an error or a summary, never a panic: pcapng
// blocks are checked before pcapgo reads them (ngGuard), and a panic in
// the third-party readers is turned into an error. No privileges are
// needed; nothing here opens a socket.
package replay
