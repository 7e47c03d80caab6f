package nfq

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"syscall"
	"time"

	nfqueue "github.com/florianl/go-nfqueue/v2"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/egressd/egressd/pkg/engine"
	"github.com/egressd/egressd/pkg/policy"
)

// Marks are the packet-mark bits that carry a verdict. iptables saves them
// to the connection (CONNMARK --save-mark) and acts on them; the values
// must match scripts/iptables/egressd-iptables.sh.
type Marks struct {
	Allow, Deny, Mask uint32
}

// DefaultMarks are the marks the iptables script uses by default.
var DefaultMarks = Marks{Allow: 0x1, Deny: 0x2, Mask: 0x3}

func (m Marks) of(v policy.Verdict) uint32 {
	if v == policy.Allow {
		return m.Allow
	}
	return m.Deny
}

func (m Marks) validate() error {
	if m.Allow&m.Mask == 0 || m.Deny&m.Mask == 0 || m.Allow == m.Deny || m.Allow&^m.Mask != 0 || m.Deny&^m.Mask != 0 {
		return fmt.Errorf("marks: allow %#x and deny %#x must be distinct, non-zero and within the mask %#x", m.Allow, m.Deny, m.Mask)
	}
	return nil
}

// QueueConfig configures one NFQUEUE reader.
type QueueConfig struct {
	Num uint16 // the queue number (iptables --queue-balance covers it)
	// Len is the kernel's queue length; past it the kernel drops packets
	// (or, with FailOpen, accepts them unmarked). 0: 8192.
	Len uint32
	// FailOpen asks the kernel to accept packets when the queue is full
	// (fail_open). Without it they are dropped: the client retransmits.
	FailOpen bool
	// NetNS is a network namespace file descriptor to open the queue in;
	// 0: the caller's namespace.
	NetNS int
	// Marks are the verdict marks; zero: DefaultMarks.
	Marks Marks
	// Conntrack writes verdicts to connections that have no packet in
	// hand to carry them (Sink.Conclude); shared by the queues. Required
	// for a queue with a shard.
	Conntrack *Conntrack
	// Logger receives the queue's operational logs; nil: slog.Default().
	Logger *slog.Logger
}

// OpError is an error of a queue operation, with the queue's number.
type OpError struct {
	Op    string
	Queue uint16
	Err   error
}

func (e *OpError) Error() string { return fmt.Sprintf("queue %d: %s: %v", e.Queue, e.Op, e.Err) }
func (e *OpError) Unwrap() error { return e.Err }

// QueueStats count what happened at the socket.
type QueueStats struct {
	ENOBUFS       atomic.Uint64 // the kernel could not deliver: packets were lost from our view
	RecvErrors    atomic.Uint64 // other receive errors
	VerdictErrors atomic.Uint64 // verdicts the kernel did not take
	DecodeErrors  atomic.Uint64 // packets dropped because they did not decode
	// Dropped counts the packets the fail_open drop queue dropped: what
	// an undecided flow may not carry while egressd runs (replies with
	// payload, segments with options, ICMP errors past a quoted header).
	Dropped atomic.Uint64
}

// Netfilter queue protocol (include/uapi/linux/netfilter/nfnetlink_queue.h)
// that go-nfqueue does not export.
const (
	nfnlSubsysQueue = 3
	msgPacket       = nfnlSubsysQueue << 8   // NFQNL_MSG_PACKET (0)
	msgVerdict      = nfnlSubsysQueue<<8 | 1 // NFQNL_MSG_VERDICT
	msgConfig       = nfnlSubsysQueue<<8 | 2 // NFQNL_MSG_CONFIG

	attrPacketHdr  = 1  // NFQA_PACKET_HDR: be32 id, be16 hw protocol, u8 hook
	attrVerdictHdr = 2  // NFQA_VERDICT_HDR: be32 verdict, be32 id
	attrMark       = 3  // NFQA_MARK: be32
	attrPayload    = 10 // NFQA_PAYLOAD
	attrCapLen     = 13 // NFQA_CAP_LEN: be32, the packet's length when the payload was cut

	cfgCmd      = 1 // NFQA_CFG_CMD: u8 command, u8 pad, be16 pf
	cfgParams   = 2 // NFQA_CFG_PARAMS: be32 copy range, u8 copy mode
	cfgQueueLen = 3 // NFQA_CFG_QUEUE_MAXLEN: be32
	cfgMask     = 4 // NFQA_CFG_MASK: be32
	cfgFlags    = 5 // NFQA_CFG_FLAGS: be32

	cmdBind   = 1 // NFQNL_CFG_CMD_BIND
	cmdUnbind = 2 // NFQNL_CFG_CMD_UNBIND

	nlHdrLen   = 16 // struct nlmsghdr
	nfGenLen   = 4  // struct nfgenmsg
	attrHdrLen = 4  // struct nlattr
)

// Queue reads one NFQUEUE and feeds its packets to a shard. It is the
// shard's Sink.
//
// go-nfqueue opens the netlink socket (in the right network namespace);
// the binding and the per-packet path are egressd's own: one recv per
// packet into a reused buffer, attributes read in place, verdicts written
// from a stack buffer in one write, no goroutine and no allocation per
// packet. The library's reader allocates per message and, through its
// socket layer, starts a goroutine per receive; measured in the lab, that
// was most of egressd's CPU per connection (test/bench).
type Queue struct {
	cfg   QueueConfig
	nf    *nfqueue.Nfqueue
	conn  *netlink.Conn
	raw   syscall.RawConn
	fd    int
	shard *engine.Shard // nil: the drop queue of fail_open, which drops all
	dec   *engine.Decoder
	stats QueueStats
	pkt   engine.Packet
	buf   []byte
	bound atomic.Bool
	log   *slog.Logger
}

// Bound reports whether the queue is bound and being read.
func (q *Queue) Bound() bool { return q.bound.Load() }

// OpenQueue opens and binds queue cfg.Num for shard, and becomes the
// shard's Sink. Run reads it.
func OpenQueue(cfg QueueConfig, shard *engine.Shard) (*Queue, error) {
	if shard == nil {
		return nil, &OpError{Op: "open", Queue: cfg.Num, Err: errors.New("no shard (OpenDropQueue opens fail_open's drop queue)")}
	}
	if cfg.Conntrack == nil {
		return nil, &OpError{Op: "open", Queue: cfg.Num, Err: errors.New("no conntrack connection for verdicts without a packet")}
	}
	// The flow head is all that is read: copying more than a full head
	// plus maximal IP and TCP headers is wasted work. A longer packet is
	// seen truncated and its flow denied (limit).
	return openQueue(cfg, shard, uint32(shard.Engine().Config().HelloMaxBytes+120))
}

// OpenDropQueue opens the drop queue of fail_open: the rules
// (egressd-iptables.sh --fail-open) send it what an undecided flow may not
// carry (replies with payload, segments with TCP options beyond the
// standard ones, ICMP errors longer than a quoted header), and every
// packet in it is dropped. It exists so that its bypass lets those
// packets through while egressd is down. It belongs to no shard: its
// packets decide nothing.
func OpenDropQueue(cfg QueueConfig) (*Queue, error) {
	// Only the packet id is read; the header is enough.
	return openQueue(cfg, nil, 64)
}

func openQueue(cfg QueueConfig, shard *engine.Shard, copyRange uint32) (*Queue, error) {
	if cfg.Len == 0 {
		cfg.Len = 8192
	}
	if cfg.Marks == (Marks{}) {
		cfg.Marks = DefaultMarks
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := cfg.Marks.validate(); err != nil {
		return nil, &OpError{Op: "open", Queue: cfg.Num, Err: err}
	}
	nf, err := nfqueue.Open(&nfqueue.Config{
		NfQueue: cfg.Num, MaxQueueLen: cfg.Len, MaxPacketLen: copyRange,
		Copymode: nfqueue.NfQnlCopyPacket, AfFamily: unix.AF_INET, NetNS: cfg.NetNS,
	})
	if err != nil {
		return nil, &OpError{Op: "open", Queue: cfg.Num, Err: err}
	}
	q := &Queue{cfg: cfg, nf: nf, conn: nf.Con, shard: shard, dec: engine.NewDecoder(), log: cfg.Logger,
		buf: make([]byte, int(copyRange)+4096)}
	fail := func(op string, err error) (*Queue, error) {
		nf.Close()
		return nil, &OpError{Op: op, Queue: cfg.Num, Err: err}
	}
	if q.raw, err = q.conn.SyscallConn(); err != nil {
		return fail("socket", err)
	}
	if err := q.raw.Control(func(fd uintptr) { q.fd = int(fd) }); err != nil {
		return fail("socket", err)
	}
	// Room for bursts of new flows before the kernel reports ENOBUFS.
	_ = q.conn.SetReadBuffer(8 << 20)

	// GSO packets are queued whole, not cut into segments first: a hello
	// written at once crosses as one packet, one trip to user space. (A
	// packet longer than the copy range is read as far as it goes.)
	flags := uint32(nfqueue.NfQaCfgFlagGSO)
	if cfg.FailOpen {
		flags |= nfqueue.NfQaCfgFlagFailOpen
	}
	steps := []struct {
		op    string
		attrs []netlink.Attribute
	}{
		{"bind", []netlink.Attribute{{Type: cfgCmd, Data: []byte{cmdBind, 0, 0, unix.AF_INET}}}},
		{"set copy mode", []netlink.Attribute{{Type: cfgParams, Data: binary.BigEndian.AppendUint32(nil, copyRange)[:4:4]}}},
		{"set flags", []netlink.Attribute{
			{Type: cfgFlags, Data: binary.BigEndian.AppendUint32(nil, flags)},
			{Type: cfgMask, Data: binary.BigEndian.AppendUint32(nil, nfqueue.NfQaCfgFlagFailOpen|nfqueue.NfQaCfgFlagGSO)},
			{Type: cfgQueueLen, Data: binary.BigEndian.AppendUint32(nil, cfg.Len)},
		}},
	}
	steps[1].attrs[0].Data = append(steps[1].attrs[0].Data, nfqueue.NfQnlCopyPacket)
	for _, s := range steps {
		if err := q.config(s.attrs); err != nil {
			if s.op != "bind" {
				q.config([]netlink.Attribute{{Type: cfgCmd, Data: []byte{cmdUnbind, 0, 0, unix.AF_INET}}})
			}
			return fail(s.op, err)
		}
	}
	if shard != nil {
		shard.Attach(q)
	}
	return q, nil
}

// config sends one NFQNL_MSG_CONFIG for the queue and waits for its ack.
func (q *Queue) config(attrs []netlink.Attribute) error {
	data, err := netlink.MarshalAttributes(attrs)
	if err != nil {
		return err
	}
	hdr := []byte{unix.AF_UNSPEC, 0, 0, 0}
	binary.BigEndian.PutUint16(hdr[2:], q.cfg.Num)
	_, err = q.conn.Execute(netlink.Message{
		Header: netlink.Header{Type: msgConfig, Flags: netlink.Request | netlink.Acknowledge},
		Data:   append(hdr, data...),
	})
	return err
}

// Stats returns the queue's counters.
func (q *Queue) Stats() *QueueStats { return &q.stats }

// Num returns the queue's number.
func (q *Queue) Num() uint16 { return q.cfg.Num }

// maxConsecutiveErrors bounds a run of receive errors that are neither
// ENOBUFS nor timeouts: a socket that keeps failing is broken, and the
// daemon should exit (the rules stay, so new flows fail closed) and be
// restarted rather than spin.
const maxConsecutiveErrors = 100

// Run handles the queue's packets until ctx is done or the socket fails,
// then unbinds the queue (packets still queued are dropped by the kernel;
// their clients retransmit) and closes it. It returns nil after ctx is
// done.
func (q *Queue) Run(ctx context.Context) error {
	log := q.log
	defer q.nf.Close()
	defer q.config([]netlink.Attribute{{Type: cfgCmd, Data: []byte{cmdUnbind, 0, 0, unix.AF_INET}}})
	stop := context.AfterFunc(ctx, func() {
		// Wake a receive that waits for a packet.
		q.conn.SetReadDeadline(time.Unix(1, 0))
	})
	defer stop()
	q.bound.Store(true)
	defer q.bound.Store(false)

	var n int
	var rerr error
	recv := func(fd uintptr) bool {
		n, rerr = unix.Read(int(fd), q.buf)
		return rerr != unix.EAGAIN && rerr != unix.EINTR
	}
	errs := 0
	for {
		if err := q.raw.Read(recv); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return &OpError{Op: "receive", Queue: q.cfg.Num, Err: err}
		}
		switch {
		case rerr == nil:
			errs = 0
			q.messages(q.buf[:n])
		case errors.Is(rerr, unix.ENOBUFS):
			// The socket buffer overflowed: the kernel dropped packets
			// meant for us. Their flows retransmit; count and go on.
			q.stats.ENOBUFS.Add(1)
			log.Warn("queue socket overrun: packets lost (ENOBUFS)", "queue", q.cfg.Num, "total", q.stats.ENOBUFS.Load())
		default:
			q.stats.RecvErrors.Add(1)
			if errs++; errs >= maxConsecutiveErrors {
				return &OpError{Op: "receive", Queue: q.cfg.Num, Err: rerr}
			}
			log.Error("queue receive failed", "queue", q.cfg.Num, "err", rerr)
		}
	}
}

// messages handles the netlink messages of one receive.
func (q *Queue) messages(b []byte) {
	for len(b) >= nlHdrLen {
		l := int(binary.NativeEndian.Uint32(b[0:4]))
		if l < nlHdrLen || l > len(b) {
			q.stats.RecvErrors.Add(1)
			return
		}
		switch typ := binary.NativeEndian.Uint16(b[4:6]); typ {
		case msgPacket:
			q.packet(b[nlHdrLen:l])
		case unix.NLMSG_ERROR:
			// The kernel reports a verdict it refused (an unknown packet
			// id) this way even without an ack asked for.
			if l >= nlHdrLen+4 && int32(binary.NativeEndian.Uint32(b[nlHdrLen:])) != 0 {
				q.stats.VerdictErrors.Add(1)
			}
		}
		b = b[min(len(b), align4(l)):]
	}
}

func align4(n int) int { return (n + 3) &^ 3 }

// packet reads one NFQNL_MSG_PACKET's attributes in place and hands the
// packet to the engine.
func (q *Queue) packet(m []byte) {
	if len(m) < nfGenLen {
		return
	}
	var id uint32
	var haveID bool
	var payload []byte
	for a := m[nfGenLen:]; len(a) >= attrHdrLen; {
		l := int(binary.NativeEndian.Uint16(a[0:2]))
		if l < attrHdrLen || l > len(a) {
			break
		}
		v := a[attrHdrLen:l]
		switch binary.NativeEndian.Uint16(a[2:4]) & 0x3fff {
		case attrPacketHdr:
			if len(v) >= 4 {
				id, haveID = binary.BigEndian.Uint32(v[0:4]), true
			}
		case attrPayload:
			payload = v
		}
		a = a[min(len(a), align4(l)):]
	}
	if !haveID {
		q.stats.RecvErrors.Add(1)
		return
	}
	if q.shard == nil {
		q.stats.Dropped.Add(1)
		q.Drop(id)
		return
	}
	p := &q.pkt
	if err := q.dec.Decode(payload, p); err != nil {
		q.stats.DecodeErrors.Add(1)
		q.Drop(id)
		return
	}
	p.ID = id
	p.Time = time.Now()
	// The engine gives the packet to its flow's shard, whichever queue it
	// came through; its verdict comes back to this one (p.Queue).
	p.Queue = uint16(q.shard.Index())
	q.shard.Engine().Handle(p)
}

// Pass accepts a packet without a mark: its flow stays undecided.
func (q *Queue) Pass(id uint32) { q.verdict(id, nfqueue.NfAccept, 0, false) }

// Verdict re-injects a packet with the verdict mark (NF_REPEAT): FORWARD
// sees it again from the top, saves the mark to the connection and acts on
// it. A repeat without a mark would loop the packet back to us.
func (q *Queue) Verdict(id uint32, v policy.Verdict) {
	q.verdict(id, nfqueue.NfRepeat, q.cfg.Marks.of(v), true)
}

// Conclude sets the verdict mark on a flow's connection, for a flow
// decided with no packet in hand (engine.Sink).
// A connection the kernel no longer has needs nothing; one whose mark
// cannot be set is deleted instead (its next packet is then INVALID to
// conntrack, which drops it).
func (q *Queue) Conclude(t engine.Tuple, v policy.Verdict) error {
	err := q.cfg.Conntrack.SetMark(t, q.cfg.Marks.of(v), q.cfg.Marks.Mask)
	if err == nil || errors.Is(err, ErrNoConnection) {
		return nil
	}
	if derr := q.cfg.Conntrack.Delete(t); derr == nil || errors.Is(derr, ErrNoConnection) {
		q.log.Warn("a connection's verdict mark could not be set; the connection was deleted instead",
			"src", t.Src, "dst", t.Dst, "dport", t.DstPort, "err", err)
		return nil
	}
	return err
}

// Drop discards a packet.
func (q *Queue) Drop(id uint32) { q.verdict(id, nfqueue.NfDrop, 0, false) }

// verdict writes one NFQNL_MSG_VERDICT. It is safe from any goroutine:
// each write is one message the kernel handles on its own.
func (q *Queue) verdict(id uint32, verdict int, mark uint32, withMark bool) {
	var b [nlHdrLen + nfGenLen + attrHdrLen + 8 + attrHdrLen + 4]byte
	n := len(b)
	if !withMark {
		n -= attrHdrLen + 4
	}
	binary.NativeEndian.PutUint32(b[0:], uint32(n))
	binary.NativeEndian.PutUint16(b[4:], msgVerdict)
	binary.NativeEndian.PutUint16(b[6:], unix.NLM_F_REQUEST)
	b[16], b[17] = unix.AF_INET, 0 // nfgenmsg: family, NFNETLINK_V0
	binary.BigEndian.PutUint16(b[18:], q.cfg.Num)
	binary.NativeEndian.PutUint16(b[20:], attrHdrLen+8)
	binary.NativeEndian.PutUint16(b[22:], attrVerdictHdr)
	binary.BigEndian.PutUint32(b[24:], uint32(verdict))
	binary.BigEndian.PutUint32(b[28:], id)
	if withMark {
		binary.NativeEndian.PutUint16(b[32:], attrHdrLen+4)
		binary.NativeEndian.PutUint16(b[34:], attrMark)
		binary.BigEndian.PutUint32(b[36:], mark)
	}
	if _, err := unix.Write(q.fd, b[:n]); err != nil {
		// The kernel keeps the packet until the queue is unbound, then
		// drops it: the flow fails closed and the client retransmits.
		q.stats.VerdictErrors.Add(1)
		q.log.Error("verdict not delivered", "queue", q.cfg.Num, "packet", id, "err", err)
	}
}
