// Package suggest writes a policy from traffic already seen: `egressd
// suggest` reads monitor-mode decision lines (from the daemon's log, or
// from replaying a capture) and proposes the rules that would allow what
// was observed, for a person to review before enforcing.
//
// The proposal is deliberately narrow:
//
//   - rules are grouped by source subnet (the subnets given, or each
//     source's /24, /64 for IPv6), one rule per subnet and set of ports;
//   - names are exact, unless several observed siblings (names with the
//     same parent) justify the parent as ".parent"; never at or above a
//     public suffix (".com", ".github.io", ".amazonaws.com", which holds
//     "s3.amazonaws.com"), and never for a name seen on a port that
//     carries no name, which matches only through its own DNS answers;
//   - an IP address in place of a name, a flow that carried no name, and a
//     flow whose name did not match its destination's DNS are not
//     proposed: they are listed, for a person to decide (a cidrs rule, or
//     nothing);
//   - every entry has a comment: flows, sources, first and last seen.
//
// Replaying the same lines against the proposal allows every flow it
// proposes a rule for; names not observed stay denied (default: deny).
// Nothing here does I/O: the caller feeds decision records and writes the
// result.
package suggest
