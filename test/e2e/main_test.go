// Package e2e holds egressd's end-to-end tests: real clients (curl,
// openssl, Go's net/http and crypto/tls, hand-made TCP segments) in the
// lab's client namespace, egressd and its iptables rules on the NAT, real
// servers in inet. Each test builds its own lab and removes it, also on
// failure. They need root; under CI=true they fail instead of skipping.
package e2e

import (
	"os"
	"testing"

	"github.com/egressd/egressd/test/lab"
)

// egressdBin is the egressd binary under test, built once by TestMain.
var egressdBin string

func TestMain(m *testing.M) { os.Exit(lab.RunWithEgressd(m, &egressdBin)) }

// labPolicyHead and labNameRules begin the lab's policy: its rules by name.
const labPolicyHead = `
version: 1
default: deny
rules:
`

const labNameRules = `  - name: lab-web
    domains: [allowed.example.test, api.allowed.test]
    ports: [443, 80]
    action: allow
  - name: lab-deny
    domains: [denied.example.test]
    action: deny
`

// labRules are the rules most tests run: names, addresses and a deny rule
// over the lab's servers. labPolicy is them with a tests: block; a test
// that needs one more rule appends it to labRules.
const labRules = labPolicyHead + labNameRules + `  - name: lab-cidr
    cidrs: [203.0.113.20/32]
    ports: [443, 22]
    action: allow
  - name: lab-banner
    cidrs: [203.0.113.10/32]
    ports: [2222]
    action: allow
  - name: lab-ssh-by-name
    domains: [ssh.allowed.test]
    ports: [22]
    action: allow
`

const labTests = `tests:
  - {src: 198.18.1.2, name: allowed.example.test, port: 443, expect: allow}
  - {src: 198.18.1.2, name: denied.example.test, port: 443, expect: deny}
`

const labPolicy = labRules + labTests

// setup is a lab with egressd's rules applied and egressd running.
type setup struct {
	*lab.Lab
	E *lab.Egressd
}

func start(t *testing.T, policy string, rules lab.Rules, opts lab.EgressdOptions) *setup {
	t.Helper()
	l := lab.Start(t)
	if err := l.ApplyRules(rules); err != nil {
		t.Fatal(err)
	}
	opts.Binary = egressdBin
	if opts.Policy == "" {
		opts.Policy = policy
	}
	e, err := l.StartEgressd(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("egressd logs:\n%s", e.Logs())
			for _, d := range e.Decisions() {
				t.Logf("decision: %s", d.Raw)
			}
		}
		if e.DataRace() {
			t.Errorf("egressd found a data race:\n%s", e.Logs())
		}
		if bad := e.NonDecisions(); len(bad) > 0 {
			t.Errorf("egressd wrote lines to stdout that are not decisions: %q", bad)
		}
	})
	return &setup{Lab: l, E: e}
}
