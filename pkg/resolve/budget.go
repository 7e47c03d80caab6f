package resolve

import (
	"context"
	"sync"
	"time"
)

const (
	// minBurst is the smallest bucket, in packets: room for a lookup's
	// two queries and a TCP fallback above every floor.
	minBurst = 16
	// tcpPackets is what a TCP fallback sends to the server, counted
	// against the budget: SYN, the handshake's ACK, the query, an ACK of
	// the answer, FIN, and the ACK of the server's FIN.
	tcpPackets = 6
	// perToken scales the bucket so that one nanosecond refills exactly
	// the rate (in packets per second) units.
	perToken = int64(time.Second)
)

// class is who spends from the budget, which decides what it must leave
// in the bucket for the others, and whether it waits.
type class uint32

const (
	// classUnlisted: a verification's lookup of a name that is not
	// watched (a name under a wildcard, an unlisted SNI). It leaves a
	// quarter of the bucket and never waits.
	classUnlisted class = iota
	// classWatched: a verification's lookup of a watched name. It leaves
	// an eighth and never waits.
	classWatched
	// classRefresh: the refresher (Run). It may empty the bucket, and
	// waits for what refills, which nobody else can take while the level
	// is under an eighth: the refresh of watched names is never starved.
	classRefresh
)

// budget is the resolver's query budget (Config.MaxQueriesPerSecond): a
// token bucket on the resolver's clock, one token per packet sent to a
// server, holding half a second's worth (at least minBurst).
type budget struct {
	mu    sync.Mutex
	level int64 // tokens × perToken
	at    int64 // when level was last filled, on the cache's clock
	rate  int64 // tokens per second
	size  int64 // capacity, tokens × perToken
}

func newBudget(rate int, now int64) *budget {
	size := int64(max(rate/2, minBurst)) * perToken
	return &budget{level: size, at: now, rate: int64(rate), size: size}
}

// floor is what c must leave in the bucket.
func (b *budget) floor(c class) int64 {
	switch c {
	case classUnlisted:
		return b.size / 4
	case classWatched:
		return b.size / 8
	}
	return 0
}

// fill refills the bucket up to now. The caller holds mu.
func (b *budget) fill(now int64) {
	d := now - b.at
	if d <= 0 {
		return
	}
	b.at = now
	// Past the time it takes to fill, full; else d*rate cannot overflow.
	if d > (b.size-b.level)/b.rate {
		b.level = b.size
		return
	}
	b.level = min(b.size, b.level+d*b.rate)
}

// take spends n tokens for c at now if that leaves c's floor; otherwise
// it spends nothing and says how long until it would.
func (b *budget) take(now int64, n int, c class) (ok bool, wait time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.fill(now)
	cost := int64(n) * perToken
	short := cost + b.floor(c) - b.level
	if short <= 0 {
		b.level -= cost
		return true, 0
	}
	return false, time.Duration((short + b.rate - 1) / b.rate)
}

// roomy reports whether the bucket is at least half full at now: room for
// what a verification may do beyond what it must (a second look).
func (b *budget) roomy(now int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.fill(now)
	return b.level >= b.size/2
}

// classOf is the class of a verification's lookup of name.
func (r *Resolver) classOf(name string) class {
	if _, ok := (*r.watched.Load())[name]; ok {
		return classWatched
	}
	return classUnlisted
}

// spend takes n tokens for a packet of f's lookup about to be sent: from
// what f's launch prepaid, else from the bucket, for f's class. A
// verification's class fails at once with ErrBudget; the refresher's
// waits, until ctx ends.
func (r *Resolver) spend(ctx context.Context, f *flight, n int) error {
	if n == 1 && f.prepaid.Add(-1) >= 0 {
		return nil
	}
	for waited := false; ; waited = true {
		c := class(f.class.Load())
		ok, wait := r.budget.take(r.now(), n, c)
		switch {
		case ok:
			return nil
		case c != classRefresh:
			r.stats.budgetRefused.Add(1)
			return ErrBudget
		case !waited:
			r.stats.budgetWaits.Add(1)
		}
		if err := r.sleep(ctx, wait); err != nil {
			return err
		}
	}
}

// meterKey is the context key under which a lookup's queries carry their
// flight, so that NetTransport can charge its TCP fallback.
type meterKey struct{}

type meter struct {
	r *Resolver
	f *flight
}

// chargeTCP spends the packets of a TCP fallback for the lookup ctx
// belongs to, if any (a query not sent by a Resolver is not counted).
func chargeTCP(ctx context.Context) error {
	m, _ := ctx.Value(meterKey{}).(*meter)
	if m == nil {
		return nil
	}
	if err := m.r.spend(ctx, m.f, tcpPackets); err != nil {
		return err
	}
	m.r.stats.tcpFallbacks.Add(1)
	return nil
}
