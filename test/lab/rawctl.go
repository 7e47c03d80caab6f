package lab

import "github.com/google/gopacket/layers"

// SYN sends the connection's SYN again (a retransmission: the same ISN).
func (c *RawTCP) SYN() error {
	return c.write(c.ISN, func(t *layers.TCP) { t.SYN = true }, nil)
}

// Ack sends a pure ACK at the start of the stream, acknowledging what the
// handshake acknowledged.
func (c *RawTCP) Ack() error {
	return c.write(c.ISN+1, func(t *layers.TCP) { t.ACK, t.Ack = true, c.rcvNxt }, nil)
}
