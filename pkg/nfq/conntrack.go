package nfq

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/egressd/egressd/pkg/engine"
	"github.com/egressd/egressd/pkg/policy"
)

// Conntrack updates connections in the kernel's connection table over
// ctnetlink: the verdict of a flow decided with no packet in hand (a
// handshake that sent nothing before hello.timeout) goes to its
// connection's mark, as CONNMARK --save-mark would have put it there.
//
// It speaks ctnetlink directly (one IPCTNL_MSG_CT_NEW without
// NLM_F_CREATE, which updates an existing entry), because the update must
// carry CTA_MARK_MASK: only the verdict bits change, and whatever else the
// instance keeps in the mark stays. It needs CAP_NET_ADMIN in the NAT's
// network namespace. Safe for concurrent use.
type Conntrack struct {
	conn *netlink.Conn
}

// ctnetlink (include/uapi/linux/netfilter/nfnetlink_conntrack.h).
const (
	nfnlSubsysCT = 1
	ctMsgNew     = nfnlSubsysCT << 8 // IPCTNL_MSG_CT_NEW
	ctMsgDelete  = nfnlSubsysCT<<8 | 2

	ctaTupleOrig = 1
	ctaTupleIP   = 1
	ctaTupleProt = 2
	ctaIPv4Src   = 1
	ctaIPv4Dst   = 2
	ctaProtoNum  = 1
	ctaProtoSrc  = 2
	ctaProtoDst  = 3
	ctaMark      = 8
	ctaMarkMask  = 21
)

// DialConntrack opens a ctnetlink socket in the network namespace netns (a
// file descriptor; 0: the caller's).
func DialConntrack(netns int) (*Conntrack, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: netns})
	if err != nil {
		return nil, &OpError{Op: "conntrack: dial", Err: err}
	}
	return &Conntrack{conn: c}, nil
}

// Close closes the socket.
func (c *Conntrack) Close() error { return c.conn.Close() }

// ErrNoConnection is SetMark's error when the kernel holds no connection
// for the tuple (it ended, or was never confirmed).
var ErrNoConnection = errors.New("no such connection")

// SetMark sets the bits of mask in the mark of t's connection to mark.
// The kernel computes (old &^ mask) | mark.
func (c *Conntrack) SetMark(t engine.Tuple, mark, mask uint32) error {
	b, err := tupleAttrs(t)
	if err != nil {
		return err
	}
	b = appendU32(b, ctaMark, mark)
	b = appendU32(b, ctaMarkMask, mask)
	return c.execute(ctMsgNew, b, "set mark")
}

// Delete removes t's connection.
func (c *Conntrack) Delete(t engine.Tuple) error {
	b, err := tupleAttrs(t)
	if err != nil {
		return err
	}
	return c.execute(ctMsgDelete, b, "delete")
}

func (c *Conntrack) execute(typ netlink.HeaderType, attrs []byte, op string) error {
	data := append([]byte{unix.AF_INET, 0, 0, 0}, attrs...) // nfgenmsg: family, version, res_id
	_, err := c.conn.Execute(netlink.Message{
		Header: netlink.Header{Type: typ, Flags: netlink.Request | netlink.Acknowledge},
		Data:   data,
	})
	if errors.Is(err, unix.ENOENT) {
		return ErrNoConnection
	}
	if err != nil {
		return &OpError{Op: "conntrack: " + op, Err: err}
	}
	return nil
}

// tupleAttrs encodes t as CTA_TUPLE_ORIG.
func tupleAttrs(t engine.Tuple) ([]byte, error) {
	if !t.Src.Is4() || !t.Dst.Is4() {
		return nil, fmt.Errorf("conntrack: %s -> %s: only IPv4", t.Src, t.Dst)
	}
	var proto uint8
	switch t.Proto {
	case policy.TCP:
		proto = unix.IPPROTO_TCP
	case policy.UDP:
		proto = unix.IPPROTO_UDP
	default:
		return nil, fmt.Errorf("conntrack: protocol %s", t.Proto)
	}
	src, dst := t.Src.As4(), t.Dst.As4()
	ip := appendAttr(appendAttr(nil, ctaIPv4Src, src[:]), ctaIPv4Dst, dst[:])
	var sp, dp [2]byte
	binary.BigEndian.PutUint16(sp[:], t.SrcPort)
	binary.BigEndian.PutUint16(dp[:], t.DstPort)
	pr := appendAttr(appendAttr(appendAttr(nil, ctaProtoNum, []byte{proto}), ctaProtoSrc, sp[:]), ctaProtoDst, dp[:])
	tuple := appendAttr(appendAttr(nil, ctaTupleIP|unix.NLA_F_NESTED, ip), ctaTupleProt|unix.NLA_F_NESTED, pr)
	return appendAttr(nil, ctaTupleOrig|unix.NLA_F_NESTED, tuple), nil
}

// appendAttr appends one netlink attribute (header, value, padding).
func appendAttr(b []byte, typ uint16, v []byte) []byte {
	var h [4]byte
	binary.NativeEndian.PutUint16(h[0:], uint16(4+len(v)))
	binary.NativeEndian.PutUint16(h[2:], typ)
	b = append(append(b, h[:]...), v...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func appendU32(b []byte, typ uint16, v uint32) []byte {
	var x [4]byte
	binary.BigEndian.PutUint32(x[:], v)
	return appendAttr(b, typ, x[:])
}
