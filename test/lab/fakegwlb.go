package lab

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/egressd/egressd/internal/netnstest"
	"github.com/egressd/egressd/pkg/gwlb"
)

// FakeEndpoint is one load balancer endpoint of the fake: the clients of
// its subnet come through it.
type FakeEndpoint struct {
	ID, Attachment uint64
	Clients        netip.Prefix
}

// FakeTarget is a target of the fake load balancer.
type FakeTarget struct {
	Addr      [4]byte
	HealthURL string // GET; 200 is healthy

	healthy           atomic.Bool
	okRun, failRun    int
	Sent, Accepted    atomic.Uint64
	RejectedFrom      atomic.Uint64 // replies from this target refused
	healthChecks, bad atomic.Uint64
}

// Healthy is the target's health as the fake last judged it.
func (t *FakeTarget) Healthy() bool { return t.healthy.Load() }

// FakeStats are the fake's counters.
type FakeStats struct {
	Sent, Accepted, Delivered atomic.Uint64
	// Replies refused: from the wrong address or port, with a header
	// that is not the flow's latest byte for byte, for no known flow, or
	// malformed.
	RejectAddr, RejectPort, RejectHeader, RejectNoFlow, RejectMalformed atomic.Uint64
	Oversize, NoTarget, NoEndpoint                                      atomic.Uint64
}

// FakeGWLB plays an AWS Gateway Load Balancer and its endpoints in its own
// namespace (see GWLBLab): packets the kernel routes into its tun device
// (from the clients, and in one-arm mode the internet's replies to them)
// are encapsulated in GENEVE as the load balancer does — the endpoint's id
// and attachment id, a random cookie and source port per flow — and sent
// to a target chosen by a hash of the flow's 5-tuple among the healthy
// ones (each target's /readyz, polled). A reply is accepted only from the
// flow's target, to its source port, under exactly the flow's latest
// header, and inner packets over 8,500 bytes are dropped either way,
// without an ICMP error. Existing flows stay on their target when it
// fails (no_rebalance) unless Rebalance is set, which moves them to a
// healthy target once the failed one is judged unhealthy.
type FakeGWLB struct {
	Addr      [4]byte
	Endpoints []FakeEndpoint
	Targets   []*FakeTarget
	Rebalance atomic.Bool
	Stats     FakeStats

	ns   *netnstest.NS
	tun  *os.File
	raw  int
	udp  *net.UDPConn
	http *http.Client

	mu      sync.Mutex
	flows   map[flowID]*fakeFlow
	rejects []string // the latest refusals, for failure messages
	ipID    atomic.Uint32
	done    chan struct{}
	wg      sync.WaitGroup
}

type flowID struct {
	a, b  netip.AddrPort
	proto uint8
}

type fakeFlow struct {
	target   int
	cookie   uint32
	sport    uint16
	header   []byte
	endpoint int
}

// symmetric is the flow's identity in both directions.
func symmetric(k gwlb.Key) flowID {
	a := netip.AddrPortFrom(netip.AddrFrom4(k.Src), k.SrcPort)
	b := netip.AddrPortFrom(netip.AddrFrom4(k.Dst), k.DstPort)
	if b.Compare(a) < 0 {
		a, b = b, a
	}
	return flowID{a, b, k.Proto}
}

// startFake opens the fake's tun device (fgw, routed to by the namespace's
// rules), its raw socket and its UDP socket for the replies, all in ns,
// and starts its loops and health checks.
func startFake(ns *netnstest.NS, addr [4]byte, eps []FakeEndpoint, targets []*FakeTarget) (*FakeGWLB, error) {
	f := &FakeGWLB{Addr: addr, Endpoints: eps, Targets: targets, ns: ns, raw: -1,
		flows: map[flowID]*fakeFlow{}, done: make(chan struct{})}
	err := ns.Do(func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
		if err != nil {
			return err
		}
		ifr, _ := unix.NewIfreq("fgw")
		ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			return fmt.Errorf("fake GWLB tun: %w", err)
		}
		f.tun = os.NewFile(uintptr(fd), "fgw")
		if f.raw, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW); err != nil {
			return err
		}
		f.udp, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IP(addr[:]), Port: gwlb.Port})
		return err
	})
	if err != nil {
		f.Close()
		return nil, err
	}
	f.http = &http.Client{Timeout: 500 * time.Millisecond, Transport: &http.Transport{DialContext: ns.DialContext, DisableKeepAlives: true}}
	f.wg.Add(3)
	go func() { defer f.wg.Done(); f.fromKernel() }()
	go func() { defer f.wg.Done(); f.fromTargets() }()
	go func() { defer f.wg.Done(); f.healthLoop() }()
	return f, nil
}

// Close stops the fake.
func (f *FakeGWLB) Close() error {
	select {
	case <-f.done:
		return nil
	default:
	}
	close(f.done)
	if f.tun != nil {
		f.tun.Close()
	}
	if f.udp != nil {
		f.udp.Close()
	}
	f.wg.Wait()
	if f.raw >= 0 {
		unix.Close(f.raw)
	}
	return nil
}

func (f *FakeGWLB) reject(counter *atomic.Uint64, format string, args ...any) {
	counter.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rejects = append(f.rejects, fmt.Sprintf(format, args...))
	if len(f.rejects) > 20 {
		f.rejects = f.rejects[1:]
	}
}

// Rejects are the latest refusals, for failure messages.
func (f *FakeGWLB) Rejects() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.rejects...)
}

// ForgetFlows drops every flow: the next packet of a 5-tuple starts a new
// flow, with a new cookie and source port (as after the load balancer's
// idle timeout).
func (f *FakeGWLB) ForgetFlows() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.flows = map[flowID]*fakeFlow{}
}

// FlowOf is the target index and cookie of the flow of k, if there is one.
func (f *FakeGWLB) FlowOf(k gwlb.Key) (target int, cookie uint32, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fl := f.flows[symmetric(k)]
	if fl == nil {
		return 0, 0, false
	}
	return fl.target, fl.cookie, true
}

func random32() uint32 {
	var b [4]byte
	rand.Read(b[:])
	return binary.BigEndian.Uint32(b[:])
}

// route finds or makes the flow of k and returns a copy of what to send
// it with; ok false if it cannot be sent (no endpoint, no healthy target).
func (f *FakeGWLB) route(k gwlb.Key, proto uint16) (fl fakeFlow, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	id := symmetric(k)
	cur := f.flows[id]
	if cur != nil && !f.Targets[cur.target].Healthy() && f.Rebalance.Load() {
		if t, ok := f.pick(id); ok {
			cur.target = t // rehashed to a healthy target; cookie kept
		}
	}
	if cur == nil {
		ep := -1
		for i, e := range f.Endpoints {
			if e.Clients.Contains(netip.AddrFrom4(k.Src)) || e.Clients.Contains(netip.AddrFrom4(k.Dst)) {
				ep = i
			}
		}
		if ep < 0 {
			f.Stats.NoEndpoint.Add(1)
			return fakeFlow{}, false
		}
		t, ok := f.pick(id)
		if !ok {
			f.Stats.NoTarget.Add(1)
			return fakeFlow{}, false
		}
		cur = &fakeFlow{target: t, cookie: random32(), sport: uint16(10000 + random32()%50000), endpoint: ep}
		e := f.Endpoints[ep]
		cur.header = gwlb.AppendHeader(nil, gwlb.Header{Proto: proto, Endpoint: e.ID, Attachment: e.Attachment, Cookie: cur.cookie})
		f.flows[id] = cur
	}
	return *cur, true
}

// FlowPort is the source port the fake uses for the flow of k.
func (f *FakeGWLB) FlowPort(k gwlb.Key) (uint16, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fl := f.flows[symmetric(k)]
	if fl == nil {
		return 0, false
	}
	return fl.sport, true
}

// TargetFor is the target a new flow of k would go to now (-1: none
// healthy), so that a test can choose a source port for a target.
func (f *FakeGWLB) TargetFor(k gwlb.Key) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if t, ok := f.pick(symmetric(k)); ok {
		return t
	}
	return -1
}

// pick hashes the flow over the healthy targets.
func (f *FakeGWLB) pick(id flowID) (int, bool) {
	var healthy []int
	for i, t := range f.Targets {
		if t.Healthy() {
			healthy = append(healthy, i)
		}
	}
	if len(healthy) == 0 {
		return 0, false
	}
	h := fnv.New32a()
	b, _ := id.a.MarshalBinary()
	h.Write(b)
	b, _ = id.b.MarshalBinary()
	h.Write(b)
	h.Write([]byte{id.proto})
	return healthy[h.Sum32()%uint32(len(healthy))], true
}

// fromKernel encapsulates what is routed into the tun device.
func (f *FakeGWLB) fromKernel() {
	buf := make([]byte, gwlb.Headroom+9100)
	var sa unix.SockaddrInet4
	for {
		n, err := f.tun.Read(buf[gwlb.Headroom:])
		if err != nil {
			return
		}
		inner := buf[gwlb.Headroom : gwlb.Headroom+n]
		if n > gwlb.MaxInner {
			f.Stats.Oversize.Add(1) // dropped silently, as the load balancer does
			continue
		}
		k, ok := gwlb.KeyOf(inner)
		if !ok {
			continue
		}
		fl, ok := f.route(k, gwlb.ProtoIPv4)
		if !ok {
			continue
		}
		t := f.Targets[fl.target]
		f.send(buf, n, fl, t, &sa)
	}
}

func (f *FakeGWLB) send(buf []byte, n int, fl fakeFlow, t *FakeTarget, sa *unix.SockaddrInet4) {
	pkt := gwlb.Encap(buf, n, fl.header, gwlb.Outer{Src: f.Addr, Dst: t.Addr, SrcPort: fl.sport, DstPort: gwlb.Port, ID: uint16(f.ipID.Add(1))})
	sa.Addr = t.Addr
	if unix.Sendto(f.raw, pkt, 0, sa) == nil {
		t.Sent.Add(1)
		f.Stats.Sent.Add(1)
	}
}

// Inject sends inner (any bytes, e.g. an IPv6 packet) to target ti as a
// packet of endpoint ep, with a cookie and port of its own.
func (f *FakeGWLB) Inject(ep, ti int, proto uint16, inner []byte) {
	e := f.Endpoints[ep]
	fl := fakeFlow{cookie: random32(), sport: uint16(10000 + random32()%50000)}
	fl.header = gwlb.AppendHeader(nil, gwlb.Header{Proto: proto, Endpoint: e.ID, Attachment: e.Attachment, Cookie: fl.cookie})
	buf := make([]byte, gwlb.Headroom+len(inner))
	copy(buf[gwlb.Headroom:], inner)
	var sa unix.SockaddrInet4
	f.send(buf, len(inner), fl, f.Targets[ti], &sa)
}

// fromTargets checks the targets' replies and delivers the accepted ones.
func (f *FakeGWLB) fromTargets() {
	buf := make([]byte, 9216)
	for {
		n, from, err := f.udp.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		p := buf[:n]
		h, err := gwlb.Parse(p)
		if err == nil {
			err = gwlb.CheckInner(h, p[h.Len:])
		}
		if errors.Is(err, gwlb.ErrOversize) {
			f.Stats.Oversize.Add(1)
			continue
		}
		var k gwlb.Key
		ok := err == nil
		if ok {
			k, ok = gwlb.KeyOf(p[h.Len:])
		}
		if !ok {
			f.reject(&f.Stats.RejectMalformed, "malformed reply from %v: %v", from, err)
			continue
		}
		f.mu.Lock()
		fl := f.flows[symmetric(k)]
		var want fakeFlow
		if fl != nil {
			want = *fl
		}
		f.mu.Unlock()
		var t *FakeTarget
		if fl != nil {
			t = f.Targets[want.target]
		}
		switch {
		case fl == nil:
			f.reject(&f.Stats.RejectNoFlow, "reply from %v for no flow: %+v", from, k)
			continue
		case from.Addr() != netip.AddrFrom4(t.Addr):
			t.RejectedFrom.Add(1)
			f.reject(&f.Stats.RejectAddr, "reply for %+v from %v, the flow is on %v", k, from, netip.AddrFrom4(t.Addr))
			continue
		case from.Port() != want.sport:
			t.RejectedFrom.Add(1)
			f.reject(&f.Stats.RejectPort, "reply for %+v from port %d, want %d", k, from.Port(), want.sport)
			continue
		case !bytes.Equal(p[:h.Len], want.header):
			t.RejectedFrom.Add(1)
			f.reject(&f.Stats.RejectHeader, "reply for %+v: header %x, want %x (cookie %08x)", k, p[:h.Len], want.header, want.cookie)
			continue
		}
		t.Accepted.Add(1)
		f.Stats.Accepted.Add(1)
		if _, err := f.tun.Write(p[h.Len:]); err == nil {
			f.Stats.Delivered.Add(1)
		}
	}
}

// healthLoop polls every target's /readyz every 200 ms; two results in a
// row change its health (AWS's thresholds are counts of such checks too).
func (f *FakeGWLB) healthLoop() {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		for _, tg := range f.Targets {
			ok := f.check(tg)
			tg.healthChecks.Add(1)
			if ok {
				tg.okRun, tg.failRun = tg.okRun+1, 0
				if tg.okRun >= 2 {
					tg.healthy.Store(true)
				}
			} else {
				tg.bad.Add(1)
				tg.okRun, tg.failRun = 0, tg.failRun+1
				if tg.failRun >= 2 {
					tg.healthy.Store(false)
				}
			}
		}
		select {
		case <-f.done:
			return
		case <-t.C:
		}
	}
}

func (f *FakeGWLB) check(t *FakeTarget) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, t.HealthURL, nil)
	resp, err := f.http.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// WaitHealth waits until target i's health is want.
func (f *FakeGWLB) WaitHealth(i int, want bool, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for f.Targets[i].Healthy() != want {
		if time.Now().After(deadline) {
			return fmt.Errorf("target %d not healthy=%v within %s", i, want, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}
