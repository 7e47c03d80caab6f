package policy

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestSYNUndecidedPorts: a port joins the list only when every SYN to it
// waits for the name, so the rules may forward its SYNs without holding
// them; an address rule, a rule limited by source or destination, or no
// rule with domains keeps the port's SYNs queued.
func TestSYNUndecidedPorts(t *testing.T) {
	tests := []struct {
		name   string
		policy string
		want   []uint16
	}{
		{"a name rule on 443 only", `
rules:
  - {name: web, domains: [example.test], ports: [443], action: allow}`, []uint16{443}},
		{"a name rule on every port", `
rules:
  - {name: web, domains: [example.test], action: allow}`, []uint16{80, 443}},
		{"a deny rule by name is enough", `
default: allow
rules:
  - {name: no-paste, domains: [.paste.test], action: deny}`, []uint16{80, 443}},
		{"an address rule on 443 decides its SYNs", `
rules:
  - {name: web, domains: [example.test], action: allow}
  - {name: partner, cidrs: [198.51.100.0/24], ports: [443], action: allow}`, []uint16{80}},
		{"a shadow address rule too", `
rules:
  - {name: web, domains: [example.test], action: allow}
  - {name: trial, cidrs: [198.51.100.0/24], action: deny, shadow: true}`, nil},
		{"an address rule for UDP does not count", `
rules:
  - {name: web, domains: [example.test], action: allow}
  - {name: dns, cidrs: [198.51.100.0/24], proto: udp, action: allow}`, []uint16{80, 443}},
		{"a name rule for some sources leaves the others decided on the SYN", `
rules:
  - {name: ci, from: [10.0.1.0/24], domains: [example.test], action: allow}`, nil},
		{"a name rule for some workloads (a selector, here resolving to none)", `
rules:
  - {name: ci, from: [{security_groups: [sg-01234567]}], domains: [example.test], action: allow}`, nil},
		{"a name rule for some destinations too", `
rules:
  - {name: web, cidrs: [203.0.113.0/24], domains: [example.test], action: allow}`, nil},
		{"a name rule for UDP only", `
rules:
  - {name: quic, domains: [example.test], proto: udp, action: allow}`, nil},
		{"no rules: the default decides", ``, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			text := "version: 1\n" + tc.policy + "\n"
			if !strings.Contains(tc.policy, "default:") {
				text = "version: 1\ndefault: deny\n" + tc.policy + "\n"
			}
			p, err := Parse("p.yaml", []byte(text), Options{})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, p.SYNUndecidedPorts()); diff != "" {
				t.Errorf("SYNUndecidedPorts (-want +got):\n%s", diff)
			}
		})
	}
}
