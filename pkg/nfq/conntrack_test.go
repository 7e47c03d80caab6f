package nfq

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/egressd/egressd/internal/netnstest"
	"github.com/egressd/egressd/internal/testenv"
	"github.com/egressd/egressd/pkg/engine"
	"github.com/egressd/egressd/pkg/policy"
)

var markRE = regexp.MustCompile(`\bmark=(\d+)`)

// ctMark reads the mark of the connection from sport in ns with the
// conntrack tool (a second opinion: not this package's own code).
func ctMark(t *testing.T, ns *netnstest.NS, sport uint16) (uint32, bool) {
	t.Helper()
	out, _ := exec.Command("ip", "netns", "exec", ns.Name, "conntrack", "-L", "-p", "tcp", "--orig-port-src", strconv.Itoa(int(sport))).CombinedOutput()
	m := markRE.FindSubmatch(out)
	if m == nil {
		return 0, false
	}
	v, _ := strconv.ParseUint(string(m[1]), 10, 32)
	return uint32(v), true
}

// TestConntrackSetMark: in a namespace of its own, a TCP connection over
// loopback, then SetMark with a mask changes only the masked bits of the
// connection's mark; a tuple without a connection is ErrNoConnection;
// Delete removes the entry.
func TestConntrackSetMark(t *testing.T) {
	testenv.RequireCommands(t, "ip", "iptables", "conntrack")
	ns := netnstest.New(t, "ct")
	// A rule that uses conntrack makes the namespace track connections.
	if out, err := exec.Command("ip", "netns", "exec", ns.Name, "iptables", "-A", "OUTPUT", "-m", "conntrack", "--ctstate", "NEW", "-j", "ACCEPT").CombinedOutput(); err != nil {
		t.Fatalf("iptables: %v: %s", err, out)
	}
	ln, err := ns.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := ns.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	local, remote := c.LocalAddr().(*net.TCPAddr), c.RemoteAddr().(*net.TCPAddr)
	tuple := engine.Tuple{Src: netip.MustParseAddr("127.0.0.1"), Dst: netip.MustParseAddr("127.0.0.1"),
		SrcPort: uint16(local.Port), DstPort: uint16(remote.Port), Proto: policy.TCP}

	fd, err := unix.Open(ns.Path(), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	ct, err := DialConntrack(fd)
	if err != nil {
		t.Fatal(err)
	}
	defer ct.Close()

	if m, ok := ctMark(t, ns, tuple.SrcPort); !ok || m != 0 {
		t.Fatalf("before: mark %d (found %v), want 0", m, ok)
	}
	// Bits egressd does not own, set by someone else.
	if err := ct.SetMark(tuple, 0x500, 0xf00); err != nil {
		t.Fatal(err)
	}
	if err := ct.SetMark(tuple, DefaultMarks.Deny, DefaultMarks.Mask); err != nil {
		t.Fatal(err)
	}
	if m, _ := ctMark(t, ns, tuple.SrcPort); m != 0x502 {
		t.Fatalf("mark %#x, want 0x502: the deny bits set, the others kept", m)
	}
	if err := ct.SetMark(tuple, DefaultMarks.Allow, DefaultMarks.Mask); err != nil {
		t.Fatal(err)
	}
	if m, _ := ctMark(t, ns, tuple.SrcPort); m != 0x501 {
		t.Fatalf("mark %#x, want 0x501", m)
	}

	gone := tuple
	gone.SrcPort++
	if err := ct.SetMark(gone, DefaultMarks.Deny, DefaultMarks.Mask); !errors.Is(err, ErrNoConnection) {
		t.Fatalf("a tuple without a connection: %v, want ErrNoConnection", err)
	}
	if err := ct.Delete(tuple); err != nil {
		t.Fatal(err)
	}
	if _, ok := ctMark(t, ns, tuple.SrcPort); ok {
		t.Fatalf("the connection is still there after Delete")
	}
}
