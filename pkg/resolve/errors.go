package resolve

import (
	"errors"
	"fmt"

	"github.com/miekg/dns"
)

// Sentinel errors. Every error Verify returns means the decision log's
// reason dns-error, except ErrBudget (reason limit); these say why. Match
// them with errors.Is.
var (
	// ErrTimeout: no answer from a server within Config.Timeout.
	ErrTimeout = errors.New("timeout")
	// ErrUnreachable: the query could not be sent or the server refused
	// the connection (ICMP port unreachable, no route).
	ErrUnreachable = errors.New("server unreachable")
	// ErrServFail: the server answered SERVFAIL (RFC 1035 §4.1.1 rcode 2).
	ErrServFail = errors.New("SERVFAIL")
	// ErrRcode: the server answered with an rcode other than NOERROR,
	// NXDOMAIN or SERVFAIL (REFUSED, FORMERR, NOTIMP, ...).
	ErrRcode = errors.New("unexpected rcode")
	// ErrMalformed: the answer does not unpack, does not answer the
	// question that was asked (ID, QR bit, opcode, question section), or
	// its CNAME chain is looped, forked or too long.
	ErrMalformed = errors.New("malformed answer")
	// ErrTruncated: the answer has the TC bit set; its records are not
	// the whole answer, so they cannot prove a mismatch.
	ErrTruncated = errors.New("truncated answer")
	// ErrInvalidName: the name is not a host name that can be asked
	// (empty, too long, a wildcard, characters outside [a-z0-9-_]).
	ErrInvalidName = errors.New("invalid name")
	// ErrInvalidAddr: the address is the zero netip.Addr.
	ErrInvalidAddr = errors.New("invalid address")
	// ErrClosed: the lookup was cut short or refused by Resolver.Close.
	ErrClosed = errors.New("resolver closed")
	// ErrBudget: the query budget (Config.MaxQueriesPerSecond) had no
	// room for the verification's lookup or one of its queries. Unlike
	// the others it is not the resolver's failure but a limit of
	// egressd's: the engine denies the flow with reason limit.
	ErrBudget = errors.New("query budget exhausted")
)

// LookupError is a failed lookup of one name and type, after every
// configured server was tried. Err wraps one of the sentinels above per
// server (joined when there are several), or the caller's context error.
type LookupError struct {
	Name string // normalised name (lowercase, no trailing dot)
	Type uint16 // dns.TypeA or dns.TypeAAAA; 0 when the wait itself failed
	Err  error
}

func (e *LookupError) Error() string {
	if e.Type == 0 {
		return fmt.Sprintf("resolve %s: %v", e.Name, e.Err)
	}
	return fmt.Sprintf("resolve %s %s: %v", e.Name, dns.TypeToString[e.Type], e.Err)
}

func (e *LookupError) Unwrap() error { return e.Err }
