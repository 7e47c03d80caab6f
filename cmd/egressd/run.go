package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"reflect"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/egressd/egressd/pkg/decide"
	"github.com/egressd/egressd/pkg/declog"
	"github.com/egressd/egressd/pkg/engine"
	"github.com/egressd/egressd/pkg/nfq"
	"github.com/egressd/egressd/pkg/policy"
	"github.com/egressd/egressd/pkg/resolve"
	"github.com/egressd/egressd/pkg/sources"
)

const runUsage = `Usage: egressd run [--config FILE] [--mode enforce|monitor]

Run the verdict engine: read the first packets of new flows from the NFQUEUE
queues that scripts/iptables/egressd-iptables.sh sends them to, decide each
flow with the policy, and write one JSON decision line per flow to stdout
(and to log.decisions_file if set). Operational logs go to stderr.

egressd refuses to start on a bad config or policy (exit 1, with a log line
per problem). It reloads the policy when the file changes (also when it is
replaced by a rename) and on SIGHUP; a bad one is refused, with its
file:line problems logged, and the last good policy stays in force. SIGHUP
also rereads the config: mode, monitor_until and log.level apply at once; a
change that needs a restart (queues, ports, limits, resolvers) is logged as
such. On SIGTERM or SIGINT it stops; the iptables rules stay, so new flows
are dropped while it is down (fail closed) unless fail_open is set.

--mode monitor decides and logs every flow and blocks none; with
monitor_until in the config, enforcement resumes at that time by itself.
metrics.listen serves /metrics (Prometheus), /healthz and /readyz (JSON,
with the loaded policy's sha256).

Needs CAP_NET_ADMIN in the network namespace of the NAT (root, or the
systemd unit's capabilities).

Flags:
`

// shutdownGrace bounds how long a stop waits for the queues, the
// verifications in flight and the decision log to drain.
const shutdownGrace = 5 * time.Second

func cmdRun(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("run", runUsage, stderr)
	cfgPath := fs.String("config", "/etc/egressd/egressd.yaml", "config file (YAML); every key also as EGRESSD_<KEY>")
	mode := fs.String("mode", "", "enforce or monitor: overrides the config's mode for this run")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "egressd run: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		fmt.Fprintf(stderr, "egressd run: bad config, not starting: %v\n", err)
		return 1
	}
	if *mode != "" {
		cfg.Mode = *mode
	}
	m, err := engine.ParseMode(cfg.Mode)
	if err != nil {
		fmt.Fprintf(stderr, "egressd run: --mode: %v\n", err)
		return 2
	}
	level := new(slog.LevelVar)
	log := newLogger(cfg, stderr, level)

	mem, err := memoryGiven()
	if err != nil {
		log.Error("not starting: cannot tell the memory egressd is given", "err", err)
		return 1
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		// The collector works to stay below what egressd is given,
		// before the kernel's OOM killer would.
		debug.SetMemoryLimit(mem.Bytes)
	}
	cfg.autoLimits(mem)
	if err := cfg.checkMemory(mem); err != nil {
		log.Error("not starting", "err", err)
		return 1
	}
	log.Info("memory", "given", mem.Bytes, "from", mem.From, "worst_case", cfg.memoryBound().Total(),
		"limits_flows", cfg.Limits.Flows, "limits_buffer_bytes", cfg.Limits.BufferBytes,
		"limits_dns_in_flight", cfg.Limits.DNSInFlight, "verify_dns_cache_max", cfg.VerifyDNS.CacheMax)

	d := &daemon{cfg: cfg, cfgPath: *cfgPath, modeFlag: *mode, log: log, level: level, mode: m, notify: newNotifier(), mem: mem,
		gwlbWanted: cfg.GWLB.Mode != ""}
	if err := d.start(stdout); err != nil {
		log.Error("not starting", "err", err)
		return 1
	}
	return d.wait()
}

func newLogger(cfg *Config, w io.Writer, level *slog.LevelVar) *slog.Logger {
	_ = level.UnmarshalText([]byte(cfg.Log.Level)) // validated with the config
	opts := &slog.HandlerOptions{Level: level}
	if cfg.Log.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// daemon is egressd run's wiring: it owns every goroutine it starts.
type daemon struct {
	cfg      *Config
	cfgPath  string
	modeFlag string // --mode, which wins over the config's mode
	log      *slog.Logger
	level    *slog.LevelVar
	mode     engine.Mode
	notify   *notifier
	mem      memory // what egressd is given; the auto limits come from it
	// gwlbWanted: gwlb.mode is set, so /readyz waits for the GENEVE path.
	gwlbWanted bool

	engine    *engine.Engine
	queues    []*nfq.Queue
	synLog    *nfq.SYNLog
	synSet    *nfq.SYNPortSet // nil: every SYN is queued
	synPorts  []uint16        // what synSet holds
	conntrack *nfq.Conntrack
	resolver  *resolve.Resolver
	decisions *declog.Writer
	files     []io.Closer
	metrics   *metrics
	gwlb      atomic.Pointer[gwlbState] // the GENEVE path, once up (gwlb.mode set)
	loadedAt  atomic.Value              // time.Time the policy in force was loaded

	reloadMu     sync.Mutex
	monitorTimer *time.Timer
	expiryKick   chan struct{}     // the policy in force changed: see expireRules
	sources      *sources.Resolver // workload sources; nil until a policy selects workloads
	sourcesKick  chan struct{}     // a new policy: refresh the sources now

	ctx    context.Context
	cancel context.CancelCauseFunc
	wg     sync.WaitGroup
	logWG  sync.WaitGroup
}

func (d *daemon) start(stdout io.Writer) error {
	cfg, log := d.cfg, d.log
	pol, err := loadPolicy(cfg)
	if err != nil {
		return err
	}
	d.ctx, d.cancel = context.WithCancelCause(context.Background())
	pol = d.withSources(pol)

	var verifier engine.Verifier
	if cfg.VerifyDNS.Enabled {
		grace := cfg.VerifyDNS.Grace
		if grace == 0 {
			grace = resolve.NoGrace
		}
		r, err := resolve.New(resolve.Config{
			Servers:             cfg.VerifyDNS.Resolvers,
			CacheMax:            cfg.VerifyDNS.CacheMax,
			Timeout:             cfg.VerifyDNS.Timeout,
			Grace:               grace,
			MaxQueriesPerSecond: cfg.VerifyDNS.MaxQueriesPerSecond,
			Logger:              log.With("component", "resolver"),
		})
		if err != nil {
			return fmt.Errorf("verify_dns: %w", err)
		}
		if err := r.Watch(pol.LiteralNames()); err != nil {
			return fmt.Errorf("verify_dns: %w", err)
		}
		d.resolver, verifier = r, resolverVerifier{r}
		if cfg.Hello.Timeout < 2*resolve.DefaultRequeryInterval {
			log.Warn("hello.timeout is shorter than two DNS query slots: a name whose answer lacks the destination is not asked a second time before the deny",
				"hello_timeout", cfg.Hello.Timeout, "slot", resolve.DefaultRequeryInterval)
		}
	} else {
		log.Warn("verify_dns is disabled: names from SNI, QUIC and Host are taken on trust; decision lines say dns_check=trusted")
	}

	outputs := []io.Writer{stdout}
	if cfg.Log.DecisionsFile != "" {
		f, err := declog.OpenRotating(cfg.Log.DecisionsFile, int64(cfg.Log.DecisionsMaxMB)<<20, cfg.Log.DecisionsKeep)
		if err != nil {
			return fmt.Errorf("log.decisions_file: %w", err)
		}
		outputs = append(outputs, f)
		d.files = append(d.files, f)
	}
	d.decisions = declog.NewWriter(declog.WriterConfig{
		Outputs: outputs, FoldRate: float64(cfg.Log.FoldPerSource), FoldWindow: cfg.Log.FoldWindow,
		FlushDelay: cfg.Log.FlushDelay,
		EMF:        cfg.emfConfig(),
	})
	d.metrics = newMetrics(d)
	d.loadedAt.Store(time.Now())
	ecfg := cfg.engineConfig()
	ecfg.Mode = d.mode // --mode wins over the config
	ecfg.Verifier = verifier
	ecfg.Log = func(r *declog.Record) { d.metrics.observe(r); d.decisions.Log(r) }
	ecfg.Logger = log
	if cfg.SYNLog.Enabled {
		if err := d.openSYNLog(); err != nil {
			return err
		}
		if d.synSet != nil {
			ecfg.SYNs = d.synLog
		}
	} else {
		d.emptyStaleSYNSet()
	}
	d.engine, err = engine.New(ecfg, pol, cfg.Queue.Count)
	if err != nil {
		return err
	}
	// Verdicts of flows decided with no packet in hand go to their
	// connection's mark over ctnetlink.
	if d.conntrack, err = nfq.DialConntrack(0); err != nil {
		return err
	}
	d.files = append(d.files, d.conntrack)
	for i := 0; i < cfg.Queue.Count; i++ {
		q, err := nfq.OpenQueue(nfq.QueueConfig{
			Num: uint16(cfg.Queue.First + i), Len: uint32(cfg.Queue.Len), FailOpen: cfg.FailOpen,
			Conntrack: d.conntrack, Logger: log,
		}, d.engine.Shard(i))
		if err != nil {
			return err
		}
		d.queues = append(d.queues, q)
	}
	if cfg.FailOpen {
		// The rules send here what an undecided flow may not carry
		// (egressd-iptables.sh --fail-open): dropped while egressd runs,
		// bypassed while it is down. It is no shard's: its packets
		// decide nothing, and no verdict of a flow goes out on it.
		q, err := nfq.OpenDropQueue(nfq.QueueConfig{
			Num: uint16(cfg.Queue.First + cfg.Queue.Count), Len: uint32(cfg.Queue.Len), FailOpen: true, Logger: log,
		})
		if err != nil {
			return err
		}
		d.queues = append(d.queues, q)
	}

	if cfg.Metrics.Listen != "" {
		ln, err := net.Listen("tcp", cfg.Metrics.Listen)
		if err != nil {
			return fmt.Errorf("metrics.listen: %w", err)
		}
		srv := &http.Server{Handler: d.metrics.handler(), ReadHeaderTimeout: 5 * time.Second}
		d.goRun("metrics", func(ctx context.Context) error {
			go func() { <-ctx.Done(); srv.Close() }()
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
	}

	d.logWG.Add(1)
	go func() { defer d.logWG.Done(); d.decisions.Run(d.ctx) }()
	d.goRun("engine", func(ctx context.Context) error { d.engine.Run(ctx); return nil })
	d.goRun("policy watch", func(ctx context.Context) error {
		return watchFile(ctx, cfg.Policy, 200*time.Millisecond, log, func() { d.reload("file changed") })
	})
	d.expiryKick = make(chan struct{}, 1)
	d.logExpiry(pol)
	d.goRun("policy expiry", d.expireRules)
	if d.sources != nil {
		d.goRun("workload sources", d.refreshSources)
	}
	d.goRun("log watch", d.watchLogDrops)
	d.goRun("limit report", d.reportLimited)
	if d.resolver != nil {
		d.goRun("resolver", d.resolver.Run)
	}
	for _, q := range d.queues {
		d.goRun(fmt.Sprintf("queue %d", q.Num()), q.Run)
	}
	d.applyMonitorUntil(cfg)
	if err := d.waitBound(5 * time.Second); err != nil {
		return err
	}
	if err := d.startGWLB(); err != nil {
		return err
	}
	// The queues are read: SYNs may now go by the log.
	d.reloadMu.Lock()
	err = d.setSYNPorts(d.engine.Policy().SYNUndecidedPorts()) // an expiry or new sources may have come meanwhile
	d.reloadMu.Unlock()
	if err != nil {
		return err
	}
	if d.notify.watchdog > 0 {
		d.goRun("watchdog", d.watchdog)
	}
	s := pol.Stats()
	d.notify.ready(fmt.Sprintf("deciding flows; policy %s (%d rules)", pol.Hash()[:12], s.Rules))
	log.Info("egressd running", "version", version, "mode", d.mode.String(),
		"queues", fmt.Sprintf("%d-%d", cfg.Queue.First, cfg.Queue.First+cfg.Queue.Count-1),
		"fail_open", cfg.FailOpen, "policy", pol.File(), "policy_sha256", pol.Hash(),
		"rules", s.Rules, "verify_dns", cfg.VerifyDNS.Enabled)
	return nil
}

// openSYNLog binds the SYN log's NFLOG group and opens the rules' port
// set. Without the set (rules applied with --no-syn-log, or older ones)
// every SYN is queued, and egressd says so.
func (d *daemon) openSYNLog() error {
	l, err := nfq.OpenSYNLog(uint16(d.cfg.SYNLog.Group), 0, d.log)
	if err != nil {
		return fmt.Errorf("syn_log: %w", err)
	}
	d.synLog = l
	d.files = append(d.files, l)
	s, err := nfq.OpenSYNPortSet(nfq.SYNPortSetName, 0)
	if err != nil {
		d.log.Warn("syn_log: the rules have no SYN port set (applied with --no-syn-log?); every SYN is queued", "err", err)
		return nil
	}
	// Empty at once: ports a previous egressd left in the set (it was
	// killed) must not forward SYNs that this policy may decide. Filled
	// once the queues are read.
	if err := s.Set(nil); err != nil {
		s.Close()
		return fmt.Errorf("syn_log: emptying the SYN port set: %w", err)
	}
	d.synSet = s
	d.files = append(d.files, s)
	return nil
}

// emptyStaleSYNSet empties the rules' SYN port set, if they have one,
// when syn_log is off: a previous egressd may have left ports in it.
func (d *daemon) emptyStaleSYNSet() {
	s, err := nfq.OpenSYNPortSet(nfq.SYNPortSetName, 0)
	if err != nil {
		return // no set: every SYN is queued
	}
	defer s.Close()
	if err := s.Set(nil); err != nil {
		d.log.Error("syn_log is off, but the rules' SYN port set could not be emptied: SYNs to its ports are forwarded undecided (their flows are denied, limit no_syn)", "err", err)
	}
}

// setSYNPorts makes ports the TCP ports whose SYNs the rules log and
// forward: the engine learns them first, then the kernel's set.
func (d *daemon) setSYNPorts(ports []uint16) error {
	if d.synSet == nil {
		return nil
	}
	d.engine.SetSYNLogged(ports)
	if err := d.synSet.Set(ports); err != nil {
		return fmt.Errorf("syn_log: %w", err)
	}
	if !slices.Equal(ports, d.synPorts) {
		d.log.Info("SYNs logged and forwarded, not queued, on these TCP ports (the policy decides no SYN there)", "ports", ports)
	}
	d.synPorts = slices.Clone(ports)
	return nil
}

// setPolicy puts pol in force (a reload, an expiry, new workload sources)
// with the SYN log's ports kept safe across the swap: a port leaves the
// SYN set before the policy that may decide its SYNs takes over, and
// joins it only after. Callers hold reloadMu.
func (d *daemon) setPolicy(pol *policy.Policy) {
	next := pol.SYNUndecidedPorts()
	same := slices.Equal(next, d.synPorts)
	if !same {
		var both []uint16
		for _, p := range d.synPorts {
			if slices.Contains(next, p) {
				both = append(both, p)
			}
		}
		if err := d.setSYNPorts(both); err != nil {
			d.log.Error("policy change: the SYN port set", "err", err)
		}
	}
	d.engine.SetPolicy(pol)
	if !same {
		if err := d.setSYNPorts(next); err != nil {
			d.log.Error("policy change: the SYN port set", "err", err)
		}
	}
}

// goRun runs fn until the daemon stops; an error from it stops the daemon.
func (d *daemon) goRun(name string, fn func(context.Context) error) {
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		if err := fn(d.ctx); err != nil && d.ctx.Err() == nil {
			d.cancel(fmt.Errorf("%s: %w", name, err))
		}
	}()
}

// wait handles signals until a stop, then shuts down within shutdownGrace.
func (d *daemon) wait() int {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)
	for d.ctx.Err() == nil {
		select {
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				d.notify.reloading()
				d.reloadConfig()
				d.reload("SIGHUP")
				d.notify.ready("policy reloaded")
				continue
			}
			if d.beginDrain(sig.String()) {
				continue // the load balancer's flows drain first
			}
			d.log.Info("stopping", "signal", sig.String())
			d.cancel(nil)
		case <-d.ctx.Done():
		}
	}
	d.notify.stopping()
	// From now on SYNs are queued again (to no reader once the queues
	// close: dropped, or bypassed with fail_open), as without the log.
	d.reloadMu.Lock() // a reload still running must not fill it again
	err := d.setSYNPorts(nil)
	d.synSet = nil
	d.reloadMu.Unlock()
	if err != nil {
		d.log.Error("could not empty the SYN port set; SYNs to its ports still pass while egressd is down (their data does not)", "err", err)
	}
	code := 0
	if cause := context.Cause(d.ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		d.log.Error("stopping after a failure; the iptables rules stay, so new flows fail closed unless fail_open", "err", cause)
		code = 1
	}
	done := make(chan struct{})
	go func() {
		d.wg.Wait()
		if d.resolver != nil {
			d.resolver.Close()
		}
		d.logWG.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(shutdownGrace):
		d.log.Error("shutdown did not finish in time; exiting anyway", "grace", shutdownGrace)
		code = 1
	}
	for _, f := range d.files {
		f.Close()
	}
	c := d.decisions.Counts()
	d.log.Info("stopped", "decision_lines_written", c.Written, "decision_lines_dropped", c.Dropped,
		"decision_lines_folded", c.Folded, "decision_lines_failed", c.Failed)
	return code
}

// waitBound waits until every queue is bound (the kernel delivers to us).
func (d *daemon) waitBound(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		all := true
		for _, q := range d.queues {
			if !q.Bound() {
				all = false
			}
		}
		if all {
			return nil
		}
		if cause := context.Cause(d.ctx); cause != nil {
			return cause
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("queues not bound within %s", timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// watchdog pings systemd while the engine's tick advances: a stuck shard
// (a deadlock) stops the tick, the pings stop, and systemd restarts us.
func (d *daemon) watchdog(ctx context.Context) error {
	t := time.NewTicker(d.notify.watchdog)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if time.Since(d.engine.LastTick()) < 2*d.notify.watchdog {
				d.notify.ping()
			} else {
				d.log.Error("the engine's tick is stuck; not pinging the watchdog", "last_tick", d.engine.LastTick())
			}
		}
	}
}

// watchLogDrops logs, at most every 10s, how many decision lines were lost
// to a full buffer, so that a gap in the log is never silent.
func (d *daemon) watchLogDrops(ctx context.Context) error {
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	var last declog.Counts
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			c := d.decisions.Counts()
			if c.Dropped != last.Dropped || c.Failed != last.Failed {
				d.log.Warn("decision lines lost", "dropped_since_last", c.Dropped-last.Dropped, "failed_since_last", c.Failed-last.Failed,
					"dropped_total", c.Dropped, "failed_total", c.Failed)
			}
			last = c
		}
	}
}

// reportLimited names, every 10s, the sources that hit each limit most:
// where an operator should look when egressd_limit_denials_total grows.
// Addresses go to the log, never to a metric label.
func (d *daemon) reportLimited(ctx context.Context) error {
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			top := d.engine.TopLimited(5)
			for _, l := range engine.Limits() {
				list := top[l]
				if len(list) == 0 {
					continue
				}
				srcs := make([]string, len(list))
				for i, sc := range list {
					srcs[i] = fmt.Sprintf("%s=%d", sc.Src, sc.Count)
				}
				d.log.Warn("sources denied at a limit in the last 10s", "limit", l.String(), "top_sources", srcs)
			}
		}
	}
}

// applyMonitorUntil arms the end of a monitor-mode trial.
func (d *daemon) applyMonitorUntil(cfg *Config) {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	if d.monitorTimer != nil {
		d.monitorTimer.Stop()
		d.monitorTimer = nil
	}
	if d.engine.Mode() != engine.Monitor || cfg.MonitorUntil == "" {
		return
	}
	until, _ := time.Parse(time.RFC3339, cfg.MonitorUntil) // validated
	end := func() {
		d.engine.SetMode(engine.Enforce)
		d.log.Warn("monitor_until reached: enforcing the policy from now on", "monitor_until", cfg.MonitorUntil)
	}
	if wait := time.Until(until); wait <= 0 {
		end()
		return
	}
	d.monitorTimer = time.AfterFunc(time.Until(until), end)
	d.log.Warn("monitor mode: decisions are logged, not enforced", "until", cfg.MonitorUntil)
}

// reloadConfig rereads the config file on SIGHUP: what can change live is
// applied, what cannot is logged.
func (d *daemon) reloadConfig() {
	cfg, err := loadConfig(d.cfgPath)
	if err != nil {
		d.log.Error("config reload refused; the running config stays", "err", err)
		return
	}
	cfg.autoLimits(d.mem) // as at start, so that unset limits compare equal
	d.reloadMu.Lock()
	old := d.cfg
	d.reloadMu.Unlock()
	var restart []string
	for key, same := range map[string]bool{
		"policy":        cfg.Policy == old.Policy,
		"queue":         cfg.Queue == old.Queue,
		"fail_open":     cfg.FailOpen == old.FailOpen,
		"inspect_ports": reflect.DeepEqual(cfg.InspectPorts, old.InspectPorts),
		"hello":         cfg.Hello == old.Hello,
		"limits":        cfg.Limits == old.Limits,
		"verify_dns":    reflect.DeepEqual(cfg.VerifyDNS, old.VerifyDNS),
		"metrics":       cfg.Metrics == old.Metrics,
		"sources":       cfg.Sources == old.Sources,
		"gwlb":          reflect.DeepEqual(cfg.GWLB, old.GWLB),
		"log (except level)": cfg.Log.Format == old.Log.Format && cfg.Log.DecisionsFile == old.Log.DecisionsFile &&
			cfg.Log.DecisionsMaxMB == old.Log.DecisionsMaxMB && cfg.Log.DecisionsKeep == old.Log.DecisionsKeep &&
			cfg.Log.FoldPerSource == old.Log.FoldPerSource && cfg.Log.FoldWindow == old.Log.FoldWindow &&
			cfg.Log.FlushDelay == old.Log.FlushDelay &&

			cfg.Log.EMF == old.Log.EMF && cfg.Log.EMFNamespace == old.Log.EMFNamespace && cfg.Log.EMFInterval == old.Log.EMFInterval,
	} {
		if !same {
			restart = append(restart, key)
		}
	}
	if len(restart) > 0 {
		d.log.Warn("config changes that apply only after a restart", "keys", restart)
	}
	if cfg.Log.Level != old.Log.Level {
		_ = d.level.UnmarshalText([]byte(cfg.Log.Level))
	}
	mode := cfg.Mode
	if d.modeFlag != "" {
		mode = d.modeFlag
	}
	if m, err := engine.ParseMode(mode); err == nil && m != d.engine.Mode() {
		d.engine.SetMode(m)
		d.log.Warn("mode changed", "mode", m.String())
	}
	// Only live keys are taken from the new config.
	next := *old
	next.Mode, next.MonitorUntil, next.Log.Level = cfg.Mode, cfg.MonitorUntil, cfg.Log.Level
	d.reloadMu.Lock() // reload reads d.cfg from the file watcher's goroutine
	d.cfg = &next
	d.reloadMu.Unlock()
	d.applyMonitorUntil(&next)
}

// reload loads the policy file again and swaps it in if it is good.
func (d *daemon) reload(why string) {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	pol, err := loadPolicy(d.cfg)
	if err != nil {
		d.metrics.reloadKO.Add(1)
		d.log.Error("policy reload refused; the previous policy stays in force", "trigger", why,
			"policy_sha256", d.engine.Policy().Hash(), "err", err)
		return
	}
	if pol.Hash() == d.engine.Policy().Hash() {
		return // an event that did not change the file's content
	}
	started := d.sources != nil
	pol = d.withSources(pol)
	if !started && d.sources != nil {
		d.goRun("workload sources", d.refreshSources)
	}
	d.setPolicy(pol)
	d.loadedAt.Store(time.Now())
	d.metrics.reloadOK.Add(1)
	d.logExpiry(pol)
	d.kickExpiry()
	if d.resolver != nil {
		if err := d.resolver.Watch(pol.LiteralNames()); err != nil {
			d.log.Error("verify_dns: cannot watch the new policy's names", "err", err)
		}
	}
	d.log.Info("policy reloaded", "trigger", why, "policy", pol.File(), "policy_sha256", pol.Hash(), "rules", pol.Stats().Rules)
}

// loadPolicy loads and checks the policy file, its tests included: a
// policy whose own tests fail is refused like an invalid one.
func loadPolicy(cfg *Config) (*policy.Policy, error) {
	pol, err := policy.Load(cfg.Policy, cfg.policyOptions())
	if err == nil {
		if fails := pol.RunTests(); len(fails) > 0 {
			err = fails
		}
	}
	if err != nil {
		return nil, fmt.Errorf("policy refused:\n%w", err)
	}
	return pol, nil
}

// resolverVerifier adapts pkg/resolve to the engine's Verifier.
type resolverVerifier struct{ r *resolve.Resolver }

func (v resolverVerifier) Cached(name string, addr netip.Addr) decide.Answer {
	switch v.r.Cached(name, addr) {
	case resolve.CachedFresh:
		return decide.Match
	case resolve.CachedGrace:
		return decide.Grace
	}
	return 0
}

func (v resolverVerifier) Verify(ctx context.Context, name string, addr netip.Addr, since time.Time) (engine.Verification, error) {
	res, err := v.r.VerifySince(ctx, name, addr, since)
	if errors.Is(err, resolve.ErrBudget) {
		return engine.Verification{}, engine.ErrBudget
	}
	out := engine.Verification{Evidence: decide.Evidence{AnswerAge: res.AnswerAge, Addrs: res.Addrs, Requeried: res.Requeried}}
	switch res.Outcome {
	case resolve.Match:
		out.Answer = decide.Match
	case resolve.Grace:
		out.Answer = decide.Grace
	default:
		out.Answer = decide.Mismatch
	}
	return out, err
}
