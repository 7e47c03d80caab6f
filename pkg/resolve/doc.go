// Package resolve checks that a destination address is among a name's DNS
// answers, as the configured resolvers give them.
//
// A name read from a flow (TLS or QUIC SNI, HTTP Host) is chosen by the
// client, so it proves nothing about where the flow goes: a compromised host
// can send "SNI: allowed.example.com" to its own server. The engine trusts
// such a name only when VerifySince says the flow's destination is among
// the name's A or AAAA answers (design.md, "Security properties"), or was
// less than Config.Grace ago.
//
// What it does:
//   - VerifySince(name, addr, since) answers Match, Grace or Mismatch, or an
//     error that the engine logs as reason dns-error (resolver
//     unreachable, timeout, SERVFAIL, a garbled or truncated answer), or
//     ErrBudget, which it logs as reason limit. A fresh cached address is
//     answered without
//     I/O and without allocating. Its Result says what the answer was
//     decided on: the age of the newest answer, the addresses held,
//     whether it asked again.
//   - A mismatch is decided only on an answer obtained since the flow's
//     first packet (since): the client resolved before it connected, so
//     an older answer of egressd's may not have what the client was
//     given. An older one is asked again, waiting for the name's query
//     slot (one lookup per name per Config.RequeryInterval, shared by
//     every flow waiting for it) within the caller's context, so an
//     attacker sending an allowed name to many wrong addresses cannot
//     turn each flow into a query. When an answer with addresses lacks
//     the destination, the name is looked up once more, at the slot
//     after, before the flow is denied: its answer may have changed
//     between the client's query and egressd's, whether or not egressd's
//     brought anything new. NXDOMAIN and NODATA take no second look.
//   - The cache keeps every address it has seen for a name until that
//     answer's TTL expires, so a client that got a different subset of a
//     rotating answer still verifies, and for Config.Grace after it,
//     answered as Grace, for clients that keep answers past their TTL. It
//     is bounded in names (CLOCK eviction) and in addresses per name.
//   - One lookup per name is in flight at a time, however many flows wait
//     on it.
//   - Every packet sent counts against a query budget
//     (Config.MaxQueriesPerSecond) under the VPC resolver's limit per
//     network interface. A verification that finds no room fails at once
//     with ErrBudget (reason limit); the refresh of watched names has
//     room kept for it and waits for what refills.
//   - NXDOMAIN and NODATA are answers, not errors: they verify nothing
//     (Mismatch) and are cached negatively (RFC 2308), so random labels
//     under an allowed wildcard cost one lookup each, not one per flow.
//   - Watch and Run keep a set of names resolved ahead of need, for rules
//     whose domains match by address on ports that carry no name; Cached
//     (and Contains) answers from the cache alone and never blocks.
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
