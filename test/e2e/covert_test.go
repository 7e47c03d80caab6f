package e2e

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/google/gopacket/layers"

	"github.com/egressd/egressd/internal/netnstest"
	"github.com/egressd/egressd/test/lab"
)

// Tests that an undecided flow carries nothing the two ends choose across
// the NAT besides the standard handshake: no TCP options an undecided flow
// has no use for, and no ICMP error longer than a quoted header or of a
// type and direction path MTU discovery does not need. egressd runs with a
// hello timeout long enough that every flow here stays undecided while it
// is probed (each test checks that it did).

// undecided starts egressd over the lab policy with a long hello timeout.
func undecided(t *testing.T) *setup {
	return start(t, labPolicy, lab.Rules{}, lab.EgressdOptions{Config: "hello: {timeout: 30s}\n"})
}

// wantUndecided fails t if egressd has decided the raw flow c.
func wantUndecided(t *testing.T, s *setup, c *lab.RawTCP) {
	t.Helper()
	for _, d := range s.E.Decisions() {
		if d.Sport == c.SrcPort() {
			t.Fatalf("the flow was decided while it was probed, so the probe says nothing about undecided flows: %s", d)
		}
	}
}

// covert is n bytes a covert sender puts where the filter should let
// nothing through, recognisable in a capture: 8-byte pieces, each the tag
// and its number ("tcp3 ~00tcp3 ~01...").
func covert(tag string, n int) []byte {
	var b []byte
	for k := 0; len(b) < n; k++ {
		b = fmt.Appendf(b, "%-5.5s~%02d", tag, k)
	}
	return b[:n]
}

// carries reports whether pkt holds any 8 bytes of data that start at a
// multiple of 8 (options lay data out in pieces: a timestamp option holds
// 8 bytes).
func carries(pkt, data []byte) bool {
	for off := 0; off+8 <= len(data); off += 8 {
		if bytes.Contains(pkt, data[off:off+8]) {
			return true
		}
	}
	return false
}

// capture starts a capture in ns on iface and stops it with the test.
func capture(t *testing.T, s *setup, ns *netnstest.NS, iface, filter string) *lab.Capture {
	t.Helper()
	c, err := s.StartCapture(ns, iface, filter)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func stop(t *testing.T, c *lab.Capture) []lab.CapturedPacket {
	t.Helper()
	pkts, err := c.Stop()
	if err != nil {
		t.Fatal(err)
	}
	return pkts
}

// TestUndecidedTCPOptions: TCP options a covert sender fills (experimental
// kinds 253 and 254, MPTCP, TCP Fast Open, MD5, SACK blocks with nothing to
// acknowledge, a timestamp option with a forged length, a second timestamp
// option) on pure ACKs of an undecided flow do not reach the other end, in
// either direction: captured where they would arrive, their bytes are not
// there. A pure ACK laid out as every stack lays it out after the handshake
// (NOP, NOP, timestamps) still crosses, both ways, and so does the SYN, with
// an experimental option blanked out and its MSS kept.
func TestUndecidedTCPOptions(t *testing.T) {
	s := undecided(t)
	opt := func(kind layers.TCPOptionKind, data []byte) layers.TCPOption {
		return layers.TCPOption{OptionType: kind, OptionData: data}
	}
	cases := []struct {
		name string
		n    int                                  // how many covert bytes the options carry
		opts func(data []byte) []layers.TCPOption // data: the n covert bytes
	}{
		{"experimental 254", 28, func(d []byte) []layers.TCPOption { return []layers.TCPOption{opt(254, d)} }},
		{"experimental 253", 28, func(d []byte) []layers.TCPOption { return []layers.TCPOption{opt(253, d)} }},
		{"MPTCP 30", 28, func(d []byte) []layers.TCPOption { return []layers.TCPOption{opt(30, d)} }},
		{"TCP Fast Open 34", 16, func(d []byte) []layers.TCPOption { return []layers.TCPOption{opt(34, d)} }},
		{"MD5 19", 16, func(d []byte) []layers.TCPOption { return []layers.TCPOption{opt(19, d)} }},
		{"SACK blocks 5", 24, func(d []byte) []layers.TCPOption {
			return []layers.TCPOption{{OptionType: layers.TCPOptionKindNop}, {OptionType: layers.TCPOptionKindNop}, opt(layers.TCPOptionKindSACK, d)}
		}},
		{"timestamps with a forged length", 28, func(d []byte) []layers.TCPOption {
			return []layers.TCPOption{opt(layers.TCPOptionKindTimestamps, d)}
		}},
		{"two timestamp options", 16, func(d []byte) []layers.TCPOption {
			return append(lab.TimestampOptions(binary.BigEndian.Uint32(d), binary.BigEndian.Uint32(d[4:])),
				lab.TimestampOptions(binary.BigEndian.Uint32(d[8:]), binary.BigEndian.Uint32(d[12:]))...)
		}},
	}
	type probe struct {
		name    string
		data    []byte // must not arrive
		control []byte // the control ACK's timestamps: must arrive
		c       *lab.RawTCP
	}
	// run sends every case's ACK on a flow of its own, then a control ACK
	// on the same flow, with send; and checks the capture.
	run := func(t *testing.T, cap *lab.Capture, send func(c *lab.RawTCP, opts ...lab.SegOpt) error) {
		var probes []probe
		for i, tc := range cases {
			c := rawClient(t, s, lab.ServerAddr, 443)
			p := probe{name: tc.name, data: covert(fmt.Sprintf("tcp%d", i), tc.n), c: c}
			tsval, tsecr := uint32(0x7e570000+i), uint32(0x5eed0000+i)
			p.control = binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, tsval), tsecr)
			must(t, send(c, lab.WithOptions(tc.opts(p.data)...)))
			must(t, send(c, lab.WithOptions(lab.TimestampOptions(tsval, tsecr)...)))
			probes = append(probes, p)
		}
		pkts := stop(t, cap)
		for _, p := range probes {
			wantUndecided(t, s, p.c)
			controls := 0
			for _, pkt := range pkts {
				if carries(pkt.Data, p.data) {
					t.Errorf("%s: the covert bytes arrived: options %x", p.name, pkt.TCPOptions)
				}
				if bytes.Contains(pkt.TCPOptions, p.control) {
					controls++
				}
			}
			if controls != 1 {
				t.Errorf("%s: the control ACK (NOP, NOP, timestamps) arrived %d times, want once", p.name, controls)
			}
		}
	}

	t.Run("client to server", func(t *testing.T) {
		cap := capture(t, s, s.Inet, "i0", "tcp port 443 and host "+lab.NATPublic)
		run(t, cap, func(c *lab.RawTCP, opts ...lab.SegOpt) error { return c.SendACK(opts...) })
	})
	t.Run("server to client", func(t *testing.T) {
		cap := capture(t, s, s.Client, "c0", "tcp src port 443")
		run(t, cap, func(c *lab.RawTCP, opts ...lab.SegOpt) error { return c.SendFromServer(nil, opts...) })
	})
	t.Run("SYN", func(t *testing.T) {
		cap := capture(t, s, s.Inet, "i0", "tcp dst port 443 and host "+lab.NATPublic)
		data := covert("SYN", 28)
		mss := opt(layers.TCPOptionKindMSS, []byte{0x05, 0xb4})
		c, err := s.NewRawTCP(lab.ServerAddr, 443)
		must(t, err)
		must(t, c.Handshake(5*time.Second, lab.WithOptions(mss, opt(254, data))))
		pkts := stop(t, cap)
		wantUndecided(t, s, c)
		syns := 0
		for _, p := range pkts {
			if carries(p.Data, data) {
				t.Errorf("the SYN's experimental option arrived: options %x", p.TCPOptions)
			}
			if p.SYN {
				syns++
				t.Logf("the SYN's options as they arrived: %x", p.TCPOptions)
				if !bytes.HasPrefix(p.TCPOptions, []byte{2, 4, 0x05, 0xb4}) {
					t.Errorf("the SYN's MSS option did not arrive as sent: options %x", p.TCPOptions)
				}
			}
		}
		if syns != 1 {
			t.Errorf("%d SYNs arrived, want 1", syns)
		}
	})
}
