// Package classify reads the name a new flow asks for from the first bytes
// the client sends: the server_name of a TLS ClientHello (over TCP, or inside
// QUIC Initial packets), or the Host of an HTTP/1.x request.
//
// It is pure: bytes in, a result out. No I/O, no goroutines, no clock, no
// globals that change. Everything here is fed by an attacker who controls
// every byte and every segment boundary, so every parser returns an error
// and never panics, and memory per flow is bounded by the caller's limit.
//
// A flow's result is one of: need more bytes; a name (with where it came
// from); no name in a valid hello; or a reason to deny: ErrMalformed,
// ErrNotTLS (neither TLS nor HTTP), ErrLimit.
//
// # Entry points
//
//   - TCPFlow: the engine's per-flow reader for TCP. Reset(isn, maxBytes),
//     then Feed(seq, syn, payload) for each client-to-server segment (the
//     SYN included) until the Result is Done or Denied, then Release.
//   - QUICFlow: the same for the client's QUIC Initial datagrams.
//   - Capacity and BufferedBytes (of either flow): the pooled buffer bytes
//     a flow holds and the payload bytes it has stored, for the engine's
//     memory accounting. Buffers grow with what the flow has sent, from
//     512 bytes by doubling, never past maxBytes each.
//   - ParseClientHello: one ClientHello handshake message, without record
//     layer (the QUIC reader feeds it its CRYPTO stream).
//   - ParseRequestHead: an HTTP/1.x request head.
//   - AppendName: names off the wire, through egressd's one check and
//     normal form of host names (internal/hostname).
//
// # What is refused, and why
//
// The rule throughout: where a server might read the bytes differently from
// this package, the flow is refused rather than guessed at, because a name
// read differently from the server's is a policy bypass. Each check cites
// its RFC where it is made; the choices that are judgement rather than RFC:
//
//   - TCP: overlapping segments must carry identical bytes (malformed
//     otherwise). Payload before ISN+1 outside the SYN is malformed. Bytes
//     past maxBytes are not stored; a head that cannot be decided within
//     maxBytes is limit (as soon as a TLS header shows the hello ends past
//     it). More than 31 holes at once is limit. A FIN needs no handling: a
//     cut head stays NeedMore until the engine's timeout.
//   - TLS records: handshake records only, version 0x0301-0x0303, 1 to 2^14
//     bytes; a non-handshake record before the hello is whole is
//     not-tls-or-http; bytes after the hello in its last record are
//     malformed. Every duplicate extension is malformed; more than 128
//     extensions is limit.
//   - Names: lowercase, one trailing dot removed; only letters, digits, '-',
//     '_' and '.'; labels 1-63, name up to 253; IP literals (a last label
//     that reads as a number) are malformed in SNI and no name in HTTP.
//   - HTTP: the methods of RFC 9110 and PATCH only, so C D G H O P T are the
//     bytes that start HTTP; other methods are not-tls-or-http. LF-only
//     line endings, bare CR, NUL, obs-fold, whitespace before a colon, two
//     Host fields, userinfo, an empty port and a Host that differs from an
//     absolute-form or CONNECT authority are malformed. HTTP/1.0 without
//     Host, an empty Host and an IP-address Host are a valid head with no
//     name.
package classify
