package replay

import (
	"encoding/binary"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/ip4defrag"
	"github.com/google/gopacket/layers"

	"github.com/egressd/egressd/internal/inetsum"
)

// IP protocol numbers.
const (
	protoTCP = 6
	protoUDP = 17
)

// ipLayer does what the NAT's IP stack and conntrack do to a packet before
// the engine sees it: it checks checksums (when asked: captures taken on a
// host carry offloaded, unfinished checksums) and reassembles fragments.
type ipLayer struct {
	verify bool
	counts *Counts

	defrag *ip4defrag.IPv4Defragmenter
	// held mirrors the defragmenter's datagrams in progress, so that what
	// it holds is bounded: ip4defrag itself bounds only the fragments of
	// one datagram.
	held      map[fragKey]fragState
	heldBytes int
	lastSweep time.Time
	out       []byte // the last reassembled datagram
}

type fragKey struct {
	src, dst [4]byte
	id       uint16
}

type fragState struct {
	bytes int
	last  time.Time
}

// Reassembly limits, the kernel's defaults (net.ipv4.ipfrag_time,
// ipfrag_high_thresh): past the time a datagram in progress is dropped,
// past the memory every one is.
const (
	fragTimeout  = 30 * time.Second
	fragMaxBytes = 4 << 20
	fragMaxLists = 4096
)

func newIPLayer(verify bool, c *Counts) *ipLayer {
	return &ipLayer{verify: verify, counts: c, defrag: ip4defrag.NewIPv4Defragmenter(), held: map[fragKey]fragState{}}
}

// packet returns the datagram to hand on, its bytes trimmed to the IP
// total length; nil when the packet is dropped or is a fragment of a
// datagram still incomplete. truncated says the capture cut it short
// (only then is it shorter than its total length).
func (l *ipLayer) packet(b []byte, ts time.Time) (dg []byte, truncated bool) {
	if len(b) < 20 || b[0]>>4 != 4 {
		l.counts.NotIPv4++
		return nil, false
	}
	ihl := int(b[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(b[2:4]))
	if ihl < 20 || len(b) < ihl || total < ihl {
		l.counts.Malformed++
		return nil, false
	}
	if total < len(b) {
		b = b[:total] // link-layer padding
	}
	truncated = len(b) < total
	if l.verify && inetsum.Sum(b[:ihl], 0) != 0xffff {
		l.counts.BadChecksum++
		return nil, false
	}
	if ff := binary.BigEndian.Uint16(b[6:8]); ff&0x3fff != 0 { // MF or an offset
		if truncated || ff&0x4000 != 0 { // cut short, or "don't fragment" on a fragment
			l.counts.Fragments++
			l.counts.FragmentsDropped++
			return nil, false
		}
		if b = l.fragment(b, ts); b == nil {
			return nil, false
		}
	}
	if l.verify && !truncated && !transportChecksumOK(b) {
		l.counts.BadChecksum++
		return nil, false
	}
	return b, truncated
}

// fragment feeds a fragment to the defragmenter and returns the datagram
// it completes, rebuilt with a plain 20-byte header, or nil.
func (l *ipLayer) fragment(b []byte, ts time.Time) []byte {
	l.counts.Fragments++
	l.sweep(ts)
	if b[0]&0x0f != 5 {
		// ip4defrag assumes 20-byte headers when it joins fragments (it
		// would slice past a fragment with options). Such fragments are
		// crafted, not sent: drop them.
		l.counts.FragmentsDropped++
		return nil
	}
	ip := &layers.IPv4{}
	if err := ip.DecodeFromBytes(append([]byte(nil), b...), gopacket.NilDecodeFeedback); err != nil {
		l.counts.FragmentsDropped++
		return nil
	}
	k := fragKey{src: [4]byte(b[12:16]), dst: [4]byte(b[16:20]), id: ip.Id}
	out, err := l.defrag.DefragIPv4WithTimestamp(ip, ts)
	switch {
	case err != nil:
		l.counts.FragmentsDropped++
		l.forget(k)
		return nil
	case out == nil:
		st := l.held[k]
		l.heldBytes += len(ip.Payload)
		st.bytes += len(ip.Payload)
		st.last = ts
		l.held[k] = st
		if l.heldBytes > fragMaxBytes || len(l.held) > fragMaxLists {
			// Like the kernel past ipfrag_high_thresh: give up on what
			// is held rather than grow.
			l.counts.FragmentsDropped += uint64(l.defrag.DiscardOlderThan(ts.Add(time.Hour)))
			clear(l.held)
			l.heldBytes = 0
		}
		return nil
	}
	l.forget(k)
	l.counts.Reassembled++
	n := 20 + len(out.Payload)
	if n > 0xffff {
		l.counts.FragmentsDropped++
		return nil
	}
	l.out = append(l.out[:0], make([]byte, 20)...)
	h := l.out
	h[0], h[1] = 0x45, b[1]
	binary.BigEndian.PutUint16(h[2:4], uint16(n))
	binary.BigEndian.PutUint16(h[4:6], out.Id)
	h[8], h[9] = out.TTL, byte(out.Protocol)
	copy(h[12:20], b[12:20])
	binary.BigEndian.PutUint16(h[10:12], ^inetsum.Sum(h, 0))
	l.out = append(l.out, out.Payload...)
	return l.out
}

func (l *ipLayer) forget(k fragKey) {
	if st, ok := l.held[k]; ok {
		l.heldBytes -= st.bytes
		delete(l.held, k)
	}
}

// sweep drops datagrams in progress for longer than fragTimeout, at most
// once a second of capture time.
func (l *ipLayer) sweep(ts time.Time) {
	if ts.Sub(l.lastSweep) < time.Second {
		return
	}
	l.lastSweep = ts
	cut := ts.Add(-fragTimeout)
	if n := l.defrag.DiscardOlderThan(cut); n > 0 {
		l.counts.FragmentsDropped += uint64(n)
	}
	for k, st := range l.held {
		if st.last.Before(cut) {
			l.forget(k)
		}
	}
}

// transportChecksumOK checks a whole datagram's TCP or UDP checksum. A UDP
// checksum of 0 means none was computed (RFC 768). Other protocols pass.
func transportChecksumOK(dg []byte) bool {
	ihl := int(dg[0]&0x0f) * 4
	seg := dg[ihl:]
	proto := dg[9]
	switch proto {
	case protoTCP:
		if len(seg) < 20 {
			return false
		}
	case protoUDP:
		if len(seg) < 8 {
			return false
		}
		if seg[6] == 0 && seg[7] == 0 {
			return true
		}
	default:
		return true
	}
	return inetsum.Sum(seg, inetsum.Pseudo([4]byte(dg[12:16]), [4]byte(dg[16:20]), proto, len(seg))) == 0xffff
}
