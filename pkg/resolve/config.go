package resolve

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"
)

// Defaults for the zero values of Config.
const (
	// DefaultServer is the Amazon-provided resolver of every VPC, reachable
	// from any instance at this link-local address.
	DefaultServer          = "169.254.169.253:53"
	DefaultCacheMax        = 100_000
	DefaultTimeout         = 2 * time.Second
	DefaultMinTTL          = 5 * time.Second
	DefaultMaxTTL          = time.Hour
	DefaultNegativeTTL     = 30 * time.Second
	DefaultRequeryInterval = time.Second
	DefaultMaxAddrs        = 64
	DefaultGrace           = 2 * time.Minute
	// DefaultMaxQueriesPerSecond: see Config.MaxQueriesPerSecond.
	DefaultMaxQueriesPerSecond = 500
)

// NoGrace as Config.Grace turns the grace period off: an address verifies
// only until its TTL ends.
const NoGrace time.Duration = -1

// Config configures a Resolver. The zero value of every field means its
// default; negative durations and counts are refused.
type Config struct {
	// Servers are the resolvers asked, as IP:port ("[v6]:port" for IPv6),
	// in order: the next is tried when one times out, is unreachable,
	// fails (SERVFAIL, another error rcode) or gives a malformed answer.
	// Host names are refused (resolving the resolver is circular).
	// Zero value: []string{DefaultServer}.
	Servers []string

	// CacheMax bounds the names cached; past it the least recently used
	// (CLOCK) name is evicted, names given to Watch last. Zero: 100,000.
	CacheMax int

	// MaxAddrs bounds the addresses kept per name, the union of all
	// answers seen. When full, a new address replaces the one that expires
	// soonest (if the new one outlives it). Zero: 64.
	MaxAddrs int

	// Timeout bounds one query to one server (UDP, and TCP when the UDP
	// answer was truncated). A lookup tries every server in turn, so a
	// caller may wait len(Servers) × Timeout. Zero: 2s.
	Timeout time.Duration

	// MinTTL and MaxTTL clamp the TTL of every cached address.
	//
	// The floor exists because an answer with TTL 0 (or 1) is common for
	// names behind health-checked load balancers, and the client connects
	// after its lookup: without a floor the address would have expired by
	// the time its SYN arrives, and every such flow would cost a query and
	// could still fail on a rotated answer. The ceiling bounds how long a
	// withdrawn address keeps verifying. Zero: 5s and 1h.
	MinTTL time.Duration
	MaxTTL time.Duration

	// NegativeTTL caps how long NXDOMAIN and NODATA answers are cached; the
	// TTL itself comes from the answer's SOA (RFC 2308 §5), clamped to
	// [MinTTL, NegativeTTL], or MinTTL when the answer has no SOA.
	// Zero: 30s.
	NegativeTTL time.Duration

	// RequeryInterval is the shortest time between two lookups of a name
	// that holds a fresh answer. A verification that must ask again (its
	// flow began after the newest answer, which lacks the destination)
	// waits for the name's next slot rather than deny, within its
	// context, and one whose answer lacks the destination looks once
	// more at the slot after; all the flows waiting for one slot share
	// its lookup. So an attacker sending an allowed name to many wrong
	// addresses costs at most one lookup of that name per interval; a
	// mismatch may wait for two slots, so the caller's deadline
	// (hello.timeout) should leave room for two intervals and the
	// lookups' own time. Zero: 1s.
	RequeryInterval time.Duration

	// Grace keeps an address verifying for this long after its TTL ends,
	// answered as Grace rather than Match.
	//
	// Clients keep answers past their TTL: the JVM caches them for 30s
	// whatever the TTL, Chrome's and Firefox's host caches for 60s, nscd
	// and other stub caches by their own settings; and the resolvers of a
	// VPC are a fleet whose caches may each hold another answer of a
	// round-robin name. A client that connects to such an address after
	// egressd's copy of it has expired is not lying, and without a grace
	// it would be denied dns-mismatch. The default is twice the longest
	// of those fixed client caches (60s, filled at the very end of the
	// TTL): the rest is for the time from a client's lookup to its
	// connection (retries, backoff), and for a resolver cache that
	// fetched the record after egressd's did, so its copy ends later.
	//
	// What it costs: an address that has left the name's answers (a
	// load balancer drained, an IP handed to another tenant) stays trusted
	// for the name for Grace past the TTL egressd last saw it with. It is
	// bounded so that such an address stops verifying within a known
	// time (TTL, capped at MaxTTL, plus Grace), and so that names and
	// addresses in grace leave the cache (they count in MaxAddrs and
	// CacheMax, and are the first to make room). Negative answers get no
	// grace. Zero: 2m; NoGrace turns it off.
	Grace time.Duration

	// MaxQueriesPerSecond is the query budget: the packets per second
	// sent to the servers, every one counted (A and AAAA, a retry on the
	// next server, the packets of a TCP fallback), as a token bucket on
	// the resolver's clock that holds half a second's worth (at least
	// 16).
	//
	// The Route 53 Resolver takes about 1,024 packets per second from
	// each network interface, for every program on the instance, and
	// drops the rest; a flood of random names under an allowed wildcard
	// (each a lookup of two queries) must not take the instance over it.
	// The default, 500, is under half that: with the burst, at most 750
	// in any second, which leaves a quarter for the instance's own
	// lookups (SSM agent, package updates, time sync) and for a limit
	// that is approximate.
	//
	// The refresh of watched names (Run) is never starved by
	// verifications: a verification's lookup of a name that is not
	// watched may not take the bucket's last quarter, one of a watched
	// name its last eighth; the refresher may empty it, and waits for
	// tokens, so what refills while the level is under an eighth is its
	// alone. A verification that finds no room fails at once with
	// ErrBudget (reason limit); it never waits for the budget. Zero: 500.
	MaxQueriesPerSecond int

	// Now is the clock. Zero: time.Now. Tests use a fake clock; a real
	// clock's monotonic reading makes wall-clock steps harmless.
	Now func() time.Time

	// After waits on the clock Now reads (a verification waiting for its
	// name's query slot, the refresher for the query budget). Zero:
	// time.After. Set both or neither: a fake Now needs an After that
	// fires when that clock moves.
	After func(time.Duration) <-chan time.Time

	// Transport carries queries. Zero: NetTransport{} (UDP, TCP on TC).
	Transport Transport

	// Logger receives the refresher's failures and recoveries (Run); the
	// per-flow path never logs. Zero: discard.
	Logger *slog.Logger
}

// withDefaults validates c and fills its zero values.
func (c Config) withDefaults() (Config, error) {
	if len(c.Servers) == 0 {
		c.Servers = []string{DefaultServer}
	}
	var errs []error
	for _, s := range c.Servers {
		if _, err := netip.ParseAddrPort(s); err != nil {
			errs = append(errs, fmt.Errorf("resolve: server %q: want IP:port (like %q): %w", s, DefaultServer, err))
		}
	}
	orDefault(&errs, "CacheMax", &c.CacheMax, DefaultCacheMax)
	orDefault(&errs, "MaxAddrs", &c.MaxAddrs, DefaultMaxAddrs)
	orDefault(&errs, "Timeout", &c.Timeout, DefaultTimeout)
	orDefault(&errs, "MinTTL", &c.MinTTL, DefaultMinTTL)
	orDefault(&errs, "MaxTTL", &c.MaxTTL, DefaultMaxTTL)
	orDefault(&errs, "NegativeTTL", &c.NegativeTTL, DefaultNegativeTTL)
	orDefault(&errs, "RequeryInterval", &c.RequeryInterval, DefaultRequeryInterval)
	orDefault(&errs, "MaxQueriesPerSecond", &c.MaxQueriesPerSecond, DefaultMaxQueriesPerSecond)
	if c.Grace != NoGrace {
		orDefault(&errs, "Grace", &c.Grace, DefaultGrace)
	}
	if c.MinTTL > c.MaxTTL {
		errs = append(errs, fmt.Errorf("resolve: MinTTL %v is above MaxTTL %v", c.MinTTL, c.MaxTTL))
	}
	if c.MinTTL > c.NegativeTTL {
		errs = append(errs, fmt.Errorf("resolve: MinTTL %v is above NegativeTTL %v", c.MinTTL, c.NegativeTTL))
	}
	if c.CacheMax > maxCacheMax {
		errs = append(errs, fmt.Errorf("resolve: CacheMax %d is above %d", c.CacheMax, maxCacheMax))
	}
	if (c.Now == nil) != (c.After == nil) {
		errs = append(errs, errors.New("resolve: set both Now and After, or neither"))
	}
	if c.Now == nil {
		c.Now, c.After = time.Now, time.After
	}
	if c.Transport == nil {
		c.Transport = NetTransport{}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, errors.Join(errs...)
}

// orDefault sets *v to def when it is zero, and records an error when it
// is negative.
func orDefault[T int | time.Duration](errs *[]error, field string, v *T, def T) {
	switch {
	case *v < 0:
		*errs = append(*errs, fmt.Errorf("resolve: %s %v is negative", field, *v))
	case *v == 0:
		*v = def
	}
}
