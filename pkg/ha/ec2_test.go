package ha

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/egressd/egressd/test/fakeec2"
)

// pair is a fake EC2 with one zone's pair: member a's ENI holds every
// route and the Elastic IP (on its floating address); rtb-other belongs to
// another zone and must never move.
func pair(t *testing.T) (*fakeec2.Server, string) {
	t.Helper()
	f := fakeec2.New()
	f.AddENI("eni-a", "10.0.0.10", "10.0.0.50")
	f.AddENI("eni-b", "10.0.0.11")
	f.AddENI("eni-z", "10.0.9.10")
	f.AddRouteTable("rtb-1", nil, "0.0.0.0/0", "eni-a")
	f.AddRouteTable("rtb-2", map[string]string{"egressd-ha": "az-a"}, "0.0.0.0/0", "eni-a")
	f.AddRouteTable("rtb-3", map[string]string{"egressd-ha": "az-a"}, "0.0.0.0/0", "eni-a")
	f.AddRouteTable("rtb-other", map[string]string{"egressd-ha": "az-b"}, "0.0.0.0/0", "eni-z")
	f.AddAddress("eipalloc-1", "203.0.113.100", "eni-a", "10.0.0.50")
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv.URL
}

// memberConfig is member b's (or a's) config against a fake at endpoint.
func memberConfig(member, endpoint string) *Config {
	c := &Config{
		Member: member, ENI: "eni-" + member, Preferred: member == "a", Failback: true, Listen: "127.0.0.1:0",
		Interval: 50 * time.Millisecond, Timeout: 40 * time.Millisecond, FailureThreshold: 3, HoldDown: time.Second,
		RouteTables: []string{"rtb-1"}, RouteTableTag: "egressd-ha=az-a",
		EIP: EIP{AllocationID: "eipalloc-1", PrivateIP: "10.0.0.50"},
		EC2: EC2{Region: "eu-west-1", Endpoint: endpoint, Timeout: 2 * time.Second, Poll: 5 * time.Second, MaxBackoff: 400 * time.Millisecond},
	}
	c.Peer = Peer{Name: "b", ENI: "eni-b"}
	if member == "b" {
		c.Peer = Peer{Name: "a", ENI: "eni-a"}
	}
	return c
}

// testAPI is the real SDK client pointed at the fake with static
// credentials from the environment.
func testAPI(t *testing.T, c *Config) API {
	t.Helper()
	t.Setenv("AWS_ACCESS_KEY_ID", fakeec2.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", fakeec2.SecretKey)
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_CONFIG_FILE", "/nonexistent")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
	api, err := NewAPI(context.Background(), &c.EC2)
	if err != nil {
		t.Fatal(err)
	}
	return api
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestCloudReadAndMove(t *testing.T) {
	f, url := pair(t)
	cfg := memberConfig("b", url)
	m := NewMetrics(prometheus.NewRegistry())
	c := NewCloud(testAPI(t, cfg), cfg, quiet(), m)
	ctx := context.Background()

	v, err := c.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for _, r := range v.Routes {
		tables = append(tables, r.Table+"="+r.ENI)
	}
	if want := []string{"rtb-1=eni-a", "rtb-2=eni-a", "rtb-3=eni-a"}; !slices.Equal(tables, want) {
		t.Fatalf("routes %v, want %v (the explicit table first, then the tagged ones by ID, not another zone's)", tables, want)
	}
	if got := v.Owner("eni-b", "eni-a"); got != OwnerPeer {
		t.Fatalf("owner %s, want peer", got)
	}
	if *v.EIP != (Association{PublicIP: "203.0.113.100", ENI: "eni-a", PrivateIP: "10.0.0.50"}) {
		t.Fatalf("eip %+v", *v.EIP)
	}

	mv := &Move{}
	got, err := c.Move(ctx, v, mv)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Complete("eni-b", "10.0.0.50") || mv.Verified.IsZero() {
		t.Fatalf("after the move: %s, verified %v", describe(got), mv.Verified)
	}
	for _, rtb := range []string{"rtb-1", "rtb-2", "rtb-3"} {
		if e := f.Route(rtb, "0.0.0.0/0"); e != "eni-b" {
			t.Errorf("fake: %s -> %s, want eni-b", rtb, e)
		}
	}
	if e := f.Route("rtb-other", "0.0.0.0/0"); e != "eni-z" {
		t.Errorf("another zone's route table moved: -> %s", e)
	}
	if a := f.Address("eipalloc-1"); a.ENI != "eni-b" || a.Vaddr != "10.0.0.50" {
		t.Errorf("fake: eip on %s %s, want eni-b 10.0.0.50", a.ENI, a.Vaddr)
	}
	if ips := f.ENIAddrs("eni-a"); slices.Contains(ips, "10.0.0.50") {
		t.Errorf("the floating address stayed on eni-a too: %v", ips)
	}
	if len(mv.Changes) != 4 {
		t.Errorf("changes %+v, want 3 routes and the eip", mv.Changes)
	}
	// The calls: the routes read, each moved, the floating address and
	// the EIP moved, then read back.
	var actions []string
	for _, call := range f.Calls() {
		actions = append(actions, call.Action)
	}
	want := []string{"DescribeRouteTables", "DescribeRouteTables", "DescribeAddresses",
		"ReplaceRoute", "ReplaceRoute", "ReplaceRoute", "AssignPrivateIpAddresses", "AssociateAddress",
		"DescribeRouteTables", "DescribeRouteTables", "DescribeAddresses"}
	if !slices.Equal(actions, want) {
		t.Errorf("calls %v\nwant  %v", actions, want)
	}
	for _, call := range f.CallsOf("AssociateAddress", true) {
		if call.Params.Get("AllowReassociation") != "true" || call.Params.Get("PrivateIpAddress") != "10.0.0.50" {
			t.Errorf("AssociateAddress %v: want AllowReassociation and the floating address", call.Params)
		}
	}
	if n := testutil.ToFloat64(m.EC2.WithLabelValues("ReplaceRoute", "ok")); n != 3 {
		t.Errorf("egressd_ha_ec2_requests_total{ReplaceRoute,ok} = %v, want 3", n)
	}

	// A second move has nothing to do but read back.
	mv = &Move{}
	if _, err := c.Move(ctx, got, mv); err != nil || len(mv.Changes) != 0 {
		t.Errorf("a move with nothing to move: %v, changes %+v", err, mv.Changes)
	}
}

func TestCloudErrors(t *testing.T) {
	ctx := context.Background()
	t.Run("throttled", func(t *testing.T) {
		f, url := pair(t)
		cfg := memberConfig("b", url)
		m := NewMetrics(prometheus.NewRegistry())
		c := NewCloud(testAPI(t, cfg), cfg, quiet(), m)
		f.Inject(fakeec2.Fault{Code: fakeec2.Throttled, Count: -1})
		_, err := c.Read(ctx)
		var ae *APIError
		if !errors.As(err, &ae) || !ae.Throttled() || ae.Action != "DescribeRouteTables" {
			t.Fatalf("read while throttled: %v, want a throttled DescribeRouteTables", err)
		}
		if n := testutil.ToFloat64(m.EC2.WithLabelValues("DescribeRouteTables", "throttled")); n != 1 {
			t.Errorf("throttled calls counted %v, want 1 (no retries of the SDK's own: the agent backs off)", n)
		}
		if n := len(f.Calls()); n != 1 {
			t.Errorf("%d calls for one read, want 1", n)
		}
	})
	t.Run("a failure mid-move stops it where it is", func(t *testing.T) {
		f, url := pair(t)
		cfg := memberConfig("b", url)
		c := NewCloud(testAPI(t, cfg), cfg, quiet(), nil)
		f.OnRoute = func(table, _, _ string) error {
			if table == "rtb-2" {
				return errors.New("the lab is not ready")
			}
			return nil
		}
		v, err := c.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Move(ctx, v, &Move{})
		var ae *APIError
		if !errors.As(err, &ae) || ae.Code != "InternalError" {
			t.Fatalf("move: %v, want InternalError from ReplaceRoute", err)
		}
		if f.Route("rtb-1", "0.0.0.0/0") != "eni-b" || f.Route("rtb-2", "0.0.0.0/0") != "eni-a" || f.Address("eipalloc-1").ENI != "eni-a" {
			t.Fatalf("after the failed move: rtb-1 %s, rtb-2 %s, eip %s", f.Route("rtb-1", "0.0.0.0/0"), f.Route("rtb-2", "0.0.0.0/0"), f.Address("eipalloc-1").ENI)
		}
		// Now active by the first table, incomplete: a repair finishes it.
		f.OnRoute = nil
		v, _ = c.Read(ctx)
		if v.Owner("eni-b", "eni-a") != OwnerSelf || v.Complete("eni-b", "10.0.0.50") {
			t.Fatalf("view after the failed move: %s", describe(v))
		}
		mv := &Move{}
		if got, err := c.Move(ctx, v, mv); err != nil || !got.Complete("eni-b", "10.0.0.50") {
			t.Fatalf("repair: %v", err)
		}
		if len(mv.Changes) != 3 {
			t.Errorf("repair changes %+v, want rtb-2, rtb-3, the eip", mv.Changes)
		}
	})
	t.Run("a move that does not show is not verified", func(t *testing.T) {
		f, url := pair(t)
		cfg := memberConfig("b", url)
		c := NewCloud(testAPI(t, cfg), cfg, quiet(), nil)
		c.verifyTries, c.verifyGap = 3, time.Millisecond
		v, err := c.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// The changes go through, but the read-back never answers.
		f.Inject(fakeec2.Fault{Action: "DescribeAddresses", Code: "InternalError", Count: -1})
		_, err = c.Move(ctx, v, &Move{})
		var ae *APIError
		if !errors.As(err, &ae) || ae.Action != "DescribeAddresses" {
			t.Fatalf("a move whose read-back failed: %v, want the DescribeAddresses error", err)
		}
		if n := len(f.CallsOf("DescribeAddresses", false)); n != 4 {
			t.Errorf("%d DescribeAddresses calls, want the first read and 3 read-backs", n)
		}
	})
	t.Run("wrong credentials", func(t *testing.T) {
		_, url := pair(t)
		cfg := memberConfig("b", url)
		testAPI(t, cfg) // the environment, then a wrong key in it
		t.Setenv("AWS_ACCESS_KEY_ID", "AKIDWRONG")
		api, err := NewAPI(ctx, &cfg.EC2)
		if err != nil {
			t.Fatal(err)
		}
		_, err = NewCloud(api, cfg, quiet(), nil).Read(ctx)
		var ae *APIError
		if !errors.As(err, &ae) || ae.Code != "AuthFailure" {
			t.Fatalf("read with the wrong key: %v", err)
		}
	})
	t.Run("unreachable", func(t *testing.T) {
		cfg := memberConfig("b", "http://127.0.0.1:1")
		_, err := NewCloud(testAPI(t, cfg), cfg, quiet(), nil).Read(ctx)
		var ae *APIError
		if !errors.As(err, &ae) || ae.Code != "" {
			t.Fatalf("read of an unreachable endpoint: %v", err)
		}
	})
}

func TestBackoff(t *testing.T) {
	b := newBackoff(100*time.Millisecond, time.Second)
	b.rand = func() float64 { return 0.5 } // no jitter
	var got []time.Duration
	for range 6 {
		got = append(got, b.Fail())
	}
	want := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for i := range want {
		want[i] *= time.Millisecond
	}
	if !slices.Equal(got, want) {
		t.Errorf("waits %v, want %v", got, want)
	}
	b.Reset()
	b.rand = func() float64 { return 0 }
	if d := b.Fail(); d != 80*time.Millisecond {
		t.Errorf("after a reset, with the most jitter down: %s, want 80ms", d)
	}
}

func TestParseSyncStats(t *testing.T) {
	out := "cache internal:\ncurrent active connections:\t           4\nconnections created:\t\t           5\tfailed:\t           0\n" +
		"\nexternal inject:\nconnections created:\t\t           7\tfailed:\t           1\n" +
		"connections updated:\t\t           3\tfailed:\t           0\n" +
		"\nUDP traffic (active device=n0):\n                 320 Bytes sent                  160 Bytes recv\n" +
		"                  11 Pckts sent                   10 Pckts recv\n" +
		"\nmessage tracking:\n                   0 Malformed msgs                    2 Lost msgs\n"
	got := ParseSyncStats(out)
	want := SyncStats{Running: true, Local: 4, Injected: 7, Updated: 3, InjectFailed: 1, Sent: 11, Received: 10, Lost: 2}
	if got != want {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
}

func TestSyncConfig(t *testing.T) {
	c := SyncConfig{Member: "a", Local: "10.0.0.10", Peer: "10.0.0.11", Interface: "ens5", Port: 3780,
		Ignore: []string{"10.0.0.10", "10.0.0.50"}, Dir: "/run/egressd", HashLimit: 131072}
	if err := c.Validate("ha.conntrackd."); err != nil {
		t.Fatal(err)
	}
	conf := c.Render()
	for _, want := range []string{"DisableExternalCache On", "StartupResync On", "IPv4_Destination_Address 10.0.0.11",
		"Interface ens5", "LockFile /run/egressd/conntrackd.lock", "Path /run/egressd/conntrackd.ctl", "IPv4_address 10.0.0.50"} {
		if !strings.Contains(conf, want) {
			t.Errorf("conntrackd.conf lacks %q:\n%s", want, conf)
		}
	}
	bad := SyncConfig{Local: "x", Peer: "x", Interface: "a b", Dir: "run", Port: 0, Ignore: []string{"nope"}}
	err := bad.Validate("ha.conntrackd.")
	for _, want := range []string{"ha.conntrackd.local", "ha.conntrackd.peer", "ha.conntrackd.interface", "ha.conntrackd.port",
		"ha.conntrackd.ignore", "ha.conntrackd.dir", "ha.conntrackd.hash_limit"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("a bad sync config: %v, want a problem with %s", err, want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	good := memberConfig("b", "http://127.0.0.1:1")
	good.Peer.URL = "http://10.0.0.10:9146"
	good.Local.Readyz = "http://127.0.0.1:9145/readyz"
	if err := good.Validate("ha."); err != nil {
		t.Fatalf("a good config: %v", err)
	}
	tests := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"no member", func(c *Config) { c.Member = "" }, "ha.member: "},
		{"peer is self", func(c *Config) { c.Peer.Name = c.Member }, "ha.peer.name: \"b\" is this member's own name"},
		{"bad eni", func(c *Config) { c.ENI = "i-123" }, "ha.eni: \"i-123\" is not a network interface ID"},
		{"same eni", func(c *Config) { c.Peer.ENI = c.ENI }, "ha.peer.eni: eni-b is this member's own ENI"},
		{"bad peer url", func(c *Config) { c.Peer.URL = "10.0.0.10:9146" }, "ha.peer.url: "},
		{"hold-down under detection", func(c *Config) { c.HoldDown = 100 * time.Millisecond }, "ha.hold_down: 100ms is shorter than the detection time"},
		{"no route table", func(c *Config) { c.RouteTables, c.RouteTableTag = nil, "" }, "ha.route_tables: no route table"},
		{"bad route table", func(c *Config) { c.RouteTables = []string{"rtb1"} }, "ha.route_tables: \"rtb1\" is not a route table ID"},
		{"bad tag", func(c *Config) { c.RouteTableTag = "novalue" }, "ha.route_table_tag: \"novalue\" is not key=value"},
		{"floating address without eip", func(c *Config) { c.EIP.AllocationID = "" }, "ha.eip.private_ip: needs eip.allocation_id"},
		{"timeout over interval", func(c *Config) { c.Timeout = time.Second }, "ha.timeout: 1s must be positive and at most the interval"},
		{"no readyz", func(c *Config) { c.Local.Readyz = "" }, "ha.local.readyz: \"\" is not egressd's /readyz URL (metrics.listen must be set"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := *good
			tt.edit(&c)
			err := c.Validate("ha.")
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want %q", err, tt.want)
			}
		})
	}
}
