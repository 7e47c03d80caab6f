package main

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/pkg/policy"
	"github.com/egressd/egressd/test/fakeec2/nis"
)

const workloadPolicy = `version: 1
default: deny
rules:
  - name: payments
    from: [{security_groups: [sg-0123456789abcdef0]}, {tags: {Team: payments}}]
    domains: [api.stripe.com]
    action: allow
`

// TestDaemonWorkloadSources: the daemon resolves the policy's selectors
// through the EC2 API (a fake one), decides with the answers, swaps in the
// policy when they change, keeps the last good ones when EC2 fails, and
// logs a selector that resolves to nothing.
func TestDaemonWorkloadSources(t *testing.T) {
	srv := nis.New()
	defer srv.Close()
	srv.Set(nis.Interface{ID: "eni-1", VPC: "vpc-1", IPs: []string{"10.0.2.5"}, Groups: []string{"sg-0123456789abcdef0"}})
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("EGRESSD_SOURCES_REGION", "eu-west-1")
	t.Setenv("EGRESSD_SOURCES_ENDPOINT", srv.URL)
	t.Setenv("EGRESSD_SOURCES_REFRESH", "1s")
	t.Setenv("EGRESSD_SOURCES_CACHE_FILE", filepath.Join(t.TempDir(), "sources.json"))
	cfg, err := loadConfig("")
	if err != nil {
		t.Fatal(err)
	}
	pol, err := policy.Parse("p.yaml", []byte(workloadPolicy), policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	d, logs := testDaemon(t, pol)
	d.cfg = cfg
	d.engine.SetPolicy(d.withSources(pol))
	decide := func(src string) string {
		return d.engine.Policy().Decide(policy.Query{Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr("203.0.113.1"),
			Port: 443, Proto: policy.TCP, Inspected: true, Name: "api.stripe.com"}).Rule
	}
	if got := decide("10.0.2.5"); got != "payments" {
		t.Fatalf("a source in the security group: %s", got)
	}
	if !strings.Contains(logs.String(), `"msg":"workload selector resolves to nothing: the rule matches no source from it","rule":"payments","file":"p.yaml","line":4,"selector":"{tags: {Team: payments}}","why":"it selects no network interface"`) {
		t.Errorf("no log of the empty selector:\n%s", logs)
	}
	d.goRun("workload sources", d.refreshSources)

	srv.Set(nis.Interface{ID: "eni-2", VPC: "vpc-1", IPs: []string{"10.0.3.7"}, Tags: map[string]string{"Team": "payments"}})
	waitUntil(t, "the new answer", func() bool { return decide("10.0.3.7") == "payments" && decide("10.0.2.5") == "default" })

	srv.Fail("UnauthorizedOperation")
	waitUntil(t, "a logged failed refresh", func() bool {
		return strings.Contains(logs.String(), "workload sources: refresh failed; the last good answers stand")
	})
	if got := decide("10.0.3.7"); got != "payments" {
		t.Errorf("after EC2 failed, the last good answer is gone: %s", got)
	}
	if n, _ := metricValue(t, d, "egressd_sources_empty_selectors"); n != 1 {
		t.Errorf("egressd_sources_empty_selectors = %v", n)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 10s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestCheckWorkloadSources: check says what each selector resolves to in
// the instance's last answers, and warns of one that selects nothing.
func TestCheckWorkloadSources(t *testing.T) {
	dir := t.TempDir()
	pol := filepath.Join(dir, "p.yaml")
	os.WriteFile(pol, []byte(workloadPolicy), 0o644)
	code, out, _ := runCmd(t, "check", pol)
	if code != 0 || !strings.Contains(out, pol+`:4: note: rule "payments": from {security_groups: [sg-0123456789abcdef0]} is resolved on the instance`) {
		t.Errorf("without the answers: exit %d\n%s", code, out)
	}
	cache := filepath.Join(dir, "sources.json")
	os.WriteFile(cache, []byte(`{"version": 1, "selectors": {
  "{security_groups: [sg-0123456789abcdef0]}": {"addresses": ["10.0.2.5", "10.0.2.6"], "at": "2026-12-01T10:00:00Z"},
  "{tags: {Team: payments}}": {"addresses": [], "at": "2026-12-01T10:00:00Z"}}}`), 0o600)
	cfg := filepath.Join(dir, "egressd.yaml")
	os.WriteFile(cfg, []byte("sources: {cache_file: "+cache+"}\n"), 0o644)
	code, out, _ = runCmd(t, "check", "--config", cfg, pol)
	for _, want := range []string{
		pol + `:4: note: rule "payments": from {security_groups: [sg-0123456789abcdef0]} resolves to 2 addresses (EC2's answer of 2026-12-01T10:00:00Z)`,
		pol + `:4: warning: rule "payments": from {tags: {Team: payments}} selects no network interface (EC2's answer of 2026-12-01T10:00:00Z), so it matches no source`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("check --config: exit %d, no %q in\n%s", code, want, out)
		}
	}
}
