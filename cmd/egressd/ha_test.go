package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/pkg/ha"
)

// haYAML is a good ha: section for member a; each test edits it.
const haYAML = `
metrics: {listen: "127.0.0.1:9145"}
ha:
  enabled: true
  member: a
  eni: eni-0aaa
  preferred: true
  listen: "127.0.0.1:9146"
  interval: 200ms
  timeout: 100ms
  failure_threshold: 3
  hold_down: 2s
  route_tables: [rtb-01]
  route_table_tag: egressd-ha=lab
  peer: {name: b, url: "http://198.18.1.3:9146", eni: eni-0bbb}
  eip: {allocation_id: eipalloc-01, private_ip: 10.0.0.50}
  ec2: {region: eu-west-1}
  conntrackd:
    config: /run/egressd/conntrackd.conf
    local: 10.0.0.10
    peer: 10.0.0.11
    interface: ens5
    ignore: [10.0.0.10]
    hash_limit: 131072
`

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "egressd.yaml")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestHAHelp(t *testing.T) {
	for _, args := range [][]string{{"ha", "--help"}, {"ha", "help"}} {
		if code, out, _ := runCmd(t, args...); code != 0 || !strings.Contains(out, "Usage: egressd ha run|status|conntrackd-config") ||
			!strings.Contains(out, "failure_threshold") {
			t.Errorf("%v: exit %d, %q", args, code, out)
		}
	}
	for _, sub := range []string{"run", "status", "conntrackd-config"} {
		code, _, errOut := runCmd(t, "ha", sub, "--help")
		if code != 0 || !strings.Contains(errOut, "Usage: egressd ha "+sub) || !strings.Contains(errOut, "-config") {
			t.Errorf("ha %s --help: exit %d, %q", sub, code, errOut)
		}
	}
	if code, _, errOut := runCmd(t, "ha"); code != 2 || !strings.Contains(errOut, "Usage: egressd ha") {
		t.Errorf("ha alone: exit %d, %q", code, errOut)
	}
	if code, _, errOut := runCmd(t, "ha", "nope"); code != 2 || !strings.Contains(errOut, `unknown command "nope"`) {
		t.Errorf("ha nope: exit %d, %q", code, errOut)
	}
	if code, out, _ := runCmd(t, "help"); code != 0 || !strings.Contains(out, "egressd ha run|status|conntrackd-config") {
		t.Errorf("egressd help does not list ha: %q", out)
	}
}

// TestHABadConfig: each mistake is named by its key, with what to do.
func TestHABadConfig(t *testing.T) {
	tests := []struct {
		name, from, to, want string
	}{
		{"not enabled", "enabled: true", "enabled: false", "ha.enabled is false"},
		{"unknown key", "  preferred: true", "  prefered: true", "prefered"},
		{"no member", "  member: a", "  member: \"\"", "ha.member: this member's name is required"},
		{"peer named like self", "name: b,", "name: a,", `ha.peer.name: "a" is this member's own name`},
		{"bad eni", "eni: eni-0aaa\n", "eni: i-0aaa\n", `ha.eni: "i-0aaa" is not a network interface ID`},
		{"bad duration", "interval: 200ms", "interval: fast", "interval"},
		{"hold-down too short", "hold_down: 2s", "hold_down: 300ms", "ha.hold_down: 300ms is shorter than the detection time"},
		{"no metrics", `metrics: {listen: "127.0.0.1:9145"}`, `metrics: {listen: ""}`, "ha.local.readyz: \"\" is not egressd's /readyz URL (metrics.listen must be set"},
		{"ignoring the SNAT address", "ignore: [10.0.0.10]", "ignore: [10.0.0.10, 10.0.0.50]", "ha.conntrackd.ignore: 10.0.0.50 is the address every forwarded connection is NATed to"},
		{"bad sync address", "local: 10.0.0.10", "local: here", `ha.conntrackd.local: "here" is not an IPv4 address`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			text := strings.Replace(haYAML, tt.from, tt.to, 1)
			if text == haYAML {
				t.Fatalf("the edit %q did not apply", tt.from)
			}
			code, _, errOut := runCmd(t, "ha", "conntrackd-config", "--config", writeConfig(t, text))
			if code != 1 || !strings.Contains(errOut, tt.want) {
				t.Errorf("exit %d, stderr %q; want 1 and %q", code, errOut, tt.want)
			}
		})
	}
}

// TestHAConfigLeavesRunAlone: egressd run's config, with or without an ha:
// section, loads as before (run ignores it).
func TestHAConfigLeavesRunAlone(t *testing.T) {
	for _, text := range []string{"", haYAML} {
		cfg, err := loadConfig(writeConfig(t, "policy: /etc/egressd/policy.yaml\n"+text))
		if err != nil {
			t.Fatalf("config %q: %v", text, err)
		}
		if text == "" && cfg.HA.Enabled {
			t.Error("ha.enabled defaults to true")
		}
	}
	t.Setenv("EGRESSD_HA_HOLD_DOWN", "9s")
	cfg, err := loadConfig(writeConfig(t, haYAML))
	if err != nil || cfg.HA.HoldDown != 9*time.Second {
		t.Errorf("EGRESSD_HA_HOLD_DOWN: %v, hold_down %s", err, cfg.HA.HoldDown)
	}
}

func TestHAConntrackdConfig(t *testing.T) {
	p := writeConfig(t, haYAML)
	code, out, errOut := runCmd(t, "ha", "conntrackd-config", "--config", p)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{"Mode FTFW", "DisableExternalCache On", "IPv4_address 10.0.0.10", "IPv4_Destination_Address 10.0.0.11",
		"Interface ens5", "Port 3780", "HashLimit 131072", "Path /run/egressd/conntrackd.ctl"} {
		if !strings.Contains(out, want) {
			t.Errorf("conntrackd.conf lacks %q:\n%s", want, out)
		}
	}
	// No interface: the one that has the local address, found at start.
	lo := strings.Replace(strings.Replace(haYAML, "    interface: ens5\n", "", 1), "local: 10.0.0.10", "local: 127.0.0.1", 1)
	if code, out, errOut := runCmd(t, "ha", "conntrackd-config", "--config", writeConfig(t, lo)); code != 0 || !strings.Contains(out, "Interface lo\n") {
		t.Errorf("interface found from the local address: exit %d, %s%s", code, errOut, out)
	}
	dst := filepath.Join(t.TempDir(), "conntrackd.conf")
	if code, _, errOut := runCmd(t, "ha", "conntrackd-config", "--config", p, "--out", dst); code != 0 {
		t.Fatalf("--out: exit %d: %s", code, errOut)
	}
	if b, err := os.ReadFile(dst); err != nil || string(b) != out {
		t.Errorf("--out wrote %q (%v), want what it prints", b, err)
	}
}

// TestHAStatus: both members, the owner of the routes and the EIP, and a
// warning when the policies differ.
func TestHAStatus(t *testing.T) {
	view := &ha.View{Routes: []ha.Route{{Table: "rtb-01", ENI: "eni-0aaa"}, {Table: "rtb-02", ENI: "eni-0aaa"}},
		EIP: &ha.Association{PublicIP: "203.0.113.100", ENI: "eni-0aaa", PrivateIP: "10.0.0.50"}, At: time.Now()}
	statusOf := func(member, eni, role, hash string, v *ha.View) *ha.Status {
		return &ha.Status{Health: ha.Health{Member: member, Ready: true, PolicySHA256: hash}, ENI: eni, Role: role,
			View: v, Peer: ha.PeerStatus{Up: true}, Decision: "none: " + role}
	}
	serve := func(s *ha.Status) *httptest.Server {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { json.NewEncoder(w).Encode(s) }))
		t.Cleanup(srv.Close)
		return srv
	}
	a := statusOf("a", "eni-0aaa", "active", strings.Repeat("1", 64), view)
	b := statusOf("b", "eni-0bbb", "standby", strings.Repeat("1", 64), nil)
	sa, sb := serve(a), serve(b)
	text := strings.Replace(haYAML, `listen: "127.0.0.1:9146"`, `listen: "`+strings.TrimPrefix(sa.URL, "http://")+`"`, 1)
	text = strings.Replace(text, `url: "http://198.18.1.3:9146"`, `url: "`+sb.URL+`"`, 1)
	p := writeConfig(t, text)

	code, out, errOut := runCmd(t, "ha", "status", "--config", p)
	if code != 0 || errOut != "" {
		t.Fatalf("status: exit %d, stderr %q, out:\n%s", code, errOut, out)
	}
	for _, want := range []string{"a       active", "b       standby", "rtb-01 0.0.0.0/0 -> eni-0aaa (a)", "rtb-02 0.0.0.0/0 -> eni-0aaa (a)",
		"elastic IP 203.0.113.100 -> eni-0aaa 10.0.0.50 (a)", "111111111111"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	b.PolicySHA256 = strings.Repeat("2", 64)
	if code, _, errOut := runCmd(t, "ha", "status", "--config", p); code != 1 || !strings.Contains(errOut, "WARNING: the members' policies differ: a has 1111") {
		t.Errorf("status with different policies: exit %d, stderr %q", code, errOut)
	}
	b.PolicySHA256 = a.PolicySHA256
	view.Routes[1].ENI = "eni-0bbb"
	if code, _, errOut := runCmd(t, "ha", "status", "--config", p); code != 1 || !strings.Contains(errOut, "the move to a is incomplete") {
		t.Errorf("status with a route table left behind: exit %d, stderr %q", code, errOut)
	}
	code, out, _ = runCmd(t, "ha", "status", "--config", p, "--json")
	var both map[string]ha.Status
	if err := json.Unmarshal([]byte(out), &both); err != nil || both["a"].Role != "active" || both["b"].Role != "standby" {
		t.Errorf("--json: exit %d, %v, %q", code, err, out)
	}
	sb.Close()
	if code, _, errOut := runCmd(t, "ha", "status", "--config", p); code != 1 || !strings.Contains(errOut, "member b does not answer") {
		t.Errorf("status with b gone: exit %d, stderr %q", code, errOut)
	}
	sa.Close()
	if code, _, _ := runCmd(t, "ha", "status", "--config", p); code != 2 {
		t.Errorf("status with both gone: exit %d, want 2", code)
	}
}
