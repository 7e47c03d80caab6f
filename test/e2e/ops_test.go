package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/egressd/egressd/test/lab"
)

const metricsEnv = "EGRESSD_METRICS_LISTEN=127.0.0.1:9145"

// natGet fetches a path of egressd's metrics server, inside the NAT
// namespace.
func natGet(t *testing.T, s *setup, path string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: s.NAT.DialContext}}
	resp, err := c.Get("http://127.0.0.1:9145" + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metric returns a sample's value from a Prometheus text exposition, by its
// name and labels as they appear ("egressd_decisions_total{...}").
func metric(t *testing.T, body, series string) float64 {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, series+" ") {
			v, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimPrefix(line, series)), 64)
			if err != nil {
				t.Fatalf("%q: %v", line, err)
			}
			return v
		}
	}
	return 0
}

// writeAtomically replaces a file as an editor or the SSM push does: write
// beside, then rename over.
func writeAtomically(t *testing.T, path, text string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".new")
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func policySHA(t *testing.T, s *setup) string {
	t.Helper()
	code, body := natGet(t, s, "/readyz")
	var r struct {
		Status       string `json:"status"`
		PolicySHA256 string `json:"policy_sha256"`
	}
	if err := json.Unmarshal([]byte(body), &r); err != nil || code != 200 || r.Status != "ready" {
		t.Fatalf("/readyz: %d %s (%v)", code, body, err)
	}
	return r.PolicySHA256
}

// TestHotReload: an edited policy applies to new flows within 2s, flows
// already allowed keep working, and a broken policy is refused with the
// old one staying in force.
func TestHotReload(t *testing.T) {
	s := start(t, labPolicy, lab.Rules{}, lab.EgressdOptions{Env: []string{metricsEnv}})
	ctx := context.Background()
	first := policySHA(t, s)

	// An allowed flow that stays open across the reloads.
	conn := dial(t, s, lab.ServerAddr+":443")
	tc := tls.Client(conn, &tls.Config{ServerName: "allowed.example.test", RootCAs: s.CA.Pool, NextProtos: []string{"http/1.1"}})
	get := func() error {
		tc.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(tc, "GET / HTTP/1.1\r\nHost: allowed.example.test\r\n\r\n"); err != nil {
			return err
		}
		buf := make([]byte, 4096)
		n, err := tc.Read(buf)
		if err == nil && !strings.Contains(string(buf[:n]), "200 OK") {
			err = fmt.Errorf("response %q", buf[:n])
		}
		return err
	}
	if err := get(); err != nil {
		t.Fatal(err)
	}

	// Edit: allowed.example.test is now denied.
	edited := strings.Replace(labPolicy, "domains: [denied.example.test]", "domains: [denied.example.test, allowed.example.test]", 1)
	edited = strings.Replace(edited, "name: allowed.example.test, port: 443, expect: allow", "name: allowed.example.test, port: 443, expect: deny", 1)
	writeAtomically(t, s.E.PolicyPath, edited)
	changed := time.Now()
	for {
		r := s.Curl(ctx, "https://allowed.example.test/", "allowed.example.test", "443", lab.ServerAddr)
		if r.Exit != 0 {
			break
		}
		if time.Since(changed) > 2*time.Second {
			t.Fatalf("2s after the edit the newly denied name still passes: %s", r)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := get(); err != nil {
		t.Fatalf("the flow allowed before the reload: %v", err)
	}
	second := policySHA(t, s)
	if second == first {
		t.Fatal("/readyz still reports the first policy's hash")
	}

	// A broken policy: refused, logged with file:line, the previous stays.
	writeAtomically(t, s.E.PolicyPath, edited+"  - {name: broken, domains: [\"*.*.bad\"], action: allow}\n")
	if err := s.E.WaitLog("policy reload refused", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(s.E.Logs(), "policy.yaml:") {
		t.Errorf("the refusal does not name file:line:\n%s", s.E.Logs())
	}
	if policySHA(t, s) != second {
		t.Error("a broken policy replaced the one in force")
	}
	_, body := natGet(t, s, "/metrics")
	if v := metric(t, body, `egressd_policy_reload_total{result="error"}`); v < 1 {
		t.Errorf("reload errors counted %v", v)
	}
	if v := metric(t, body, `egressd_policy_reload_total{result="ok"}`); v < 1 {
		t.Errorf("good reloads counted %v", v)
	}
	if r := s.Curl(ctx, "https://allowed.example.test/", "allowed.example.test", "443", lab.ServerAddr); r.Exit == 0 {
		t.Errorf("after the refused reload the edited policy no longer applies: %s", r)
	}

	// SIGHUP reloads too (the file is fixed, then a signal, no watch event
	// needed: the watcher also fires, both are fine).
	writeAtomically(t, s.E.PolicyPath, labPolicy)
	s.E.Signal(syscall.SIGHUP)
	deadline := time.Now().Add(3 * time.Second)
	for policySHA(t, s) != first {
		if time.Now().After(deadline) {
			t.Fatal("the original policy did not come back")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestMonitorMode: nothing is blocked, and the lines say what would have been.
func TestMonitorMode(t *testing.T) {
	s := start(t, labPolicy, lab.Rules{}, lab.EgressdOptions{Args: []string{"--mode", "monitor"}})
	r := s.Curl(context.Background(), "https://denied.example.test/", "denied.example.test", "443", lab.ServerAddr)
	if r.Exit != 0 {
		t.Fatalf("monitor mode blocked a flow: %s", r)
	}
	d, err := s.E.WaitDecision(byName("denied.example.test"), 5*time.Second)
	if err != nil || d.Verdict != "deny" || d.Enforced || d.Rule != "lab-deny" {
		t.Fatalf("decision %s: %v", d, err)
	}
}

// TestMonitorUntil: a trial that is forgotten ends by itself.
func TestMonitorUntil(t *testing.T) {
	until := time.Now().Add(3 * time.Second).UTC().Format(time.RFC3339)
	s := start(t, labPolicy, lab.Rules{}, lab.EgressdOptions{Config: "mode: monitor\nmonitor_until: \"" + until + "\"\n"})
	ctx := context.Background()
	if r := s.Curl(ctx, "https://denied.example.test/", "denied.example.test", "443", lab.ServerAddr); r.Exit != 0 {
		t.Fatalf("during the trial: %s", r)
	}
	if err := s.E.WaitLog("monitor_until reached", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if r := s.Curl(ctx, "https://denied.example.test/", "denied.example.test", "443", lab.ServerAddr); r.Exit == 0 {
		t.Fatalf("after monitor_until a denied name still passes: %s", r)
	}
}

// TestShadowRuleInLab: a deny rule on trial logs, never blocks.
func TestShadowRuleInLab(t *testing.T) {
	s := start(t, labRules+`
  - {name: trial, domains: [allowed.example.test], action: deny, shadow: true}
`+labTests, lab.Rules{}, lab.EgressdOptions{})
	if r := s.Curl(context.Background(), "https://allowed.example.test/", "allowed.example.test", "443", lab.ServerAddr); r.Exit != 0 {
		t.Fatalf("a shadow rule blocked: %s", r)
	}
	d, err := s.E.WaitDecision(byName("allowed.example.test"), 5*time.Second)
	if err != nil || d.Verdict != "deny" || d.Rule != "trial" || d.Enforced {
		t.Fatalf("decision %s: %v", d, err)
	}
}

// TestMetrics scrapes /metrics and checks the counters this test caused.
func TestMetrics(t *testing.T) {
	s := start(t, labPolicy, lab.Rules{}, lab.EgressdOptions{Env: []string{metricsEnv}})
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		s.Curl(ctx, "https://allowed.example.test/", "allowed.example.test", "443", lab.ServerAddr)
	}
	for i := 0; i < 2; i++ {
		s.Curl(ctx, "https://denied.example.test/", "denied.example.test", "443", lab.ServerAddr)
	}
	s.Curl(ctx, "https://allowed.example.test/", "allowed.example.test", "443", lab.OtherAddr) // dns-mismatch
	if _, err := s.E.WaitDecision(func(d lab.Decision) bool { return d.Reason == "dns-mismatch" }, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	code, body := natGet(t, s, "/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	for series, want := range map[string]float64{
		`egressd_decisions_total{proto="tcp",reason="rule",verdict="allow"}`:        3,
		`egressd_decisions_total{proto="tcp",reason="rule",verdict="deny"}`:         2,
		`egressd_decisions_total{proto="tcp",reason="dns-mismatch",verdict="deny"}`: 1,
		`egressd_decision_latency_seconds_count`:                                    6,
		`egressd_decision_log_lines_total{outcome="written"}`:                       6,
		`egressd_policy_rules`: 5,
		`egressd_monitor_mode`: 0,
	} {
		if got := metric(t, body, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	if metric(t, body, `egressd_dns_total{event="mismatch"}`) < 1 {
		t.Errorf("no DNS mismatch counted")
	}
	if code, body := natGet(t, s, "/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
}

// TestConfigReload: SIGHUP rereads the config; the mode applies at once,
// a change that needs a restart is logged as such.
func TestConfigReload(t *testing.T) {
	s := start(t, labPolicy, lab.Rules{}, lab.EgressdOptions{})
	ctx := context.Background()
	if r := s.Curl(ctx, "https://denied.example.test/", "denied.example.test", "443", lab.ServerAddr); r.Exit == 0 {
		t.Fatalf("enforce mode let a denied name through: %s", r)
	}
	cfg, err := os.ReadFile(s.E.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	writeAtomically(t, s.E.ConfigPath, string(cfg)+"mode: monitor\nhello: {timeout: 5s}\n")
	s.E.Signal(syscall.SIGHUP)
	if err := s.E.WaitLog(`"msg":"mode changed"`, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(s.E.Logs(), "config changes that apply only after a restart") || !strings.Contains(s.E.Logs(), "hello") {
		t.Errorf("the hello change is not reported as needing a restart:\n%s", s.E.Logs())
	}
	if r := s.Curl(ctx, "https://denied.example.test/", "denied.example.test", "443", lab.ServerAddr); r.Exit != 0 {
		t.Fatalf("after switching to monitor mode a denied name is still blocked: %s", r)
	}
}
