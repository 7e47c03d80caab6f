// Package gwlblab tests egressd behind a Gateway Load Balancer: a fake one
// in the lab (lab.FakeGWLB, Go, in its own namespace) encapsulates the
// clients' packets in GENEVE to two or three egressd targets, each with
// its rules and its GENEVE path, and checks every reply as the real one
// does. Each test builds its own lab and removes it, also on failure. They
// need root; under CI=true they fail instead of skipping.
package gwlblab

import (
	"os"
	"testing"

	"github.com/egressd/egressd/test/lab"
)

// egressdBin is the egressd binary under test, built once by TestMain.
var egressdBin string

func TestMain(m *testing.M) { os.Exit(lab.RunWithEgressd(m, &egressdBin)) }

// policy: the lab's allowed names, a denied one, and the UDP echo's and
// HTTPS server's address by CIDR.
const policy = `
version: 1
default: deny
rules:
  - name: lab-web
    domains: [allowed.example.test, api.allowed.test]
    ports: [443, 80]
    action: allow
  - name: lab-deny
    domains: [denied.example.test]
    action: deny
  - name: lab-cidr
    cidrs: [203.0.113.20/32]
    action: allow
`
