package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/testenv"
	"github.com/egressd/egressd/pkg/declog"
	"github.com/egressd/egressd/pkg/engine"
	"github.com/egressd/egressd/pkg/policy"
)

// testDaemon is a daemon with an engine and metrics but no queues, for the
// parts of run that need no netfilter.
func testDaemon(t *testing.T, pol *policy.Policy) (*daemon, *testenv.Buffer) {
	t.Helper()
	logs := &testenv.Buffer{}
	d := &daemon{cfg: &Config{}, log: slog.New(slog.NewJSONHandler(logs, nil)), expiryKick: make(chan struct{}, 1)}
	var err error
	if d.engine, err = engine.New(engine.Config{}, pol, 1); err != nil {
		t.Fatal(err)
	}
	d.decisions = declog.NewWriter(declog.WriterConfig{Outputs: []io.Writer{io.Discard}})
	d.metrics = newMetrics(d)
	d.loadedAt.Store(time.Now())
	d.ctx, d.cancel = context.WithCancelCause(context.Background())
	t.Cleanup(func() { d.cancel(nil); d.wg.Wait() })
	return d, logs
}

// TestDaemonDropsExpiredRules: the running daemon swaps in the policy
// without a rule at the rule's expires, with no reload, logs it, counts it,
// and exposes the next expiry.
func TestDaemonDropsExpiredRules(t *testing.T) {
	expires := time.Now().Add(700 * time.Millisecond).UTC().Truncate(time.Second).Add(time.Second)
	text := fmt.Sprintf(`version: 1
default: deny
rules:
  - {name: always, domains: [always.example], action: allow}
  - {name: break-glass, domains: [vendor.example], action: allow, expires: %s}
`, expires.Format(time.RFC3339))
	pol, err := policy.Parse("p.yaml", []byte(text), policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	d, logs := testDaemon(t, pol)
	q := policy.Query{Src: mustAddr("10.0.1.7"), Dst: mustAddr("203.0.113.10"), Port: 443, Proto: policy.TCP, Inspected: true, Name: "vendor.example"}
	if got := d.engine.Policy().Decide(q); got.Rule != "break-glass" {
		t.Fatalf("before expiry: %+v", got)
	}
	if n, _ := metricValue(t, d, "egressd_policy_next_expiry_timestamp_seconds"); n != float64(expires.Unix()) {
		t.Errorf("next expiry metric %v, want %d", n, expires.Unix())
	}
	d.goRun("policy expiry", d.expireRules)
	deadline := time.Now().Add(5 * time.Second)
	for d.engine.Policy() == pol && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	now := d.engine.Policy()
	if now == pol {
		t.Fatal("the rule did not expire within 5s")
	}
	if time.Now().Before(expires) {
		t.Errorf("the rule was dropped before its expires (%s)", expires)
	}
	if got := now.Decide(q); got.Rule != policy.DefaultRule || now.Hash() != pol.Hash() {
		t.Errorf("after expiry: %+v, hash %s (was %s)", got, now.Hash(), pol.Hash())
	}
	if !strings.Contains(logs.String(), `"msg":"rule expired: no longer in force","rule":"break-glass","file":"p.yaml","line":5`) {
		t.Errorf("no log line for the expiry:\n%s", logs)
	}
	if n, _ := metricValue(t, d, "egressd_policy_rules_expired_total"); n != 1 {
		t.Errorf("egressd_policy_rules_expired_total = %v, want 1", n)
	}
	if n, _ := metricValue(t, d, "egressd_policy_expired_rules"); n != 1 {
		t.Errorf("egressd_policy_expired_rules = %v, want 1", n)
	}
	if _, ok := metricValue(t, d, "egressd_policy_next_expiry_timestamp_seconds"); ok {
		t.Errorf("a next expiry is exposed when no rule in force expires")
	}
}

// metricValue is the value of the one series of a metric the daemon
// exposes (a counter or gauge), and whether it is there.
func metricValue(t *testing.T, d *daemon, name string) (float64, bool) {
	t.Helper()
	fams, err := d.metrics.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		if len(f.Metric) != 1 {
			t.Fatalf("%s has %d series", name, len(f.Metric))
		}
		m := f.Metric[0]
		if m.Counter != nil {
			return m.Counter.GetValue(), true
		}
		return m.Gauge.GetValue(), true
	}
	return 0, false
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

// TestCheckExpiry: check names the expired rules and those expiring within
// a week, each as file:line, and still passes.
func TestCheckExpiry(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "p.yaml")
	os.WriteFile(path, []byte(`version: 1
default: deny
rules:
  - {name: old-incident, domains: [a.example], action: allow, expires: 2026-11-01T00:00:00Z}
  - {name: break-glass, domains: [b.example], action: allow, expires: 2026-12-24T06:00:00Z}
  - {name: trial, domains: [c.example], action: allow, expires: 2027-03-01T00:00:00Z}
  - {name: always, domains: [d.example], action: allow}
`), 0o644)
	code, out, errOut := runCmd(t, "check", "--at", "2026-12-20T00:00:00Z", path)
	want := path + ": ok: 3 rules (3 domains, 0 cidrs), default deny, 0 tests passed, sha256 "
	if code != 0 || !strings.HasPrefix(out, want) {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	wantLines := []string{
		path + `:4: warning: rule "old-incident" expired at 2026-11-01T00:00:00Z and is not in force; remove it`,
		path + `:5: note: rule "break-glass" expires at 2026-12-24T06:00:00Z, in 4d 6h`,
	}
	if len(lines) != 3 || lines[1] != wantLines[0] || lines[2] != wantLines[1] {
		t.Errorf("check's expiry lines:\n%s\nwant:\n%s", strings.Join(lines[1:], "\n"), strings.Join(wantLines, "\n"))
	}
	if code, _, errOut := runCmd(t, "check", "--at", "tomorrow", path); code != 2 || !strings.Contains(errOut, "RFC 3339") {
		t.Errorf("a bad --at: exit %d, %q", code, errOut)
	}
	// explain at an instant after the break-glass rule's expiry.
	args := []string{"explain", "--policy", path, "--src", "10.0.1.7", "--dst", "203.0.113.10", "--port", "443", "--name", "b.example"}
	if code, out, _ := runCmd(t, append(args, "--at", "2026-12-24T05:59:59Z")...); code != 0 || !strings.Contains(out, `"rule":"break-glass"`) {
		t.Errorf("explain before the expiry: exit %d %s", code, out)
	}
	if code, out, _ := runCmd(t, append(args, "--at", "2026-12-24T06:00:00Z")...); code != 1 || !strings.Contains(out, `"rule":"default"`) {
		t.Errorf("explain at the expiry: exit %d %s", code, out)
	}
}
