package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestExport: each kind of entry in the DNS Firewall's syntax, shadow and
// expired rules left out, names it cannot hold named on stderr.
func TestExport(t *testing.T) {
	dir := t.TempDir()
	pol := filepath.Join(dir, "p.yaml")
	os.WriteFile(pol, []byte(`version: 1
default: deny
rules:
  - {name: apex-and-under, domains: [.example.com], action: allow}
  - {name: under, domains: ["*.cdn.example.net"], ports: [443], action: allow}
  - {name: exact, from: [10.0.1.0/24], domains: [api.example.org, _dmarc.example.org], action: allow}
  - {name: gone, domains: [old.example], action: allow, expires: 2026-01-01T00:00:00Z}
  - {name: no-paste, domains: [.pastebin.com], action: deny}
  - {name: trial, domains: [tracker.example], action: deny, shadow: true}
`), 0o644)
	code, out, errOut := runCmd(t, "export", "--format", "route53-dns-firewall", pol)
	if want := "*.cdn.example.net\n*.example.com\napi.example.org\nexample.com\n"; code != 0 || out != want {
		t.Errorf("allow list: exit %d\n%s\nwant\n%s", code, out, want)
	}
	if !strings.Contains(errOut, "_dmarc.example.org cannot be in a DNS Firewall domain list") {
		t.Errorf("stderr: %s", errOut)
	}
	if code, out, _ := runCmd(t, "export", "--format", "route53-dns-firewall", "--list", "deny", pol); code != 0 || out != "*.pastebin.com\npastebin.com\n" {
		t.Errorf("deny list: exit %d\n%s", code, out)
	}
	allow := filepath.Join(dir, "allow.yaml")
	os.WriteFile(allow, []byte("version: 1\ndefault: allow\nrules:\n  - {name: d, domains: [x.example], action: deny}\n"), 0o644)
	if code, _, errOut := runCmd(t, "export", "--format", "route53-dns-firewall", allow); code != 1 || !strings.Contains(errOut, "--list deny") {
		t.Errorf("a default allow: exit %d %s", code, errOut)
	}
	for _, bad := range [][]string{
		{"export", pol},
		{"export", "--format", "route53-dns-firewall", "--list", "maybe", pol},
		{"export", "--format", "route53-dns-firewall"},
	} {
		if code, _, _ := runCmd(t, bad...); code != 2 {
			t.Errorf("%q: exit %d, want 2", bad, code)
		}
	}
}
