package engine

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/egressd/egressd/pkg/classify"
	"github.com/egressd/egressd/pkg/decide"
	"github.com/egressd/egressd/pkg/declog"
	"github.com/egressd/egressd/pkg/policy"
)

// Shard is one queue's share of the flow table.
type Shard struct {
	e        *Engine
	index    int
	maxFlows int

	mu        sync.Mutex
	flows     map[flowKey]*flow
	pending   fifo // undecided flows, by deadline
	linger    fifo // decided flows, by end of linger
	free      []*flow
	parsers   parsers
	undecided int
	pools     pools
	pruned    time.Time // when idle sources were last forgotten
	decider   decide.Decider
	rec       declog.Record
}

// Engine returns the engine the shard belongs to.
func (s *Shard) Engine() *Engine { return s.e }

// Index returns the shard's number: queue Index's Sink is attached by
// Attach.
func (s *Shard) Index() int { return s.index }

// Attach sets the Sink of the queue numbered like the shard
// (Engine.Attach).
func (s *Shard) Attach(sink Sink) { s.e.Attach(s.index, sink) }

// Handle processes one queued packet in this shard. In one pass:
//
//	packet -> flow (found, or started) -> the head parser -> the decision
//	procedure (pkg/decide) -> the kernel verdict -> the decision line
//
// A packet of a decided flow gets the flow's verdict; one of an undecided
// flow is held until the decision (or passed, when it carries nothing to
// decide on and the handshake needs it). With more than one shard,
// packets enter through Engine.Handle, which picks the flow's shard.
func (s *Shard) Handle(p *Packet) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.e.stats.Packets.Add(1)
	if p.Proto == policy.TCP && p.SYN && len(p.Payload) > 0 && s.e.cfg.inspected(policy.TCP, p.DstPort) {
		// Data in a SYN (TCP Fast Open, or crafted). Whether a server
		// reads it depends on its stack (RFC 9293 queues it; Linux without
		// a Fast Open cookie, which egressd's rules strip, discards it and
		// reads the client's resend at ISN+1), so the name egressd would
		// read from it may not be the one the server reads. Dropped, the
		// flow untouched: a client resends its SYN without the data.
		s.e.stats.SYNPayloads.Add(1)
		s.e.sinks[p.Queue].Drop(p.ID)
		return
	}
	if p.Proto == policy.TCP && p.SYN && s.e.cfg.SYNs != nil && s.e.synLogged(p.DstPort) {
		// A SYN queued to a port whose SYNs the rules log: one they do
		// not take for a plain SYN (IP options, say), or one that came
		// while the port joined the set. Where the stream starts must
		// come from the log alone (a log that lost the flow's own SYN
		// would otherwise leave this one to anchor it): dropped, the
		// client resends it and the log takes it.
		s.e.stats.SYNsQueuedLogged.Add(1)
		s.e.sinks[p.Queue].Drop(p.ID)
		return
	}
	k := keyOf(p)
	f := s.flows[k]
	if s.e.cfg.SYNs != nil && p.Proto == policy.TCP && len(p.Payload) > 0 &&
		(f == nil || f.st != verifying && s.e.synLogged(p.DstPort)) {
		// Data of a flow egressd has not seen start, or of one read or
		// decided on a port whose SYNs are logged: the log may hold its SYN,
		// or a SYN of another ISN on the same 5-tuple (a new connection
		// the server now follows). Hand the log's SYNs to their shards
		// first (this one's lock released meanwhile: no lock is held
		// while another is waited for), so that no head is read past a
		// SYN the log holds.
		s.mu.Unlock()
		empty := s.e.DrainSYNs()
		s.mu.Lock()
		if f = s.flows[k]; f == nil && !empty {
			// The log holds more than one drain reads (far more than its
			// socket buffers: it cannot happen while the rules' per-source
			// rate holds). The SYN may be unread: fail closed.
			s.e.cfg.Logger.Warn("syn log not drained to its end; a flow whose SYN may be in it is denied (limit syn_log)",
				"src", p.Src, "dst", p.Dst, "dport", p.DstPort)
			s.refuse(p, LimitSYNLog)
			return
		}
	}
	if f != nil && f.st == decided && p.Proto == policy.TCP && p.SYN && p.Seq != f.isn {
		// A new connection on a decided flow's 5-tuple (the old one
		// ended, conntrack began another): it is a flow of its own, to
		// be read and decided, not one to inherit a verdict.
		s.forget(f)
		f = nil
	}
	if f == nil {
		if p.Proto == policy.TCP && !p.SYN && len(p.Payload) == 0 {
			// Nothing to decide on; the rules do not queue these.
			s.e.sinks[p.Queue].Pass(p.ID)
			return
		}
		if f = s.start(p); f == nil {
			return // decided on this packet
		}
	}
	switch f.st {
	case decided:
		s.e.sinks[p.Queue].Verdict(p.ID, f.mark)
		return
	case verifying:
		if p.Proto == policy.TCP && p.SYN && p.Seq != f.isn {
			// Another connection on the flow's 5-tuple while its name is
			// being verified: what was read may not be what its server
			// reads.
			s.carry(f, p)
			s.otherISN(f)
			return
		}
		s.hold(f, p)
		return
	}
	s.read(f, p)
}

// otherISN denies a flow that met a SYN of another initial sequence
// number: malformed, as the head parser says of one while reading.
func (s *Shard) otherISN(f *flow) {
	f.info.Head = decide.Malformed
	s.finish(f, s.decide(f), 0)
}

// denyLogged denies every undecided TCP flow to a port whose SYNs are
// logged (limit syn_log): the log lost SYNs, and one may have been theirs.
func (s *Shard) denyLogged() {
	s.mu.Lock()
	defer s.mu.Unlock()
	var lost []*flow
	for _, f := range s.flows {
		if f.st != decided && f.info.Proto == policy.TCP && s.e.synLogged(f.info.Port) {
			lost = append(lost, f)
		}
	}
	for _, f := range lost {
		s.deny(f, LimitSYNLog)
	}
}

// logged takes a SYN the kernel forwarded and logged (SYNSource): it
// starts the flow, as a queued SYN would, with nothing to hold; or, for a
// flow being read, counts it as a retransmission (another ISN is another
// connection: malformed). A decided flow's verdict is in the kernel
// already.
func (s *Shard) logged(p *Packet) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.e.stats.SYNsLogged.Add(1)
	f := s.flows[keyOf(p)]
	if f != nil && f.st == decided && p.Seq != f.isn {
		s.forget(f) // a new connection on the 5-tuple (Handle)
		f = nil
	}
	if f == nil {
		s.start(p)
		return
	}
	if (f.st != reading && f.st != verifying) || f.tcp == nil {
		return
	}
	if f.syns++; f.syns > s.e.cfg.MaxHeld {
		s.deny(f, LimitSYNs)
		return
	}
	if f.st == verifying {
		if p.Seq != f.isn {
			s.otherISN(f)
		}
		return
	}
	if res := f.tcp.Feed(p.Seq, true, nil); res.Status == classify.Denied {
		f.info.Head = headOf(res.Err)
		s.finish(f, s.decide(f), 0)
	}
}

// refuse starts a flow with p and denies it at limit l (p carries the
// deny), unless the policy decides it on its first packet.
func (s *Shard) refuse(p *Packet, l Limit) {
	f := s.begin(p)
	s.carry(f, p)
	s.deny(f, l)
}

// start begins a flow with its first packet. A flow the policy decides on
// this packet is decided at once, the packet carrying the verdict, and
// start returns nil: it never waits for a pool. Otherwise the flow takes
// its place in the table (its source's share of it) and is left reading
// its head.
//
// A logged SYN (Packet.Logged) starts its flow the same way, with no packet
// to carry the verdict: a flow decided on it has its verdict written to
// the connection (Sink.Conclude).
func (s *Shard) start(p *Packet) *flow {
	e := s.e
	now := e.cfg.Now()
	f := s.begin(p)
	if o := s.decide(f); o.Final {
		// Decided on the first packet: whatever the name, whatever the
		// pools hold.
		s.carry(f, p)
		s.finish(f, o, 0)
		return nil
	}
	if p.Proto == policy.TCP && !p.SYN {
		// egressd never saw the flow's SYN (it started after it, or the
		// SYN log lost it), so it cannot know where the stream starts,
		// and a guess could be read from a segment its server discards:
		// fail closed, the client retries with a new connection.
		l := LimitNoSYN
		if e.synLogged(p.DstPort) {
			l = LimitSYNLog
		}
		s.carry(f, p)
		s.deny(f, l)
		return nil
	}
	if !s.take(f, ResFlows, 1) {
		s.carry(f, p)
		s.deny(f, LimitFlows)
		return nil
	}
	s.pending.push(f, now.Add(e.cfg.HelloTimeout))
	switch p.Proto {
	case policy.TCP:
		f.isn = p.Seq
		f.tcp = s.parsers.tcp()
		f.tcp.Reset(p.Seq, e.cfg.HelloMaxBytes)
	case policy.UDP:
		f.quic = s.parsers.quic()
		f.quic.Reset(e.cfg.HelloMaxBytes)
	}
	return f
}

// begin puts a new flow in the table, reading, with p its first packet.
func (s *Shard) begin(p *Packet) *flow {
	e := s.e
	now := e.cfg.Now()
	f := s.alloc()
	s.to(f, reading)
	f.key, f.start, f.waitSince = keyOf(p), now, now
	f.info = decide.Flow{Src: p.Src, Dst: p.Dst, Port: p.DstPort, Proto: p.Proto, Inspected: e.cfg.inspected(p.Proto, p.DstPort)}
	f.src = s.sourceOf(f.key.src)
	f.src.link(f)
	s.flows[f.key] = f
	s.undecided++
	e.stats.Flows.Add(1)
	e.stats.Undecided.Add(1)
	e.stats.Tracked.Add(1)
	for len(s.flows) > 2*s.maxFlows {
		// Decided flows linger only to answer packets already queued;
		// evict the oldest rather than grow without bound.
		ent, ok := s.linger.popFront()
		if !ok {
			break
		}
		s.evict(ent)
	}
	return f
}

// read feeds a packet of a reading flow to its head parser and decides the
// flow once the head says enough.
func (s *Shard) read(f *flow, p *Packet) {
	e := s.e
	var res classify.Result
	switch p.Proto {
	case policy.TCP:
		if p.SYN {
			if f.syns++; f.syns > e.cfg.MaxHeld {
				s.carry(f, p)
				s.deny(f, LimitSYNs)
				return
			}
		}
		res = f.tcp.Feed(p.Seq, p.SYN, p.Payload)
		if res.Status == classify.NeedMore && len(p.Payload) == 0 {
			// The handshake must complete for the client to send its
			// hello; a segment without payload gives nothing away.
			s.e.sinks[p.Queue].Pass(p.ID)
			return
		}
	case policy.UDP:
		res = f.quic.Feed(p.Payload)
	}
	if !s.hold(f, p) {
		return
	}
	if res.Status == classify.NeedMore && !s.buffered(f) {
		return
	}
	switch {
	case res.Status == classify.Done:
		f.info.Head, f.info.Name, f.info.From, f.info.ECH = decide.Named, res.Name, nameFrom(res.From), res.ECH
		s.decideNamed(f)
	case res.Status == classify.Denied:
		if f.info.Head = headOf(res.Err); f.info.Head == decide.Limit {
			s.deny(f, LimitHello)
			return
		}
		s.finish(f, s.decide(f), 0)
	case p.Truncated:
		// The queue's copy range cut this packet, and the head goes on
		// past the cut: its missing bytes will never be seen. (A head
		// that completes within the copied part is decided as usual: the
		// bytes after it do not name anything.)
		s.deny(f, LimitHello)
	}
}

// headOf is what a head parser's refusal means to the decision.
func headOf(err error) decide.Head {
	switch {
	case errors.Is(err, classify.ErrNotTLS):
		return decide.NotTLSOrHTTP
	case errors.Is(err, classify.ErrLimit):
		return decide.Limit
	}
	return decide.Malformed
}

func nameFrom(s classify.Source) declog.NameFrom {
	switch s {
	case classify.SourceSNI:
		return declog.FromSNI
	case classify.SourceQUIC:
		return declog.FromQUIC
	case classify.SourceHost:
		return declog.FromHost
	}
	return declog.FromNone
}

// decide runs the decision procedure on what the flow has told so far.
func (s *Shard) decide(f *flow) decide.Outcome {
	var dns decide.DNS
	if v := s.e.cfg.Verifier; v != nil {
		dns = v
	}
	return s.decider.Decide(s.e.pol.Load(), &f.info, dns)
}

// decideNamed decides a flow whose head is read, asking DNS off the packet
// path when the allow rests on a name the cache does not place at the
// destination.
func (s *Shard) decideNamed(f *flow) {
	e := s.e
	o := s.decide(f)
	if !o.Verify {
		if o.DNSCheck == declog.CheckVerified {
			e.stats.VerifyHits.Add(1)
		}
		s.finish(f, o, 0)
		return
	}
	if e.cfg.Verifier == nil {
		s.finish(f, o.Resolve(e.cfg.Unchecked), 0)
		return
	}
	// A lookup costs the resolver queries every source shares: each
	// source has a rate and a share of the lookups in flight.
	if !s.verifyToken(f.src, e.cfg.Now()) {
		s.deny(f, LimitVerifyRate)
		return
	}
	if !s.take(f, ResVerify, 1) {
		s.deny(f, LimitVerify)
		return
	}
	s.to(f, verifying)
	f.pending = o
	gen, dst, name, since := f.gen, f.info.Dst, f.info.Name, f.start
	logged := f.info.Proto == policy.TCP && e.synLogged(f.info.Port)
	ctx, cancel := context.WithDeadline(e.ctx, f.start.Add(e.cfg.HelloTimeout))
	f.cancel = cancel
	e.verifyWG.Add(1)
	go func() {
		defer e.verifyWG.Done()
		defer cancel()
		v, err := e.cfg.Verifier.Verify(ctx, name, dst, since)
		answer := v.Answer
		switch {
		case errors.Is(err, ErrBudget):
			answer = 0 // not an answer: the flow is denied at the limit below
		case err != nil:
			answer = decide.Error
			e.stats.VerifyErrors.Add(1)
		case answer == decide.Mismatch:
			e.stats.VerifyMismatches.Add(1)
		case answer == decide.Grace:
			e.stats.VerifyGraces.Add(1)
		}
		if logged {
			// A SYN of another ISN may have come while DNS answered.
			e.DrainSYNs()
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if f.gen != gen || f.st != verifying {
			return // timed out, or evicted, and decided meanwhile
		}
		if answer == 0 {
			s.deny(f, LimitResolver)
			return
		}
		o := f.pending.Resolve(answer)
		o.DNS = v.Evidence
		s.finish(f, o, 0)
	}()
}

// carry keeps a packet to carry the verdict of a flow about to be decided
// (it draws on no pool). A logged packet has no verdict to carry.
func (s *Shard) carry(f *flow, p *Packet) {
	if p.Logged {
		return
	}
	if len(f.held) == 0 {
		f.waitSince = p.Time
	}
	f.held = append(f.held, heldPacket{id: p.ID, queue: p.Queue})
	s.e.queued[p.Queue].Add(1)
	s.e.stats.Held.Add(1)
}

// hold keeps a packet until its flow is decided, from the flow's bound,
// its source's share of the held-packet pool and its queue's room. It
// returns false when the flow was denied instead (the packet then carries
// the deny).
func (s *Shard) hold(f *flow, p *Packet) bool {
	s.carry(f, p)
	switch {
	case len(f.held) > s.e.cfg.MaxHeld:
		s.deny(f, LimitFlowHeld)
		return false
	case !s.take(f, ResHeld, 1) || s.e.queued[p.Queue].Load() > s.e.queueCap:
		// A shard's pool is its flows', wherever their packets wait; the
		// kernel queue a packet waits in has its own bound too (the
		// shards that share it may fill it between them).
		s.deny(f, LimitHeld)
		return false
	}
	return true
}

// deny denies a flow at a limit (counted per limit and per source); the
// decision procedure still decides it if the policy does so on the first
// packet.
func (s *Shard) deny(f *flow, l Limit) {
	s.e.stats.countLimit(l)
	if f.src != nil {
		f.src.limited[l]++
	}
	f.info.Head = decide.Limit
	s.finish(f, s.decide(f), l+1)
}

// finish gives the flow its verdict, once: its line is logged, then the
// held packets carry the verdict to the kernel, or, with none in hand, the
// connection's mark is set; then the flow counts as decided and gives back
// its pools, and it lingers to answer packets still in the queue. limit is
// the Limit that denied it, plus one (0: none).
func (s *Shard) finish(f *flow, o decide.Outcome, limit Limit) {
	e := s.e
	if !o.Final || o.Verify {
		// Not a decision: a bug of the caller. Fail closed.
		e.stats.Internal.Add(1)
		o = decide.Deny(&f.info, policy.ReasonLimit)
	}
	from := f.st
	if !s.to(f, decided) {
		return // decided already: a flow ends once
	}
	now := e.cfg.Now()
	f.mark = e.markFor(o.Verdict)
	// The line before the verdict: an allowed flow's line is written
	// before Log returns (declog.Writer), so no flow crosses without it,
	// even if egressd dies the next instant.
	r := &s.rec
	e.logRecord(r, f, now)
	o.Fill(r)
	e.cfg.Log(r)
	if len(f.held) == 0 {
		if err := e.sinks[0].Conclude(f.key.tuple(), f.mark); err != nil {
			e.stats.ConcludeErrors.Add(1)
			e.cfg.Logger.Error("the kernel was not told a flow's verdict; its connection stays unmarked until it ends",
				"verdict", f.mark.String(), "src", f.info.Src, "dst", f.info.Dst, "dport", f.info.Port, "err", err)
		}
	}
	for _, h := range f.held {
		e.sinks[h.queue].Verdict(h.id, f.mark)
		e.queued[h.queue].Add(-1)
	}
	e.stats.Held.Add(-int64(len(f.held)))
	f.held = f.held[:0]
	s.undecided--
	e.stats.Undecided.Add(-1)
	if f.cancel != nil {
		f.cancel()
		f.cancel = nil
	}
	s.release(f)
	f.src.unlink(f)
	s.parsers.giveBack(f)
	s.linger.push(f, now.Add(e.cfg.Linger))

	if limit > 0 {
		e.cfg.Logger.Debug("flow denied at a limit", "limit", (limit - 1).String(), "state", from.String(),
			"src", f.info.Src, "dst", f.info.Dst, "dport", f.info.Port)
	}
	e.stats.countDecision(f.info.Proto, o.Verdict, o.Reason)
	if o.Shadowed() {
		e.stats.ShadowDenials.Add(1)
	}
}

// to moves f to state next if the move is legal, and reports whether it
// was. Every change of a flow's state goes through here.
func (s *Shard) to(f *flow, next state) bool {
	if !f.st.canMoveTo(next) {
		if f.st != decided || next != decided {
			s.e.stats.Internal.Add(1)
			s.e.cfg.Logger.Error("illegal flow state change (a bug); refused", "from", f.st.String(), "to", next.String())
		}
		return false
	}
	f.st = next
	return true
}

// expire denies undecided flows past their deadline and forgets decided
// flows past their linger.
func (s *Shard) expire(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		ent, ok := s.pending.popExpired(now)
		if !ok {
			break
		}
		f := ent.f
		if f.gen != ent.gen {
			continue
		}
		switch f.st {
		case reading:
			f.info.Head = decide.Incomplete
			s.finish(f, s.decide(f), 0)
		case verifying:
			// The resolver did not answer in time.
			s.e.stats.VerifyErrors.Add(1)
			s.finish(f, f.pending.Resolve(decide.Error), 0)
		}
	}
	for {
		ent, ok := s.linger.popExpired(now)
		if !ok {
			break
		}
		s.evict(ent)
	}
	if now.Sub(s.pruned) >= time.Second {
		s.pruneSources(now)
		s.pruned = now
	}
}

// evict forgets a decided flow and returns it to the free list, reset
// whole.
func (s *Shard) evict(ent fifoEntry) {
	if ent.f.gen != ent.gen {
		return
	}
	s.forget(ent.f)
}

// forget drops a decided flow from the table now, before its linger ends
// (its linger entry no longer matches it).
func (s *Shard) forget(f *flow) {
	if f.st != decided {
		return
	}
	delete(s.flows, f.key)
	s.e.stats.Tracked.Add(-1)
	s.to(f, free)
	f.gen++
	f.flowVars = flowVars{}
	s.free = append(s.free, f)
}

// buffered accounts the flow-head bytes f's parser holds now against its
// source's share of the buffer pool. It returns false when the flow was
// denied for them.
func (s *Shard) buffered(f *flow) bool {
	var held int
	switch {
	case f.tcp != nil:
		held = f.tcp.Capacity()
	case f.quic != nil:
		held = f.quic.Capacity()
	}
	switch d := held - f.use[ResBytes]; {
	case d < 0:
		s.add(f, ResBytes, d)
	case d > 0 && !s.take(f, ResBytes, d):
		s.deny(f, LimitBytes)
		return false
	}
	return true
}

// parsers lends head parsers to a shard's undecided flows.
type parsers struct {
	tcps  []*classify.TCPFlow
	quics []*classify.QUICFlow
}

func (ps *parsers) tcp() *classify.TCPFlow {
	if n := len(ps.tcps); n > 0 {
		f := ps.tcps[n-1]
		ps.tcps = ps.tcps[:n-1]
		return f
	}
	return new(classify.TCPFlow)
}

func (ps *parsers) quic() *classify.QUICFlow {
	if n := len(ps.quics); n > 0 {
		f := ps.quics[n-1]
		ps.quics = ps.quics[:n-1]
		return f
	}
	return new(classify.QUICFlow)
}

// giveBack takes f's parser back, its buffers returned to their pools.
func (ps *parsers) giveBack(f *flow) {
	if f.tcp != nil {
		f.tcp.Release()
		ps.tcps = append(ps.tcps, f.tcp)
		f.tcp = nil
	}
	if f.quic != nil {
		f.quic.Release()
		ps.quics = append(ps.quics, f.quic)
		f.quic = nil
	}
}

func (s *Shard) alloc() *flow {
	if n := len(s.free); n > 0 {
		f := s.free[n-1]
		s.free = s.free[:n-1]
		return f
	}
	return &flow{held: make([]heldPacket, 0, 4)}
}
