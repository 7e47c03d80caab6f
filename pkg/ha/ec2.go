package ha

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials/ec2rolecreds"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
)

// Route is one managed route table and the network interface its route
// names ("" when the route is missing or names something else).
type Route struct {
	Table  string `json:"route_table"`
	ENI    string `json:"eni"`
	Target string `json:"target,omitempty"` // what it names instead of an ENI (a gateway, an instance), if so
}

// Association is where the Elastic IP is.
type Association struct {
	PublicIP  string `json:"public_ip"`
	ENI       string `json:"eni"`        // "" when not associated
	PrivateIP string `json:"private_ip"` // the private address it maps to
}

// View is what the EC2 API says about the pair's routes and Elastic IP.
type View struct {
	Routes []Route      `json:"routes"`
	EIP    *Association `json:"eip,omitempty"` // nil without eip.allocation_id
	At     time.Time    `json:"at"`
}

// Owner is the member the first route table names.
func (v *View) Owner(self, peer string) Owner {
	if v == nil {
		return OwnerUnknown
	}
	if len(v.Routes) == 0 {
		return OwnerNone
	}
	switch v.Routes[0].ENI {
	case self:
		return OwnerSelf
	case peer:
		return OwnerPeer
	}
	return OwnerNone
}

// Complete reports whether every route and the Elastic IP name eni (and,
// with a floating address, map to it).
func (v *View) Complete(eni, privateIP string) bool {
	for _, r := range v.Routes {
		if r.ENI != eni {
			return false
		}
	}
	return v.EIP == nil || (v.EIP.ENI == eni && (privateIP == "" || v.EIP.PrivateIP == privateIP))
}

// Names reports whether any route or the Elastic IP names eni.
func (v *View) Names(eni string) bool {
	for _, r := range v.Routes {
		if r.ENI == eni {
			return true
		}
	}
	return v.EIP != nil && v.EIP.ENI == eni
}

// API is the part of the EC2 client egressd ha uses.
type API interface {
	DescribeRouteTables(context.Context, *ec2.DescribeRouteTablesInput, ...func(*ec2.Options)) (*ec2.DescribeRouteTablesOutput, error)
	ReplaceRoute(context.Context, *ec2.ReplaceRouteInput, ...func(*ec2.Options)) (*ec2.ReplaceRouteOutput, error)
	DescribeAddresses(context.Context, *ec2.DescribeAddressesInput, ...func(*ec2.Options)) (*ec2.DescribeAddressesOutput, error)
	AssociateAddress(context.Context, *ec2.AssociateAddressInput, ...func(*ec2.Options)) (*ec2.AssociateAddressOutput, error)
	AssignPrivateIpAddresses(context.Context, *ec2.AssignPrivateIpAddressesInput, ...func(*ec2.Options)) (*ec2.AssignPrivateIpAddressesOutput, error)
}

// NewAPI returns an EC2 client for cfg: credentials from the environment or
// the instance role over IMDSv2 (no IMDSv1 fallback), the region from the
// config or IMDSv2, and no retries of its own (the Agent backs off).
func NewAPI(ctx context.Context, cfg *EC2) (API, error) {
	md := imds.New(imds.Options{EnableFallback: aws.FalseTernary})
	opts := []func(*awsconfig.LoadOptions) error{
		awsconfig.WithRetryMaxAttempts(1),
		awsconfig.WithEC2RoleCredentialOptions(func(o *ec2rolecreds.Options) { o.Client = md }),
	}
	if cfg.Region != "" {
		opts = append(opts, awsconfig.WithRegion(cfg.Region))
	} else {
		opts = append(opts, awsconfig.WithEC2IMDSRegion(func(o *awsconfig.UseEC2IMDSRegion) { o.Client = md }))
	}
	ac, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("ec2: %w", err)
	}
	return ec2.NewFromConfig(ac, func(o *ec2.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
	}), nil
}

// APIError is a failed EC2 call.
type APIError struct {
	Action string // "ReplaceRoute"
	Code   string // EC2's error code; "" when the API was not reached
	Err    error
}

func (e *APIError) Error() string { return fmt.Sprintf("ec2 %s: %v", e.Action, e.Err) }
func (e *APIError) Unwrap() error { return e.Err }

// Throttled reports whether EC2 refused the call for its rate.
func (e *APIError) Throttled() bool {
	switch e.Code {
	case "RequestLimitExceeded", "Throttling", "ThrottlingException":
		return true
	}
	return false
}

// Cloud reads and moves the pair's routes and Elastic IP.
type Cloud struct {
	api     API
	cfg     *Config
	log     *slog.Logger
	metrics *Metrics
	// Verify: how many times, and how far apart at first, a move is read
	// back before it counts as not taken.
	verifyTries int
	verifyGap   time.Duration
}

// NewCloud returns a Cloud for cfg over api; metrics may be nil.
func NewCloud(api API, cfg *Config, log *slog.Logger, m *Metrics) *Cloud {
	return &Cloud{api: api, cfg: cfg, log: log, metrics: m, verifyTries: 5, verifyGap: min(cfg.Interval, time.Second)}
}

// call runs one API call with the per-call timeout, counting it.
func call[T any](ctx context.Context, c *Cloud, action string, fn func(context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.EC2.Timeout)
	defer cancel()
	out, err := fn(ctx)
	if err != nil {
		ae := &APIError{Action: action, Err: err}
		var se smithy.APIError
		if errors.As(err, &se) {
			ae.Code = se.ErrorCode()
		}
		err = ae
	}
	c.metrics.ec2Call(action, err)
	return out, err
}

// Read returns the view: every managed route table (the explicit ones in
// order, then those found by tag, by ID) and the Elastic IP.
func (c *Cloud) Read(ctx context.Context) (*View, error) {
	v := &View{}
	dest := c.cfg.destination()
	add := func(tables []types.RouteTable) {
		for _, t := range tables {
			id := aws.ToString(t.RouteTableId)
			if slices.ContainsFunc(v.Routes, func(r Route) bool { return r.Table == id }) {
				continue
			}
			r := Route{Table: id}
			for _, rt := range t.Routes {
				if aws.ToString(rt.DestinationCidrBlock) != dest {
					continue
				}
				r.ENI = aws.ToString(rt.NetworkInterfaceId)
				if r.ENI == "" {
					r.Target = cmp.Or(aws.ToString(rt.GatewayId), aws.ToString(rt.NatGatewayId), aws.ToString(rt.InstanceId), "another target")
				}
			}
			if r.ENI == "" && r.Target == "" {
				r.Target = "no " + dest + " route"
			}
			v.Routes = append(v.Routes, r)
		}
	}
	if len(c.cfg.RouteTables) > 0 {
		out, err := call(ctx, c, "DescribeRouteTables", func(ctx context.Context) (*ec2.DescribeRouteTablesOutput, error) {
			return c.api.DescribeRouteTables(ctx, &ec2.DescribeRouteTablesInput{RouteTableIds: c.cfg.RouteTables})
		})
		if err != nil {
			return nil, err
		}
		// In the config's order: the first one decides who is active.
		byID := map[string]types.RouteTable{}
		for _, t := range out.RouteTables {
			byID[aws.ToString(t.RouteTableId)] = t
		}
		for _, id := range c.cfg.RouteTables {
			t, ok := byID[id]
			if !ok {
				return nil, &APIError{Action: "DescribeRouteTables", Err: fmt.Errorf("route table %s is not in the answer", id)}
			}
			add([]types.RouteTable{t})
		}
	}
	if c.cfg.RouteTableTag != "" {
		k, val, _ := strings.Cut(c.cfg.RouteTableTag, "=")
		var found []types.RouteTable
		var token *string
		for page := 0; page < 20; page++ {
			out, err := call(ctx, c, "DescribeRouteTables", func(ctx context.Context) (*ec2.DescribeRouteTablesOutput, error) {
				return c.api.DescribeRouteTables(ctx, &ec2.DescribeRouteTablesInput{
					Filters:   []types.Filter{{Name: aws.String("tag:" + k), Values: []string{val}}},
					NextToken: token,
				})
			})
			if err != nil {
				return nil, err
			}
			found = append(found, out.RouteTables...)
			if token = out.NextToken; token == nil {
				break
			}
		}
		slices.SortFunc(found, func(a, b types.RouteTable) int {
			return strings.Compare(aws.ToString(a.RouteTableId), aws.ToString(b.RouteTableId))
		})
		add(found)
	}
	if id := c.cfg.EIP.AllocationID; id != "" {
		out, err := call(ctx, c, "DescribeAddresses", func(ctx context.Context) (*ec2.DescribeAddressesOutput, error) {
			return c.api.DescribeAddresses(ctx, &ec2.DescribeAddressesInput{AllocationIds: []string{id}})
		})
		if err != nil {
			return nil, err
		}
		if len(out.Addresses) != 1 {
			return nil, &APIError{Action: "DescribeAddresses", Err: fmt.Errorf("%d addresses for %s, want 1", len(out.Addresses), id)}
		}
		a := out.Addresses[0]
		v.EIP = &Association{PublicIP: aws.ToString(a.PublicIp), ENI: aws.ToString(a.NetworkInterfaceId), PrivateIP: aws.ToString(a.PrivateIpAddress)}
	}
	v.At = time.Now()
	return v, nil
}

// Change is one change a move made.
type Change struct {
	What string        `json:"what"` // "route rtb-..." or "eip 203.0.113.100"
	From string        `json:"from"`
	To   string        `json:"to"`
	Took time.Duration `json:"took_ns"`
	Done time.Time     `json:"done"`
}

// Move is what a move did: its changes in order and when it was verified.
type Move struct {
	Action   string    `json:"action"`
	Reason   string    `json:"reason"`
	Start    time.Time `json:"start"`
	Changes  []Change  `json:"changes"`
	Verified time.Time `json:"verified"` // zero if the view never showed the move
	Error    string    `json:"error,omitempty"`
}

// Move points every route table of v that does not name this member at
// its ENI, then brings the Elastic IP (and the floating address) to it,
// then reads the view back until it shows all of it. It returns the
// verified view. Each change is logged; an error stops the move where it
// is (the next round finishes it: this member is then active, and repairs).
func (c *Cloud) Move(ctx context.Context, v *View, m *Move) (*View, error) {
	self, dest := c.cfg.ENI, c.cfg.destination()
	for _, r := range v.Routes {
		if r.ENI == self {
			continue
		}
		t0 := time.Now()
		_, err := call(ctx, c, "ReplaceRoute", func(ctx context.Context) (*ec2.ReplaceRouteOutput, error) {
			return c.api.ReplaceRoute(ctx, &ec2.ReplaceRouteInput{
				RouteTableId: aws.String(r.Table), DestinationCidrBlock: aws.String(dest), NetworkInterfaceId: aws.String(self),
			})
		})
		if err != nil {
			return nil, err
		}
		ch := Change{What: "route " + r.Table, From: cmp.Or(r.ENI, r.Target), To: self, Took: time.Since(t0), Done: time.Now()}
		m.Changes = append(m.Changes, ch)
		c.log.Info("route moved", "route_table", r.Table, "destination", dest, "from", ch.From, "to", self, "took_ms", ms(ch.Took))
	}
	if a := v.EIP; a != nil && !(a.ENI == self && (c.cfg.EIP.PrivateIP == "" || a.PrivateIP == c.cfg.EIP.PrivateIP)) {
		t0 := time.Now()
		var vaddr *string
		if ip := c.cfg.EIP.PrivateIP; ip != "" {
			vaddr = aws.String(ip)
			// The floating address first: the Elastic IP moves with it.
			_, err := call(ctx, c, "AssignPrivateIpAddresses", func(ctx context.Context) (*ec2.AssignPrivateIpAddressesOutput, error) {
				return c.api.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{
					NetworkInterfaceId: aws.String(self), PrivateIpAddresses: []string{ip}, AllowReassignment: aws.Bool(true),
				})
			})
			if err != nil {
				return nil, err
			}
		}
		_, err := call(ctx, c, "AssociateAddress", func(ctx context.Context) (*ec2.AssociateAddressOutput, error) {
			return c.api.AssociateAddress(ctx, &ec2.AssociateAddressInput{
				AllocationId: aws.String(c.cfg.EIP.AllocationID), NetworkInterfaceId: aws.String(self),
				PrivateIpAddress: vaddr, AllowReassociation: aws.Bool(true),
			})
		})
		if err != nil {
			return nil, err
		}
		ch := Change{What: "eip " + a.PublicIP, From: cmp.Or(a.ENI, "(none)"), To: self, Took: time.Since(t0), Done: time.Now()}
		m.Changes = append(m.Changes, ch)
		c.log.Info("elastic IP moved", "public_ip", a.PublicIP, "allocation_id", c.cfg.EIP.AllocationID, "from", ch.From, "to", self,
			"private_ip", c.cfg.EIP.PrivateIP, "took_ms", ms(ch.Took))
	}
	gap := c.verifyGap
	for try := 1; ; try++ {
		got, err := c.Read(ctx)
		if err == nil && got.Complete(self, c.cfg.EIP.PrivateIP) {
			m.Verified = time.Now()
			return got, nil
		}
		if try == c.verifyTries {
			if err == nil {
				err = &APIError{Action: "verify", Err: fmt.Errorf("the view still does not name %s after %d reads: %s", self, try, describe(got))}
			}
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(gap):
		}
		gap *= 2
	}
}

// describe renders a view for a log line.
func describe(v *View) string {
	if v == nil {
		return "(unknown)"
	}
	var b strings.Builder
	for i, r := range v.Routes {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s -> %s", r.Table, cmp.Or(r.ENI, r.Target))
	}
	if v.EIP != nil {
		fmt.Fprintf(&b, "; eip %s -> %s %s", v.EIP.PublicIP, cmp.Or(v.EIP.ENI, "(none)"), v.EIP.PrivateIP)
	}
	return b.String()
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
