package lab

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/netnstest"
	"github.com/egressd/egressd/internal/testenv"
)

// The GWLB lab: egressd as targets of a (fake) Gateway Load Balancer.
//
//	 client ns                  gwlb ns (FakeGWLB, Go)                 target ns tN (egressd)
//	+---------------------+    +---------------------------------+    +--------------------------+
//	| c0 198.18.1.2/24    |----| g0 198.18.1.1/24 endpoint A     |    | u0 198.18.2.1N/24        |
//	|    198.18.3.2/24    |    |    198.18.3.1/24 endpoint B     |    |   GENEVE :6081, /readyz  |
//	| default via .1.1    |    | fgw: tun, everything from g0    |    |   :8081 (gwlb.health)    |
//	+---------------------+    |   (and, one-arm, inet's replies |    | gwlb0: tun (egressd)     |
//	                           |   to the clients) goes in, is   |    |   egressd-iptables.sh    |
//	                           |   encapsulated to a target      |    |   egressd-gwlb-net.sh    |
//	                           | br0 198.18.2.1/24 (underlay) ---|----| two-arm: p0 203.0.113.2N |--+
//	                           | gi 203.0.113.1/24 --+           |    +--------------------------+  |
//	                           +---------------------|-----------+                                  |
//	                                                 |     inet ns: bridge ib0 203.0.113.10 ... .53  |
//	                                                 +---- (the lab's servers, DNS, a UDP echo) -----+
//
// One-arm: a target sends every allowed packet back to the fake, which
// delivers it (to inet, untranslated: inet routes 198.18.0.0/16 back to the
// fake, which plays the NAT gateway without translating). Two-arm: a target
// masquerades out of p0 into inet itself; the replies come back to it and
// go to the fake through the tunnel. Every link has MTU 9001 (a VPC's), so
// an 8,500-byte packet and its 8,568 bytes of GENEVE fit, and a larger one
// reaches the fake, which drops it.

// Addresses of the GWLB lab.
const (
	GWLBClientB = "198.18.3.2" // the client's address behind endpoint B (A: ClientAddr)
	GWLBFake    = "198.18.2.1" // the fake load balancer on the underlay
	UDPEchoPort = 5000         // a UDP echo on CIDRAddr
	gwlbMTU     = "9001"
)

// Endpoint ids of the fake's two endpoints.
const (
	EndpointA uint64 = 0x0a1b2c3d4e5f6071
	EndpointB uint64 = 0x0b1b2c3d4e5f6072
)

// GWLBOptions shape a GWLB lab.
type GWLBOptions struct {
	Mode    string // one-arm | two-arm
	Targets int    // 2 or 3
}

// GWLBLab is a running GWLB lab. Its Lab has Client and Inet (with the
// usual servers and DNS); NAT is nil.
type GWLBLab struct {
	*Lab
	Mode    string
	GW      *netnstest.NS // the fake load balancer's namespace
	Fake    *FakeGWLB
	Targets []*GWLBTarget
	UDP     *UDPEcho
}

// GWLBTarget is one egressd target.
type GWLBTarget struct {
	Index   int
	NS      *netnstest.NS
	Addr    string // on the underlay
	Public  string // two-arm: its address in inet
	Egressd *Egressd

	sub *Lab // StartEgressd and Script run in the target's namespace through it
}

// StartGWLB builds a GWLB lab for a test and removes it when the test ends.
// The targets are built but run nothing: StartTarget runs egressd on one.
func StartGWLB(t testing.TB, o GWLBOptions) *GWLBLab {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireCommands(t, "ip", "iptables", "iptables-restore", "ip6tables", "sysctl")
	sweepStale()
	id := fmt.Sprintf("egt-%d-%d", os.Getpid(), labSeq.Add(1))
	dir, err := os.MkdirTemp("", id+"-")
	if err != nil {
		t.Fatal(err)
	}
	g := &GWLBLab{Lab: &Lab{ID: id, Dir: dir, Client: &netnstest.NS{Name: id + "-client"}, Inet: &netnstest.NS{Name: id + "-inet"}},
		Mode: o.Mode, GW: &netnstest.NS{Name: id + "-gwlb"}}
	g.onClose(func() error { return os.RemoveAll(dir) })
	t.Cleanup(func() {
		if err := g.Close(); err != nil {
			t.Errorf("GWLB lab cleanup: %v", err)
		}
	})
	if err := g.build(o); err != nil {
		t.Fatalf("GWLB lab: %v", err)
	}
	return g
}

func (g *GWLBLab) addNS(ns *netnstest.NS) error {
	if err := run("ip", "netns", "add", ns.Name); err != nil {
		return err
	}
	name := ns.Name
	g.onClose(func() error { return run("ip", "netns", "del", name) })
	return run("ip", "-n", name, "link", "set", "lo", "up")
}

func runAll(steps [][]string) error {
	for _, s := range steps {
		if err := run(s[0], s[1:]...); err != nil {
			return err
		}
	}
	return nil
}

func (g *GWLBLab) build(o GWLBOptions) error {
	if o.Mode != "one-arm" && o.Mode != "two-arm" {
		return fmt.Errorf("mode %q", o.Mode)
	}
	for _, ns := range []*netnstest.NS{g.Client, g.GW, g.Inet} {
		if err := g.addNS(ns); err != nil {
			return err
		}
	}
	c, w, i := g.Client.Name, g.GW.Name, g.Inet.Name
	steps := [][]string{
		{"ip", "link", "add", "c0", "netns", c, "mtu", gwlbMTU, "type", "veth", "peer", "name", "g0", "netns", w, "mtu", gwlbMTU},
		{"ip", "link", "add", "gi", "netns", w, "mtu", gwlbMTU, "type", "veth", "peer", "name", "ip0", "netns", i, "mtu", gwlbMTU},
		{"ip", "-n", i, "link", "add", "ib0", "mtu", gwlbMTU, "type", "bridge"},
		{"ip", "-n", i, "link", "set", "ip0", "master", "ib0"},
		{"ip", "-n", w, "link", "add", "br0", "mtu", gwlbMTU, "type", "bridge"},
		{"ip", "-n", c, "addr", "add", ClientAddr + "/24", "dev", "c0"},
		{"ip", "-n", c, "addr", "add", GWLBClientB + "/24", "dev", "c0"},
		{"ip", "-n", w, "addr", "add", NATPrivate + "/24", "dev", "g0"},
		{"ip", "-n", w, "addr", "add", "198.18.3.1/24", "dev", "g0"},
		{"ip", "-n", w, "addr", "add", GWLBFake + "/24", "dev", "br0"},
		{"ip", "-n", w, "addr", "add", NATPublic + "/24", "dev", "gi"},
	}
	for _, a := range []string{ServerAddr, OtherAddr, BannerAddr, CIDRAddr, DNSAddr} {
		steps = append(steps, []string{"ip", "-n", i, "addr", "add", a + "/24", "dev", "ib0"})
	}
	steps = append(steps,
		[]string{"ip", "-n", c, "link", "set", "c0", "up"},
		[]string{"ip", "-n", w, "link", "set", "g0", "up"},
		[]string{"ip", "-n", w, "link", "set", "gi", "up"},
		[]string{"ip", "-n", w, "link", "set", "br0", "up"},
		[]string{"ip", "-n", i, "link", "set", "ip0", "up"},
		[]string{"ip", "-n", i, "link", "set", "ib0", "up"},
		[]string{"ip", "-n", c, "route", "add", "default", "via", NATPrivate},
		// inet answers the clients (one-arm: untranslated) and the
		// targets' DNS queries through the fake.
		[]string{"ip", "-n", i, "route", "add", "198.18.0.0/16", "via", NATPublic},
		[]string{"ip", "netns", "exec", w, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"},
	)
	if err := runAll(steps); err != nil {
		return err
	}
	for n := range o.Targets {
		t, err := g.addTarget(n)
		if err != nil {
			return err
		}
		g.Targets = append(g.Targets, t)
	}
	// The fake: everything from the clients, and what inet sends them,
	// goes into its tun device.
	eps := []FakeEndpoint{
		{ID: EndpointA, Attachment: 0x11, Clients: netip.MustParsePrefix("198.18.1.0/24")},
		{ID: EndpointB, Attachment: 0x22, Clients: netip.MustParsePrefix("198.18.3.0/24")},
	}
	var targets []*FakeTarget
	for _, t := range g.Targets {
		targets = append(targets, &FakeTarget{Addr: netip.MustParseAddr(t.Addr).As4(), HealthURL: "http://" + t.Addr + ":8081/readyz"})
	}
	fake, err := startFake(g.GW, netip.MustParseAddr(GWLBFake).As4(), eps, targets)
	if err != nil {
		return err
	}
	g.Fake = fake
	g.onClose(fake.Close)
	if err := runAll([][]string{
		{"ip", "-n", w, "link", "set", "fgw", "mtu", gwlbMTU, "up"},
		{"ip", "netns", "exec", w, "sysctl", "-qw", "net.ipv4.conf.fgw.rp_filter=0", "net.ipv6.conf.fgw.disable_ipv6=1"},
		{"ip", "-n", w, "route", "add", "default", "dev", "fgw", "table", "100"},
		{"ip", "-n", w, "rule", "add", "pref", "100", "iif", "g0", "lookup", "100"},
		{"ip", "-n", w, "rule", "add", "pref", "101", "iif", "gi", "to", "198.18.1.0/24", "lookup", "100"},
		{"ip", "-n", w, "rule", "add", "pref", "102", "iif", "gi", "to", "198.18.3.0/24", "lookup", "100"},
	}); err != nil {
		return err
	}
	ca, err := NewCA(g.Dir)
	if err != nil {
		return err
	}
	g.CA = ca
	if err := g.startDNS(); err != nil {
		return err
	}
	if g.Servers, err = startServers(g.Lab); err != nil {
		return err
	}
	g.UDP, err = startUDPEcho(g.Lab, net.JoinHostPort(CIDRAddr, strconv.Itoa(UDPEchoPort)))
	return err
}

func (g *GWLBLab) addTarget(n int) (*GWLBTarget, error) {
	t := &GWLBTarget{Index: n, NS: &netnstest.NS{Name: fmt.Sprintf("%s-t%d", g.ID, n)},
		Addr: fmt.Sprintf("198.18.2.%d", 11+n)}
	if err := g.addNS(t.NS); err != nil {
		return nil, err
	}
	tn, w, i := t.NS.Name, g.GW.Name, g.Inet.Name
	peer := fmt.Sprintf("u%d", n)
	steps := [][]string{
		{"ip", "link", "add", "u0", "netns", tn, "mtu", gwlbMTU, "type", "veth", "peer", "name", peer, "netns", w, "mtu", gwlbMTU},
		{"ip", "-n", w, "link", "set", peer, "master", "br0"},
		{"ip", "-n", w, "link", "set", peer, "up"},
		{"ip", "-n", tn, "addr", "add", t.Addr + "/24", "dev", "u0"},
		{"ip", "-n", tn, "link", "set", "u0", "up"},
		{"ip", "-n", tn, "route", "add", "default", "via", GWLBFake},
		{"ip", "netns", "exec", tn, "sysctl", "-qw", "net.ipv4.ip_forward=1"},
	}
	if g.Mode == "two-arm" {
		t.Public = fmt.Sprintf("203.0.113.%d", 21+n)
		pp := fmt.Sprintf("p%d", n)
		steps = append(steps,
			[]string{"ip", "link", "add", "p0", "netns", tn, "mtu", gwlbMTU, "type", "veth", "peer", "name", pp, "netns", i, "mtu", gwlbMTU},
			[]string{"ip", "-n", i, "link", "set", pp, "master", "ib0"},
			[]string{"ip", "-n", i, "link", "set", pp, "up"},
			[]string{"ip", "-n", tn, "addr", "add", t.Public + "/24", "dev", "p0"},
			[]string{"ip", "-n", tn, "link", "set", "p0", "up"},
		)
	}
	if err := runAll(steps); err != nil {
		return nil, err
	}
	t.sub = &Lab{ID: t.NS.Name, NAT: t.NS, Dir: filepath.Join(g.Dir, fmt.Sprintf("t%d", n))}
	if err := os.MkdirAll(t.sub.Dir, 0o755); err != nil {
		return nil, err
	}
	g.onClose(t.sub.Close)
	return t, nil
}

// GWLBTargetOptions configure egressd on a target.
type GWLBTargetOptions struct {
	Binary, Policy string
	// Plain: no egressd rules — the GENEVE path forwards everything (the
	// baseline of the benchmarks). Two-arm still masquerades.
	Plain bool
	Drain time.Duration // gwlb.drain; 0: 30s
	Env   []string
}

// StartTarget sets up a target's network (egressd-gwlb-net.sh,
// egressd-iptables.sh) and runs egressd on it with the gwlb section, its
// /readyz on :8081 and its metrics on 127.0.0.1:9145 in its namespace.
func (g *GWLBLab) StartTarget(i int, o GWLBTargetOptions) (*Egressd, error) {
	t := g.Targets[i]
	root, err := Root()
	if err != nil {
		return nil, err
	}
	setup := Command(context.Background(), t.NS, filepath.Join(root, "scripts/gwlb/egressd-gwlb-net.sh"), "apply", "--mode", g.Mode)
	if out, err := setup.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("egressd-gwlb-net.sh: %v: %s", err, out)
	}
	public, masq := "gwlb0", "--no-masquerade"
	if g.Mode == "two-arm" {
		public, masq = "p0", ""
	}
	if o.Plain {
		if g.Mode == "two-arm" {
			if _, err := Exec(context.Background(), t.NS, "iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "p0", "-j", "MASQUERADE"); err != nil {
				return nil, err
			}
		}
	} else {
		args := []string{"apply", "--private", "gwlb0", "--public", public}
		if masq != "" {
			args = append(args, masq)
		}
		if out, err := t.sub.Script(Rules{}, args...); err != nil {
			return nil, fmt.Errorf("egressd-iptables.sh: %v: %s", err, out)
		}
	}
	drain := o.Drain
	if drain == 0 {
		drain = 30 * time.Second
	}
	cfg := fmt.Sprintf("gwlb: {mode: %s, listen: \"%s:6081\", health_listen: \"%s:8081\", drain: %s, endpoints: [\"%x\", \"%x\"]}\n",
		g.Mode, t.Addr, t.Addr, drain, EndpointA, EndpointB)
	e, err := t.sub.StartEgressd(EgressdOptions{Binary: o.Binary, Policy: o.Policy, Config: cfg,
		Env: append([]string{"EGRESSD_METRICS_LISTEN=127.0.0.1:9145"}, o.Env...)})
	if err != nil {
		return nil, err
	}
	t.Egressd = e
	return e, nil
}

// Metric reads one sample of egressd's metrics on target i: name with its
// labels as Prometheus prints them (egressd_gwlb_dropped_total{reason="ipv6"}).
func (g *GWLBLab) Metric(i int, sample string) (float64, error) {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: g.Targets[i].NS.DialContext, DisableKeepAlives: true}}
	resp, err := c.Get("http://127.0.0.1:9145/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, nil // not reported: zero
}

// Readyz is target i's /readyz status code, as the fake's health check
// sees it.
func (g *GWLBLab) Readyz(i int) (int, string, error) {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: g.GW.DialContext, DisableKeepAlives: true}}
	resp, err := c.Get(g.Fake.Targets[i].HealthURL)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

// UDPEcho is a UDP server in inet that echoes each datagram and counts
// them by size.
type UDPEcho struct {
	mu      sync.Mutex
	sizes   []int
	sources []string
}

func startUDPEcho(l *Lab, addr string) (*UDPEcho, error) {
	pc, err := l.Inet.ListenPacket("udp4", addr)
	if err != nil {
		return nil, err
	}
	l.onClose(func() error { return ignoreClosed(pc.Close()) })
	u := &UDPEcho{}
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			u.mu.Lock()
			u.sizes = append(u.sizes, n)
			u.sources = append(u.sources, from.String())
			u.mu.Unlock()
			pc.WriteTo(buf[:n], from)
		}
	}()
	return u, nil
}

// Sources are the senders of the datagrams received so far (ip:port).
func (u *UDPEcho) Sources() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.sources...)
}

// Sizes are the payload sizes received so far.
func (u *UDPEcho) Sizes() []int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]int(nil), u.sizes...)
}
