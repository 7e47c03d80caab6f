package policy

// SYNUndecided reports whether the policy never decides a TCP flow to
// port on its first packet: whatever its source and destination, a
// Pending query for it is never Final, because a rule with domains
// applies to every such flow and no address rule applies to any.
//
// It is what lets the rules forward a SYN to such a port without holding
// it (the engine learns it afterwards, from a log): the SYN would have
// passed undecided anyway. On any other port some SYN may be decided, and
// a SYN denied there must never reach its server (no port scan of denied
// destinations), so SYNs to it stay queued. The answer is conservative:
// false whenever a SYN might be decided.
func (p *Policy) SYNUndecided(port uint16) bool {
	if !p.opts.Inspected(TCP, port) {
		return false // decided by address, on the SYN
	}
	everyFlow := false
	for i := range p.rules {
		r := &p.rules[i]
		if !r.appliesToPort(TCP, port) {
			continue
		}
		if len(r.domains) == 0 {
			// An address rule for this port: the SYNs it meets are
			// decided (a shadow one too, to keep this simple).
			return false
		}
		if !r.hasFrom && r.cidrs.empty() {
			// No from at all: a from that resolves to no address
			// (a selector with no workload yet) applies to no flow.
			everyFlow = true
		}
	}
	return everyFlow
}

// SYNUndecidedPorts lists the inspected TCP ports of SYNUndecided, in the
// order of the inspected ports.
func (p *Policy) SYNUndecidedPorts() []uint16 {
	var out []uint16
	for _, port := range p.opts.inspectTCP() {
		if p.SYNUndecided(port) {
			out = append(out, port)
		}
	}
	return out
}

// appliesToPort checks a rule's protocol and ports.
func (r *rule) appliesToPort(proto Proto, port uint16) bool {
	return (r.proto == ProtoAny || r.proto == proto) && (len(r.ports) == 0 || inPorts(r.ports, port))
}
