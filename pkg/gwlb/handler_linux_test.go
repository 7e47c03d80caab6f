package gwlb

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"os/exec"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/netnstest"
	"github.com/egressd/egressd/internal/testenv"
)

// handlerNS runs a Handler in a namespace of its own, one-arm: what comes
// in on gwlb0 is routed back out of it. The handler listens on
// 127.0.0.2:6081; the test plays the load balancer from 127.0.0.1 and
// receives the replies on 127.0.0.1:6081 (ports kept: the reply goes to
// 6081 from the load balancer's source port).
func handlerNS(t *testing.T, cfg Config) (*netnstest.NS, *Handler) {
	t.Helper()
	testenv.RequireCommands(t, "ip")
	ns := netnstest.New(t, "gwlb")
	for _, args := range [][]string{
		{"ip", "-n", ns.Name, "tuntap", "add", "dev", "gwlb0", "mode", "tun", "multi_queue"},
		{"ip", "-n", ns.Name, "rule", "add", "iif", "gwlb0", "lookup", "100"},
		{"ip", "netns", "exec", ns.Name, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"},
	} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v: %s", args, err, out)
		}
	}
	cfg.Listen = netip.MustParseAddrPort("127.0.0.2:6081")
	var h *Handler
	if err := ns.Do(func() (err error) { h, err = New(cfg); return err }); err != nil {
		t.Fatal(err)
	}
	// The routes need the device up, which New does.
	for _, r := range [][]string{{"default", "dev", "gwlb0", "table", "100"}, {"198.18.77.0/24", "dev", "gwlb0"}} {
		if out, err := exec.Command("ip", append([]string{"-n", ns.Name, "route", "add"}, r...)...).CombinedOutput(); err != nil {
			t.Fatalf("route %v: %v: %s", r, err, out)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	deadline := time.Now().Add(5 * time.Second)
	for !h.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("handler not ready")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return ns, h
}

func TestHandlerRoundTrip(t *testing.T) {
	ns, h := handlerNS(t, Config{Endpoints: []uint64{0xa}})
	lb, err := ns.ListenPacket("udp4", "127.0.0.1:40123")
	if err != nil {
		t.Fatal(err)
	}
	defer lb.Close()
	back, err := ns.ListenPacket("udp4", "127.0.0.1:6081")
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	to := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2), Port: Port}
	send := func(hdr Header, inner []byte) {
		t.Helper()
		if _, err := lb.WriteTo(append(AppendHeader(nil, hdr), inner...), to); err != nil {
			t.Fatal(err)
		}
	}
	recv := func() ([]byte, net.Addr, bool) {
		t.Helper()
		buf := make([]byte, 9216)
		back.SetReadDeadline(time.Now().Add(time.Second))
		n, from, err := back.ReadFrom(buf)
		return buf[:n], from, err == nil
	}

	hdr := Header{Proto: ProtoIPv4, Endpoint: 0xa, Attachment: 0xb, Cookie: 0x11111111}
	inner := ipv4UDP(100, client, server, 40000, 9999)
	copy(inner[28:], "payload")
	send(hdr, inner)
	got, from, ok := recv()
	if !ok {
		t.Fatalf("no reply; decapsulated %d, stats %v", h.Stats().Decapsulated.Load(), statsOf(h))
	}
	if from.String() != "127.0.0.2:40123" {
		t.Errorf("reply from %v, want 127.0.0.2:40123 (addresses swapped, the load balancer's port kept)", from)
	}
	if want := AppendHeader(nil, hdr); !bytes.Equal(got[:HeaderLen], want) {
		t.Errorf("header %x, want the one sent %x", got[:HeaderLen], want)
	}
	// Forwarded once: the kernel decremented the TTL, the rest is the same.
	if fwd := got[HeaderLen:]; len(fwd) != len(inner) || fwd[8] != inner[8]-1 || !bytes.Equal(fwd[28:], inner[28:]) {
		t.Errorf("inner packet changed: %x", fwd)
	}

	// A reused 5-tuple with a new cookie: the reply carries the new one.
	hdr.Cookie = 0x22222222
	send(hdr, inner)
	if got, _, ok := recv(); !ok || !bytes.Equal(got[:HeaderLen], AppendHeader(nil, hdr)) {
		t.Errorf("after a new cookie: %x %v", got, ok)
	}

	// What must not come back: an unknown endpoint, IPv6, a malformed
	// header, a flow the appliance starts itself.
	before := statsOf(h)
	send(Header{Proto: ProtoIPv4, Endpoint: 0xbad, Cookie: 1}, ipv4UDP(100, client, server, 40001, 9999))
	send(Header{Proto: ProtoIPv6, Endpoint: 0xa, Cookie: 2}, ipv6Packet(20))
	lb.WriteTo([]byte{0x08, 0, 0x08, 0, 0, 0, 0, 0, 1, 8}, to)
	self, err := ns.ListenPacket("udp4", ":0")
	if err != nil {
		t.Fatal(err)
	}
	self.WriteTo([]byte("appliance-made"), &net.UDPAddr{IP: net.IPv4(198, 18, 77, 1), Port: 9})
	self.Close()
	if got, _, ok := recv(); ok {
		t.Errorf("a reply came back: %x", got)
	}
	after := statsOf(h)
	for d, want := range map[Drop]uint64{DropUnknownEndpoint: 1, DropIPv6: 1, DropMalformed: 1, DropNoFlow: 1} {
		if n := after[d] - before[d]; n != want {
			t.Errorf("%s drops: %d, want %d (stats %v)", d, n, want, after)
		}
	}
	if e := h.Stats().Encapsulated.Load(); e != 2 {
		t.Errorf("encapsulated %d, want 2", e)
	}
}

func statsOf(h *Handler) map[Drop]uint64 {
	m := map[Drop]uint64{}
	for _, d := range Drops() {
		m[d] = h.Stats().Dropped(d)
	}
	return m
}

func TestDropString(t *testing.T) {
	for _, d := range Drops() {
		if s := d.String(); s == "" || s[0] == 'u' && d != DropUnknownEndpoint {
			t.Errorf("Drop(%d) = %q", d, s)
		}
	}
	if s := Drop(200).String(); s != "unknown(200)" {
		t.Errorf("Drop(200) = %q", s)
	}
}
