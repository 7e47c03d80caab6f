package engine

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/egressd/egressd/pkg/declog"
	"github.com/egressd/egressd/pkg/policy"
)

// Sink carries the engine's verdicts to the kernel (nfq.Queue), or records
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
	// Conclude writes a verdict to the flow's connection when no packet
	// of the flow is in hand to carry it (a handshake that sent nothing
	// before hello.timeout). A connection the kernel no longer has is not
	// an error; any other error means the kernel may not know the verdict.
	Conclude(t Tuple, v policy.Verdict) error
}

// Tuple is a flow's addresses as the connection's original direction
// has them (before the NAT's masquerade).
type Tuple struct {
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16
	Proto            policy.Proto
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

	verifyWG sync.WaitGroup
	ctx      context.Context // cancelled by Close; bounds verifications
	cancel   context.CancelFunc
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
		return nil, errors.New("engine: no policy")
	}
	if shards < 1 {
		return nil, fmt.Errorf("engine: %d shards", shards)
	}
	if cfg.MaxHeldTotal == 0 {
		cfg.MaxHeldTotal = defaultHeldTotal(shards)
	}
	e := &Engine{cfg: cfg}
	e.ctx, e.cancel = context.WithCancel(context.Background())
	e.pol.Store(p)
	e.mode.Store(uint32(cfg.Mode))
	split := func(n int) int { return max(1, (n+shards-1)/shards) }
	for i := 0; i < shards; i++ {
		s := &Shard{
			e:        e,
			index:    i,
			maxFlows: split(cfg.MaxFlows),
			flows:    make(map[flowKey]*flow, min(split(cfg.MaxFlows), 4096)),
		}
		s.pools.srcs = map[[4]byte]*source{}
		s.pools.cap = [numResources]int{
			ResFlows: split(cfg.MaxFlows), ResHeld: split(cfg.MaxHeldTotal),
			ResBytes: split(cfg.MaxBufferBytes), ResVerify: split(cfg.MaxVerifications),
		}
		e.shards = append(e.shards, s)
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

// markFor is the verdict packets and connections get for a decision's
// verdict: in monitor mode nothing is blocked.
func (e *Engine) markFor(v policy.Verdict) policy.Verdict {
	if e.Mode() == Monitor {
		return policy.Allow
	}
	return v
}

// logRecord is the decision line's skeleton for a flow: its addresses,
// the time, whether the mode enforces.
func (e *Engine) logRecord(r *declog.Record, f *flow, now time.Time) {
	*r = declog.Record{
		Time: now, Src: f.info.Src, SrcPort: f.key.sport, Dst: f.info.Dst, DstPort: f.info.Port,
		Proto: f.info.Proto, Enforced: e.Mode() == Enforce, Latency: now.Sub(f.waitSince),
	}
}
