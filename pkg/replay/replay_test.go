package replay

import (
	"bufio"
	"bytes"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/egressd/egressd/internal/declogtest"
	"github.com/egressd/egressd/internal/pcapgen"
	"github.com/egressd/egressd/pkg/engine"
	"github.com/egressd/egressd/pkg/policy"
)

const testPolicy = `
version: 1
default: deny
rules:
  - {name: web, domains: [allowed.example.test, .api.example.test], ports: [443, 80], action: allow}
  - {name: blocked, domains: [denied.example.test], action: deny}
  - {name: partner, cidrs: [198.51.100.0/24], ports: [22, 443], action: allow}
  - {name: ssh-by-name, domains: [git.example.test], ports: [22], action: allow}
`

// line is one output line, in the schema's words.
type line = declogtest.Words

func mustPolicy(t testing.TB, text string) *policy.Policy {
	t.Helper()
	p, err := policy.Parse("p.yaml", []byte(text), policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// replayBytes runs Run and parses every output line strictly.
func replayBytes(t testing.TB, in []byte, pol, base *policy.Policy, opts Options) ([]line, *Summary) {
	t.Helper()
	var out bytes.Buffer
	sum, err := Run(bytes.NewReader(in), &out, pol, base, opts)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return parseLines(t, out.Bytes()), sum
}

// parseLines reads replay's output strictly (a field the schema lacks is
// an error) into lines of words.
func parseLines(t testing.TB, b []byte) []line {
	t.Helper()
	var lines []line
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		l, err := declogtest.Parse(sc.Bytes())
		if err != nil {
			t.Fatalf("output line %q: %v", sc.Text(), err)
		}
		lines = append(lines, l)
	}
	return lines
}

var (
	client   = netip.MustParseAddr("10.0.1.7")
	server   = netip.MustParseAddr("203.0.113.10")
	other    = netip.MustParseAddr("203.0.113.11")
	partner  = netip.MustParseAddr("198.51.100.9")
	start    = time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC)
	nextPort = uint16(40000)
)

func ap(a netip.Addr, port uint16) netip.AddrPort { return netip.AddrPortFrom(a, port) }

func clientPort() uint16 { nextPort++; return nextPort }

func hello(t testing.TB, name string) []byte {
	t.Helper()
	h, err := pcapgen.ClientHello(name)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// capture builds a pcap with the writer fn is given.
func capture(t testing.TB, fn func(w *pcapgen.Writer)) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := pcapgen.NewWriter(&buf, start)
	if err != nil {
		t.Fatal(err)
	}
	fn(w)
	return buf.Bytes()
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// want is the part of a line a case checks.
type want struct {
	Dst, Name, NameFrom, Verdict, Rule, Reason, DNSCheck, Replay string
	Dport                                                        int
}

func brief(lines []line) []want {
	var out []want
	for _, l := range lines {
		out = append(out, want{Dst: l.Dst, Dport: l.Dport, Name: l.Name, NameFrom: l.NameFrom, Verdict: l.Verdict,
			Rule: l.Rule, Reason: l.Reason, DNSCheck: l.DNSCheck, Replay: l.Replay})
	}
	return out
}

func TestReplayCapture(t *testing.T) {
	pol := mustPolicy(t, testPolicy)
	for _, tc := range []struct {
		name    string
		opts    Options
		traffic func(t *testing.T, w *pcapgen.Writer)
		want    []want
	}{{
		name: "allowed hello, download, close: one line, dns check skipped",
		traffic: func(t *testing.T, w *pcapgen.Writer) {
			c := w.TCPConn(ap(client, clientPort()), ap(server, 443))
			must(t, c.Handshake())
			must(t, c.Send(hello(t, "allowed.example.test"), 0))
			must(t, c.Reply(50000))
			w.Advance(time.Minute) // past the engine's linger: later packets must not start a new decision
			must(t, c.Send([]byte("more application data"), 0))
			must(t, c.Reply(3000))
			must(t, c.Close())
		},
		want: []want{{Dst: "203.0.113.10", Dport: 443, Name: "allowed.example.test", NameFrom: "sni", Verdict: "allow", Rule: "web", Reason: "rule", DNSCheck: "skipped"}},
	}, {
		name: "with --resolve the name is verified, or denied dns-mismatch elsewhere",
		opts: Options{Resolve: Answers{"allowed.example.test": {server}}},
		traffic: func(t *testing.T, w *pcapgen.Writer) {
			for _, dst := range []netip.Addr{server, other} {
				c := w.TCPConn(ap(client, clientPort()), ap(dst, 443))
				must(t, c.Handshake())
				must(t, c.Send(hello(t, "allowed.example.test"), 600))
			}
		},
		want: []want{
			{Dst: "203.0.113.10", Dport: 443, Name: "allowed.example.test", NameFrom: "sni", Verdict: "allow", Rule: "web", Reason: "rule", DNSCheck: "verified"},
			{Dst: "203.0.113.11", Dport: 443, Name: "allowed.example.test", NameFrom: "sni", Verdict: "deny", Reason: "dns-mismatch"},
		},
	}, {
		name: "a name --resolve lacks is denied dns-error",
		opts: Options{Resolve: Answers{"other.example.test": {other}}},
		traffic: func(t *testing.T, w *pcapgen.Writer) {
			c := w.TCPConn(ap(client, clientPort()), ap(server, 443))
			must(t, c.Handshake())
			must(t, c.Send(hello(t, "x.api.example.test"), 0))
		},
		want: []want{{Dst: "203.0.113.10", Dport: 443, Name: "x.api.example.test", NameFrom: "sni", Verdict: "deny", Reason: "dns-error"}},
	}, {
		name: "denied name, HTTP Host, CIDR on the SYN, default on port 22",
		traffic: func(t *testing.T, w *pcapgen.Writer) {
			c := w.TCPConn(ap(client, clientPort()), ap(server, 443))
			must(t, c.Handshake())
			must(t, c.Send(hello(t, "denied.example.test"), 0))
			must(t, c.Reset())
			c = w.TCPConn(ap(client, clientPort()), ap(server, 80))
			must(t, c.Handshake())
			must(t, c.Send([]byte("GET / HTTP/1.1\r\nHost: x.api.example.test\r\n\r\n"), 20))
			must(t, c.Reply(2000))
			c = w.TCPConn(ap(client, clientPort()), ap(partner, 22))
			must(t, c.Handshake())
			must(t, c.Send([]byte("SSH-2.0-OpenSSH_9.6\r\n"), 0))
			c = w.TCPConn(ap(client, clientPort()), ap(server, 22))
			must(t, c.SYN())
			must(t, c.Reset())
		},
		want: []want{
			{Dst: "203.0.113.10", Dport: 443, Name: "denied.example.test", NameFrom: "sni", Verdict: "deny", Rule: "blocked", Reason: "rule"},
			{Dst: "203.0.113.10", Dport: 80, Name: "x.api.example.test", NameFrom: "host", Verdict: "allow", Rule: "web", Reason: "rule", DNSCheck: "skipped"},
			// On port 22 names match by DNS, which replay cannot check:
			// "blocked" (any port) would deny the partner if its address
			// were among denied.example.test's answers.
			{Dst: "198.51.100.9", Dport: 22, NameFrom: "none", Verdict: "allow", Rule: "partner", Reason: "rule", DNSCheck: "skipped"},
			{Dst: "203.0.113.10", Dport: 22, NameFrom: "none", Verdict: "deny", Rule: "default", Reason: "default", DNSCheck: "skipped"},
		},
	}, {
		name: "on a port without a name, --resolve answers match rules by DNS",
		opts: Options{Resolve: Answers{"git.example.test": {server}}},
		traffic: func(t *testing.T, w *pcapgen.Writer) {
			must(t, w.TCPConn(ap(client, clientPort()), ap(server, 22)).SYN())
			must(t, w.TCPConn(ap(client, clientPort()), ap(other, 22)).SYN())
		},
		want: []want{
			{Dst: "203.0.113.10", Dport: 22, Name: "git.example.test", NameFrom: "dns", Verdict: "allow", Rule: "ssh-by-name", Reason: "rule", DNSCheck: "verified"},
			{Dst: "203.0.113.11", Dport: 22, NameFrom: "none", Verdict: "deny", Rule: "default", Reason: "default"},
		},
	}, {
		name: "not TLS, malformed, and a hello that stalls past hello.timeout",
		traffic: func(t *testing.T, w *pcapgen.Writer) {
			c := w.TCPConn(ap(client, clientPort()), ap(server, 443))
			must(t, c.Handshake())
			must(t, c.Send([]byte("HELLO I AM NOT TLS\r\n"), 0))
			c = w.TCPConn(ap(client, clientPort()), ap(server, 443))
			must(t, c.Handshake())
			h := append([]byte(nil), hello(t, "allowed.example.test")...)
			h[5] = 2 // a ServerHello where the ClientHello belongs
			must(t, c.Send(h, 0))
			c = w.TCPConn(ap(client, clientPort()), ap(server, 443))
			must(t, c.Handshake())
			must(t, c.Send(hello(t, "allowed.example.test")[:40], 0))
			w.Advance(4 * time.Second)
			must(t, c.Reset()) // any later packet moves the clock
		},
		want: []want{
			{Dst: "203.0.113.10", Dport: 443, NameFrom: "none", Verdict: "deny", Reason: "not-tls-or-http"},
			{Dst: "203.0.113.10", Dport: 443, NameFrom: "none", Verdict: "deny", Reason: "malformed"},
			{Dst: "203.0.113.10", Dport: 443, NameFrom: "none", Verdict: "deny", Reason: "incomplete"},
		},
	}, {
		name: "midstream flows are reported, not decided; a flow cut by the capture's end too",
		traffic: func(t *testing.T, w *pcapgen.Writer) {
			c := w.TCPConn(ap(client, clientPort()), ap(server, 443))
			must(t, c.Reply(3000)) // the server's segments come first: the client is the receiver
			must(t, c.Send([]byte("application data"), 0))
			c = w.TCPConn(ap(client, clientPort()), ap(server, 443))
			must(t, c.Handshake())
			must(t, c.Send(hello(t, "allowed.example.test")[:100], 0))
		},
		want: []want{
			{Dst: "203.0.113.10", Dport: 443, NameFrom: "none", Replay: "midstream"},
			{Dst: "203.0.113.10", Dport: 443, NameFrom: "none", Replay: "capture-ended"},
		},
	}, {
		// conntrack starts a new connection on a closed one's 5-tuple;
		// the engine, within its linger (10s), gives it the old verdict
		// without a line. After the linger it decides afresh.
		name: "a 5-tuple reused after its connection closed",
		traffic: func(t *testing.T, w *pcapgen.Writer) {
			port := clientPort()
			for _, name := range []string{"allowed.example.test", "denied.example.test", "denied.example.test"} {
				c := w.TCPConn(ap(client, port), ap(server, 443))
				must(t, c.Handshake())
				must(t, c.Send(hello(t, name), 0))
				must(t, c.Close())
				w.Advance(5 * time.Second)
			}
		},
		want: []want{
			{Dst: "203.0.113.10", Dport: 443, Name: "allowed.example.test", NameFrom: "sni", Verdict: "allow", Rule: "web", Reason: "rule", DNSCheck: "skipped"},
			// Within the first's linger: a new connection (another ISN)
			// is decided on its own, as the daemon does.
			{Dst: "203.0.113.10", Dport: 443, Name: "denied.example.test", NameFrom: "sni", Verdict: "deny", Rule: "blocked", Reason: "rule"},
			{Dst: "203.0.113.10", Dport: 443, Name: "denied.example.test", NameFrom: "sni", Verdict: "deny", Rule: "blocked", Reason: "rule"},
		},
	}, {
		name: "UDP: one flow while datagrams keep coming, a new one after 30s idle",
		traffic: func(t *testing.T, w *pcapgen.Writer) {
			c, s := ap(client, clientPort()), ap(server, 443)
			for _, gap := range []time.Duration{0, 20 * time.Second, 29 * time.Second, 31 * time.Second} {
				w.Advance(gap)
				must(t, w.Frame(pcapgen.UDP(c, s, 1, []byte("not quic at all"))))
			}
		},
		want: []want{
			{Dst: "203.0.113.10", Dport: 443, NameFrom: "none", Verdict: "deny", Reason: "not-tls-or-http"},
			{Dst: "203.0.113.10", Dport: 443, NameFrom: "none", Verdict: "deny", Reason: "not-tls-or-http"},
		},
	}, {
		name: "monitor mode: the same decisions, not enforced",
		opts: Options{Engine: engine.Config{Mode: engine.Monitor}},
		traffic: func(t *testing.T, w *pcapgen.Writer) {
			c := w.TCPConn(ap(client, clientPort()), ap(server, 443))
			must(t, c.Handshake())
			must(t, c.Send(hello(t, "denied.example.test"), 0))
		},
		want: []want{{Dst: "203.0.113.10", Dport: 443, Name: "denied.example.test", NameFrom: "sni", Verdict: "deny", Rule: "blocked", Reason: "rule"}},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			in := capture(t, func(w *pcapgen.Writer) { tc.traffic(t, w) })
			lines, sum := replayBytes(t, in, pol, nil, tc.opts)
			if diff := cmp.Diff(tc.want, brief(lines)); diff != "" {
				t.Errorf("lines (-want +got):\n%s", diff)
			}
			for _, l := range lines {
				if l.Enforced != (tc.opts.Engine.Mode == engine.Enforce) {
					t.Errorf("enforced %v in mode %s: %+v", l.Enforced, tc.opts.Engine.Mode, l)
				}
			}
			if sum.Format != FormatPcap || sum.Packets == 0 {
				t.Errorf("summary: %+v", sum)
			}
			for _, l := range lines {
				// Capture time drives hello.timeout (3s): the daemon's
				// ticker decides within a tick (100ms) of it.
				if l.Reason == "incomplete" && (l.LatencyUS < 3_000_000 || l.LatencyUS > 3_100_000) {
					t.Errorf("incomplete after %dus, want within a tick of 3s", l.LatencyUS)
				}
			}
		})
	}
}
