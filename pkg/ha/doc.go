// Package ha keeps an egressd pair in one availability zone filtering
// through the loss of either member: it watches the other member's
// readiness over the VPC and, when the member that holds the routes fails,
// moves the private route tables' default route and the Elastic IP to this
// one with the EC2 API, verifying each change.
//
// The route table is the one source of truth: the member its first route
// table names is the active one, whatever either member believes, and it is
// read again before every move. The Elastic IP follows the routes; only the
// member the routes name ever moves it (to itself).
//
// What it refuses:
//   - to take the routes while this member is not ready (egressd's /readyz,
//     the iptables rules, the links): a standby that could not filter never
//     becomes the path, so a switch never opens the filter;
//   - to guess: when the EC2 API cannot be read, nothing moves; it logs and
//     retries with backoff;
//   - to flap: at most one change of the routes' owner per hold-down, a
//     member that just started waits one hold-down before its first move, and
//     a member that lost the routes while it was ready and could not see its
//     peer (a split brain looks the same as a dead peer) waits twice as long
//     each time, up to eight hold-downs, until it sees the peer again.
//
// Decider is the decision alone, a pure function of what was observed and
// when (tests drive it with a fake clock). Cloud is the EC2 side (read the
// view, move, verify). Agent runs the loop and serves /readyz, /status and
// /metrics for the peer and for `egressd ha status`.
//
// Privileges: EC2 credentials (the instance role, over IMDSv2) with
// ec2:DescribeRouteTables, ec2:ReplaceRoute, ec2:DescribeAddresses,
// ec2:AssociateAddress and, with a floating private address,
// ec2:AssignPrivateIpAddresses; running the rules check (iptables) needs
// CAP_NET_ADMIN.
package ha
