package lab

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"golang.org/x/sys/unix"
)

// AttackerAddr is a second address of the client namespace, for the tests
// where one host floods egressd while another (ClientAddr) uses it.
const AttackerAddr = "198.18.1.66"

// The source ports a Flooder uses: below Linux's ephemeral range
// (32768-60999), so a capture tells the flooder's flows from those of the
// client's own stack by port, and MASQUERADE keeps them.
const (
	FloodPortMin = 20000
	FloodPortMax = 29999
)

// Flooder sends hand-made packets from one source address of the client
// namespace at a high rate: bare SYNs, UDP datagrams, and handshakes of
// many flows at once (RawTCP flows that share its sockets). The client's
// own stack is told to keep out of it: its resets from that address are
// dropped by an OUTPUT rule in the client namespace. SYN, UDP and Send may
// be called from several goroutines at once; Port and Handshakes may not.
type Flooder struct {
	l          *Lab
	src        netip.Addr
	send, recv int // raw sockets: IPPROTO_RAW to send, IPPROTO_TCP to read
	next       uint16
	sent       atomic.Uint64
}

// NewFlooder adds src to the client's interface and prepares a flooder
// from it. Its sockets and rules go with the lab.
func (l *Lab) NewFlooder(src string) (*Flooder, error) {
	fl := &Flooder{l: l, src: netip.MustParseAddr(src), next: FloodPortMin}
	ctx := context.Background()
	if out, err := Exec(ctx, l.Client, "ip", "addr", "add", src+"/24", "dev", "c0"); err != nil {
		return nil, fmt.Errorf("ip addr add %s: %v: %s", src, err, out)
	}
	rule := []string{"-A", "OUTPUT", "-s", src, "-p", "tcp", "--tcp-flags", "RST", "RST", "-j", "DROP"}
	if out, err := Exec(ctx, l.Client, "iptables", rule...); err != nil {
		return nil, fmt.Errorf("client OUTPUT rule: %v: %s", err, out)
	}
	err := l.Client.Do(func() error {
		var err error
		if fl.send, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW); err != nil {
			return err
		}
		// A large send buffer: a flood must not stall on it.
		_ = unix.SetsockoptInt(fl.send, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 4<<20)
		if fl.recv, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_TCP); err != nil {
			unix.Close(fl.send)
			return err
		}
		return unix.SetsockoptInt(fl.recv, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20)
	})
	if err != nil {
		return nil, fmt.Errorf("raw sockets: %w", err)
	}
	l.onClose(func() error {
		unix.Close(fl.send)
		unix.Close(fl.recv)
		return nil
	})
	return fl, nil
}

// Sent is how many packets the flooder has sent.
func (fl *Flooder) Sent() uint64 { return fl.sent.Load() }

// Port returns the flooder's next source port, in order, wrapping within
// FloodPortMin..FloodPortMax.
func (fl *Flooder) Port() uint16 {
	p := fl.next
	if fl.next++; fl.next > FloodPortMax {
		fl.next = FloodPortMin
	}
	return p
}

// RandomPort returns a random source port in FloodPortMin..FloodPortMax.
func RandomPort() uint16 { return uint16(FloodPortMin + rand.IntN(FloodPortMax-FloodPortMin+1)) }

func (fl *Flooder) write(pkt []byte) error {
	for {
		err := sendIPv4(fl.send, pkt)
		if errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.EAGAIN) {
			time.Sleep(50 * time.Microsecond) // the device queue is full: wait, do not lose the packet
			continue
		}
		if err == nil {
			fl.sent.Add(1)
		}
		return err
	}
}

// SYN sends a bare SYN (no options) from sport to dst:dport, for a
// handshake the flooder never completes.
func (fl *Flooder) SYN(dst netip.Addr, sport, dport uint16) error {
	pkt, err := tcpPacket(fl.src, dst, sport, dport, rand.Uint32(), func(t *layers.TCP) { t.SYN = true }, nil)
	if err != nil {
		return err
	}
	return fl.write(pkt)
}

// UDP sends one datagram from sport to dst:dport.
func (fl *Flooder) UDP(dst netip.Addr, sport, dport uint16, payload []byte) error {
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: fl.src.AsSlice(), DstIP: dst.AsSlice(), Id: uint16(rand.Uint32())}
	udp := &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}
	udp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ip, udp, gopacket.Payload(payload)); err != nil {
		return err
	}
	return fl.write(buf.Bytes())
}

// Handshakes opens n TCP connections to dst:dport from the flooder's next
// ports at once: n SYNs, then an ACK for each SYN-ACK that comes back
// within timeout. It returns the flows that got one, as RawTCP flows that
// send on the flooder's socket (Send, SendAll; not Close: the sockets are
// the flooder's, and not the methods that speak for the server, which
// assume ClientAddr).
func (fl *Flooder) Handshakes(dst string, dport uint16, n int, timeout time.Duration) ([]*RawTCP, error) {
	d := netip.MustParseAddr(dst)
	waiting := make(map[uint16]*RawTCP, n)
	for range n {
		c := &RawTCP{l: fl.l, send: fl.send, recv: fl.recv, src: fl.src, dst: d, sport: fl.Port(), dport: dport, ISN: rand.Uint32()}
		pkt, err := tcpPacket(c.src, c.dst, c.sport, c.dport, c.ISN, func(t *layers.TCP) { t.SYN = true }, nil)
		if err != nil {
			return nil, err
		}
		if err := fl.write(pkt); err != nil {
			return nil, err
		}
		waiting[c.sport] = c
	}
	var done []*RawTCP
	buf := make([]byte, 65536)
	deadline := time.Now().Add(timeout)
	for len(waiting) > 0 {
		tcp, from, err := recvTCP(fl.recv, buf, deadline)
		if err != nil {
			break
		}
		c := waiting[uint16(tcp.DstPort)]
		if c == nil || from != c.dst || uint16(tcp.SrcPort) != c.dport || !tcp.SYN || !tcp.ACK || tcp.Ack != c.ISN+1 {
			continue
		}
		c.rcvNxt = tcp.Seq + 1
		if err := c.write(c.ISN+1, func(t *layers.TCP) { t.ACK = true; t.Ack = c.rcvNxt }, nil); err != nil {
			return done, err
		}
		fl.sent.Add(1)
		delete(waiting, c.sport)
		done = append(done, c)
	}
	if len(done) == 0 {
		return nil, fmt.Errorf("none of %d handshakes to %s:%d got a SYN-ACK within %s", n, dst, dport, timeout)
	}
	return done, nil
}

// Send sends payload on c (one of its Handshakes' flows) at stream offset
// off, counted among the flooder's packets.
func (fl *Flooder) Send(c *RawTCP, off int, payload []byte) error {
	for len(payload) > 0 {
		n := min(len(payload), MSS)
		if err := c.Send(off, payload[:n]); err != nil {
			return err
		}
		fl.sent.Add(1)
		off += n
		payload = payload[n:]
	}
	return nil
}

// recvTCP reads the next TCP segment from a raw IPPROTO_TCP socket, until
// deadline, and returns it with its source address.
func recvTCP(fd int, buf []byte, deadline time.Time) (*layers.TCP, netip.Addr, error) {
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return nil, netip.Addr{}, errors.New("timeout")
		}
		tv := unix.NsecToTimeval(left.Nanoseconds())
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			return nil, netip.Addr{}, err
		}
		pkt := buf[:n]
		if len(pkt) < 20 {
			continue
		}
		ihl := int(pkt[0]&0xf) * 4
		if len(pkt) < ihl+20 || int(binary.BigEndian.Uint16(pkt[2:4])) > n {
			continue
		}
		var tcp layers.TCP
		if err := tcp.DecodeFromBytes(pkt[ihl:], gopacket.NilDecodeFeedback); err != nil {
			continue
		}
		return &tcp, netip.AddrFrom4([4]byte(pkt[12:16])), nil
	}
}

// AnyIPInet makes inet answer for every address of prefix (a local route:
// its stack takes, and ARP answers for, the whole range), so that a flood
// to random destinations in it reaches inet, where a capture sees what the
// NAT forwarded and the stack answers: a reset, or the lab's servers. The
// prefix must not hold the NAT's public address.
func (l *Lab) AnyIPInet(prefix string) error {
	p := netip.MustParsePrefix(prefix)
	if p.Contains(netip.MustParseAddr(NATPublic)) {
		return fmt.Errorf("%s holds the NAT's address %s", prefix, NATPublic)
	}
	out, err := Exec(context.Background(), l.Inet, "ip", "route", "add", "local", prefix, "dev", "lo")
	if err != nil {
		return fmt.Errorf("ip route add local %s: %v: %s", prefix, err, out)
	}
	return nil
}

// VmRSS returns a process's resident set size and its peak (VmHWM), in
// KiB, from /proc/<pid>/status.
func VmRSS(pid int) (rss, peak int, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		key, val, _ := strings.Cut(line, ":")
		switch key {
		case "VmRSS":
			_, err = fmt.Sscan(val, &rss)
		case "VmHWM":
			_, err = fmt.Sscan(val, &peak)
		}
		if err != nil {
			return 0, 0, fmt.Errorf("/proc/%d/status: %q: %w", pid, line, err)
		}
	}
	if rss == 0 || peak == 0 {
		return 0, 0, fmt.Errorf("/proc/%d/status has no VmRSS and VmHWM", pid)
	}
	return rss, peak, nil
}
