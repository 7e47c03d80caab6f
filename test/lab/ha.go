package lab

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/egressd/egressd/internal/netnstest"
	"github.com/egressd/egressd/test/fakeec2"
)

// The HA pair's addresses and EC2 names (AddPair).
const (
	StandbyPrivate = "198.18.1.3"     // member b on the client's segment
	StandbyPublic  = "203.0.113.3"    // member b on the public side
	EIP            = "203.0.113.100"  // the pair's "Elastic IP": on the active member's public interface
	FloatingIP     = "203.0.113.50"   // the EIP's private address in the fake's state (on EC2: what both SNAT to)
	EC2Addr        = "203.0.113.30"   // the fake EC2 endpoint, in inet
	ClientTable    = "rtb-0c11e47"    // the client's route table: its default gateway
	TaggedTable    = "rtb-07a66ed"    // a second route table, found by tag, with no lab effect
	TableTag       = "egressd-ha=lab" // the tag of TaggedTable
	EIPAlloc       = "eipalloc-0lab"
)

// Member is one egressd instance of the pair: a NAT namespace with a
// private interface on the client's segment and a public one toward inet.
type Member struct {
	Name             string // "a" or "b"
	NS               *netnstest.NS
	Private, Public  string // its addresses on n0 and n1
	ENI              string // its network interface in the fake EC2
	Dir              string // its files
	vpcPort, pubPort string // the far ends of its links (in client and inet): LinkDown cuts them
	sub              *Lab   // a Lab whose NAT is this member's namespace, for StartEgressd
	pair             *Pair
}

// Pair is the lab rewired for an HA pair (AddPair).
type Pair struct {
	Lab  *Lab
	A, B *Member
	// EC2 is the fake EC2 API at EC2URL: its route changes move the
	// client's default gateway, its address changes move EIP between the
	// members' public interfaces.
	EC2    *fakeec2.Server
	EC2URL string
}

// AddPair turns the lab into an HA pair. The lab's NAT becomes member a
// (active: the routes and the EIP name it) and a second NAT namespace,
// member b, joins it on both sides:
//
//	client ns                                      inet ns
//	c0 198.18.1.2 -- n0 (bridge "vpc")             i0 203.0.113.10 ... -- n1 (bridge "pub")
//	                  +-- va -- a: n0 198.18.1.1     n1 203.0.113.1 -- pa --+
//	                  +-- vb -- b: n0 198.18.1.3     n1 203.0.113.3 -- pb --+
//
// The lab's own veth ends toward the NAT (n0, n1) move into the client and
// inet namespaces as bridge ports, so nothing the lab started (servers,
// addresses) changes. The client's default gateway is the member the
// fake's ClientTable names; EIP (203.0.113.100) sits on the public
// interface of the member the fake's EIPAlloc is associated with, and inet's
// neighbour entry for it names that interface, as EC2's fabric would. The
// fake EC2 listens on EC2Addr:80 in inet, which both members reach on their
// public side. Member b's namespace is named like a lab's NAT, so a lab
// left behind by a killed process is swept with it.
func (l *Lab) AddPair() (*Pair, error) {
	p := &Pair{Lab: l}
	a := &Member{Name: "a", NS: l.NAT, Private: NATPrivate, Public: NATPublic, ENI: "eni-0a", vpcPort: "va", pubPort: "pa", pair: p}
	b := &Member{Name: "b", NS: &netnstest.NS{Name: fmt.Sprintf("egt-%d-%d-nat", os.Getpid(), labSeq.Add(1))},
		Private: StandbyPrivate, Public: StandbyPublic, ENI: "eni-0b", vpcPort: "vb", pubPort: "pb", pair: p}
	p.A, p.B = a, b
	if err := run("ip", "netns", "add", b.NS.Name); err != nil {
		return nil, err
	}
	l.onClose(func() error { return run("ip", "netns", "del", b.NS.Name) })
	for _, m := range []*Member{a, b} {
		m.Dir = filepath.Join(l.Dir, m.Name)
		if err := os.MkdirAll(m.Dir, 0o755); err != nil {
			return nil, err
		}
		m.sub = &Lab{ID: l.ID, NAT: m.NS, Dir: m.Dir, CA: l.CA, DNS: l.DNS, Servers: l.Servers}
		l.onClose(m.sub.Close) // runs before the namespaces go
	}
	c, i, na, nb := l.Client.Name, l.Inet.Name, a.NS.Name, b.NS.Name
	steps := [][]string{
		// The lab's veth ends move out of the NAT to become bridge ports.
		{"ip", "-n", na, "link", "set", PrivateIF, "netns", c},
		{"ip", "-n", na, "link", "set", PublicIF, "netns", i},
		{"ip", "-n", c, "link", "add", "vpc", "type", "bridge"},
		{"ip", "-n", i, "link", "add", "pub", "type", "bridge"},
		{"ip", "-n", c, "link", "set", PrivateIF, "master", "vpc"},
		{"ip", "-n", i, "link", "set", PublicIF, "master", "pub"},
	}
	for _, m := range []*Member{a, b} {
		steps = append(steps,
			[]string{"ip", "link", "add", PrivateIF, "netns", m.NS.Name, "type", "veth", "peer", "name", m.vpcPort, "netns", c},
			[]string{"ip", "link", "add", PublicIF, "netns", m.NS.Name, "type", "veth", "peer", "name", m.pubPort, "netns", i},
			[]string{"ip", "-n", c, "link", "set", m.vpcPort, "master", "vpc"},
			[]string{"ip", "-n", i, "link", "set", m.pubPort, "master", "pub"},
			[]string{"ip", "-n", m.NS.Name, "addr", "add", m.Private + "/24", "dev", PrivateIF},
			[]string{"ip", "-n", m.NS.Name, "addr", "add", m.Public + "/24", "dev", PublicIF},
		)
	}
	for _, s := range [][]string{{c, PrivateIF}, {c, "vpc"}, {c, "va"}, {c, "vb"}, {i, PublicIF}, {i, "pub"}, {i, "pa"}, {i, "pb"},
		{na, PrivateIF}, {na, PublicIF}, {nb, "lo"}, {nb, PrivateIF}, {nb, PublicIF}} {
		steps = append(steps, []string{"ip", "-n", s[0], "link", "set", s[1], "up"})
	}
	steps = append(steps,
		[]string{"ip", "netns", "exec", nb, "sysctl", "-qw", "net.ipv4.ip_forward=1"},
		[]string{"ip", "-n", na, "addr", "add", EIP + "/32", "dev", PublicIF},
		[]string{"ip", "-n", i, "addr", "add", EC2Addr + "/24", "dev", "i0"},
	)
	for _, s := range steps {
		if err := run(s[0], s[1:]...); err != nil {
			return nil, err
		}
	}
	if err := p.pointEIP(a); err != nil {
		return nil, err
	}
	if err := p.startEC2(); err != nil {
		return nil, err
	}
	return p, nil
}

// startEC2 serves the fake EC2 in inet, with the pair's state and hooks
// that apply each change to the lab.
func (p *Pair) startEC2() error {
	f := fakeec2.New()
	f.AddENI(p.A.ENI, p.A.Public, FloatingIP)
	f.AddENI(p.B.ENI, p.B.Public)
	f.AddRouteTable(ClientTable, nil, "0.0.0.0/0", p.A.ENI)
	k, v, _ := strings.Cut(TableTag, "=")
	f.AddRouteTable(TaggedTable, map[string]string{k: v}, "0.0.0.0/0", p.A.ENI)
	f.AddAddress(EIPAlloc, EIP, p.A.ENI, FloatingIP)
	f.OnRoute = func(table, _, eni string) error {
		m := p.member(eni)
		if m == nil {
			return fmt.Errorf("no lab member has %s", eni)
		}
		if table != ClientTable {
			return nil
		}
		return run("ip", "-n", p.Lab.Client.Name, "route", "replace", "default", "via", m.Private)
	}
	f.OnAddress = func(_, eni, _ string) error {
		m := p.member(eni)
		if m == nil {
			return fmt.Errorf("no lab member has %s", eni)
		}
		other := p.A
		if m == p.A {
			other = p.B
		}
		// Off the old holder (it may already be gone), onto the new one,
		// then inet's fabric points at the new one.
		_ = run("ip", "-n", other.NS.Name, "addr", "del", EIP+"/32", "dev", PublicIF)
		if err := run("ip", "-n", m.NS.Name, "addr", "replace", EIP+"/32", "dev", PublicIF); err != nil {
			return err
		}
		return p.pointEIP(m)
	}
	ln, err := p.Lab.Inet.Listen("tcp", net.JoinHostPort(EC2Addr, "80"))
	if err != nil {
		return fmt.Errorf("fake EC2: %w", err)
	}
	srv := &http.Server{Handler: f, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	p.Lab.onClose(func() error { return ignoreClosed(srv.Close()) })
	p.EC2, p.EC2URL = f, "http://"+net.JoinHostPort(EC2Addr, "80")
	return nil
}

// pointEIP makes inet deliver EIP to m's public interface.
func (p *Pair) pointEIP(m *Member) error {
	mac, err := m.mac(PublicIF)
	if err != nil {
		return err
	}
	return run("ip", "-n", p.Lab.Inet.Name, "neigh", "replace", EIP, "lladdr", mac, "dev", "i0", "nud", "permanent")
}

func (p *Pair) member(eni string) *Member {
	for _, m := range []*Member{p.A, p.B} {
		if m.ENI == eni {
			return m
		}
	}
	return nil
}

// Peer is the other member.
func (m *Member) Peer() *Member {
	if m == m.pair.A {
		return m.pair.B
	}
	return m.pair.A
}

func (m *Member) mac(ifname string) (string, error) {
	out, err := exec.Command("ip", "-n", m.NS.Name, "-br", "link", "show", ifname).Output()
	if err != nil {
		return "", fmt.Errorf("ip -n %s link show %s: %w", m.NS.Name, ifname, err)
	}
	f := strings.Fields(string(out))
	if len(f) < 3 {
		return "", fmt.Errorf("ip link show %s: %q", ifname, out)
	}
	return f[2], nil
}

// Gateway is the client's default gateway now.
func (p *Pair) Gateway() string {
	out, _ := exec.Command("ip", "-n", p.Lab.Client.Name, "route", "show", "default").Output()
	f := strings.Fields(string(out))
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "via" {
			return f[i+1]
		}
	}
	return ""
}

// HasEIP reports whether EIP is on m's public interface.
func (m *Member) HasEIP() bool {
	out, _ := exec.Command("ip", "-n", m.NS.Name, "-br", "addr", "show", "dev", PublicIF).Output()
	return strings.Contains(string(out), EIP+"/32")
}

// ApplyRules installs egressd's rules in m, forwarded packets SNATed to
// EIP (both members alike, so a copied connection keeps its mapping).
func (m *Member) ApplyRules() error {
	return m.sub.ApplyRulesArgs("--snat", EIP)
}

// ApplyRulesArgs installs egressd's rules with extra arguments.
func (l *Lab) ApplyRulesArgs(extra ...string) error {
	args := append([]string{"apply", "--private", PrivateIF, "--public", PublicIF}, extra...)
	out, err := l.Script(Rules{}, args...)
	if err != nil {
		return fmt.Errorf("egressd-iptables.sh apply: %v: %s", err, out)
	}
	return nil
}

// StartEgressd starts egressd run in m, with its metrics (and /readyz) on
// 127.0.0.1:9145 of m's namespace, for its HA agent.
func (m *Member) StartEgressd(o EgressdOptions) (*Egressd, error) {
	o.Env = append([]string{"EGRESSD_METRICS_LISTEN=127.0.0.1:9145"}, o.Env...)
	return m.sub.StartEgressd(o)
}

// Exec runs a command in m's namespace.
func (m *Member) Exec(name string, args ...string) ([]byte, error) {
	return Exec(context.Background(), m.NS, name, args...)
}

// LinkDown cuts both of m's links from the outside, as a dead instance's
// network would be: its interfaces stay up but lose their carrier.
func (m *Member) LinkDown() error { return m.links("down") }

// LinkUp restores them.
func (m *Member) LinkUp() error { return m.links("up") }

func (m *Member) links(state string) error {
	l := m.pair.Lab
	if err := run("ip", "-n", l.Client.Name, "link", "set", m.vpcPort, state); err != nil {
		return err
	}
	return run("ip", "-n", l.Inet.Name, "link", "set", m.pubPort, state)
}

// Isolate drops everything between the two members on the client's
// segment (health checks and the connection sync), in both, while each
// still reaches the clients, inet and EC2: a split brain. Undo with
// Isolate(false).
func (p *Pair) Isolate(on bool) error {
	op := "-I"
	if !on {
		op = "-D"
	}
	for _, m := range []*Member{p.A, p.B} {
		peer := m.Peer().Private
		for _, rule := range [][]string{{"INPUT", "-s", peer}, {"OUTPUT", "-d", peer}} {
			args := append([]string{op, rule[0]}, rule[1:]...)
			if _, err := m.Exec("iptables", append(args, "-j", "DROP")...); err != nil {
				return fmt.Errorf("%s: iptables %v: %w", m.Name, args, err)
			}
		}
	}
	return nil
}

// Line is one line a process wrote, with when it was read.
type Line struct {
	At   time.Time
	Text string
}

// Proc is a process the test started in a member's namespace (an HA
// agent, conntrackd). It is killed with the lab if not before.
type Proc struct {
	Name   string
	cmd    *exec.Cmd
	mu     sync.Mutex
	lines  []Line
	change chan struct{}
	exited chan struct{}
	err    error
}

// Start runs bin with args in m's namespace (ip netns exec execs it in
// place, so the PID is the program's), collecting its output lines.
func (m *Member) Start(name string, env []string, bin string, args ...string) (*Proc, error) {
	p := &Proc{Name: m.Name + "/" + name, change: make(chan struct{}), exited: make(chan struct{})}
	p.cmd = Command(context.Background(), m.NS, bin, args...)
	p.cmd.Env = append(os.Environ(), env...)
	if raceEnabled {
		p.cmd.Env = append(p.cmd.Env, "GORACE=halt_on_error=1")
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	p.cmd.Stderr = p.cmd.Stdout
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		copyLines(stdout, p.add)
		err := p.cmd.Wait()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		close(p.exited)
	}()
	m.pair.Lab.onClose(func() error { p.Kill(); return nil })
	return p, nil
}

func (p *Proc) add(line string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lines = append(p.lines, Line{At: time.Now(), Text: line})
	close(p.change)
	p.change = make(chan struct{})
}

// Lines returns what the process wrote so far.
func (p *Proc) Lines() []Line {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Line(nil), p.lines...)
}

// Output is every line so far, joined.
func (p *Proc) Output() string {
	var b strings.Builder
	for _, l := range p.Lines() {
		b.WriteString(l.Text)
		b.WriteByte('\n')
	}
	return b.String()
}

// WaitLine waits for a line containing sub.
func (p *Proc) WaitLine(sub string, timeout time.Duration) (Line, error) {
	deadline := time.After(timeout)
	for {
		p.mu.Lock()
		for _, l := range p.lines {
			if strings.Contains(l.Text, sub) {
				p.mu.Unlock()
				return l, nil
			}
		}
		ch := p.change
		p.mu.Unlock()
		select {
		case <-ch:
		case <-p.exited:
			return Line{}, fmt.Errorf("%s exited (%v) without a line containing %q", p.Name, p.ExitErr(), sub)
		case <-deadline:
			return Line{}, fmt.Errorf("%s: no line containing %q within %s", p.Name, sub, timeout)
		}
	}
}

// Exited is closed when the process has exited.
func (p *Proc) Exited() <-chan struct{} { return p.exited }

// Kill sends SIGKILL to the process (by its PID) and waits for it.
func (p *Proc) Kill() {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// ExitErr is the process's exit status once it has exited.
func (p *Proc) ExitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}
