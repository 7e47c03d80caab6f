package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const importData = "../../pkg/importer/testdata/"

// TestImportCommand: each product's file translates to a policy that
// check accepts, with what was not translated on stderr at its line.
func TestImportCommand(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
		note string // a line stderr must hold
	}{
		{"anf", []string{"--from", "anf", importData + "anf-allowlist.json", importData + "anf-suricata.json"},
			importData + "anf-suricata.json:5: rule group suricata-extras: 2 Suricata rules (RulesString) not translated"},
		{"squid", []string{"--from", "squid", importData + "squid.conf"},
			importData + "squid.conf:27: ACL tracking (line 19): type dstdom_regex has no egressd equivalent"},
		{"smokescreen", []string{"--from", "smokescreen", "--role", "payments=10.0.2.0/24", "--role", "webhooks=10.0.3.0/24,10.0.4.7", importData + "smokescreen.yaml"},
			importData + "smokescreen.yaml:18: service scanner is known to Smokescreen by its client certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(dir, tc.name+".yaml")
			code, _, errOut := runCmd(t, append([]string{"import", "-o", out}, tc.args...)...)
			if code != 0 || !strings.Contains(errOut, tc.note) {
				t.Fatalf("exit %d, stderr:\n%s", code, errOut)
			}
			if code, o, _ := runCmd(t, "check", out); code != 0 {
				t.Errorf("check of the translation: %s", o)
			}
		})
	}
	b, _ := os.ReadFile(filepath.Join(dir, "smokescreen.yaml"))
	if !strings.Contains(string(b), `- "10.0.4.7/32"  # --role webhooks`) {
		t.Errorf("--role with an address:\n%s", b)
	}
	for _, bad := range [][]string{
		{"import", importData + "squid.conf"},
		{"import", "--from", "iptables", importData + "squid.conf"},
		{"import", "--from", "anf"},
		{"import", "--from", "anf", importData + "squid.conf"},
		{"import", "--from", "smokescreen", "--role", "payments", importData + "smokescreen.yaml"},
		{"import", "--from", "squid", "/nonexistent.conf"},
	} {
		if code, _, errOut := runCmd(t, bad...); code != 2 || errOut == "" {
			t.Errorf("%q: exit %d, stderr %q", bad, code, errOut)
		}
	}
}
