package deploy_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/egressd/egressd/internal/netnstest"
	"github.com/egressd/egressd/internal/testenv"
)

func TestConntrackSize(t *testing.T) {
	for _, tc := range []struct {
		name    string
		meminfo string
		want    string // "" for a failure
	}{
		{"t4g.nano gets the floor", "MemTotal:         460000 kB\nMemFree: 1 kB\n", "65536"},
		{"t4g.small, one entry per 8 KiB", "MemFree: 1 kB\nMemTotal:        1900000 kB\n", "237500"},
		{"8 GB", "MemTotal: 8000000 kB\n", "1000000"},
		{"64 GiB gets the ceiling", "MemTotal: 67108864 kB\n", "4194304"},
		{"no MemTotal", "MemFree: 1 kB\n", ""},
		{"garbage", "MemTotal: lots kB\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := filepath.Join(t.TempDir(), "meminfo")
			writeFile(t, f, tc.meminfo, 0o644)
			r := runCmd(t, nil, repoPath("deploy/libexec/egressd-up.sh"), "conntrack-size", f)
			if tc.want == "" {
				if r.code == 0 {
					t.Errorf("want a failure, got %v", r)
				}
				return
			}
			if r.code != 0 || strings.TrimSpace(r.stdout) != tc.want {
				t.Errorf("got %v; want %s", r, tc.want)
			}
		})
	}
}

// TestEgressdUp runs egressd-up.sh, as egressd-iptables.service does, in a
// namespace with a private and a public interface, against the repository's
// iptables script.
func TestEgressdUp(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireCommands(t, "ip", "iptables", "iptables-save", "ip6tables", "sysctl")
	script := repoPath("scripts/iptables/egressd-iptables.sh")
	for _, tc := range []struct {
		name       string
		env        []string
		noDefault  bool // no default route in the namespace
		envFile    bool // read deploy/etc/egressd.env first, as the unit does
		wantOK     bool
		wantRules  []string // lines iptables-save must show
		wantOutput string   // in stdout+stderr
	}{
		{
			name: "the shipped egressd.env: one interface, the default route's", envFile: true, wantOK: true,
			wantRules: []string{"-A EGRESSD_NAT -o pub0 -j MASQUERADE", "--queue-balance 0:1"},
		},
		{
			name:      "two interfaces, queues and fail-open",
			env:       []string{"PRIVATE_IF=prv0", "PUBLIC_IF=auto", "EGRESSD_QUEUE_FIRST=4", "EGRESSD_QUEUE_COUNT=3", "EGRESSD_FAIL_OPEN=true"},
			wantOK:    true,
			wantRules: []string{"-A EGRESSD_NAT -o pub0 -j MASQUERADE", "--queue-balance 4:6 --queue-bypass"},
		},
		{
			name:      "inspect ports reach the rules",
			env:       []string{"PRIVATE_IF=prv0", "PUBLIC_IF=pub0", "EGRESSD_INSPECT_PORTS_TCP=443,8443", "EGRESSD_INSPECT_PORTS_UDP="},
			wantOK:    true,
			wantRules: []string{"--dports 443,8443"},
		},
		{
			name:   "an HA pair's floating address: forwarded packets SNATed to it, the instance's own masqueraded",
			env:    []string{"PRIVATE_IF=prv0", "PUBLIC_IF=pub0", "EGRESSD_SNAT_ADDRESS=10.0.0.50"},
			wantOK: true,
			wantRules: []string{"-A EGRESSD_NAT -o pub0 -m addrtype ! --src-type LOCAL -j SNAT --to-source 10.0.0.50",
				"-A EGRESSD_NAT -o pub0 -j MASQUERADE"},
		},
		{
			name: "a bad SNAT address", env: []string{"EGRESSD_SNAT_ADDRESS=ten"},
			wantOutput: "--snat must be an IPv4 address",
		},
		{
			name: "a bad fail-open value", env: []string{"EGRESSD_FAIL_OPEN=maybe"},
			wantOutput: "EGRESSD_FAIL_OPEN must be true or false",
		},
		{
			name: "the rules fail", env: []string{"PRIVATE_IF=no such if", "PUBLIC_IF=pub0"},
			wantOutput: "forwarding stays off",
		},
		{
			name: "auto without a default route", noDefault: true,
			wantOutput: "there is no IPv4 default route",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := netnstest.New(t, "up")
			for _, c := range [][]string{
				// veth pairs (the kernel here has no dummy driver); the peers stay in the namespace.
				{"link", "add", "prv0", "type", "veth", "peer", "name", "prv1"},
				{"link", "add", "pub0", "type", "veth", "peer", "name", "pub1"},
				{"link", "set", "prv1", "up"}, {"link", "set", "pub1", "up"},
				{"addr", "add", "198.18.9.1/24", "dev", "prv0"}, {"addr", "add", "203.0.113.9/24", "dev", "pub0"},
				{"link", "set", "prv0", "up"}, {"link", "set", "pub0", "up"},
			} {
				if r := runCmd(t, nil, "ip", append([]string{"-n", ns.Name}, c...)...); r.code != 0 {
					t.Fatalf("ip %v: %v", c, r)
				}
			}
			if !tc.noDefault {
				if r := runCmd(t, nil, "ip", "-n", ns.Name, "route", "add", "default", "via", "203.0.113.254", "dev", "pub0"); r.code != 0 {
					t.Fatalf("default route: %v", r)
				}
			}
			// Forwarding on beforehand: egressd-up.sh must turn it off when it fails.
			inNS(t, ns.Name, nil, "sysctl", "-qw", "net.ipv4.ip_forward=1")

			env := append([]string{"EGRESSD_IPTABLES_SCRIPT=" + script}, tc.env...)
			var r result
			if tc.envFile {
				r = inNS(t, ns.Name, env, "bash", "-c", `set -a; . "$1"; set +a; exec "$2"`, "bash",
					repoPath("deploy/etc/egressd.env"), repoPath("deploy/libexec/egressd-up.sh"))
			} else {
				r = inNS(t, ns.Name, env, repoPath("deploy/libexec/egressd-up.sh"))
			}
			fwd := strings.TrimSpace(inNS(t, ns.Name, nil, "sysctl", "-n", "net.ipv4.ip_forward").stdout)
			if ok := r.code == 0; ok != tc.wantOK {
				t.Fatalf("egressd-up.sh: %v; want success %v", r, tc.wantOK)
			}
			if want := strconv.Itoa(map[bool]int{true: 1, false: 0}[tc.wantOK]); fwd != want {
				t.Errorf("net.ipv4.ip_forward = %s after the run, want %s", fwd, want)
			}
			if !strings.Contains(r.stdout+r.stderr, tc.wantOutput) {
				t.Errorf("output lacks %q: %v", tc.wantOutput, r)
			}
			saved := inNS(t, ns.Name, nil, "iptables-save").stdout
			for _, want := range tc.wantRules {
				if !strings.Contains(saved, want) {
					t.Errorf("iptables-save lacks %q:\n%s", want, saved)
				}
			}
			if !tc.wantOK && strings.Contains(saved, "-j EGRESSD") {
				// Partial rules are harmless (forwarding is off), but say so.
				t.Logf("rules left after a failure (forwarding is off):\n%s", saved)
			}
			if tc.wantOK {
				if s := inNS(t, ns.Name, env, script, "status"); s.code != 0 {
					t.Errorf("egressd-iptables.sh status after egressd-up.sh: %v", s)
				}
			}
		})
	}
}

// fakeBin writes an executable into dir.
func fakeBin(t *testing.T, dir, name, script string) {
	t.Helper()
	writeFile(t, filepath.Join(dir, name), script, 0o755)
}

// pathWith puts dir first on PATH.
func pathWith(dir string) string { return "PATH=" + dir + ":" + os.Getenv("PATH") }
