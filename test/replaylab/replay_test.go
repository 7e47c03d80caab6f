// Package replaylab holds the lab test of `egressd replay`: real clients
// through egressd in the lab, a capture of the NAT's private side, and
// replay of that capture, which must give the daemon's lines (without time
// and latency). With EGRESSD_RECORD=1 it also writes the capture and the
// daemon's lines to pkg/replay/testdata/lab/, where a test that needs no
// root replays them on every run. Needs root, like every lab test; under
// CI=true it fails instead of skipping.
package replaylab

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/quic-go/quic-go"

	"github.com/egressd/egressd/internal/declogtest"
	"github.com/egressd/egressd/internal/pcapgen"
	"github.com/egressd/egressd/internal/testenv"
	"github.com/egressd/egressd/pkg/engine"
	"github.com/egressd/egressd/pkg/policy"
	"github.com/egressd/egressd/pkg/replay"
	"github.com/egressd/egressd/test/lab"
)

// Policy and HelloTimeout are what the daemon runs with; the recording
// keeps them beside the capture.
const (
	Policy = `version: 1
default: deny
rules:
  - name: lab-web
    domains: [allowed.example.test, api.allowed.test]
    ports: [443, 80]
    action: allow
  - name: lab-deny
    domains: [denied.example.test]
    action: deny
  - name: lab-cidr
    cidrs: [203.0.113.20/32]
    ports: [443, 22]
    action: allow
  - name: lab-ssh-by-name
    domains: [ssh.allowed.test]
    ports: [22]
    action: allow
`
	HelloTimeout = time.Second
)

// flow is one client action and how to recognise its decision.
type flow struct {
	name  string
	run   func(t *testing.T, l *lab.Lab)
	match func(lab.Decision) bool
}

func dst(addr string, port int, proto string) func(lab.Decision) bool {
	return func(d lab.Decision) bool { return d.Dst == addr && d.Dport == port && d.Proto == proto }
}

func and(a func(lab.Decision) bool, name string) func(lab.Decision) bool {
	return func(d lab.Decision) bool { return a(d) && d.Name == name }
}

func curl(url, host, port, addr string) func(t *testing.T, l *lab.Lab) {
	return func(t *testing.T, l *lab.Lab) {
		l.Curl(context.Background(), url, host, port, addr) // allowed or reset: the decision line tells
	}
}

func dial(t *testing.T, l *lab.Lab, network, addr string) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := l.Client.DialContext(ctx, network, addr)
	if err != nil {
		return nil // refused (a denied SYN is reset): the decision line tells
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(5 * time.Second))
	return c
}

// flows are the lab traffic: one decision each, in this order.
var flows = []flow{
	{"allowed name over TLS (curl)", curl("https://allowed.example.test/", "allowed.example.test", "443", lab.ServerAddr),
		and(dst(lab.ServerAddr, 443, "tcp"), "allowed.example.test")},
	{"denied name over TLS (curl)", curl("https://denied.example.test/", "denied.example.test", "443", lab.ServerAddr),
		and(dst(lab.ServerAddr, 443, "tcp"), "denied.example.test")},
	{"allowed Host over HTTP (curl)", curl("http://allowed.example.test/", "allowed.example.test", "80", lab.ServerAddr),
		dst(lab.ServerAddr, 80, "tcp")},
	{"allowed name at an address it does not resolve to", curl("https://allowed.example.test/", "allowed.example.test", "443", lab.OtherAddr),
		dst(lab.OtherAddr, 443, "tcp")},
	{"hello without SNI", func(t *testing.T, l *lab.Lab) {
		if c := dial(t, l, "tcp", lab.ServerAddr+":443"); c != nil {
			tls.Client(c, &tls.Config{InsecureSkipVerify: true}).Handshake()
		}
	}, and(dst(lab.ServerAddr, 443, "tcp"), "")},
	{"not TLS on 443", func(t *testing.T, l *lab.Lab) {
		if c := dial(t, l, "tcp", lab.ServerAddr+":443"); c != nil {
			io.WriteString(c, "HELLO I AM NOT TLS\r\n")
			io.ReadAll(c)
		}
	}, func(d lab.Decision) bool { return dst(lab.ServerAddr, 443, "tcp")(d) && d.Reason == "not-tls-or-http" }},
	{"CIDR rule on port 22, decided on the SYN", func(t *testing.T, l *lab.Lab) {
		if c := dial(t, l, "tcp", lab.CIDRAddr+":22"); c != nil {
			io.WriteString(c, "ping\n")
			io.ReadFull(c, make([]byte, 5))
		}
	}, dst(lab.CIDRAddr, 22, "tcp")},
	{"port 22 without a rule", func(t *testing.T, l *lab.Lab) { dial(t, l, "tcp", lab.OtherAddr+":22") },
		dst(lab.OtherAddr, 22, "tcp")},
	{"port 22 allowed by a name's DNS answers", func(t *testing.T, l *lab.Lab) { dial(t, l, "tcp", lab.ServerAddr+":22") },
		dst(lab.ServerAddr, 22, "tcp")},
	{"half a hello, then nothing: incomplete", func(t *testing.T, l *lab.Lab) {
		if c := dial(t, l, "tcp", lab.ServerAddr+":443"); c != nil {
			h, err := pcapgen.ClientHello("allowed.example.test")
			if err != nil {
				t.Fatal(err)
			}
			c.Write(h[:len(h)/2])
			io.ReadAll(c) // reset once hello.timeout has passed
		}
	}, func(d lab.Decision) bool { return dst(lab.ServerAddr, 443, "tcp")(d) && d.Reason == "incomplete" }},
	{"QUIC Initial (quic-go)", func(t *testing.T, l *lab.Lab) {
		pc, err := l.Client.ListenPacket("udp", lab.ClientAddr+":0")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		// No QUIC server answers in the lab: the Initial is all egressd
		// needs, and the dial gives up.
		quic.Dial(ctx, pc, &net.UDPAddr{IP: net.ParseIP(lab.ServerAddr), Port: 443},
			&tls.Config{ServerName: "allowed.example.test", InsecureSkipVerify: true, NextProtos: []string{"h3"}},
			&quic.Config{HandshakeIdleTimeout: 2 * time.Second})
	}, dst(lab.ServerAddr, 443, "udp")},
	{"UDP 443 that is not QUIC", func(t *testing.T, l *lab.Lab) {
		if c := dial(t, l, "udp", lab.OtherAddr+":443"); c != nil {
			io.WriteString(c, "not quic at all")
		}
	}, dst(lab.OtherAddr, 443, "udp")},
}

// answers are the lab DNS's, as replay's --resolve.
func answers(t testing.TB) replay.Answers {
	var specs []string
	for name, addr := range lab.TestNames {
		specs = append(specs, name+"="+addr)
	}
	a, err := replay.ParseAnswers(specs...)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestReplayMatchesDaemon(t *testing.T) {
	l := lab.Start(t)
	testenv.RequireCommands(t, "tcpdump", "curl")
	if err := l.ApplyRules(lab.Rules{}); err != nil {
		t.Fatal(err)
	}
	bin, err := lab.BuildEgressd(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	e, err := l.StartEgressd(lab.EgressdOptions{Binary: bin, Policy: Policy, Config: fmt.Sprintf("hello: {timeout: %s}\n", HelloTimeout)})
	if err != nil {
		t.Fatal(err)
	}
	capt, err := l.StartCapture(l.NAT, lab.PrivateIF, "tcp or udp")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range flows {
		f.run(t, l)
		if _, err := e.WaitDecision(f.match, 5*time.Second); err != nil {
			t.Fatalf("%s: %v\nlogs:\n%s", f.name, err, e.Logs())
		}
	}
	// A last packet after every decision, so that the capture's clock
	// passes the last flow's, as the daemon's did.
	last := dial(t, l, "tcp", lab.CIDRAddr+":22")
	if last == nil {
		t.Fatal("the last connection (allowed by a CIDR rule) failed")
	}
	port := last.LocalAddr().(*net.TCPAddr).Port
	if _, err := e.WaitDecision(func(d lab.Decision) bool { return d.Sport == port }, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := capt.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := e.Stop(); err != nil {
		t.Fatalf("egressd stop: %v", err)
	}
	var live bytes.Buffer
	for _, d := range e.Decisions() {
		live.WriteString(d.Raw + "\n")
	}
	pcap, err := os.ReadFile(capt.Path)
	if err != nil {
		t.Fatal(err)
	}

	got := replayCapture(t, pcap)
	compare(t, live.Bytes(), got)

	if os.Getenv("EGRESSD_RECORD") == "1" {
		record(t, pcap, live.Bytes())
	}
}

// replayCapture replays a capture as the daemon in the lab was configured.
func replayCapture(t *testing.T, pcap []byte) []byte {
	t.Helper()
	pol, err := policy.Parse("policy.yaml", []byte(Policy), policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	sum, err := replay.Run(bytes.NewReader(pcap), &out, pol, nil, replay.Options{
		Engine: engine.Config{HelloTimeout: HelloTimeout}, Resolve: answers(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	var s strings.Builder
	sum.WriteText(&s)
	t.Logf("replay summary:\n%s", s.String())
	return out.Bytes()
}

func compare(t *testing.T, live, replayed []byte) {
	t.Helper()
	want, err := declogtest.Canonical(live)
	if err != nil {
		t.Fatal(err)
	}
	got, err := declogtest.Canonical(replayed)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("replay differs from the daemon's lines, time and latency aside (-daemon +replay):\n%s\ndaemon:\n%s\nreplay:\n%s", diff, live, replayed)
	}
}

// record writes the recording replay's unprivileged test reads.
func record(t *testing.T, pcap, live []byte) {
	root, err := lab.Root()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "pkg/replay/testdata/lab")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var resolve strings.Builder
	resolve.WriteString("# The lab DNS's answers when test/replaylab recorded capture.pcap (egressd replay --resolve @resolve.txt).\n")
	for _, name := range slices.Sorted(maps.Keys(lab.TestNames)) {
		fmt.Fprintf(&resolve, "%s=%s\n", name, lab.TestNames[name])
	}
	files := map[string][]byte{
		"capture.pcap": pcap,
		"daemon.jsonl": live,
		"policy.yaml":  []byte(Policy),
		"resolve.txt":  []byte(resolve.String()),
		"egressd.yaml": []byte(fmt.Sprintf("# The daemon's config when test/replaylab recorded capture.pcap and daemon.jsonl.\npolicy: policy.yaml\nhello: {timeout: %s}\n", HelloTimeout)),
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("recorded %d bytes of capture and %d decision lines in %s", len(pcap), bytes.Count(live, []byte("\n")), dir)
}
