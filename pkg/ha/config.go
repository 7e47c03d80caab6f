package ha

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"time"
)

// Config is one member's view of the pair. cmd/egressd reads it from the
// ha: section of egressd.yaml; Validate says what is wrong with it.
type Config struct {
	// Member is this member's name (in logs, /status, `egressd ha status`).
	Member string
	// ENI is this member's network interface: what the routes and the
	// Elastic IP name while it is active.
	ENI string
	// Preferred: the routes return to this member once it has been ready
	// for HoldDown (failback). Exactly one member of a pair should say so.
	Preferred bool
	// Failback: false pins whichever member took the routes over; they
	// return only when it fails in turn.
	Failback bool
	// Listen is host:port of this member's HA endpoint (/readyz, /status,
	// /metrics), reachable by the peer.
	Listen string

	Peer Peer

	// Interval between checks; Timeout bounds each check of the peer and of
	// egressd. FailureThreshold consecutive failed checks of the peer make
	// it down: detection takes Interval × FailureThreshold.
	Interval         time.Duration
	Timeout          time.Duration
	FailureThreshold int
	// HoldDown is the least time between two changes of the routes' owner,
	// and how long the preferred member must have been ready before the
	// routes return to it.
	HoldDown time.Duration

	// RouteTables are route table IDs whose Destination route this pair
	// moves; RouteTableTag ("key=value") adds every route table with that
	// tag. The first of the explicit tables (else the first found by tag,
	// by ID) decides who is active.
	RouteTables   []string
	RouteTableTag string
	Destination   string // the route moved: "0.0.0.0/0" unless told

	EIP EIP
	// SNATAddress is the address both members SNAT forwarded connections
	// to (egressd-iptables.sh --snat): EIP.PrivateIP on EC2. With it and
	// Local.Conntrackd, a member that becomes standby replaces its own
	// entries of those connections with the active peer's copies
	// (RefreshStandby). "": EIP.PrivateIP.
	SNATAddress string
	EC2         EC2

	Local Local
}

// Peer is the other member.
type Peer struct {
	Name string
	URL  string // base URL of its HA endpoint, "http://10.0.0.11:9146"
	ENI  string // its network interface
}

// EIP is the pair's Elastic IP.
type EIP struct {
	AllocationID string // "eipalloc-..."; "" leaves the Elastic IP alone
	// PrivateIP, when set, is a secondary private address of the public
	// ENIs that moves with the Elastic IP (AssignPrivateIpAddresses with
	// AllowReassignment) and that both members source-NAT to, so a
	// connection synced by conntrackd keeps its NAT mapping across a
	// failover. "": the Elastic IP is associated with the ENI's primary
	// address, and established connections do not survive (README).
	PrivateIP string
}

// EC2 says how to reach the EC2 API.
type EC2 struct {
	Region   string        // "": the instance's region, from IMDSv2
	Endpoint string        // "": the region's; tests point it at a fake
	Timeout  time.Duration // per API call
	// Poll is how often the view is read while nothing is to be done; it is
	// read again, whatever its age, before every move.
	Poll time.Duration
	// MaxBackoff caps the wait between retries while the API fails.
	MaxBackoff time.Duration
}

// Local says how this member checks that it can filter.
type Local struct {
	Readyz string // egressd's /readyz URL
	// RulesCheck is a command whose exit status 0 says the iptables rules
	// are in place (egressd-iptables.sh status); nil skips the check.
	RulesCheck []string
	// RulesEvery is how often RulesCheck runs while nothing is to be done;
	// it runs again before every move.
	RulesEvery time.Duration
	// Interfaces must exist, be up and have a carrier.
	Interfaces []string
	// Conntrackd is the conntrackd.conf of the sync daemon ("": none), for
	// its statistics in /status.
	Conntrackd string
}

// Validate checks the config and returns every problem, each naming its
// key under prefix (e.g. "ha.").
func (c *Config) Validate(prefix string) error {
	var errs []error
	bad := func(key, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s%s: %s", prefix, key, fmt.Sprintf(format, a...)))
	}
	if c.Member == "" {
		bad("member", "this member's name is required (e.g. a)")
	}
	if c.Peer.Name == "" {
		bad("peer.name", "the other member's name is required (e.g. b)")
	} else if c.Peer.Name == c.Member {
		bad("peer.name", "%q is this member's own name", c.Peer.Name)
	}
	if !strings.HasPrefix(c.ENI, "eni-") {
		bad("eni", "%q is not a network interface ID (eni-...)", c.ENI)
	}
	if !strings.HasPrefix(c.Peer.ENI, "eni-") {
		bad("peer.eni", "%q is not a network interface ID (eni-...)", c.Peer.ENI)
	} else if c.Peer.ENI == c.ENI {
		bad("peer.eni", "%s is this member's own ENI", c.ENI)
	}
	if u, err := url.Parse(c.Peer.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		bad("peer.url", "%q is not the peer's HA endpoint (like http://10.0.0.11:9146)", c.Peer.URL)
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		bad("listen", "%q is not host:port (like :9146)", c.Listen)
	}
	if c.Interval < 50*time.Millisecond || c.Interval > time.Minute {
		bad("interval", "%s must be within 50ms..1m", c.Interval)
	}
	if c.Timeout <= 0 || c.Timeout > c.Interval {
		bad("timeout", "%s must be positive and at most the interval (%s)", c.Timeout, c.Interval)
	}
	if c.FailureThreshold < 1 || c.FailureThreshold > 100 {
		bad("failure_threshold", "%d must be within 1..100", c.FailureThreshold)
	}
	if detect := c.Interval * time.Duration(max(c.FailureThreshold, 1)); c.HoldDown < detect {
		bad("hold_down", "%s is shorter than the detection time (interval × failure_threshold = %s): the members would flap", c.HoldDown, detect)
	}
	if len(c.RouteTables) == 0 && c.RouteTableTag == "" {
		bad("route_tables", "no route table: list their IDs (rtb-...) or give route_table_tag (key=value)")
	}
	for _, r := range c.RouteTables {
		if !strings.HasPrefix(r, "rtb-") {
			bad("route_tables", "%q is not a route table ID (rtb-...)", r)
		}
	}
	if c.RouteTableTag != "" {
		if k, _, ok := strings.Cut(c.RouteTableTag, "="); !ok || k == "" {
			bad("route_table_tag", "%q is not key=value (like egressd-ha=egressd-eu-west-1a)", c.RouteTableTag)
		}
	}
	if _, err := netip.ParsePrefix(c.destination()); err != nil {
		bad("destination", "%q is not a CIDR block", c.Destination)
	}
	if c.EIP.AllocationID != "" && !strings.HasPrefix(c.EIP.AllocationID, "eipalloc-") {
		bad("eip.allocation_id", "%q is not an allocation ID (eipalloc-...)", c.EIP.AllocationID)
	}
	if c.EIP.PrivateIP != "" {
		if a, err := netip.ParseAddr(c.EIP.PrivateIP); err != nil || !a.Is4() {
			bad("eip.private_ip", "%q is not an IPv4 address", c.EIP.PrivateIP)
		}
		if c.EIP.AllocationID == "" {
			bad("eip.private_ip", "needs eip.allocation_id: the floating address carries the Elastic IP")
		}
	}
	if c.SNATAddress != "" {
		if a, err := netip.ParseAddr(c.SNATAddress); err != nil || !a.Is4() {
			bad("snat_address", "%q is not an IPv4 address", c.SNATAddress)
		}
	}
	if c.EC2.Endpoint != "" {
		if u, err := url.Parse(c.EC2.Endpoint); err != nil || u.Scheme == "" || u.Host == "" {
			bad("ec2.endpoint", "%q is not a URL (like https://ec2.eu-west-1.amazonaws.com)", c.EC2.Endpoint)
		}
	}
	if c.EC2.Timeout <= 0 {
		bad("ec2.timeout", "%s must be positive", c.EC2.Timeout)
	}
	if c.EC2.Poll < c.Interval {
		bad("ec2.poll", "%s must be at least the interval (%s)", c.EC2.Poll, c.Interval)
	}
	if c.EC2.MaxBackoff < c.Interval {
		bad("ec2.max_backoff", "%s must be at least the interval (%s)", c.EC2.MaxBackoff, c.Interval)
	}
	if u, err := url.Parse(c.Local.Readyz); err != nil || u.Scheme != "http" || u.Host == "" {
		bad("local.readyz", "%q is not egressd's /readyz URL (metrics.listen must be set: /readyz says whether egressd filters)", c.Local.Readyz)
	}
	if (len(c.Local.RulesCheck) > 0 || c.Local.Conntrackd != "") && c.Local.RulesEvery < c.Interval {
		bad("local.rules_every", "%s must be at least the interval (%s)", c.Local.RulesEvery, c.Interval)
	}
	return errors.Join(errs...)
}

// snat is the address forwarded connections are NATed to, or "".
func (c *Config) snat() string {
	if c.SNATAddress != "" {
		return c.SNATAddress
	}
	return c.EIP.PrivateIP
}

func (c *Config) destination() string {
	if c.Destination == "" {
		return "0.0.0.0/0"
	}
	return c.Destination
}
