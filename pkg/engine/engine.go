package engine

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
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

// SYNSource tells the engine of SYNs the kernel forwarded without holding
// them (the rules log them: egressd-iptables.sh --syn-log), so that a
// flow's head is read from its true initial sequence number although its
// SYN never waited for egressd. pkg/nfq's SYNLog is one.
type SYNSource interface {
	// Drain calls fn, in the order logged, for each SYN logged since the
	// last call (Packet.Logged set), until none is left; it never waits
	// for more. It reports whether it found the log empty (false: it
	// stopped at a bound of its own) and whether SYNs were lost since the
	// last call (the log overflowed). It is called from one goroutine at
	// a time.
	Drain(fn func(*Packet)) (empty, lost bool)
}

// Tuple is a flow's addresses as the connection's original direction
// has them (before the NAT's masquerade).
type Tuple struct {
	Src, Dst         netip.Addr
	SrcPort, DstPort uint16
	Proto            policy.Proto
}

// Engine decides flows. Packets enter through Handle, which gives each
// flow to one shard by a hash of its 5-tuple, whatever queue its packets
// come from (the kernel may spread one flow's packets over queues: by
// CPU, or its SYN logged and its data queued); a shard's flows are its
// own, and each packet's verdict goes back to the queue it came from.
type Engine struct {
	cfg    Config
	mode   atomic.Uint32 // Mode; starts as cfg.Mode, SetMode changes it
	pol    atomic.Pointer[policy.Policy]
	shards []*Shard
	stats  Stats

	// sinks are the queues' Sinks, by Packet.Queue; queued counts the
	// packets held in each, bounded by queueCap, so that what egressd
	// holds never fills a kernel queue.
	sinks    []Sink
	queued   []atomic.Int64
	queueCap int64

	synMu    sync.Mutex                   // one Drain at a time
	synPorts atomic.Pointer[[1024]uint64] // TCP ports whose SYNs are logged, not queued
	onSYN    func(*Packet)                // e.logged, made once (a method value allocates)
	seed     uint64                       // of the shard hash

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
	e := &Engine{cfg: cfg, sinks: make([]Sink, shards), queued: make([]atomic.Int64, shards), seed: rand.Uint64()}
	e.onSYN = e.logged
	e.queueCap = int64(max(1, (cfg.MaxHeldTotal+shards-1)/shards))
	e.synPorts.Store(new([1024]uint64))
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

// Shard returns shard i.
func (e *Engine) Shard(i int) *Shard { return e.shards[i] }

// Attach sets the Sink of queue i (Packet.Queue i): the verdicts of the
// packets that came from it go there. There are as many queues as shards.
func (e *Engine) Attach(i int, sink Sink) { e.sinks[i] = sink }

// Handle processes one queued packet (Shard.Handle), in the shard of its
// flow.
func (e *Engine) Handle(p *Packet) { e.shardOf(keyOf(p)).Handle(p) }

// shardOf picks a flow's shard: a keyed hash of its 5-tuple (keyed, so a
// source cannot aim all its flows at one shard).
func (e *Engine) shardOf(k flowKey) *Shard {
	if len(e.shards) == 1 {
		return e.shards[0]
	}
	h := e.seed
	for _, w := range [...]uint64{
		uint64(binary.BigEndian.Uint32(k.src[:]))<<32 | uint64(binary.BigEndian.Uint32(k.dst[:])),
		uint64(k.sport)<<32 | uint64(k.dport)<<8 | uint64(k.proto),
	} {
		// splitmix64's mixing of each word into the state.
		h ^= w
		h ^= h >> 30
		h *= 0xbf58476d1ce4e5b9
		h ^= h >> 27
		h *= 0x94d049bb133111eb
		h ^= h >> 31
	}
	return e.shards[h%uint64(len(e.shards))]
}

// SetSYNLogged sets the TCP ports whose SYNs the rules log instead of
// queueing (pkg/nfq's SYN port set, kept to the policy's
// SYNUndecidedPorts): a flow to one of them whose first queued packet is
// not its SYN and whose SYN was not logged is denied (limit syn_log)
// rather than read from a guessed sequence number.
func (e *Engine) SetSYNLogged(ports []uint16) {
	set := new([1024]uint64)
	for _, p := range ports {
		set[p/64] |= 1 << (p % 64)
	}
	e.synPorts.Store(set)
}

func (e *Engine) synLogged(port uint16) bool { return e.synPorts.Load()[port/64]&(1<<(port%64)) != 0 }

// DrainSYNs hands every SYN logged so far to its flow's shard, and
// reports whether the log was found empty. The engine calls it on every
// Tick (so the log's socket never overflows) and before it starts a flow
// from any TCP segment to a port whose SYNs are logged, or from a data
// segment: to the end of the log, so that every SYN of the flow's 5-tuple
// logged before that segment (a second one with another ISN among them)
// is known before its head is read. It never holds a shard's lock while it
// waits for another's. When the log lost SYNs, every undecided flow to a
// port whose SYNs are logged is denied (limit syn_log): one of them may
// have lost a SYN that another ISN came with.
func (e *Engine) DrainSYNs() bool {
	if e.cfg.SYNs == nil {
		return true
	}
	e.synMu.Lock()
	empty, lost := e.cfg.SYNs.Drain(e.onSYN)
	e.synMu.Unlock()
	if lost {
		for _, s := range e.shards {
			s.denyLogged()
		}
	}
	return empty
}

func (e *Engine) logged(p *Packet) {
	if p.Proto != policy.TCP || !p.SYN || !p.Logged {
		return
	}
	e.shardOf(keyOf(p)).logged(p)
}

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
	e.DrainSYNs()
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
