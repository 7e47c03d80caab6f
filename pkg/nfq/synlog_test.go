package nfq

import (
	"context"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/egressd/egressd/internal/netnstest"
	"github.com/egressd/egressd/internal/testenv"
	"github.com/egressd/egressd/pkg/engine"
)

func nsExec(t *testing.T, ns *netnstest.NS, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns.Name}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func nsFD(t *testing.T, ns *netnstest.NS) int {
	t.Helper()
	fd, err := unix.Open(ns.Path(), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// TestSYNLog: in a namespace of its own, SYNs over loopback logged to an
// NFLOG group (as the rules log SYNs they forward) are drained with their
// addresses, ports and initial sequence numbers; nothing else is, and an
// empty socket drains at once.
func TestSYNLog(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireCommands(t, "ip", "iptables")
	ns := netnstest.New(t, "synlog")
	fd := nsFD(t, ns)
	l, err := OpenSYNLog(77, fd, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	nsExec(t, ns, "iptables", "-A", "OUTPUT", "-p", "tcp", "--syn", "-j", "NFLOG", "--nflog-group", "77", "--nflog-size", "80")

	ln, err := ns.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var ports []uint16
	for range 3 {
		c, err := ns.DialContext(ctx, "tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		ports = append(ports, uint16(c.LocalAddr().(*net.TCPAddr).Port))
		c.Close()
	}
	var got []engine.Packet
	if empty, lost := l.Drain(func(p *engine.Packet) { got = append(got, *p) }); !empty || lost {
		t.Errorf("drain: empty %v, lost %v; want the socket emptied, nothing lost", empty, lost)
	}
	if len(got) != len(ports) {
		t.Fatalf("drained %d SYNs, want %d: %+v (stats: %d decode errors)", len(got), len(ports), got, l.Stats().DecodeErrors.Load())
	}
	for i, p := range got {
		if !p.Logged || !p.SYN || p.ACK || p.SrcPort != ports[i] || p.DstPort != uint16(ln.Addr().(*net.TCPAddr).Port) ||
			p.Src.String() != "127.0.0.1" || p.Seq == 0 {
			t.Errorf("SYN %d: %+v, want one from port %d", i, p, ports[i])
		}
	}
	start := time.Now()
	l.Drain(func(p *engine.Packet) { t.Errorf("drained again: %+v", p) })
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("an empty drain took %s", d)
	}
}

// TestSYNPortSet: Set replaces the ipset's ports, read back with the ipset
// tool; a set that does not exist is an error at open.
func TestSYNPortSet(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireCommands(t, "ip", "ipset")
	ns := netnstest.New(t, "synset")
	fd := nsFD(t, ns)
	if _, err := OpenSYNPortSet(SYNPortSetName, fd); err == nil {
		t.Fatal("opened a set that does not exist")
	}
	nsExec(t, ns, "ipset", "create", SYNPortSetName, "bitmap:port", "range", "0-65535")
	s, err := OpenSYNPortSet(SYNPortSetName, fd)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	members := func() string {
		out := nsExec(t, ns, "ipset", "list", SYNPortSetName)
		_, m, _ := strings.Cut(out, "Members:\n")
		return strings.TrimSpace(m)
	}
	for _, tc := range []struct {
		ports []uint16
		want  string
	}{
		{[]uint16{443, 80}, "80\n443"},
		{[]uint16{8443}, "8443"},
		{nil, ""},
	} {
		if err := s.Set(tc.ports); err != nil {
			t.Fatal(err)
		}
		if got := members(); got != tc.want {
			t.Errorf("after Set(%v): members %q, want %q", tc.ports, got, tc.want)
		}
	}
}
