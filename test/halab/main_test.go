// Package halab tests egressd's HA pair (egressd ha, conntrackd) in the
// namespace lab rewired for two NAT members (lab.AddPair): real failovers
// through egressd's rules, a fake EC2 API whose changes move the client's
// gateway and the Elastic IP for real, and clients that keep probing
// through the switch. They need root, conntrackd and conntrack; under
// CI=true they fail instead of skipping.
package halab

import (
	"os"
	"testing"

	"github.com/egressd/egressd/test/lab"
)

// egressdBin is the egressd binary under test, built once by TestMain.
var egressdBin string

func TestMain(m *testing.M) { os.Exit(lab.RunWithEgressd(m, &egressdBin)) }
