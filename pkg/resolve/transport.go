package resolve

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"time"

	"github.com/miekg/dns"
)

// Transport carries one DNS query to one server and returns the raw
// response. It works on bytes so that everything a server sends goes
// through the same unpacking and checks, whatever carried it; the
// Resolver, not the Transport, decides whether a response answers the
// query. Exchange must return when ctx ends. The Resolver counts each
// Exchange as one packet against Config.MaxQueriesPerSecond; NetTransport
// also charges the packets of its TCP fallback.
type Transport interface {
	Exchange(ctx context.Context, server string, query []byte) ([]byte, error)
}

// udpReadSize is the largest UDP response read. Queries advertise
// ednsSize; a server that sends more than that is out of spec, and a
// response cut at this size fails to unpack (an error, not a trusted
// address).
const udpReadSize = 4096

// NetTransport sends queries over UDP and, when the response has the TC
// bit set, again over TCP (RFC 1035 §4.2.1, RFC 7766 §5). Each query uses
// a new socket, so each gets a fresh random source port from the kernel,
// and only the server's address can answer a connected UDP socket.
type NetTransport struct {
	// Dial opens a connection. Zero: a net.Dialer. Tests set it to open
	// sockets inside a network namespace.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
}

// Exchange implements Transport.
func (t NetTransport) Exchange(ctx context.Context, server string, query []byte) ([]byte, error) {
	resp, err := t.exchange(ctx, "udp", server, query)
	if err != nil {
		return nil, err
	}
	// Only a TC bit on a response to this query (same ID) sends the query
	// to TCP; the Resolver refuses anything else that comes back.
	if len(resp) >= headerLen && len(query) >= 2 &&
		binary.BigEndian.Uint16(resp) == binary.BigEndian.Uint16(query) && resp[2]&tcBit != 0 {
		if err := chargeTCP(ctx); err != nil { // the Resolver's query budget
			return nil, err
		}
		return t.exchange(ctx, "tcp", server, query)
	}
	return resp, nil
}

// tcBit is the TC flag in the third header byte (RFC 1035 §4.1.1).
const tcBit = 0x02

func (t NetTransport) exchange(ctx context.Context, network, server string, query []byte) ([]byte, error) {
	dial := t.Dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	c, err := dial(ctx, network, server)
	if err != nil {
		return nil, fmt.Errorf("dial %s %s: %w", network, server, err)
	}
	defer c.Close()
	if d, ok := ctx.Deadline(); ok {
		if err := c.SetDeadline(d); err != nil {
			return nil, err
		}
	}
	// Unblock the read when ctx is cancelled before its deadline.
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	// dns.Conn adds and reads the two-byte length prefix on TCP.
	conn := &dns.Conn{Conn: c}
	if _, err := conn.Write(query); err != nil {
		return nil, fmt.Errorf("send %s %s: %w", network, server, ctxErr(ctx, err))
	}
	size := udpReadSize
	if network == "tcp" {
		size = dns.MaxMsgSize
	}
	buf := make([]byte, size)
	n, err := conn.Read(buf)
	if err != nil {
		return nil, fmt.Errorf("read %s %s: %w", network, server, ctxErr(ctx, err))
	}
	if network == "udp" && n == size {
		// The datagram may have been longer than the buffer.
		return nil, fmt.Errorf("%w: read udp %s: response of %d bytes or more", ErrMalformed, server, n)
	}
	return buf[:n], nil
}

// ctxErr prefers ctx's error, when it has one, to the I/O error it caused.
func ctxErr(ctx context.Context, err error) error {
	if ce := ctx.Err(); ce != nil {
		return fmt.Errorf("%w (%v)", ce, err)
	}
	return err
}
