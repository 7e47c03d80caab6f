package e2e

import (
	"context"
	"os/exec"
	"regexp"
	"strings"
	"testing"

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
			for _, jump := range []string{"-A FORWARD -j EGRESSD", "-A PREROUTING -j EGRESSD_PRE", "-A POSTROUTING -j EGRESSD_NAT"} {
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
