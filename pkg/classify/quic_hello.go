package classify

import (
	"errors"
	"fmt"
)

// quicHelloResult reads a whole ClientHello message from the CRYPTO stream
// (handshake header included, no record layer: RFC 9001 section 4) with
// the same parser as TLS over TCP, and turns it into the flow's Result.
func quicHelloResult(msg []byte) Result {
	h, err := ParseClientHello(msg)
	if errors.Is(err, ErrTruncated) {
		// msg is exactly as long as its header says, so a hello that
		// needs more is one whose inner lengths overrun it.
		err = fmt.Errorf("ClientHello inner lengths overrun its %d bytes: %w", len(msg), ErrMalformed)
	}
	if err != nil {
		return Result{Status: Denied, Err: fmt.Errorf("QUIC ClientHello: %w", err)}
	}
	r := Result{Status: Done, ECH: h.ECH}
	if h.SNI {
		r.Name = string(h.ServerName())
		r.From = SourceQUIC
	}
	return r
}
