package lab

import "github.com/google/gopacket/layers"

// SYN sends the connection's SYN again (a retransmission: the same ISN).
func (c *RawTCP) SYN() error {
	return c.write(c.ISN, func(t *layers.TCP) { t.SYN = true }, nil)
}
