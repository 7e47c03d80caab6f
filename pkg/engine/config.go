package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"time"

	"github.com/egressd/egressd/internal/defaults"
	"github.com/egressd/egressd/pkg/decide"
	"github.com/egressd/egressd/pkg/declog"
	"github.com/egressd/egressd/pkg/policy"
)

// Mode says whether decisions are enforced.
type Mode uint8

const (
	Enforce Mode = iota // deny what the policy denies
	Monitor             // decide and log every flow, block nothing
)

func (m Mode) String() string {
	switch m {
	case Enforce:
		return "enforce"
	case Monitor:
		return "monitor"
	}
	return fmt.Sprintf("unknown(%d)", uint8(m))
}

// ParseMode reads "enforce" or "monitor".
func ParseMode(s string) (Mode, error) {
	switch s {
	case "enforce":
		return Enforce, nil
	case "monitor":
		return Monitor, nil
	}
	return Enforce, fmt.Errorf("mode must be enforce or monitor, not %q", s)
}

// Verifier ties names to addresses through DNS (pkg/resolve implements
// it). All methods are safe for concurrent use.
type Verifier interface {
	// Cached says, from the cache only and without blocking, whether addr
	// is among the current DNS answers of name (decide.Match), was within
	// the grace after their TTL (decide.Grace), or is not known (0).
	Cached(name string, addr netip.Addr) decide.Answer
	// Verify asks DNS when the cache cannot answer. since is the flow's
	// first packet: a mismatch rests only on an answer DNS gave after it.
	// An error means the name could not be verified (dns-error), or, when
	// it is ErrBudget, that the resolver's query budget is spent (limit).
	Verify(ctx context.Context, name string, addr netip.Addr, since time.Time) (Verification, error)
}

// Verification is DNS's answer: decide.Match, decide.Grace or
// decide.Mismatch, with what DNS knew.
type Verification struct {
	Answer decide.Answer
	decide.Evidence
}

// ErrBudget is the Verifier's error when it may send no more queries
// (its budget per second is spent): the flow is denied, reason limit.
var ErrBudget = errors.New("the resolver's query budget is spent")

// Config configures an Engine. The zero value of each field is the
// documented default.
type Config struct {
	Mode Mode

	// InspectTCP and InspectUDP are the ports where a name is read before
	// deciding (inspect_ports). nil: TCP 80 and 443, UDP 443.
	InspectTCP, InspectUDP []uint16

	// HelloMaxBytes bounds the flow head read per flow (hello.max_bytes);
	// past it the flow is denied, reason limit. 0: 16384.
	HelloMaxBytes int
	// HelloTimeout bounds the time from a flow's first packet to its
	// decision (hello.timeout); past it the flow is denied, reason
	// incomplete. 0: 3s.
	HelloTimeout time.Duration

	// MaxFlows bounds the undecided flows in the table, across all
	// shards; past it new flows are denied, reason limit. 0: 65536.
	MaxFlows int
	// MaxHeld bounds the packets held per undecided flow, and the SYNs
	// counted per flow; past it the flow is denied, reason limit. 0: 64.
	MaxHeld int
	// Linger is how long a decided flow stays in the table, to give its
	// verdict to packets that were already queued when it was decided.
	// 0: 10s.
	Linger time.Duration
	// MaxVerifications bounds the DNS verifications in flight, across all
	// shards; past a source's share of it a flow that needs one is denied,
	// reason limit. 0: 4096.
	MaxVerifications int
	// MaxHeldTotal bounds the packets held across all flows and shards,
	// split evenly among the shards. Each shard is one kernel queue, so
	// keep the split below the queue's length (queue.len) with room for
	// the packets still waiting to be read: then the kernel never drops
	// (or, with fail_open, bypasses) packets because egressd holds too
	// many. 0: three quarters of 8192 per shard.
	MaxHeldTotal int
	// MaxBufferBytes bounds the flow-head bytes buffered across all flows
	// and shards. 0: 128 MiB.
	MaxBufferBytes int
	// VerifyRate and VerifyBurst bound each source's DNS verifications
	// (lookups the cache could not answer), per second and in a burst:
	// every lookup costs the VPC resolver queries all sources share.
	// 0: 20 per second, bursts of 40.
	VerifyRate  float64
	VerifyBurst int

	// SYNs tells the engine of SYNs forwarded without being queued (the
	// SYN log), for the ports given to Engine.SetSYNLogged. nil: every SYN
	// is queued.
	SYNs SYNSource

	// Verifier checks names against DNS (verify_dns). nil: names are
	// not checked, and every decision that rests on one says Unchecked.
	Verifier Verifier
	// Unchecked is what an allow that rests on a name gets without a
	// Verifier: decide.Trusted (the daemon with verify_dns off) or
	// decide.Skipped (replay without --resolve). 0: Trusted.
	Unchecked decide.Answer

	// Log receives one record per decided flow. It must not block: the
	// engine calls it with a shard locked. nil: decisions are not logged.
	Log func(*declog.Record)

	Logger *slog.Logger     // nil: slog.Default()
	Now    func() time.Time // nil: time.Now
}

func (c *Config) setDefaults() {
	if c.InspectTCP == nil {
		c.InspectTCP = defaults.TCPPorts()
	}
	if c.InspectUDP == nil {
		c.InspectUDP = defaults.UDPPorts()
	}
	orDefault(&c.HelloMaxBytes, defaults.HelloMaxBytes)
	orDefault(&c.HelloTimeout, defaults.HelloTimeout)
	orDefault(&c.MaxFlows, defaults.MaxFlows)
	orDefault(&c.MaxHeld, defaults.MaxHeld)
	orDefault(&c.Linger, defaults.Linger)
	orDefault(&c.MaxVerifications, defaults.MaxVerifications)
	orDefault(&c.MaxBufferBytes, defaults.MaxBufferBytes)
	orDefault(&c.VerifyRate, defaults.VerifyRate)
	orDefault(&c.VerifyBurst, defaults.VerifyBurst)
	orDefault(&c.Unchecked, decide.Trusted)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Log == nil {
		c.Log = func(*declog.Record) {}
	}
}

// orDefault sets *v to def when it is the zero value.
func orDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

func (c *Config) validate() error {
	switch {
	case c.HelloMaxBytes < 512 || c.HelloMaxBytes > 1<<20:
		return fmt.Errorf("hello.max_bytes %d is outside 512..1048576", c.HelloMaxBytes)
	case c.HelloTimeout < 10*time.Millisecond:
		return fmt.Errorf("hello.timeout %s is too short", c.HelloTimeout)
	case c.MaxFlows < 1 || c.MaxHeld < 1 || c.MaxVerifications < 1 || c.MaxHeldTotal < 0 || c.MaxBufferBytes < 1 ||
		c.VerifyRate <= 0 || c.VerifyBurst < 1:
		return fmt.Errorf("limits must be positive")
	case c.Unchecked != decide.Trusted && c.Unchecked != decide.Skipped:
		return fmt.Errorf("engine: Unchecked must be Trusted or Skipped")
	}
	return nil
}

func (c *Config) inspected(proto policy.Proto, port uint16) bool {
	switch proto {
	case policy.TCP:
		return slices.Contains(c.InspectTCP, port)
	case policy.UDP:
		return slices.Contains(c.InspectUDP, port)
	}
	return false
}
