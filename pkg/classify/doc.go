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
package classify
