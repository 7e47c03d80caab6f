// Package lab builds egressd's test lab: three network namespaces joined by
// veth pairs, on documentation addresses only, with servers in the
// "internet" and egressd on the NAT between them.
//
//	 client ns                  nat ns                          inet ns
//	+------------------+       +---------------------------+  +---------------------------+
//	| c0 198.18.1.2/24 |-------| n0 198.18.1.1/24  (private)|  | i0 203.0.113.10/24 (main)  |
//	| default via .1   |       | n1 203.0.113.1/24 (public) |--|    203.0.113.11 (other)    |
//	+------------------+       | forwarding, MASQUERADE,   |  |    203.0.113.12 (banner)   |
//	                           | egressd-iptables, egressd |  |    203.0.113.20 (cidr)     |
//	                           +---------------------------+  |    203.0.113.53 (DNS)      |
//	                                                          +---------------------------+
//
// Servers in inet: HTTPS on 443 of .10, .11 and .20 (certificates for any
// .test name from a CA made at run time), HTTP on 80 of .10 and .11, a TCP
// echo on 7 of .10 and on 22 of .10, .11 and .20, a server-first banner on
// .10:2222 and .12:443, HTTP/3 on UDP 443 of .10 and .11 when a test asks
// (StartQUIC), and DNS for the test names on 203.0.113.53:53. Nothing routes outside the namespaces: the client's only
// route leads to the NAT, the NAT's public side reaches only inet, and inet
// has no route beyond its own subnet, except to a fourth namespace, far
// (198.18.2.2, behind inet over a link of a chosen MTU), when a test adds
// it (AddFar).
//
// Every name is unique to the process and lab (egt-<pid>-<n>-...), and
// Close removes everything, also after a failure; Start registers Close
// with t.Cleanup. A lab left behind by a killed process is removed by the
// next one (namespaces named for a pid that no longer runs).
//
// Needs root, iproute2, iptables; the tests also use curl, openssl and
// tcpdump. Start skips (fails under CI=true) without them.
package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/dnstest"
	"github.com/egressd/egressd/internal/netnstest"
	"github.com/egressd/egressd/internal/testenv"
)

// Addresses and interfaces of the lab.
const (
	ClientAddr   = "198.18.1.2"
	NATPrivate   = "198.18.1.1"
	NATPublic    = "203.0.113.1"
	ServerAddr   = "203.0.113.10" // HTTPS, HTTP, echo, banner on 2222
	OtherAddr    = "203.0.113.11" // HTTPS: a server the test names do not resolve to
	BannerAddr   = "203.0.113.12" // a server-first banner on 443
	CIDRAddr     = "203.0.113.20" // HTTPS, and a TCP echo on 22: for rules by address
	DNSAddr      = "203.0.113.53" // the lab's resolver
	PrivateIF    = "n0"
	PublicIF     = "n1"
	Banner       = "SSH-2.0-egressd-lab-banner\r\n"
	BannerPort   = 2222
	EchoPort     = 7
	DefaultTTL   = 60
	labSubnetLen = 24
)

// TestNames are the names the lab's DNS answers, and their address.
var TestNames = map[string]string{
	"allowed.example.test":  ServerAddr,
	"denied.example.test":   OtherAddr,
	"api.allowed.test":      ServerAddr,
	"other.example.test":    OtherAddr,
	"banner.example.test":   BannerAddr,
	"cidr.example.test":     CIDRAddr,
	"ssh.allowed.test":      ServerAddr,
	"rotating.example.test": ServerAddr,
}

var labSeq atomic.Uint32

// Lab is one running lab.
type Lab struct {
	ID                string // egt-<pid>-<n>
	Client, NAT, Inet *netnstest.NS
	Dir               string // temporary files: CA, configs, captures
	CA                *CA
	DNS               *dnstest.Server
	Servers           *Servers

	mu      sync.Mutex
	closers []func() error
	closed  bool
}

// Start creates a lab for a test and removes it when the test ends.
func Start(t testing.TB) *Lab {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireCommands(t, "ip", "iptables", "iptables-restore", "ip6tables")
	l, err := Create()
	if l != nil {
		t.Cleanup(func() {
			if err := l.Close(); err != nil {
				t.Errorf("lab cleanup: %v", err)
			}
		})
	}
	if err != nil {
		t.Fatalf("lab: %v", err)
	}
	return l
}

// Create builds a lab. On error the partial lab is returned too, for
// Close; Close is always safe to call.
func Create() (*Lab, error) {
	sweepStale()
	id := fmt.Sprintf("egt-%d-%d", os.Getpid(), labSeq.Add(1))
	dir, err := os.MkdirTemp("", id+"-")
	if err != nil {
		return nil, err
	}
	l := &Lab{
		ID:     id,
		Dir:    dir,
		Client: &netnstest.NS{Name: id + "-client"},
		NAT:    &netnstest.NS{Name: id + "-nat"},
		Inet:   &netnstest.NS{Name: id + "-inet"},
	}
	l.onClose(func() error { return os.RemoveAll(dir) })
	if err := l.build(); err != nil {
		return l, err
	}
	return l, nil
}

func (l *Lab) build() error {
	for _, ns := range []*netnstest.NS{l.Client, l.NAT, l.Inet} {
		if err := run("ip", "netns", "add", ns.Name); err != nil {
			return err
		}
		name := ns.Name
		l.onClose(func() error { return run("ip", "netns", "del", name) })
	}
	c, n, i := l.Client.Name, l.NAT.Name, l.Inet.Name
	steps := [][]string{
		{"ip", "link", "add", "c0", "netns", c, "type", "veth", "peer", "name", PrivateIF, "netns", n},
		{"ip", "link", "add", PublicIF, "netns", n, "type", "veth", "peer", "name", "i0", "netns", i},
		{"ip", "-n", c, "addr", "add", ClientAddr + "/24", "dev", "c0"},
		{"ip", "-n", n, "addr", "add", NATPrivate + "/24", "dev", PrivateIF},
		{"ip", "-n", n, "addr", "add", NATPublic + "/24", "dev", PublicIF},
		{"ip", "-n", i, "addr", "add", ServerAddr + "/24", "dev", "i0"},
	}
	for _, a := range []string{OtherAddr, BannerAddr, CIDRAddr, DNSAddr} {
		steps = append(steps, []string{"ip", "-n", i, "addr", "add", a + "/24", "dev", "i0"})
	}
	for _, ns := range []string{c, n, i} {
		steps = append(steps, []string{"ip", "-n", ns, "link", "set", "lo", "up"})
	}
	steps = append(steps,
		[]string{"ip", "-n", c, "link", "set", "c0", "up"},
		[]string{"ip", "-n", n, "link", "set", PrivateIF, "up"},
		[]string{"ip", "-n", n, "link", "set", PublicIF, "up"},
		[]string{"ip", "-n", i, "link", "set", "i0", "up"},
		[]string{"ip", "-n", c, "route", "add", "default", "via", NATPrivate},
		[]string{"ip", "netns", "exec", n, "sysctl", "-qw", "net.ipv4.ip_forward=1"},
	)
	for _, s := range steps {
		if err := run(s[0], s[1:]...); err != nil {
			return err
		}
	}
	ca, err := NewCA(l.Dir)
	if err != nil {
		return err
	}
	l.CA = ca
	if err := l.startDNS(); err != nil {
		return err
	}
	srv, err := startServers(l)
	if err != nil {
		return err
	}
	l.Servers = srv
	return nil
}

func (l *Lab) startDNS() error {
	l.DNS = dnstest.New()
	for name, addr := range TestNames {
		l.DNS.SetAddrs(name, DefaultTTL, netip.MustParseAddr(addr))
	}
	pc, err := l.Inet.ListenPacket("udp", net.JoinHostPort(DNSAddr, "53"))
	if err != nil {
		return fmt.Errorf("DNS server: %w", err)
	}
	ln, err := l.Inet.Listen("tcp", net.JoinHostPort(DNSAddr, "53"))
	if err != nil {
		pc.Close()
		return fmt.Errorf("DNS server: %w", err)
	}
	if err := l.DNS.Start(pc, ln); err != nil {
		return err
	}
	l.onClose(l.DNS.Close)
	return nil
}

// Addresses of the far namespace (AddFar).
const (
	FarAddr    = "198.18.2.2" // a host behind inet
	FarGateway = "198.18.2.1" // inet's side of the link to far
)

// AddFar adds a namespace behind inet, for traffic whose path crosses a
// router beyond the NAT:
//
//	client --- nat --- inet (forwarding) --[i1 MTU mtu | f0 MTU 1500]-- far 198.18.2.2/24
//
// inet's end of the link has the given MTU and far's end keeps 1500, so
// far's TCP announces an MSS for 1500 bytes and a client sending segments
// that large meets inet's "fragmentation needed": an ICMP error that
// crosses the NAT's FORWARD chain toward the client (path MTU discovery).
// The NAT routes 198.18.2.0/24 to inet; inet forwards; far's default
// route is inet. The namespace goes with the lab.
func (l *Lab) AddFar(mtu int) (*netnstest.NS, error) {
	far := &netnstest.NS{Name: l.ID + "-far"}
	if err := run("ip", "netns", "add", far.Name); err != nil {
		return nil, err
	}
	l.onClose(func() error { return run("ip", "netns", "del", far.Name) })
	f, i, n := far.Name, l.Inet.Name, l.NAT.Name
	for _, s := range [][]string{
		{"ip", "link", "add", "i1", "netns", i, "mtu", strconv.Itoa(mtu), "type", "veth", "peer", "name", "f0", "netns", f},
		{"ip", "-n", i, "addr", "add", FarGateway + "/24", "dev", "i1"},
		{"ip", "-n", f, "addr", "add", FarAddr + "/24", "dev", "f0"},
		{"ip", "-n", f, "link", "set", "lo", "up"},
		{"ip", "-n", f, "link", "set", "f0", "up"},
		{"ip", "-n", i, "link", "set", "i1", "up"},
		{"ip", "-n", f, "route", "add", "default", "via", FarGateway},
		{"ip", "-n", n, "route", "add", "198.18.2.0/24", "via", ServerAddr, "dev", PublicIF},
		{"ip", "netns", "exec", i, "sysctl", "-qw", "net.ipv4.ip_forward=1"},
	} {
		if err := run(s[0], s[1:]...); err != nil {
			return nil, err
		}
	}
	return far, nil
}

// onClose registers a cleanup step; Close runs them in reverse order.
func (l *Lab) onClose(fn func() error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closers = append(l.closers, fn)
}

// Close stops everything the lab started and deletes its namespaces. It
// runs every step even when one fails, and is idempotent.
func (l *Lab) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	closers := l.closers
	l.mu.Unlock()
	var errs []error
	for i := len(closers) - 1; i >= 0; i-- {
		if err := closers[i](); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Exec runs a command in a namespace and returns its combined output.
func Exec(ctx context.Context, ns *netnstest.NS, name string, args ...string) ([]byte, error) {
	cmd := Command(ctx, ns, name, args...)
	return cmd.CombinedOutput()
}

// Command returns a command that runs in a namespace (ip netns exec).
func Command(ctx context.Context, ns *netnstest.NS, name string, args ...string) *exec.Cmd {
	full := append([]string{"netns", "exec", ns.Name, name}, args...)
	cmd := exec.CommandContext(ctx, "ip", full...)
	cmd.WaitDelay = 2 * time.Second
	return cmd
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

var staleRE = regexp.MustCompile(`^egt-(\d+)-\d+-(client|nat|inet|far|gwlb|t\d+)$`)

// sweepStale deletes lab namespaces whose creating process is gone (a test
// binary killed before its cleanup ran).
func sweepStale() {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return
	}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		name, _, _ := strings.Cut(sc.Text(), " ")
		m := staleRE.FindStringSubmatch(name)
		if m == nil {
			continue
		}
		pid, _ := strconv.Atoi(m[1])
		if pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat(filepath.Join("/proc", m[1])); err == nil {
			continue // still running
		}
		_ = run("ip", "netns", "del", name)
	}
}

// copyLines reads r line by line into fn until EOF.
func copyLines(r io.Reader, fn func(string)) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fn(sc.Text())
	}
}
