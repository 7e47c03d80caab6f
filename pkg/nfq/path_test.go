package nfq

import (
	"encoding/binary"
	"log/slog"
	"net/netip"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/egressd/egressd/internal/pcapgen"
	"github.com/egressd/egressd/pkg/declog"
	"github.com/egressd/egressd/pkg/engine"
	"github.com/egressd/egressd/pkg/policy"
)

// The per-packet path without the kernel: a netlink message as NFQUEUE or
// NFLOG delivers it, read in place, decoded, handed to the engine, its
// verdict written (to /dev/null). These run in make bench, and their
// allocation tests in make test: the whole path allocates nothing per
// packet (a flow's one allocation is its name's string, in the engine).

// nlMessage wraps attrs in a netlink message of type typ, with an
// nfgenmsg.
func nlMessage(typ uint16, attrs []byte) []byte {
	m := make([]byte, nlHdrLen+nfGenLen, nlHdrLen+nfGenLen+len(attrs))
	binary.NativeEndian.PutUint32(m[0:], uint32(nlHdrLen+nfGenLen+len(attrs)))
	binary.NativeEndian.PutUint16(m[4:], typ)
	m[16] = unix.AF_INET
	return append(m, attrs...)
}

// queuedMessage is an NFQNL_MSG_PACKET for packet id carrying ip.
func queuedMessage(id uint32, ip []byte) []byte {
	var hdr [7]byte
	binary.BigEndian.PutUint32(hdr[0:], id)
	binary.BigEndian.PutUint16(hdr[4:], unix.ETH_P_IP)
	return nlMessage(msgPacket, appendAttr(appendAttr(nil, attrPacketHdr, hdr[:]), attrPayload, ip))
}

// loggedMessage is an NFULNL_MSG_PACKET carrying ip.
func loggedMessage(ip []byte) []byte {
	return nlMessage(ulogMsgPacket, appendAttr(appendAttr(nil, 1, []byte{0x08, 0, 3, 0}), ulogAttrPayload, ip))
}

type pathBench struct {
	q     *Queue
	e     *engine.Engine
	syns  *msgSource
	clock time.Time
	hello []byte
	sport uint16
}

// msgSource is the SYN log's message path as the engine's SYNSource: one
// received message, read by SYNLog.messages.
type msgSource struct {
	l   *SYNLog
	msg []byte
}

func (m *msgSource) Drain(fn func(*engine.Packet)) (empty, lost bool) {
	if m.msg != nil {
		msg := m.msg
		m.msg = nil
		m.l.messages(msg, fn)
	}
	return true, false
}

// newPathBench: with logged, SYNs to 443 are logged (the SYN log); without,
// they are queued.
func newPathBench(tb testing.TB, logged bool) *pathBench {
	tb.Helper()
	p, err := policy.Parse("p.yaml", []byte("version: 1\ndefault: deny\nrules:\n  - {name: web, domains: [allowed.example.test], ports: [443], action: allow}\n"), policy.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	pb := &pathBench{clock: time.Unix(1_800_000_000, 0), sport: 1000}
	pb.syns = &msgSource{l: &SYNLog{dec: engine.NewDecoder(), log: slog.Default()}}
	e, err := engine.New(engine.Config{Now: func() time.Time { return pb.clock }, Log: func(*declog.Record) {}, SYNs: pb.syns}, p, 1)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(e.Close)
	if logged {
		e.SetSYNLogged([]uint16{443})
	}
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { devnull.Close() })
	pb.q = &Queue{cfg: QueueConfig{Marks: DefaultMarks}, fd: int(devnull.Fd()), shard: e.Shard(0), dec: engine.NewDecoder(), log: slog.Default()}
	e.Shard(0).Attach(pb.q)
	pb.e = e
	h, err := pcapgen.ClientHello("allowed.example.test")
	if err != nil {
		tb.Fatal(err)
	}
	pb.hello = h
	return pb
}

// flow runs one TLS flow through the queue's message path: its SYN
// queued (or only logged), its hello queued; then forgets it.
func (pb *pathBench) flow(logged bool, syn, data []byte) {
	if logged {
		pb.syns.msg = syn // in the log's socket; the hello's miss drains it
	} else {
		pb.q.messages(syn)
	}
	pb.q.messages(data)
	pb.clock = pb.clock.Add(time.Minute)
	pb.e.Tick(pb.clock)
}

// messages are one flow's: the SYN (queued or logged) and the hello.
func (pb *pathBench) messages(logged bool) (syn, data []byte) {
	pb.sport++
	c := netip.AddrPortFrom(netip.MustParseAddr("198.18.1.2"), pb.sport)
	s := netip.MustParseAddrPort("203.0.113.10:443")
	synIP := pcapgen.TCP(c, s, 1, 1000, 0, pcapgen.SYN, nil)
	if logged {
		syn = loggedMessage(synIP)
	} else {
		syn = queuedMessage(1, synIP)
	}
	return syn, queuedMessage(2, pcapgen.TCP(c, s, 2, 1001, 1, pcapgen.ACK|pcapgen.PSH, pb.hello))
}

func BenchmarkPacketPath(b *testing.B) {
	for _, logged := range []bool{false, true} {
		name := "syn=queued"
		if logged {
			name = "syn=logged"
		}
		b.Run(name, func(b *testing.B) {
			pb := newPathBench(b, logged)
			syn, data := pb.messages(logged)
			b.ReportAllocs()
			for range b.N {
				pb.flow(logged, syn, data) // the same 5-tuple: the last flow was forgotten
			}
		})
	}
}
