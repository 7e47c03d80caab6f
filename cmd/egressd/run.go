package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/egressd/egressd/pkg/declog"
	"github.com/egressd/egressd/pkg/nfq"
	"github.com/egressd/egressd/pkg/policy"
	"github.com/egressd/egressd/pkg/resolve"
)

const runUsage = `Usage: egressd run [--config FILE] [--mode enforce|monitor]

Run the verdict engine: read the first packets of new flows from the NFQUEUE
queues that scripts/iptables/egressd-iptables.sh sends them to, decide each
flow with the policy, and write one JSON decision line per flow to stdout.
Operational logs go to stderr.

egressd refuses to start on a bad config or policy (exit 1, with a log line
per problem). On SIGHUP it reloads the policy; a bad one is refused and the
last good policy stays in force. On SIGTERM or SIGINT it stops; the iptables
rules stay, so new flows are dropped while it is down (fail closed) unless
fail_open is set.

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
	m, err := nfq.ParseMode(cfg.Mode)
	if err != nil {
		fmt.Fprintf(stderr, "egressd run: --mode: %v\n", err)
		return 2
	}
	log := newLogger(cfg, stderr)

	d := &daemon{cfg: cfg, log: log, mode: m}
	if err := d.start(stdout); err != nil {
		log.Error("not starting", "err", err)
		return 1
	}
	return d.wait()
}

func newLogger(cfg *Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.Log.Level)) // validated with the config
	opts := &slog.HandlerOptions{Level: level}
	if cfg.Log.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// daemon is egressd run's wiring: it owns every goroutine it starts.
type daemon struct {
	cfg  *Config
	log  *slog.Logger
	mode nfq.Mode

	engine    *nfq.Engine
	queues    []*nfq.Queue
	resolver  *resolve.Resolver
	decisions *declog.Writer

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

	var verifier nfq.Verifier
	if cfg.VerifyDNS.Enabled {
		r, err := resolve.New(resolve.Config{
			Servers:  cfg.VerifyDNS.Resolvers,
			CacheMax: cfg.VerifyDNS.CacheMax,
			Timeout:  cfg.VerifyDNS.Timeout,
			Logger:   log.With("component", "resolver"),
		})
		if err != nil {
			return fmt.Errorf("verify_dns: %w", err)
		}
		if err := r.Watch(pol.LiteralNames()); err != nil {
			return fmt.Errorf("verify_dns: %w", err)
		}
		d.resolver, verifier = r, resolverVerifier{r}
	} else {
		log.Warn("verify_dns is disabled: names from SNI, QUIC and Host are taken on trust; decision lines say dns_check=trusted")
	}

	d.decisions = declog.NewWriter(stdout, 65536)
	d.engine, err = nfq.New(nfq.Config{
		Mode:          d.mode,
		InspectTCP:    ports16(cfg.InspectPorts.TCP),
		InspectUDP:    ports16(cfg.InspectPorts.UDP),
		HelloMaxBytes: cfg.Hello.MaxBytes,
		HelloTimeout:  cfg.Hello.Timeout,
		MaxFlows:      cfg.Limits.Flows,
		MaxHeld:       cfg.Limits.HeldPackets,
		Verifier:      verifier,
		Log:           d.decisions.Log,
		Logger:        log,
	}, pol, cfg.Queue.Count)
	if err != nil {
		return err
	}
	for i := 0; i < cfg.Queue.Count; i++ {
		q, err := nfq.OpenQueue(nfq.QueueConfig{
			Num: uint16(cfg.Queue.First + i), Len: uint32(cfg.Queue.Len), FailOpen: cfg.FailOpen,
		}, d.engine.Shard(i))
		if err != nil {
			return err
		}
		d.queues = append(d.queues, q)
	}
	if cfg.FailOpen {
		// The rules send undecided flows' replies with payload here
		// (egressd-iptables.sh --fail-open): dropped while egressd runs,
		// bypassed while it is down.
		q, err := nfq.OpenQueue(nfq.QueueConfig{
			Num: uint16(cfg.Queue.First + cfg.Queue.Count), Len: uint32(cfg.Queue.Len), FailOpen: true, DropAll: true,
		}, d.engine.Shard(0))
		if err != nil {
			return err
		}
		d.queues = append(d.queues, q)
	}

	d.logWG.Add(1)
	go func() { defer d.logWG.Done(); d.decisions.Run(d.ctx) }()
	d.goRun("engine", func(ctx context.Context) error { d.engine.Run(ctx); return nil })
	if d.resolver != nil {
		d.goRun("resolver", d.resolver.Run)
	}
	for _, q := range d.queues {
		d.goRun(fmt.Sprintf("queue %d", q.Num()), q.Run)
	}
	s := pol.Stats()
	log.Info("egressd running", "version", version, "mode", d.mode.String(),
		"queues", fmt.Sprintf("%d-%d", cfg.Queue.First, cfg.Queue.First+cfg.Queue.Count-1),
		"fail_open", cfg.FailOpen, "policy", pol.File(), "policy_sha256", pol.Hash(),
		"rules", s.Rules, "verify_dns", cfg.VerifyDNS.Enabled)
	return nil
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
				d.reload("SIGHUP")
				continue
			}
			d.log.Info("stopping", "signal", sig.String())
			d.cancel(nil)
		case <-d.ctx.Done():
		}
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
	d.log.Info("stopped", "decision_lines_written", d.decisions.Written(), "decision_lines_dropped", d.decisions.Dropped())
	return code
}

// reload loads the policy file again and swaps it in if it is good.
func (d *daemon) reload(why string) {
	pol, err := loadPolicy(d.cfg)
	if err != nil {
		d.log.Error("policy reload refused; the previous policy stays in force", "trigger", why, "err", err)
		return
	}
	d.engine.SetPolicy(pol)
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

func (v resolverVerifier) Contains(name string, addr netip.Addr) bool {
	return v.r.Contains(name, addr)
}

func (v resolverVerifier) Verify(ctx context.Context, name string, addr netip.Addr) (bool, error) {
	out, err := v.r.Verify(ctx, name, addr)
	return out == resolve.Match, err
}
