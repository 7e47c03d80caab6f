package nfq

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/egressd/egressd/pkg/classify"
	"github.com/egressd/egressd/pkg/declog"
	"github.com/egressd/egressd/pkg/policy"
)

// Sink carries the engine's verdicts to the kernel (Queue), or records
// them (replay, tests). Its methods may be called from any goroutine and
// must not block for long: the engine calls them with a shard locked.
type Sink interface {
	// Pass lets a packet of an undecided flow through without a verdict
	// mark, so the flow stays undecided: the SYN of a flow whose name is
	// still to be read, a payload-less segment.
	Pass(id uint32)
	// Verdict marks a packet with the flow's verdict and re-injects it:
	// iptables saves the mark to the connection and acts on it.
	Verdict(id uint32, v policy.Verdict)
	// Drop discards a packet that cannot belong to any decision.
	Drop(id uint32)
}

// Engine decides flows. Packets enter through its shards (one per queue);
// a shard's flows are its own, so shards never contend.
type Engine struct {
	cfg    Config
	mode   atomic.Uint32 // Mode; starts as cfg.Mode, SetMode changes it
	pol    atomic.Pointer[policy.Policy]
	shards []*Shard
	stats  Stats

	lastTick atomic.Int64 // unix nanoseconds of the last Tick, for the watchdog

	verifySem chan struct{}
	verifyWG  sync.WaitGroup
	ctx       context.Context // cancelled by Close; bounds verifications
	cancel    context.CancelFunc
}

// New returns an engine with the given number of shards (one per queue
// reader) and policy. Attach a Sink to every shard before handing it
// packets.
func New(cfg Config, p *policy.Policy, shards int) (*Engine, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if p == nil {
		return nil, errors.New("nfq: no policy")
	}
	if shards < 1 {
		return nil, fmt.Errorf("nfq: %d shards", shards)
	}
	e := &Engine{cfg: cfg, verifySem: make(chan struct{}, cfg.MaxVerifications)}
	e.ctx, e.cancel = context.WithCancel(context.Background())
	e.pol.Store(p)
	e.mode.Store(uint32(cfg.Mode))
	perShard := (cfg.MaxFlows + shards - 1) / shards
	for i := 0; i < shards; i++ {
		e.shards = append(e.shards, &Shard{
			e:        e,
			index:    i,
			maxFlows: perShard,
			flows:    make(map[flowKey]*flow, min(perShard, 4096)),
		})
	}
	return e, nil
}

// Shard returns shard i, for queue reader i.
func (e *Engine) Shard(i int) *Shard { return e.shards[i] }

// Shards returns the number of shards.
func (e *Engine) Shards() int { return len(e.shards) }

// SetPolicy swaps the policy. Decided flows keep their decision; flows
// decided from now on use p.
func (e *Engine) SetPolicy(p *policy.Policy) { e.pol.Store(p) }

// SetMode switches between enforce and monitor for flows decided from now
// on (monitor_until, a config reload).
func (e *Engine) SetMode(m Mode) { e.mode.Store(uint32(m)) }

// Mode returns the mode in force.
func (e *Engine) Mode() Mode { return Mode(e.mode.Load()) }

// Policy returns the policy in force.
func (e *Engine) Policy() *policy.Policy { return e.pol.Load() }

// Stats returns the engine's counters.
func (e *Engine) Stats() *Stats { return &e.stats }

// Config returns the engine's configuration, defaults filled in.
func (e *Engine) Config() Config { return e.cfg }

// Run expires timed-out and lingering flows until ctx is done, then
// waits for DNS verifications in flight. It is the owner of the engine's
// background work; the daemon runs it once.
func (e *Engine) Run(ctx context.Context) {
	t := time.NewTicker(e.tickInterval())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			e.Close()
			return
		case <-t.C:
			e.Tick(e.cfg.Now())
		}
	}
}

// tickInterval is how often timeouts are checked: a tenth of the hello
// timeout, at most 100ms. A flow is denied "incomplete" at most that late.
func (e *Engine) tickInterval() time.Duration {
	return min(e.cfg.HelloTimeout/10, 100*time.Millisecond)
}

// Tick expires flows whose time is up as of now: undecided flows past
// hello.timeout are denied, decided flows past their linger are dropped
// from the table. Replay calls it with capture time.
func (e *Engine) Tick(now time.Time) {
	for _, s := range e.shards {
		s.expire(now)
	}
	e.lastTick.Store(now.UnixNano())
}

// LastTick is when Tick last completed (every shard's lock was taken and
// released): a watchdog that sees it advance knows no shard is stuck.
func (e *Engine) LastTick() time.Time { return time.Unix(0, e.lastTick.Load()) }

// Close cancels DNS verifications in flight and waits for them to finish.
// Their flows are decided (dns-error) by the next Tick or dropped with
// the engine.
func (e *Engine) Close() {
	e.cancel()
	e.verifyWG.Wait()
}

// flowKey is a flow's 5-tuple, packed so it is comparable and hashes fast.
// Only IPv4 reaches the engine (IPv6 is not forwarded).
type flowKey struct {
	src, dst     [4]byte
	sport, dport uint16
	proto        policy.Proto
}

func keyOf(p *Packet) flowKey {
	return flowKey{src: p.Src.As4(), dst: p.Dst.As4(), sport: p.SrcPort, dport: p.DstPort, proto: p.Proto}
}

type flowState uint8

const (
	reading   flowState = iota // waiting for the flow head
	verifying                  // decided by the policy, waiting for DNS
	decided                    // verdict given; kept for packets already queued
)

// flow is one tracked flow. Flows are reused through the shard's free
// list; gen changes on every reuse so that stale references (fifo
// entries, verifications in flight) can tell.
type flow struct {
	gen   uint32
	key   flowKey
	state flowState
	mark  policy.Verdict // the verdict packets get (allow in monitor mode)

	start     time.Time // first packet
	waitSince time.Time // arrival of the oldest held packet, or of the deciding packet
	held      []uint32
	syns      int

	tcp  classify.TCPFlow
	quic classify.QUICFlow

	// Set while verifying: the policy's decision and the name it relied on.
	pending policy.Decision
	name    string
	from    classify.Source
	ech     bool
}

// Shard is one queue's share of the flow table.
type Shard struct {
	e        *Engine
	index    int
	sink     Sink
	maxFlows int

	mu        sync.Mutex
	flows     map[flowKey]*flow
	pending   fifo // undecided flows, by deadline
	linger    fifo // decided flows, by end of linger
	free      []*flow
	undecided int
	names     []string // scratch: DNS names of a destination
	rec       declog.Record
}

// Attach sets the sink that receives the shard's verdicts.
func (s *Shard) Attach(sink Sink) { s.sink = sink }

// Handle processes one queued packet: it creates or finds the packet's
// flow, feeds the flow head to the classifier, and gives the packet (and
// every packet held for its flow) a verdict when the flow is decided, or
// holds it until then.
func (s *Shard) Handle(p *Packet) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.e
	e.stats.Packets.Add(1)
	k := keyOf(p)
	f := s.flows[k]
	if f == nil {
		if p.Proto == policy.TCP && !p.SYN && len(p.Payload) == 0 {
			// Nothing to decide on; the rules do not queue these.
			s.sink.Pass(p.ID)
			return
		}
		if f = s.newFlow(k, p); f == nil {
			return // refused at the limit; the packet has its verdict
		}
	}
	switch f.state {
	case decided:
		s.sink.Verdict(p.ID, f.mark)
		return
	case verifying:
		s.hold(f, p)
		return
	}
	var res classify.Result
	switch p.Proto {
	case policy.TCP:
		if p.SYN {
			if f.syns++; f.syns > e.cfg.MaxHeld {
				s.hold(f, p)
				s.finishDeny(f, p, policy.ReasonLimit, "SYN retransmissions")
				return
			}
		}
		res = f.tcp.Feed(p.Seq, p.SYN, p.Payload)
		if res.Status == classify.NeedMore && len(p.Payload) == 0 {
			// The handshake must complete for the client to send its
			// hello; a segment without payload gives nothing away.
			s.sink.Pass(p.ID)
			return
		}
	case policy.UDP:
		res = f.quic.Feed(p.Payload)
	}
	if !s.hold(f, p) {
		return
	}
	if p.Truncated && res.Status == classify.NeedMore {
		// The queue's copy range cut this packet, and the head goes on
		// past the cut: its missing bytes will never be seen. (A head
		// that completes within the copied part is decided as usual: the
		// bytes after it do not name anything.)
		e.stats.LimitHello.Add(1)
		s.finishDeny(f, p, policy.ReasonLimit, "flow head past the copy range")
		return
	}
	switch res.Status {
	case classify.Done:
		s.onName(f, p, res)
	case classify.Denied:
		s.onHeadError(f, p, res.Err)
	}
}

// newFlow starts tracking a flow and decides it at once when the name
// cannot matter. It returns nil when the table is full (the packet is then
// denied).
func (s *Shard) newFlow(k flowKey, p *Packet) *flow {
	e := s.e
	now := e.cfg.Now()
	if s.undecided >= s.maxFlows {
		e.stats.LimitFlows.Add(1)
		s.sink.Verdict(p.ID, s.markFor(policy.Deny))
		s.logDecision(p, now, decision{verdict: policy.Deny, reason: policy.ReasonLimit}, now)
		return nil
	}
	for len(s.flows) >= 2*s.maxFlows {
		// Decided flows linger only to answer packets already queued;
		// evict the oldest rather than grow without bound.
		ent, ok := s.linger.popFront()
		if !ok {
			break
		}
		s.evict(ent)
	}
	f := s.alloc()
	f.key, f.state, f.start, f.waitSince = k, reading, now, now
	s.flows[k] = f
	s.undecided++
	e.stats.Flows.Add(1)
	e.stats.Undecided.Add(1)
	e.stats.Tracked.Add(1)
	s.pending.push(f, now.Add(e.cfg.HelloTimeout))

	pol := e.pol.Load()
	q := s.query(p)
	if !q.Inspected {
		// A port without a name: decided on the first packet, rules with
		// domains matching by their DNS answers.
		q.DNSNames = s.dnsNames(pol, p.Dst)
		s.finishPolicy(f, p, pol.Decide(q), "", classify.SourceNone, false)
		return f
	}
	q.Pending = true
	if d := pol.Decide(q); d.Final {
		s.finishPolicy(f, p, d, "", classify.SourceNone, false)
		return f
	}
	switch p.Proto {
	case policy.TCP:
		isn := p.Seq
		if !p.SYN {
			// The flow was undecided when egressd (re)started: read its
			// head from this segment on. A wrong guess fails closed.
			isn--
		}
		f.tcp.Reset(isn, e.cfg.HelloMaxBytes)
	case policy.UDP:
		f.quic.Reset(e.cfg.HelloMaxBytes)
	}
	return f
}

func (s *Shard) query(p *Packet) policy.Query {
	return policy.Query{
		Src: p.Src, Dst: p.Dst, Port: p.DstPort, Proto: p.Proto,
		Inspected: s.e.cfg.inspected(p.Proto, p.DstPort),
	}
}

// dnsNames returns the policy's literal names whose cached DNS answers
// include dst (without blocking on DNS).
func (s *Shard) dnsNames(pol *policy.Policy, dst netip.Addr) []string {
	v := s.e.cfg.Verifier
	s.names = s.names[:0]
	if v == nil {
		return nil
	}
	for _, n := range pol.LiteralNames() {
		if v.Contains(n, dst) {
			s.names = append(s.names, n)
		}
	}
	return s.names
}

// hold keeps a packet until its flow is decided. It returns false when the
// flow had too many held packets and was denied for it.
func (s *Shard) hold(f *flow, p *Packet) bool {
	if len(f.held) == 0 {
		f.waitSince = p.Time
	}
	f.held = append(f.held, p.ID)
	s.e.stats.Held.Add(1)
	if len(f.held) > s.e.cfg.MaxHeld {
		s.finishDeny(f, p, policy.ReasonLimit, "held packets")
		return false
	}
	return true
}

// onName decides a flow whose head named it (or carried no name).
func (s *Shard) onName(f *flow, p *Packet, res classify.Result) {
	e := s.e
	pol := e.pol.Load()
	q := s.query(p)
	q.Name = res.Name
	if q.Name == "" {
		q.DNSNames = s.dnsNames(pol, p.Dst) // deny rules still match a nameless flow by address
	}
	d := pol.Decide(q)
	if d.Verdict != policy.Allow || !d.Verify {
		s.finishPolicy(f, p, d, res.Name, res.From, res.ECH)
		return
	}
	// The allow relies on the name: trust it only if the destination is
	// among the name's DNS answers.
	v := e.cfg.Verifier
	switch {
	case v == nil:
		s.finishPolicy(f, p, d, res.Name, res.From, res.ECH)
	case v.Contains(res.Name, p.Dst):
		e.stats.VerifyHits.Add(1)
		s.finishPolicy(f, p, d, res.Name, res.From, res.ECH)
	default:
		s.startVerify(f, p, d, res)
	}
}

// startVerify looks the name up off the packet path; the flow's packets
// stay held until the answer or the flow's deadline.
func (s *Shard) startVerify(f *flow, p *Packet, d policy.Decision, res classify.Result) {
	e := s.e
	select {
	case e.verifySem <- struct{}{}:
	default:
		e.stats.LimitVerify.Add(1)
		s.finishDeny(f, p, policy.ReasonLimit, "DNS verifications in flight")
		return
	}
	f.state, f.pending, f.name, f.from, f.ech = verifying, d, res.Name, res.From, res.ECH
	gen, dst, name := f.gen, p.Dst, res.Name
	pkt := *p
	pkt.Payload = nil // not valid past this call
	deadline := f.start.Add(e.cfg.HelloTimeout)
	e.verifyWG.Add(1)
	go func() {
		defer e.verifyWG.Done()
		defer func() { <-e.verifySem }()
		ctx, cancel := context.WithDeadline(e.ctx, deadline)
		ok, err := e.cfg.Verifier.Verify(ctx, name, dst)
		cancel()
		s.mu.Lock()
		defer s.mu.Unlock()
		if f.gen != gen || f.state != verifying {
			return // timed out and decided meanwhile
		}
		switch {
		case err != nil:
			e.stats.VerifyErrors.Add(1)
			s.finishDecision(f, &pkt, decision{verdict: policy.Deny, reason: policy.ReasonDNSError, name: f.name, from: f.from, ech: f.ech})
		case !ok:
			e.stats.VerifyMismatches.Add(1)
			s.finishDecision(f, &pkt, decision{verdict: policy.Deny, reason: policy.ReasonDNSMismatch, name: f.name, from: f.from, ech: f.ech})
		default:
			s.finishPolicy(f, &pkt, f.pending, f.name, f.from, f.ech)
		}
	}()
}

// onHeadError decides a flow whose head could not be read. Payload that is
// neither TLS nor HTTP may still go where an address rule allows it
// whatever the name (design.md); a malformed head or one over the limits
// is denied whatever the rules.
func (s *Shard) onHeadError(f *flow, p *Packet, err error) {
	reason := policy.ReasonMalformed
	switch {
	case errors.Is(err, classify.ErrNotTLS):
		reason = policy.ReasonNotTLSOrHTTP
		pol := s.e.pol.Load()
		q := s.query(p)
		q.DNSNames = s.dnsNames(pol, p.Dst)
		if d := pol.Decide(q); d.Verdict == policy.Allow && d.Reason == policy.ReasonRule {
			s.finishPolicy(f, p, d, "", classify.SourceNone, false)
			return
		}
	case errors.Is(err, classify.ErrLimit):
		reason = policy.ReasonLimit
		s.e.stats.LimitHello.Add(1)
	}
	s.finishDecision(f, p, decision{verdict: policy.Deny, reason: reason})
}

// decision is a flow's outcome as logged.
type decision struct {
	verdict policy.Verdict
	reason  policy.Reason
	rule    string
	name    string
	from    classify.Source
	dnsName string // matched through this name's DNS answers (name_from dns)
	ech     bool
	check   string // dns_check
	// shadow is a deny rule on trial that would have denied the flow; when
	// the enforced verdict is allow, the line reports the shadow deny, not
	// enforced.
	shadow, shadowDNS string
}

func (s *Shard) finishPolicy(f *flow, p *Packet, d policy.Decision, name string, from classify.Source, ech bool) {
	out := decision{verdict: d.Verdict, reason: d.Reason, rule: d.Rule, name: name, from: from, dnsName: d.DNSName, ech: ech,
		shadow: d.ShadowRule, shadowDNS: d.ShadowDNSName}
	switch {
	case d.DNSName != "":
		out.check = "verified"
	case d.Verify && d.Verdict == policy.Allow && s.e.cfg.Verifier == nil:
		out.check = "trusted"
	case d.Verify && d.Verdict == policy.Allow:
		out.check = "verified"
	}
	s.finishDecision(f, p, out)
}

func (s *Shard) finishDeny(f *flow, p *Packet, reason policy.Reason, what string) {
	if reason == policy.ReasonLimit {
		s.e.cfg.Logger.Debug("flow denied at a limit", "limit", what, "src", p.Src, "dst", p.Dst, "dport", p.DstPort)
	}
	s.finishDecision(f, p, decision{verdict: policy.Deny, reason: reason})
}

// finishDecision gives the flow its verdict: every held packet is released
// with the verdict mark, the decision is logged, and the flow lingers to
// answer packets still in the queue.
func (s *Shard) finishDecision(f *flow, p *Packet, d decision) {
	e := s.e
	now := e.cfg.Now()
	f.mark = s.markFor(d.verdict)
	for _, id := range f.held {
		s.sink.Verdict(id, f.mark)
	}
	e.stats.Held.Add(-int64(len(f.held)))
	f.held = f.held[:0]
	f.state = decided
	s.undecided--
	e.stats.Undecided.Add(-1)
	f.tcp.Release()
	f.quic.Release()
	s.linger.push(f, now.Add(e.cfg.Linger))
	s.logDecision(p, now, d, f.waitSince)
}

// markFor is the mark packets get for a verdict: in monitor mode nothing
// is blocked.
func (s *Shard) markFor(v policy.Verdict) policy.Verdict {
	if s.e.Mode() == Monitor {
		return policy.Allow
	}
	return v
}

func (s *Shard) logDecision(p *Packet, now time.Time, d decision, since time.Time) {
	e := s.e
	e.stats.countDecision(p.Proto, d.verdict, d.reason)
	r := &s.rec
	*r = declog.Record{
		Time: now, Src: p.Src, SrcPort: p.SrcPort, Dst: p.Dst, DstPort: p.DstPort,
		Proto: p.Proto.String(), Name: d.name, NameFrom: d.from.String(),
		Verdict: d.verdict.String(), Enforced: e.Mode() == Enforce,
		Rule: d.rule, Reason: d.reason.String(), Latency: now.Sub(since),
		ECH: d.ech, DNSCheck: d.check,
	}
	if d.dnsName != "" {
		r.Name, r.NameFrom = d.dnsName, "dns"
	}
	if d.verdict == policy.Allow && d.shadow != "" {
		// What the rule on trial would have done; the allow stands.
		r.Verdict, r.Rule, r.Reason, r.Enforced = policy.Deny.String(), d.shadow, policy.ReasonRule.String(), false
		if d.shadowDNS != "" {
			r.Name, r.NameFrom = d.shadowDNS, "dns"
		}
		e.stats.ShadowDenials.Add(1)
	}
	e.cfg.Log(r)
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
		if f.gen != ent.gen || f.state == decided {
			continue
		}
		reason := policy.ReasonIncomplete
		if f.state == verifying {
			reason = policy.ReasonDNSError // the resolver did not answer in time
			s.e.stats.VerifyErrors.Add(1)
		}
		p := packetOf(f.key)
		d := decision{verdict: policy.Deny, reason: reason, name: f.name, from: f.from, ech: f.ech}
		s.finishDecision(f, &p, d)
	}
	for {
		ent, ok := s.linger.popExpired(now)
		if !ok {
			break
		}
		s.evict(ent)
	}
}

// evict forgets a decided flow and returns it to the free list.
func (s *Shard) evict(ent fifoEntry) {
	f := ent.f
	if f.gen != ent.gen || f.state != decided {
		return
	}
	delete(s.flows, f.key)
	s.e.stats.Tracked.Add(-1)
	f.gen++
	f.name, f.pending, f.syns = "", policy.Decision{}, 0
	s.free = append(s.free, f)
}

func (s *Shard) alloc() *flow {
	if n := len(s.free); n > 0 {
		f := s.free[n-1]
		s.free = s.free[:n-1]
		return f
	}
	return &flow{held: make([]uint32, 0, 4)}
}

// packetOf rebuilds a flow's addresses for a log line written without a
// packet in hand (a timeout).
func packetOf(k flowKey) Packet {
	return Packet{
		Src: netip.AddrFrom4(k.src), Dst: netip.AddrFrom4(k.dst),
		SrcPort: k.sport, DstPort: k.dport, Proto: k.proto,
	}
}
