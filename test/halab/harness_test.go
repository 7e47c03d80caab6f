package halab

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/testenv"
	"github.com/egressd/egressd/pkg/ha"
	"github.com/egressd/egressd/test/fakeec2"
	"github.com/egressd/egressd/test/lab"
)

// policy is both members' policy: the lab's allowed names (and the long
// download's) on 443, a deny of denied.example.test.
const policy = `version: 1
default: deny
rules:
  - name: lab-web
    domains: [allowed.example.test, dl.allowed.test]
    ports: [443]
    action: allow
  - name: lab-deny
    domains: [denied.example.test]
    action: deny
tests:
  - {src: 198.18.1.2, name: allowed.example.test, port: 443, expect: allow}
  - {src: 198.18.1.2, name: denied.example.test, port: 443, expect: deny}
`

// Addresses of the download server (in inet) and its name.
const (
	dlAddr = "203.0.113.40"
	dlName = "dl.allowed.test"
)

// timing is the agents' timing.
type timing struct {
	interval, timeout, holdDown time.Duration
	threshold                   int
}

// fast is what the tests use: detection in 3 × 200 ms, a 2 s hold-down.
var fast = timing{interval: 200 * time.Millisecond, timeout: 150 * time.Millisecond, holdDown: 2 * time.Second, threshold: 3}

func (tm timing) detect() time.Duration { return tm.interval * time.Duration(tm.threshold) }

// member is one member with what runs in it.
type member struct {
	*lab.Member
	preferred bool
	cfg       string // the agent's config file
	egressd   *lab.Egressd
	agent     *lab.Proc
	ctd       *lab.Proc
	past      []string // the output of earlier runs, for the failure log
}

// haLab is a lab with an HA pair running: on each member egressd's rules
// (SNAT to the EIP), egressd, conntrackd and egressd ha.
type haLab struct {
	t    *testing.T
	l    *lab.Lab
	p    *lab.Pair
	a, b *member
	tm   timing
}

func startHA(t *testing.T, tm timing) *haLab {
	t.Helper()
	testenv.RequireRoot(t)
	testenv.RequireCommands(t, "conntrackd", "conntrack", "ip", "iptables")
	l := lab.Start(t)
	p, err := l.AddPair()
	if err != nil {
		t.Fatalf("pair: %v", err)
	}
	h := &haLab{t: t, l: l, p: p, a: &member{Member: p.A, preferred: true}, b: &member{Member: p.B}, tm: tm}
	if err := startDownloadServer(t, l); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.dumpOnFailure)
	for _, m := range []*member{h.a, h.b} {
		if err := m.ApplyRules(); err != nil {
			t.Fatalf("%s: %v", m.Name, err)
		}
		h.writeConfig(m)
		h.startConntrackd(m)
		h.startEgressd(m)
		h.startAgent(m)
	}
	h.waitSteady(h.a)
	return h
}

// writeConfig writes m's config for egressd ha (its ha: section).
func (h *haLab) writeConfig(m *member) {
	root, err := lab.Root()
	if err != nil {
		h.t.Fatal(err)
	}
	peer := m.Peer()
	m.cfg = filepath.Join(m.Dir, "ha.yaml")
	text := fmt.Sprintf(`policy: %s
metrics: {listen: "127.0.0.1:9145"}
log: {format: json, level: info}
ha:
  enabled: true
  member: %s
  eni: %s
  preferred: %v
  failback: true
  listen: "%s:9146"
  interval: %s
  timeout: %s
  failure_threshold: %d
  hold_down: %s
  route_tables: [%s]
  route_table_tag: %s
  peer: {name: %s, url: "http://%s:9146", eni: %s}
  eip: {allocation_id: %s, private_ip: %s}
  snat_address: %s
  ec2: {region: us-east-1, endpoint: "%s", timeout: 1s, poll: 1s, max_backoff: 1s}
  local:
    rules_check: [%s, status]
    rules_every: 1s
    interfaces: [n0, n1]
  conntrackd:
    config: %s
    local: %s
    peer: %s
    interface: n0
    ignore: [%s, %s]
    dir: %s
    log_file: %s
    hash_limit: 131072
`, filepath.Join(m.Dir, "policy.yaml"), m.Name, m.ENI, m.preferred, m.Private, h.tm.interval, h.tm.timeout, h.tm.threshold, h.tm.holdDown,
		lab.ClientTable, lab.TableTag, peer.Name, peer.Private, peer.ENI, lab.EIPAlloc, lab.FloatingIP, lab.EIP, h.p.EC2URL,
		filepath.Join(root, "scripts/iptables/egressd-iptables.sh"),
		filepath.Join(m.Dir, "conntrackd.conf"), m.Private, peer.Private, m.Private, m.Public, m.Dir, filepath.Join(m.Dir, "conntrackd.log"))
	if err := os.WriteFile(m.cfg, []byte(text), 0o644); err != nil {
		h.t.Fatal(err)
	}
}

func (h *haLab) startConntrackd(m *member) {
	h.t.Helper()
	conf := filepath.Join(m.Dir, "conntrackd.conf")
	if out, err := m.Exec(egressdBin, "ha", "conntrackd-config", "--config", m.cfg, "--out", conf); err != nil {
		h.t.Fatalf("%s: egressd ha conntrackd-config: %v: %s", m.Name, err, out)
	}
	os.Remove(filepath.Join(m.Dir, "conntrackd.lock")) // left by a killed one
	p, err := m.Start("conntrackd", nil, "conntrackd", "-C", conf)
	if err != nil {
		h.t.Fatal(err)
	}
	m.ctd = p
	// Ready once its control socket answers.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := m.Exec("conntrackd", "-C", conf, "-s"); err == nil {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("%s: conntrackd does not answer: %s", m.Name, p.Output())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (h *haLab) startEgressd(m *member) {
	h.t.Helper()
	e, err := m.StartEgressd(lab.EgressdOptions{Binary: egressdBin, Policy: policy})
	if err != nil {
		h.t.Fatalf("%s: %v", m.Name, err)
	}
	m.egressd = e
}

func (h *haLab) startAgent(m *member) {
	h.t.Helper()
	env := []string{"AWS_ACCESS_KEY_ID=" + fakeec2.AccessKey, "AWS_SECRET_ACCESS_KEY=" + fakeec2.SecretKey,
		"AWS_EC2_METADATA_DISABLED=true", "AWS_CONFIG_FILE=/nonexistent", "AWS_SHARED_CREDENTIALS_FILE=/nonexistent"}
	p, err := m.Start("agent", env, egressdBin, "ha", "run", "--config", m.cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	m.agent = p
	if _, err := p.WaitLine(`"msg":"egressd ha running"`, 10*time.Second); err != nil {
		h.t.Fatalf("%s: %v\n%s", m.Name, err, p.Output())
	}
}

// kill ends every process of m at once (SIGKILL, by PID): its kernel (the
// namespace, its rules and conntrack table) stays.
func (h *haLab) kill(m *member) {
	m.past = append(m.past, "--- agent:\n"+m.agent.Output(), "--- conntrackd:\n"+m.ctd.Output(), "--- egressd:\n"+m.egressd.Logs())
	m.egressd.Kill()
	m.agent.Kill()
	m.ctd.Kill()
}

// status asks m's agent for its /status, from inside m's namespace.
func (h *haLab) status(m *member) (*ha.Status, error) {
	c := &http.Client{Timeout: time.Second, Transport: &http.Transport{DialContext: m.NS.DialContext, DisableKeepAlives: true}}
	return ha.FetchStatus(context.Background(), c, "http://"+m.Private+":9146")
}

// waitSteady waits until both members are ready, see each other, and
// active is the active one.
func (h *haLab) waitSteady(active *member) {
	h.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		sa, ea := h.status(h.a)
		sb, eb := h.status(h.b)
		if ea == nil && eb == nil && sa.Ready && sb.Ready && sa.Peer.Up && sb.Peer.Up {
			want := map[*member]string{h.a: sa.Role, h.b: sb.Role}
			if want[active] == "active" && want[active.peer(h)] == "standby" {
				return
			}
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("the pair is not steady with %s active: a %+v (%v), b %+v (%v)", active.Name, sa, ea, sb, eb)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (m *member) peer(h *haLab) *member {
	if m == h.a {
		return h.b
	}
	return h.a
}

// waitOn waits until the fake's route tables and EIP name m, and the lab
// shows it (the client's gateway, the EIP on m's interface).
func (h *haLab) waitOn(m *member, within time.Duration) time.Duration {
	h.t.Helper()
	start := time.Now()
	for time.Since(start) < within {
		if h.onMember(m) {
			return time.Since(start)
		}
		time.Sleep(10 * time.Millisecond)
	}
	h.t.Fatalf("routes and EIP not on %s within %s: client table %s, tagged %s, eip %+v, gateway %s",
		m.Name, within, h.p.EC2.Route(lab.ClientTable, "0.0.0.0/0"), h.p.EC2.Route(lab.TaggedTable, "0.0.0.0/0"),
		h.p.EC2.Address(lab.EIPAlloc), h.p.Gateway())
	return 0
}

func (h *haLab) onMember(m *member) bool {
	f := h.p.EC2
	return f.Route(lab.ClientTable, "0.0.0.0/0") == m.ENI && f.Route(lab.TaggedTable, "0.0.0.0/0") == m.ENI &&
		f.Address(lab.EIPAlloc).ENI == m.ENI && h.p.Gateway() == m.Private && m.HasEIP() && !m.peer(h).HasEIP()
}

func (h *haLab) dumpOnFailure() {
	if !h.t.Failed() {
		return
	}
	for _, m := range []*member{h.a, h.b} {
		for _, s := range m.past {
			h.t.Logf("member %s, earlier run %s", m.Name, s)
		}
		if m.agent != nil {
			h.t.Logf("member %s agent:\n%s", m.Name, m.agent.Output())
		}
		if m.egressd != nil {
			h.t.Logf("member %s egressd:\n%s", m.Name, m.egressd.Logs())
		}
		if out, err := m.Exec("conntrack", "-L"); err == nil {
			h.t.Logf("member %s conntrack -L:\n%s", m.Name, out)
		}
		if b, err := os.ReadFile(filepath.Join(m.Dir, "conntrackd.log")); err == nil {
			h.t.Logf("member %s conntrackd.log:\n%s", m.Name, b)
		}
	}
	for _, c := range h.p.EC2.Calls() {
		if c.Action != "DescribeRouteTables" && c.Action != "DescribeAddresses" {
			h.t.Logf("ec2 %s %s from %s: %v (%s)", c.At.Format("15:04:05.000"), c.Action, c.From, c.Params, c.Error)
		}
	}
}

// startDownloadServer serves dl.allowed.test on dlAddr:443 in inet: GET
// /?chunks=N&every=D answers N chunks of 16 KiB, one every D, chunk i
// filled with byte i, so the client can tell a byte lost or out of place.
func startDownloadServer(t *testing.T, l *lab.Lab) error {
	if out, err := lab.Exec(context.Background(), l.Inet, "ip", "addr", "add", dlAddr+"/24", "dev", "i0"); err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	l.DNS.SetAddrs(dlName, lab.DefaultTTL, netip.MustParseAddr(dlAddr))
	ln, err := l.Inet.Listen("tcp", net.JoinHostPort(dlAddr, "443"))
	if err != nil {
		return err
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, ErrorLog: log.New(io.Discard, "", 0),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			chunks, _ := strconv.Atoi(r.URL.Query().Get("chunks"))
			every, _ := time.ParseDuration(r.URL.Query().Get("every"))
			w.Header().Set("Content-Length", strconv.Itoa(chunks*chunkSize))
			buf := make([]byte, chunkSize)
			for i := range chunks {
				for j := range buf {
					buf[j] = byte(i)
				}
				if _, err := w.Write(buf); err != nil {
					return
				}
				w.(http.Flusher).Flush()
				time.Sleep(every)
			}
		})}
	go srv.Serve(tls.NewListener(ln, l.CA.ServerConfig()))
	t.Cleanup(func() { srv.Close() })
	return nil
}

const chunkSize = 16 << 10

// download is one long download's outcome.
type download struct {
	Bytes    int
	Err      error
	Start    time.Time
	End      time.Time
	MaxGap   time.Duration // the longest wait between two reads: the stall
	GapEnded time.Time     // when that wait ended
}

// startDownload fetches chunks × 16 KiB from the download server, one
// chunk every `every`, from the client namespace, and reports on done.
func startDownload(l *lab.Lab, chunks int, every time.Duration) <-chan download {
	done := make(chan download, 1)
	go func() {
		d := download{Start: time.Now()}
		defer func() { d.End = time.Now(); done <- d }()
		c := &http.Client{Timeout: time.Duration(chunks)*every + 20*time.Second, Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return l.Client.DialContext(ctx, network, net.JoinHostPort(dlAddr, "443"))
			},
			TLSClientConfig:   &tls.Config{RootCAs: l.CA.Pool, ServerName: dlName},
			DisableKeepAlives: true,
		}}
		resp, err := c.Get(fmt.Sprintf("https://%s/?chunks=%d&every=%s", dlName, chunks, every))
		if err != nil {
			d.Err = err
			return
		}
		defer resp.Body.Close()
		buf := make([]byte, 4096)
		last := time.Now()
		for {
			n, err := resp.Body.Read(buf)
			now := time.Now()
			for i := range n {
				if want := byte((d.Bytes + i) / chunkSize); buf[i] != want {
					d.Err = fmt.Errorf("byte %d is %d, want %d", d.Bytes+i, buf[i], want)
					return
				}
			}
			if n > 0 {
				if gap := now.Sub(last); gap > d.MaxGap {
					d.MaxGap, d.GapEnded = gap, now
				}
				last = now
				d.Bytes += n
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				d.Err = err
				return
			}
		}
		if d.Bytes != chunks*chunkSize {
			d.Err = fmt.Errorf("%d bytes, want %d", d.Bytes, chunks*chunkSize)
		}
	}()
	return done
}

// probe is one TLS handshake attempt from the client.
type probe struct {
	At   time.Time
	Took time.Duration
	OK   bool // the handshake completed: the flow crossed with its hello
	Err  string
}

// prober opens a TLS connection to name at addr every `every` until
// stopped, each with a 1 s timeout.
type prober struct {
	mu     sync.Mutex
	probes []probe
	stop   chan struct{}
	wg     sync.WaitGroup
}

func startProber(l *lab.Lab, name, addr string, every time.Duration) *prober {
	pr := &prober{stop: make(chan struct{})}
	pr.wg.Add(1)
	go func() {
		defer pr.wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-pr.stop:
				return
			case <-t.C:
			}
			pr.wg.Add(1)
			go func() {
				defer pr.wg.Done()
				p := probe{At: time.Now()}
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				defer cancel()
				c, err := l.Client.DialContext(ctx, "tcp", net.JoinHostPort(addr, "443"))
				if err == nil {
					tc := tls.Client(c, &tls.Config{RootCAs: l.CA.Pool, ServerName: name})
					err = tc.HandshakeContext(ctx)
					tc.Close()
				}
				p.Took, p.OK = time.Since(p.At), err == nil
				if err != nil {
					p.Err = err.Error()
				}
				pr.mu.Lock()
				pr.probes = append(pr.probes, p)
				pr.mu.Unlock()
			}()
		}
	}()
	return pr
}

// Stop stops the prober and returns every probe, in start order.
func (pr *prober) Stop() []probe {
	close(pr.stop)
	pr.wg.Wait()
	pr.mu.Lock()
	defer pr.mu.Unlock()
	out := append([]probe(nil), pr.probes...)
	slices.SortFunc(out, func(a, b probe) int { return a.At.Compare(b.At) })
	return out
}

// conntrack lists m's TCP connections to dst:443 (conntrack -L).
func conntrackTo(m *member, dst string) (string, error) {
	out, err := m.Exec("conntrack", "-L", "-p", "tcp", "-d", dst, "--dport", "443")
	return string(out), err
}

// agentLine finds the first line of m's agent after t containing sub and
// returns its time (the log's "time" field).
func agentLine(m *member, after time.Time, sub string) (time.Time, bool) {
	for _, l := range m.agent.Lines() {
		if !strings.Contains(l.Text, sub) {
			continue
		}
		var rec struct {
			Time time.Time `json:"time"`
		}
		if json.Unmarshal([]byte(l.Text), &rec) == nil && rec.Time.After(after) {
			return rec.Time, true
		}
	}
	return time.Time{}, false
}
