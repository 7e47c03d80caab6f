package nfq

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/egressd/egressd/pkg/engine"
)

// SYNLog reads the SYNs the rules forward without queueing them (NFLOG,
// egressd-iptables.sh --syn-log-group): on a port where no SYN is ever
// decided (policy.SYNUndecided, the SYNPortSet), the SYN need not wait for
// egressd, but the engine must still learn its initial sequence number, so
// that a flow's head is read from where the stream starts. It is the
// engine's SYNSource.
//
// It has no goroutine and never blocks: the engine drains it before it
// starts a flow from a data segment (whose SYN, one round trip older, is
// in the socket by then) and on every tick. A SYN the log loses (the
// socket's buffer overflowed: ENOBUFS, counted) makes the engine deny
// every undecided flow to a logged port, limit syn_log: fail closed.
type SYNLog struct {
	group uint16
	fd    int
	buf   []byte
	dec   *engine.Decoder
	pkt   engine.Packet
	log   *slog.Logger
	stats SYNLogStats
}

// SYNLogStats count what the SYN log read.
type SYNLogStats struct {
	SYNs         atomic.Uint64 // SYNs read
	ENOBUFS      atomic.Uint64 // overflows: SYNs lost
	DecodeErrors atomic.Uint64 // messages that held no TCP SYN
}

// nfnetlink_log (include/uapi/linux/netfilter/nfnetlink_log.h).
const (
	nfnlSubsysULog = 4
	ulogMsgPacket  = nfnlSubsysULog << 8   // NFULNL_MSG_PACKET
	ulogMsgConfig  = nfnlSubsysULog<<8 | 1 // NFULNL_MSG_CONFIG

	ulogAttrPayload = 9 // NFULA_PAYLOAD

	ulogCfgCmd     = 1 // NFULA_CFG_CMD: u8 command
	ulogCfgMode    = 2 // NFULA_CFG_MODE: be32 copy range, u8 copy mode, u8 pad
	ulogCfgBufSize = 3 // NFULA_CFG_NLBUFSIZ: be32
	ulogCfgTimeout = 4 // NFULA_CFG_TIMEOUT: be32, hundredths of a second
	ulogCfgQThresh = 5 // NFULA_CFG_QTHRESH: be32

	ulogCmdBind   = 1 // NFULNL_CFG_CMD_BIND
	ulogCmdUnbind = 2 // NFULNL_CFG_CMD_UNBIND
	ulogCopyPkt   = 2 // NFULNL_COPY_PACKET

	// synCopy is what is copied of each SYN: an IPv4 header with options
	// (60 bytes) and the TCP header's ports, sequence number and flags.
	synCopy = 80
	// maxDrain bounds one Drain, so that a flood cannot keep it running;
	// it is far more SYNs than the socket's buffer holds, so a Drain ends
	// with the socket empty unless SYNs come faster than it reads them.
	maxDrain = 65536
)

// OpenSYNLog binds NFLOG group in network namespace netns (a file
// descriptor; 0: the caller's).
func OpenSYNLog(group uint16, netns int, logger *slog.Logger) (*SYNLog, error) {
	if logger == nil {
		logger = slog.Default()
	}
	fd, err := netfilterSocket(netns)
	if err != nil {
		return nil, fmt.Errorf("syn log: socket: %w", err)
	}
	l := &SYNLog{group: group, fd: fd, buf: make([]byte, 64<<10), dec: engine.NewDecoder(), log: logger}
	fail := func(op string, err error) (*SYNLog, error) {
		unix.Close(fd)
		return nil, fmt.Errorf("syn log: group %d: %s: %w", group, op, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fail("bind socket", err)
	}
	// Room for the SYNs of a few ticks at a high rate of new flows.
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 8<<20)
	}
	mode := binary.BigEndian.AppendUint32(nil, synCopy)
	mode = append(mode, ulogCopyPkt, 0)
	steps := []struct {
		op    string
		attrs []byte
	}{
		{"bind group", appendAttr(nil, ulogCfgCmd, []byte{ulogCmdBind})},
		// Each SYN goes to the socket at once (a threshold of one, no
		// timer), in a buffer of its own size: the kernel's default
		// batches up to 100 for a second, each in a page-sized buffer.
		{"set mode", appendU32(appendU32(appendU32(appendAttr(nil, ulogCfgMode, mode),
			ulogCfgQThresh, 1), ulogCfgTimeout, 0), ulogCfgBufSize, 256)},
	}
	for _, s := range steps {
		if err := l.config(s.attrs); err != nil {
			if s.op != "bind group" {
				l.unbind()
			}
			return fail(s.op, err)
		}
	}
	return l, nil
}

// netfilterSocket opens a non-blocking netfilter netlink socket in network
// namespace netns (0: the caller's). A socket belongs to the namespace of
// the thread that makes it, so for another namespace it is made on a
// thread moved there, which never runs anything else (it stays locked, and
// the runtime ends it with its goroutine).
func netfilterSocket(netns int) (int, error) {
	open := func() (int, error) {
		return unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_NETFILTER)
	}
	if netns == 0 {
		return open()
	}
	type result struct {
		fd  int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(netns, unix.CLONE_NEWNET); err != nil {
			ch <- result{-1, fmt.Errorf("setns: %w", err)}
			return
		}
		fd, err := open()
		ch <- result{fd, err}
	}()
	r := <-ch
	return r.fd, r.err
}

// config sends one NFULNL_MSG_CONFIG for the group and waits for its
// acknowledgement (SYNs that come meanwhile are not lost: Drain reads
// them).
func (l *SYNLog) config(attrs []byte) error {
	msg := make([]byte, nlHdrLen+nfGenLen, nlHdrLen+nfGenLen+len(attrs))
	binary.NativeEndian.PutUint32(msg[0:], uint32(nlHdrLen+nfGenLen+len(attrs)))
	binary.NativeEndian.PutUint16(msg[4:], ulogMsgConfig)
	binary.NativeEndian.PutUint16(msg[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	binary.NativeEndian.PutUint32(msg[8:], 1)
	msg[16] = unix.AF_UNSPEC
	binary.BigEndian.PutUint16(msg[18:], l.group)
	msg = append(msg, attrs...)
	if _, err := unix.Write(l.fd, msg); err != nil {
		return err
	}
	deadline := time.Now().Add(time.Second)
	for {
		n, err := unix.Read(l.fd, l.buf)
		switch {
		case err == unix.EAGAIN || err == unix.EINTR:
			if time.Now().After(deadline) {
				return errors.New("no acknowledgement from the kernel")
			}
			time.Sleep(time.Millisecond)
			continue
		case err != nil:
			return err
		}
		for m := l.buf[:n]; len(m) >= nlHdrLen; {
			ml := int(binary.NativeEndian.Uint32(m[0:4]))
			if ml < nlHdrLen || ml > len(m) {
				return errors.New("short netlink message")
			}
			if binary.NativeEndian.Uint16(m[4:6]) == unix.NLMSG_ERROR && ml >= nlHdrLen+4 {
				if code := int32(binary.NativeEndian.Uint32(m[nlHdrLen:])); code != 0 {
					return unix.Errno(-code)
				}
				return nil
			}
			m = m[min(len(m), align4(ml)):]
		}
	}
}

func (l *SYNLog) unbind() {
	msg := appendAttr(nil, ulogCfgCmd, []byte{ulogCmdUnbind})
	hdr := make([]byte, nlHdrLen+nfGenLen)
	binary.NativeEndian.PutUint32(hdr[0:], uint32(len(hdr)+len(msg)))
	binary.NativeEndian.PutUint16(hdr[4:], ulogMsgConfig)
	binary.NativeEndian.PutUint16(hdr[6:], unix.NLM_F_REQUEST)
	binary.BigEndian.PutUint16(hdr[18:], l.group)
	_, _ = unix.Write(l.fd, append(hdr, msg...))
}

// Close unbinds the group and closes the socket.
func (l *SYNLog) Close() error {
	l.unbind()
	return unix.Close(l.fd)
}

// Stats returns the log's counters.
func (l *SYNLog) Stats() *SYNLogStats { return &l.stats }

// Drain implements engine.SYNSource: it reads what the socket holds, to
// its end or maxDrain receives, and calls fn with each SYN (each receive
// is one SYN: the group's threshold is one). It reports whether it found
// the socket empty and whether the socket overflowed (ENOBUFS) since the
// last call. It is not safe for concurrent use (the engine calls it from
// one goroutine at a time).
func (l *SYNLog) Drain(fn func(*engine.Packet)) (empty, lost bool) {
	for range maxDrain {
		n, err := unix.Read(l.fd, l.buf) // the socket does not block; read, not recvfrom: no source address to allocate
		switch {
		case err == nil:
			l.messages(l.buf[:n], fn)
		case err == unix.EAGAIN:
			return true, lost
		case err == unix.EINTR:
		case errors.Is(err, unix.ENOBUFS):
			// SYNs were lost: the engine denies the flows they may have
			// been of (syn_log).
			lost = true
			if l.stats.ENOBUFS.Add(1)%1000 == 1 {
				l.log.Warn("syn log socket overrun: SYNs lost; undecided flows to the logged ports are denied (limit syn_log)", "group", l.group, "total", l.stats.ENOBUFS.Load())
			}
		default:
			l.log.Error("syn log receive failed", "group", l.group, "err", err)
			return false, lost
		}
	}
	return false, lost
}

// messages handles the netlink messages of one receive.
func (l *SYNLog) messages(b []byte, fn func(*engine.Packet)) {
	for len(b) >= nlHdrLen {
		ml := int(binary.NativeEndian.Uint32(b[0:4]))
		if ml < nlHdrLen || ml > len(b) {
			break
		}
		if binary.NativeEndian.Uint16(b[4:6]) == ulogMsgPacket && ml >= nlHdrLen+nfGenLen {
			l.packet(b[nlHdrLen+nfGenLen:ml], fn)
		}
		b = b[min(len(b), align4(ml)):]
	}
}

func (l *SYNLog) packet(a []byte, fn func(*engine.Packet)) {
	var payload []byte
	for len(a) >= attrHdrLen {
		al := int(binary.NativeEndian.Uint16(a[0:2]))
		if al < attrHdrLen || al > len(a) {
			break
		}
		if binary.NativeEndian.Uint16(a[2:4])&0x3fff == ulogAttrPayload {
			payload = a[attrHdrLen:al]
		}
		a = a[min(len(a), align4(al)):]
	}
	p := &l.pkt
	if err := l.dec.Decode(payload, p); err != nil || !p.SYN || p.ACK {
		l.stats.DecodeErrors.Add(1)
		return
	}
	p.ID, p.Queue, p.Logged, p.Time = 0, 0, true, time.Now()
	l.stats.SYNs.Add(1)
	fn(p)
}

// ipset (include/uapi/linux/netfilter/ipset/ip_set.h).
const (
	nfnlSubsysIPSet = 6
	ipsetProtocol   = 6 // the oldest version the kernel still speaks

	ipsetCmdFlush  = 4
	ipsetCmdAdd    = 9
	ipsetCmdHeader = 12

	ipsetAttrProtocol = 1
	ipsetAttrSetName  = 2
	ipsetAttrData     = 7
	ipsetAttrPort     = 4
)

// SYNPortSet is the kernel's set of TCP ports whose SYNs the rules log
// and forward instead of queueing (egressd-iptables.sh: the bitmap:port
// ipset SYNPortSetName). egressd keeps it to the policy's
// SYNUndecidedPorts; an empty set queues every SYN, as without a log.
type SYNPortSet struct {
	name string
	conn *netlink.Conn
}

// SYNPortSetName is the set the rules match SYNs against.
const SYNPortSetName = "egressd-syn"

// OpenSYNPortSet opens the ipset name in network namespace netns (a file
// descriptor; 0: the caller's). The set must exist (the rules create it).
func OpenSYNPortSet(name string, netns int) (*SYNPortSet, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: netns})
	if err != nil {
		return nil, fmt.Errorf("ipset: dial: %w", err)
	}
	s := &SYNPortSet{name: name, conn: c}
	if err := s.execute(ipsetCmdHeader, nil); err != nil {
		c.Close()
		return nil, fmt.Errorf("ipset %s (egressd-iptables.sh apply creates it): %w", name, err)
	}
	return s, nil
}

// Set makes the set hold exactly ports. It empties the set first: while
// it refills, SYNs to those ports are queued, which is always safe.
func (s *SYNPortSet) Set(ports []uint16) error {
	if err := s.execute(ipsetCmdFlush, nil); err != nil {
		return err
	}
	for _, p := range ports {
		var v [2]byte
		binary.BigEndian.PutUint16(v[:], p)
		data := appendAttr(nil, ipsetAttrPort|unix.NLA_F_NET_BYTEORDER, v[:])
		if err := s.execute(ipsetCmdAdd, appendAttr(nil, ipsetAttrData|unix.NLA_F_NESTED, data)); err != nil {
			return fmt.Errorf("port %d: %w", p, err)
		}
	}
	return nil
}

// Close closes the netlink socket; the set keeps what it holds.
func (s *SYNPortSet) Close() error { return s.conn.Close() }

func (s *SYNPortSet) execute(cmd uint16, attrs []byte) error {
	name := append([]byte(s.name), 0)
	b := appendAttr(appendAttr(nil, ipsetAttrProtocol, []byte{ipsetProtocol}), ipsetAttrSetName, name)
	data := append([]byte{unix.AF_INET, 0, 0, 0}, append(b, attrs...)...)
	flags := netlink.Request | netlink.Acknowledge
	if cmd == ipsetCmdHeader {
		flags = netlink.Request // its answer is the header, or the error: no ack after it
	}
	_, err := s.conn.Execute(netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(nfnlSubsysIPSet<<8 | cmd), Flags: flags},
		Data:   data,
	})
	if err != nil {
		return fmt.Errorf("ipset %s: command %d: %w", s.name, cmd, err)
	}
	return nil
}
