package classify

import (
	"errors"
	"fmt"
)

// Sentinel errors. Callers match them with errors.Is; wrapped errors carry
// where the input failed.
var (
	// ErrTruncated means the bytes so far are a valid prefix: feed more.
	ErrTruncated = errors.New("truncated: need more bytes")
	// ErrMalformed means the bytes cannot be a valid hello or request head,
	// or they are ambiguous in a way a server might read differently.
	ErrMalformed = errors.New("malformed")
	// ErrNotTLS means the flow is neither TLS nor HTTP/1.x
	// (the decision log's reason "not-tls-or-http").
	ErrNotTLS = errors.New("not TLS or HTTP")
	// ErrLimit means the flow head needs more bytes than allowed.
	ErrLimit = errors.New("flow head exceeds the byte limit")
)

// Source says where a name came from. Its String is the decision log's
// name_from value.
type Source uint8

const (
	SourceNone Source = iota // no name was read
	SourceSNI                // TLS ClientHello server_name over TCP
	SourceQUIC               // TLS ClientHello server_name inside QUIC Initial packets
	SourceHost               // HTTP/1.x Host header (or absolute-form target, CONNECT authority)
)

func (s Source) String() string {
	switch s {
	case SourceNone:
		return "none"
	case SourceSNI:
		return "sni"
	case SourceQUIC:
		return "quic"
	case SourceHost:
		return "host"
	}
	return fmt.Sprintf("unknown(%d)", uint8(s))
}

// Status is the state of a flow head after the bytes fed so far.
type Status uint8

const (
	NeedMore Status = iota // not decided yet: feed more segments or datagrams
	Done                   // a complete hello or request head was read (Name may be empty)
	Denied                 // the flow is to be denied for Result.Err
)

func (s Status) String() string {
	switch s {
	case NeedMore:
		return "need-more"
	case Done:
		return "done"
	case Denied:
		return "denied"
	}
	return fmt.Sprintf("unknown(%d)", uint8(s))
}

// Result is what a flow head says after a Feed.
type Result struct {
	Status Status
	// Name is the normalised name (lowercase, no trailing dot, punycode as
	// sent). Valid iff Status == Done; empty when the hello or request
	// carried none (a ClientHello without SNI, HTTP/1.0 without Host).
	Name string
	// From says where Name came from. Valid iff Status == Done; SourceNone
	// iff Name is empty.
	From Source
	// ECH is set when the ClientHello carried an encrypted_client_hello
	// extension: Name is then the outer (public) name. Valid iff
	// Status == Done.
	ECH bool
	// Err is ErrMalformed, ErrNotTLS or ErrLimit, possibly wrapped.
	// Valid iff Status == Denied.
	Err error
}
