package e2e

import (
	"context"
	"errors"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/testenv"
	"github.com/egressd/egressd/test/lab"
)

// saveRules is the NAT namespace's ruleset (IPv4 and IPv6) reduced to what
// a ruleset says: its tables' rules, user chains and built-in chains whose
// policy is not ACCEPT. Comments, counters and empty tables (which exist
// once anything touched them) are left out.
func saveRules(t *testing.T, l *lab.Lab, backend string) string {
	t.Helper()
	var b strings.Builder
	for _, tool := range []string{backend + "-save", strings.Replace(backend, "iptables", "ip6tables", 1) + "-save"} {
		out, err := lab.Exec(context.Background(), l.NAT, tool)
		if err != nil {
			t.Fatalf("%s: %v: %s", tool, err, out)
		}
		table := ""
		for _, line := range strings.Split(string(out), "\n") {
			switch {
			case strings.HasPrefix(line, "*"):
				table = line
			case strings.HasPrefix(line, "-A "),
				strings.HasPrefix(line, ":") && !strings.Contains(line, " ACCEPT "):
				b.WriteString(tool + " " + table + " " + counters.ReplaceAllString(line, "[0:0]"))
				b.WriteByte('\n')
			}
		}
	}
	return b.String()
}

var counters = regexp.MustCompile(`\[\d+:\d+\]`)

func sysctl(t *testing.T, l *lab.Lab, key string) string {
	t.Helper()
	out, err := lab.Exec(context.Background(), l.NAT, "sysctl", "-n", key)
	if err != nil {
		t.Fatalf("sysctl %s: %v: %s", key, err, out)
	}
	return strings.TrimSpace(string(out))
}

// TestIptablesScript: apply twice leaves one copy, remove leaves nothing,
// status tells, with both iptables backends (each in its own lab: the two
// must never be mixed in one namespace).
func TestIptablesScript(t *testing.T) {
	for _, backend := range []string{"iptables-nft", "iptables-legacy"} {
		t.Run(backend, func(t *testing.T) {
			testenv.RequireCommands(t, backend, backend+"-save", backend+"-restore")
			l := lab.Start(t)
			r := lab.Rules{IPTables: backend}
			// Load conntrack first, so that the sysctl exists in both dumps.
			lab.Exec(context.Background(), l.NAT, backend, "-A", "INPUT", "-m", "conntrack", "--ctstate", "INVALID", "-j", "ACCEPT")
			lab.Exec(context.Background(), l.NAT, backend, "-D", "INPUT", "-m", "conntrack", "--ctstate", "INVALID", "-j", "ACCEPT")
			before := saveRules(t, l, backend)
			looseBefore := sysctl(t, l, "net.netfilter.nf_conntrack_tcp_loose")

			if out, err := l.Script(r, "status"); err == nil {
				t.Fatalf("status before apply exited 0:\n%s", out)
			} else if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 {
				t.Fatalf("status before apply: %v (want exit 3)\n%s", err, out)
			}

			if err := l.ApplyRules(r); err != nil {
				t.Fatal(err)
			}
			once := saveRules(t, l, backend)
			if err := l.ApplyRules(r); err != nil {
				t.Fatal(err)
			}
			twice := saveRules(t, l, backend)
			if once != twice {
				t.Errorf("apply twice differs from apply once:\n--- once\n%s\n--- twice\n%s", once, twice)
			}
			for _, jump := range []string{"-A FORWARD -j EGRESSD", "-A PREROUTING -j EGRESSD_PRE", "-A FORWARD -j EGRESSD_FWD", "-A POSTROUTING -j EGRESSD_NAT"} {
				if n := strings.Count(twice, jump+"\n"); n < 1 || (jump == "-A FORWARD -j EGRESSD" && n != 2) || (jump != "-A FORWARD -j EGRESSD" && n != 1) {
					t.Errorf("%q appears %d times after two applies", jump, n)
				}
			}
			if v := sysctl(t, l, "net.netfilter.nf_conntrack_tcp_loose"); v != "0" {
				t.Errorf("nf_conntrack_tcp_loose = %s after apply, want 0", v)
			}
			if out, err := l.Script(r, "status"); err != nil || !strings.Contains(string(out), "filter FORWARD -> EGRESSD: present") {
				t.Errorf("status after apply: %v\n%s", err, out)
			}

			if out, err := l.Script(r, "remove"); err != nil {
				t.Fatalf("remove: %v\n%s", err, out)
			}
			if after := saveRules(t, l, backend); after != before {
				t.Errorf("remove left something behind:\n--- before apply\n%s\n--- after remove\n%s", before, after)
			}
			if v := sysctl(t, l, "net.netfilter.nf_conntrack_tcp_loose"); v != looseBefore {
				t.Errorf("nf_conntrack_tcp_loose = %s after remove, was %s", v, looseBefore)
			}
			if out, err := l.Script(r, "remove"); err != nil {
				t.Errorf("a second remove: %v\n%s", err, out)
			}
		})
	}
}

func TestIptablesScriptRefusesBadArguments(t *testing.T) {
	l := lab.Start(t)
	for _, args := range [][]string{
		{"apply", "--public", "n1"},
		{"apply", "--private", "n0", "--public", "n1", "--queues", "two"},
		{"apply", "--private", "n0", "--public", "n1", "--queues", "0:0"},
		{"apply", "--private", "n0;reboot", "--public", "n1"},
		{"apply", "--private", "n0", "--public", "n1", "--inspect-tcp", "443;x"},
		{"apply", "--private", "n0", "--public", "n1", "--frobnicate"},
		{"launch"},
	} {
		out, err := l.Script(lab.Rules{}, args...)
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "egressd-iptables") {
			t.Errorf("%v: %v (want exit 2 and a message)\n%s", args, err, out)
		}
	}
	if out, _ := lab.Exec(context.Background(), l.NAT, "iptables-save"); strings.Contains(string(out), "EGRESSD") {
		t.Errorf("a refused apply installed rules:\n%s", out)
	}
	// One interface for both sides (a NAT instance with one ENI) is a
	// valid layout: direction comes from conntrack.
	if out, err := l.Script(lab.Rules{}, "apply", "--private", "n1", "--public", "n1"); err != nil {
		t.Errorf("apply with one interface: %v\n%s", err, out)
	}
}

// backends are the two iptables backends the script must work with.
var backends = []string{"iptables-nft", "iptables-legacy"}

// chainRules returns the rules of a built-in chain in order, as -S prints
// them.
func chainRules(t *testing.T, l *lab.Lab, backend, table, chain string) []string {
	t.Helper()
	out, err := lab.Exec(context.Background(), l.NAT, backend, "-w", "-t", table, "-S", chain)
	if err != nil {
		t.Fatalf("%s -t %s -S %s: %v: %s", backend, table, chain, err, out)
	}
	var rules []string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "-A ") {
			rules = append(rules, line)
		}
	}
	return rules
}

// TestIptablesJumpFirst: a rule above egressd's jump in filter FORWARD
// sees every packet first. An ESTABLISHED,RELATED ACCEPT there (Docker's,
// firewalld's, a careless AMI's) lets every flow past egressd once its SYN
// has been through: the hello is never queued. status must fail and name
// the rule; apply must move egressd's jump back on top, keeping one copy
// and the other rule. The bypass is shown working first, then closed.
func TestIptablesJumpFirst(t *testing.T) {
	rogue := []string{"-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"}
	const rogueSaved = "-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
	for _, backend := range backends {
		t.Run(backend, func(t *testing.T) {
			testenv.RequireCommands(t, backend, backend+"-save", backend+"-restore", "curl")
			l := lab.Start(t)
			r := lab.Rules{IPTables: backend}
			ctx := context.Background()
			insert := func(table, chain string, rule ...string) {
				t.Helper()
				args := append([]string{"-w", "-t", table, "-I", chain, "1"}, rule...)
				if out, err := lab.Exec(ctx, l.NAT, backend, args...); err != nil {
					t.Fatalf("%s %v: %v: %s", backend, args, err, out)
				}
			}
			wantFirst := func(when string) {
				t.Helper()
				for _, c := range [][3]string{
					{"filter", "FORWARD", "-A FORWARD -j EGRESSD"},
					{"mangle", "PREROUTING", "-A PREROUTING -j EGRESSD_PRE"},
					{"mangle", "FORWARD", "-A FORWARD -j EGRESSD_FWD"},
					{"nat", "POSTROUTING", "-A POSTROUTING -j EGRESSD_NAT"},
				} {
					rules := chainRules(t, l, backend, c[0], c[1])
					n := 0
					for _, rule := range rules {
						if rule == c[2] {
							n++
						}
					}
					if len(rules) == 0 || rules[0] != c[2] || n != 1 {
						t.Errorf("%s: %s %s is %q; want %q first, once", when, c[0], c[1], rules, c[2])
					}
				}
			}
			status := func() (string, int) {
				t.Helper()
				out, err := l.Script(r, "status")
				var ee *exec.ExitError
				if err != nil && !errors.As(err, &ee) {
					t.Fatalf("status: %v: %s", err, out)
				}
				if ee != nil {
					return string(out), ee.ExitCode()
				}
				return string(out), 0
			}

			// Before apply: the rule is already there; apply goes above it.
			insert("filter", "FORWARD", rogue...)
			if err := l.ApplyRules(r); err != nil {
				t.Fatal(err)
			}
			wantFirst("apply over a foreign rule")
			if out, code := status(); code != 0 {
				t.Errorf("status after apply: exit %d\n%s", code, out)
			}

			// After apply: the rule goes above egressd's jump.
			insert("filter", "FORWARD", rogue...)
			insert("mangle", "PREROUTING", "-p", "tcp", "-j", "ACCEPT")
			insert("nat", "POSTROUTING", "-o", "n9", "-j", "ACCEPT")
			out, code := status()
			if code != 4 {
				t.Errorf("status with rules above egressd's jumps: exit %d, want 4", code)
			}
			for _, want := range []string{
				"filter FORWARD -> EGRESSD: NOT FIRST", rogueSaved,
				"EGRESSD_PRE (TTL): NOT FIRST", "-A PREROUTING -p tcp -j ACCEPT",
				"EGRESSD_NAT: present; WARNING", "-A POSTROUTING -o n9 -j ACCEPT",
			} {
				if !strings.Contains(out, want) {
					t.Errorf("status with rules above egressd's jumps does not say %q:\n%s", want, out)
				}
			}
			t.Logf("status with a rule above egressd's jump (exit %d):\n%s", code, out)

			// The bypass: with egressd running, a denied name gets through.
			e, err := l.StartEgressd(lab.EgressdOptions{Binary: egressdBin, Policy: labPolicy})
			if err != nil {
				t.Fatal(err)
			}
			denied := func() lab.CurlResult {
				return l.Curl(ctx, "https://denied.example.test/", "denied.example.test", "443", lab.ServerAddr)
			}
			if res := denied(); res.Exit != 0 {
				t.Errorf("with the rule above egressd a denied name did not get through (the bypass this test closes): %s", res)
			}

			if err := l.ApplyRules(r); err != nil {
				t.Fatal(err)
			}
			wantFirst("apply with rules above egressd's jumps")
			if got := chainRules(t, l, backend, "filter", "FORWARD"); len(got) != 3 || got[1] != rogueSaved || got[2] != rogueSaved {
				t.Errorf("filter FORWARD after apply: %q; want egressd's jump, then the two foreign rules, kept", got)
			}
			if out, code := status(); code != 0 || strings.Contains(out, "NOT FIRST") || strings.Contains(out, "WARNING") {
				t.Errorf("status after apply moved the jumps: exit %d\n%s", code, out)
			}
			once := saveRules(t, l, backend)
			if err := l.ApplyRules(r); err != nil {
				t.Fatal(err)
			}
			if twice := saveRules(t, l, backend); twice != once {
				t.Errorf("apply again changed the rules:\n--- once\n%s\n--- twice\n%s", once, twice)
			}

			res := denied()
			if res.Exit == 0 || !strings.Contains(res.Stderr, "reset") {
				t.Errorf("denied name with egressd's jump first: want a reset, got %s", res)
			}
			if d, err := e.WaitDecision(func(d lab.Decision) bool { return d.Name == "denied.example.test" }, 5*time.Second); err != nil || d.Verdict != "deny" {
				t.Errorf("deny decision %s: %v", d, err)
			}

			// Above nat POSTROUTING's jump a rule changes the NAT, not the
			// filter: a warning, not a failure.
			insert("nat", "POSTROUTING", "-o", "n9", "-j", "ACCEPT")
			if out, code := status(); code != 0 || !strings.Contains(out, "EGRESSD_NAT: present; WARNING") {
				t.Errorf("status with a rule above the nat jump only: exit %d, want 0 and a warning\n%s", code, out)
			}
		})
	}
}
