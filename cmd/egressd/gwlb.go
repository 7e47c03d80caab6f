package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/viper"

	"github.com/egressd/egressd/pkg/gwlb"
)

// GWLBConfig is the config's gwlb section: egressd as a target of an AWS
// Gateway Load Balancer (README, "Scaling out behind a Gateway Load
// Balancer"). Mode "" leaves it off.
type GWLBConfig struct {
	// Mode is one-arm (allowed flows go back to the load balancer
	// untranslated; a NAT gateway behind its endpoint translates) or
	// two-arm (egressd masquerades out of its own interface). It must
	// agree with egressd-gwlb-net.sh --mode and egressd-iptables.sh's
	// interfaces; egressd itself only checks it.
	Mode      string `mapstructure:"mode"`
	Listen    string `mapstructure:"listen"`    // host:port for GENEVE; 0.0.0.0:6081
	Interface string `mapstructure:"interface"` // the tun device; gwlb0
	Readers   int    `mapstructure:"readers"`   // UDP sockets and tun queues; 0: 2
	// Endpoints, if set, are the only load balancer endpoints served
	// (vpce-0123456789abcdef0, or the id in hex); others are dropped.
	Endpoints []string `mapstructure:"endpoints"`
	Flows     int      `mapstructure:"flows"` // return paths held; 0: 65536
	// TCPIdleTimeout must be the listener's tcp.idle_timeout.seconds
	// (350 s unless changed): a return path lives that long idle.
	TCPIdleTimeout time.Duration `mapstructure:"tcp_idle_timeout"`
	// HealthListen serves /readyz alone, for the target group's health
	// check, apart from metrics.listen (which may stay on localhost).
	HealthListen string `mapstructure:"health_listen"`
	// Drain is how long egressd keeps forwarding after SIGTERM (or the
	// lifecycle hook) with /readyz false before it exits: the target
	// group's deregistration delay.
	Drain time.Duration `mapstructure:"drain"`
	// LifecycleIMDS, if set (http://169.254.169.254), is polled for the
	// Auto Scaling target lifecycle state; "Terminated" starts the drain.
	LifecycleIMDS string `mapstructure:"lifecycle_imds"`
}

func setGWLBDefaults(v *viper.Viper) {
	v.SetDefault("gwlb.mode", "")
	v.SetDefault("gwlb.listen", "0.0.0.0:6081")
	v.SetDefault("gwlb.interface", "gwlb0")
	v.SetDefault("gwlb.readers", 0)
	v.SetDefault("gwlb.endpoints", []string{})
	v.SetDefault("gwlb.flows", 0)
	v.SetDefault("gwlb.tcp_idle_timeout", "350s")
	v.SetDefault("gwlb.health_listen", "")
	v.SetDefault("gwlb.drain", "300s")
	v.SetDefault("gwlb.lifecycle_imds", "")
}

// parseEndpointID reads an endpoint id as vpce-<hex> or bare hex (the
// console's 17 hex digits fit the option's 64 bits).
func parseEndpointID(s string) (uint64, error) {
	h := strings.TrimPrefix(strings.ToLower(strings.TrimSpace(s)), "vpce-")
	id, err := strconv.ParseUint(h, 16, 64)
	if err != nil || h == "" {
		return 0, fmt.Errorf("%q is not an endpoint id (vpce- and at most 16 significant hex digits)", s)
	}
	return id, nil
}

func (g *GWLBConfig) validate(bad func(string, ...any)) {
	switch g.Mode {
	case "":
		return
	case "one-arm", "two-arm":
	default:
		bad("gwlb.mode must be one-arm, two-arm or empty (off), not %q", g.Mode)
	}
	if ap, err := netip.ParseAddrPort(g.Listen); err != nil || !ap.Addr().Is4() {
		bad("gwlb.listen %q is not an IPv4 address and port (0.0.0.0:6081)", g.Listen)
	}
	if g.Interface == "" || len(g.Interface) > 15 {
		bad("gwlb.interface %q: an interface name of 1 to 15 characters", g.Interface)
	}
	for _, e := range g.Endpoints {
		if _, err := parseEndpointID(e); err != nil {
			bad("gwlb.endpoints: %v", err)
		}
	}
	if g.Readers < 0 || g.Readers > 64 || g.Flows < 0 {
		bad("gwlb.readers must be within 0..64 and gwlb.flows >= 0 (0: chosen)")
	}
	if g.TCPIdleTimeout < time.Minute || g.TCPIdleTimeout > 6000*time.Second {
		bad("gwlb.tcp_idle_timeout %s must be within 60s..6000s (the listener's range)", g.TCPIdleTimeout)
	}
	if g.Drain < 0 || g.Drain > time.Hour {
		bad("gwlb.drain %s must be within 0..1h (the deregistration delay's range)", g.Drain)
	}
	if g.HealthListen != "" {
		if _, _, err := net.SplitHostPort(g.HealthListen); err != nil {
			bad("gwlb.health_listen %q is not host:port", g.HealthListen)
		}
	}
}

// gwlbState is the daemon's part for the GENEVE path.
type gwlbState struct {
	h     *gwlb.Handler
	drain time.Duration // gwlb.drain (a restart-only key)

	mu         sync.Mutex
	drainSince time.Time // zero: not draining
	why        string
}

// startGWLB opens the GENEVE path (if configured) and waits until its
// readers run.
func (d *daemon) startGWLB() error {
	g := d.cfg.GWLB
	if g.Mode == "" {
		return nil
	}
	ids := make([]uint64, 0, len(g.Endpoints))
	for _, e := range g.Endpoints {
		id, _ := parseEndpointID(e) // validated
		ids = append(ids, id)
	}
	h, err := gwlb.New(gwlb.Config{
		Listen: netip.MustParseAddrPort(g.Listen), Interface: g.Interface, Readers: g.Readers,
		Endpoints: ids, Flows: g.Flows, TCPIdle: g.TCPIdleTimeout,
		Logger: d.log.With("component", "gwlb"),
	})
	if err != nil {
		return fmt.Errorf("gwlb: %w", err)
	}
	d.gwlb.Store(&gwlbState{h: h, drain: g.Drain})
	d.goRun("gwlb", h.Run)
	if g.HealthListen != "" {
		ln, err := net.Listen("tcp", g.HealthListen)
		if err != nil {
			return fmt.Errorf("gwlb.health_listen: %w", err)
		}
		mux := http.NewServeMux()
		mux.HandleFunc("GET /readyz", d.metrics.serveReadyz)
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		d.goRun("gwlb health", func(ctx context.Context) error {
			go func() { <-ctx.Done(); srv.Close() }()
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
	}
	if g.LifecycleIMDS != "" {
		base := g.LifecycleIMDS
		d.goRun("gwlb lifecycle", func(ctx context.Context) error { return d.watchLifecycle(ctx, base) })
	}
	for deadline := time.Now().Add(5 * time.Second); !h.Ready(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			return errors.New("gwlb: the GENEVE readers did not start within 5s")
		}
	}
	d.log.Info("GENEVE path up", "mode", g.Mode, "listen", g.Listen, "interface", h.Interface(),
		"endpoints", len(ids), "drain", g.Drain)
	return nil
}

// gwlbProblems are /readyz's problems of the GENEVE path: the load
// balancer must send no new flow to a target whose path is down or that
// is draining.
func (d *daemon) gwlbProblems() []string {
	g := d.gwlb.Load()
	if g == nil {
		if d.gwlbWanted {
			return []string{"the GENEVE path is not up yet"}
		}
		return nil
	}
	var p []string
	if !g.h.Ready() {
		p = append(p, "the GENEVE path is not running")
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.drainSince.IsZero() {
		p = append(p, "draining ("+g.why+")")
	}
	return p
}

// beginDrain handles a stop signal behind a load balancer: the first one
// turns /readyz false and keeps forwarding for gwlb.drain (the load
// balancer's deregistration delay: its existing flows keep coming), then
// stops egressd. It returns false when egressd should stop at once: no
// GENEVE path, no drain, a second signal, or a drain already long enough
// (the lifecycle hook started it).
func (d *daemon) beginDrain(why string) bool {
	g := d.gwlb.Load()
	if g == nil || g.drain == 0 {
		return false
	}
	left, started := g.begin(why)
	if !started {
		return false // already draining: a second signal means now
	}
	if left <= 0 {
		return false
	}
	d.log.Warn("draining: /readyz is false, forwarding goes on until the deregistration delay has passed; a second signal stops at once",
		"trigger", why, "drain", g.drain, "left", left)
	time.AfterFunc(left, func() {
		d.log.Info("drain over: stopping")
		d.cancel(nil)
	})
	return true
}

// begin marks the daemon draining (once) and says how much of gwlb.drain
// is left; started is false when a signal had already started it.
func (g *gwlbState) begin(why string) (left time.Duration, started bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.drainSince.IsZero() {
		if g.why != "lifecycle" {
			return 0, false
		}
		g.why = why + " after lifecycle"
		return g.drain - time.Since(g.drainSince), true
	}
	g.drainSince, g.why = time.Now(), why
	return g.drain, true
}

// watchLifecycle polls the instance metadata for the Auto Scaling target
// lifecycle state (IMDSv2); "Terminated" (a lifecycle hook holds the
// instance in Terminating:Wait) starts the drain. egressd keeps running,
// not ready, until the instance's shutdown stops it; by then the drain
// has usually run its course, and the stop is immediate.
func (d *daemon) watchLifecycle(ctx context.Context, base string) error {
	g := d.gwlb.Load()
	base = strings.TrimRight(base, "/")
	client := &http.Client{Timeout: 2 * time.Second}
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	warned := false
	for {
		state, err := imdsGet(ctx, client, base, "/latest/meta-data/autoscaling/target-lifecycle-state")
		switch {
		case err != nil && !warned && ctx.Err() == nil:
			d.log.Warn("gwlb.lifecycle_imds: cannot read the target lifecycle state (logged once)", "err", err)
			warned = true
		case err == nil && state == "Terminated":
			if _, started := g.begin("lifecycle"); started {
				d.log.Warn("the Auto Scaling group is terminating this instance: draining, /readyz is false", "drain", g.drain)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// imdsGet reads one metadata path with an IMDSv2 session token.
func imdsGet(ctx context.Context, c *http.Client, base, path string) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPut, base+"/latest/api/token", nil)
	req.Header.Set("X-aws-ec2-metadata-token-ttl-seconds", "300")
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	token, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("IMDS token: %s %v", resp.Status, err)
	}
	req, _ = http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
	req.Header.Set("X-aws-ec2-metadata-token", string(token))
	resp, err = c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil || resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("IMDS %s: %s %v", path, resp.Status, err)
	}
	return strings.TrimSpace(string(b)), nil
}

var (
	descGWLBPackets = desc("egressd_gwlb_packets_total", "GENEVE path: inner packets decapsulated (from the load balancer to the kernel) and encapsulated (back to it).", "direction")
	descGWLBDrops   = desc("egressd_gwlb_dropped_total", "GENEVE path: packets dropped, by reason (malformed, no_options: a missing endpoint, attachment or cookie option, critical_option, protocol, oversize: over 8500 bytes, unknown_endpoint, ipv6, no_flow: toward the load balancer for a flow it never sent, cache_full, send_error, tun_error).", "reason")
	descGWLBFlows   = desc("egressd_gwlb_flows", "GENEVE path: return paths (flows with their latest header) held.")
	descGWLBDrain   = desc("egressd_gwlb_draining", "1 while draining (/readyz false, still forwarding).")
	gwlbDescs       = []*prometheus.Desc{descGWLBPackets, descGWLBDrops, descGWLBFlows, descGWLBDrain}
)

func (m *metrics) collectGWLB(ch chan<- prometheus.Metric) {
	g := m.d.gwlb.Load()
	if g == nil {
		return
	}
	s := g.h.Stats()
	ch <- prometheus.MustNewConstMetric(descGWLBPackets, prometheus.CounterValue, float64(s.Decapsulated.Load()), "decapsulated")
	ch <- prometheus.MustNewConstMetric(descGWLBPackets, prometheus.CounterValue, float64(s.Encapsulated.Load()), "encapsulated")
	for _, r := range gwlb.Drops() {
		ch <- prometheus.MustNewConstMetric(descGWLBDrops, prometheus.CounterValue, float64(s.Dropped(r)), r.String())
	}
	ch <- prometheus.MustNewConstMetric(descGWLBFlows, prometheus.GaugeValue, float64(g.h.Flows()))
	g.mu.Lock()
	draining := 0.0
	if !g.drainSince.IsZero() {
		draining = 1
	}
	g.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(descGWLBDrain, prometheus.GaugeValue, draining)
}
