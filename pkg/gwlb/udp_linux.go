package gwlb

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// listenUDP opens one of the readers' sockets on addr: SO_REUSEPORT (the
// kernel spreads the load balancer's flows over the readers by their
// outer 4-tuple), IP_PKTINFO (the address each datagram was sent to: the
// reply's source), and a receive buffer of rcvbuf bytes.
func listenUDP(addr netip.AddrPort, rcvbuf int) (*net.UDPConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			for _, o := range [][2]int{{unix.SOL_SOCKET, unix.SO_REUSEPORT}, {unix.IPPROTO_IP, unix.IP_PKTINFO}} {
				if serr = unix.SetsockoptInt(int(fd), o[0], o[1], 1); serr != nil {
					return
				}
			}
			if rcvbuf > 0 {
				// Best effort: capped by net.core.rmem_max.
				_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, rcvbuf)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	pc, err := lc.ListenPacket(context.Background(), "udp4", addr.String())
	if err != nil {
		return nil, fmt.Errorf("GENEVE listener %s: %w", addr, err)
	}
	return pc.(*net.UDPConn), nil
}

// batch is one reader's recvmmsg state, allocated once.
type batch struct {
	msgs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet4
	oobs  [][64]byte
	bufs  [][]byte
	n     int   // messages received by the last read
	errno error // the last read's error, if any
	read  func(fd uintptr) bool
}

func newBatch(size, bufLen int) *batch {
	b := &batch{
		msgs:  make([]unix.Mmsghdr, size),
		iovs:  make([]unix.Iovec, size),
		names: make([]unix.RawSockaddrInet4, size),
		oobs:  make([][64]byte, size),
		bufs:  make([][]byte, size),
	}
	for i := range b.msgs {
		b.bufs[i] = make([]byte, bufLen)
		b.iovs[i].Base = &b.bufs[i][0]
		b.iovs[i].SetLen(bufLen)
	}
	b.read = b.recvmmsg // once: a method value allocates
	return b
}

// recvmmsg reads up to len(msgs) datagrams without blocking; it is the
// function RawConn.Read calls until it reports done.
func (b *batch) recvmmsg(fd uintptr) bool {
	for i := range b.msgs {
		h := &b.msgs[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(&b.names[i]))
		h.Namelen = unix.SizeofSockaddrInet4
		h.Iov = &b.iovs[i]
		h.SetIovlen(1)
		h.Control = &b.oobs[i][0]
		h.SetControllen(len(b.oobs[i]))
		h.Flags = 0
		b.msgs[i].Len = 0
	}
	n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&b.msgs[0])), uintptr(len(b.msgs)),
		unix.MSG_DONTWAIT, 0, 0)
	if e == unix.EAGAIN || e == unix.EINTR {
		return false // wait in the poller
	}
	b.n, b.errno = int(n), nil
	if e != 0 {
		b.n, b.errno = 0, e
	}
	return true
}

// message i of the last read: its payload, the sender, and the address it
// was sent to (IP_PKTINFO's ipi_addr); ok false if it was truncated.
func (b *batch) message(i int) (payload []byte, from [4]byte, fromPort uint16, to [4]byte, ok bool) {
	m := &b.msgs[i]
	if m.Hdr.Flags&unix.MSG_TRUNC != 0 {
		return nil, from, 0, to, false
	}
	payload = b.bufs[i][:m.Len]
	sa := &b.names[i]
	from = sa.Addr
	fromPort = binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
	oob := b.oobs[i][:m.Hdr.Controllen]
	// One cmsghdr (16 bytes on 64-bit, 12 on 32-bit) and a struct
	// in_pktinfo {ifindex; spec_dst; addr}.
	for len(oob) >= unix.SizeofCmsghdr {
		c := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		if int(c.Len) < unix.SizeofCmsghdr || int(c.Len) > len(oob) {
			break
		}
		data := oob[unix.SizeofCmsghdr:c.Len]
		if c.Level == unix.IPPROTO_IP && c.Type == unix.IP_PKTINFO && len(data) >= 12 {
			copy(to[:], data[8:12])
			return payload, from, fromPort, to, true
		}
		next := cmsgAlign(int(c.Len))
		if next > len(oob) {
			break
		}
		oob = oob[next:]
	}
	return nil, from, 0, to, false // no destination: cannot answer
}

func cmsgAlign(n int) int {
	const a = int(unsafe.Sizeof(uintptr(0)))
	return (n + a - 1) &^ (a - 1)
}

// rawSocket opens the socket the replies go out of: raw IPv4 with our own
// header (IPPROTO_RAW implies IP_HDRINCL), since a reply's source port is
// the load balancer's, which no UDP socket of ours is bound to.
func rawSocket() (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err != nil {
		return -1, fmt.Errorf("raw socket for the replies (needs CAP_NET_RAW): %w", err)
	}
	return fd, nil
}
