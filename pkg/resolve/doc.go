// Package resolve checks that a destination address is among a name's DNS
// answers, as the configured resolvers give them.
//
// A name read from a flow (TLS or QUIC SNI, HTTP Host) is chosen by the
// client, so it proves nothing about where the flow goes: a compromised host
// can send "SNI: allowed.example.com" to its own server. The engine trusts
// such a name only when Verify says the flow's destination is among the
// name's A or AAAA answers (design.md, "Security properties").
//
// What it does:
//   - Verify(name, addr) answers Match or Mismatch, or an error that the
//     engine logs as reason dns-error (resolver unreachable, timeout,
//     SERVFAIL, a garbled or truncated answer). A cached address is answered
//     without I/O and without allocating.
//   - The cache keeps every address it has seen for a name until that
//     answer's TTL expires, so a client that got a different subset of a
//     rotating answer still verifies. It is bounded in names (CLOCK
//     eviction) and in addresses per name.
//   - One lookup per name is in flight at a time, however many flows wait
//     on it. A name whose cached answers lack the address is asked again at
//     most once per Config.RequeryInterval, so an attacker sending an
//     allowed name to many wrong addresses cannot turn each flow into a
//     query.
//   - NXDOMAIN and NODATA are answers, not errors: they verify nothing
//     (Mismatch) and are cached negatively (RFC 2308).
//   - Watch and Run keep a set of names resolved ahead of need, for rules
//     whose domains match by address on ports that carry no name; Contains
//     answers from the cache alone and never blocks.
//   - Lookups run in goroutines the Resolver owns, so every caller can
//     leave on its own context; Close ends them and waits.
//
// What it refuses to trust: an answer whose ID, QR bit, opcode or question
// differs from the query; one with the TC bit (the transport retries over
// TCP first); one that does not unpack, or whose records are not exactly
// the ones the header announces, filling the message; and any address that is not an A/AAAA record
// on the CNAME chain that starts at the question (RFC 1034 §3.6.2, §4.3.2).
// DNSSEC is not validated: the resolver in the VPC is trusted, as it is by
// every host the filter protects.
//
// No privileges are needed. The only I/O is DNS over UDP and TCP to the
// configured servers, through Config.Transport.
package resolve
