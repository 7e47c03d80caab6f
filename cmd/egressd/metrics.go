package main

import (
	"bufio"
	"encoding/json"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/egressd/egressd/pkg/declog"
	"github.com/egressd/egressd/pkg/engine"
	"github.com/egressd/egressd/pkg/policy"
)

// metrics are egressd's Prometheus metrics: counters the engine, queues,
// resolver and decision log keep are read at scrape time (nothing is
// counted twice on the verdict path); only the decision latency is
// observed as decisions are logged.
type metrics struct {
	d        *daemon
	reg      *prometheus.Registry
	latency  prometheus.Histogram
	reloadOK atomic.Uint64
	reloadKO atomic.Uint64
	// rulesExpired counts rules dropped at their expires while running.
	rulesExpired atomic.Uint64
	// sourcesOK and sourcesKO count refreshes of the workload sources.
	sourcesOK, sourcesKO atomic.Uint64
}

func newMetrics(d *daemon) *metrics {
	m := &metrics{d: d, reg: prometheus.NewRegistry()}
	m.latency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "egressd_decision_latency_seconds",
		Help: "How long a flow's packets waited for its decision (from the first held packet, or the deciding one).",
		// 10us .. ~5s: a SYN decided at once, a hello read, a DNS lookup, a timeout.
		Buckets: prometheus.ExponentialBuckets(10e-6, 2.5, 15),
	})
	m.reg.MustRegister(m.latency, m, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// observe is called for every decision line, before it is written.
func (m *metrics) observe(r *declog.Record) { m.latency.Observe(r.Latency.Seconds()) }

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

var (
	descDecisions   = desc("egressd_decisions_total", "Flows decided, by protocol, verdict and reason (the decision log's).", "proto", "verdict", "reason")
	descShadow      = desc("egressd_shadow_denials_total", "Allowed flows that a deny rule on trial (shadow: true) would have denied.")
	descFlows       = desc("egressd_flows", "Flows in the table now, by state.", "state")
	descHeld        = desc("egressd_held_packets", "Packets of undecided flows held in the queues now.")
	descLimits      = desc("egressd_limit_denials_total", "Flows denied at a limit, by limit: a pool a source was over its share of (flows, held_packets, buffer_bytes, dns_in_flight), evicted (for a source under its share), dns_rate (a source's lookups per second), dns_budget (the resolver's queries per second), one flow's bound (flow_held_packets, syn_retransmissions, hello_bytes), or syn_log (a flow whose SYN was forwarded and logged, but the log lost it).", "limit")
	descEngineErrs  = desc("egressd_engine_errors_total", "Engine faults, each failed closed: conclude (a verdict with no packet in hand that conntrack did not take), internal (a refused flow state change: a bug), syn_payload (a SYN carrying data to an inspected port, dropped: no client sends one through egressd, which strips TCP Fast Open), syn_queued (a SYN the rules queued to a port whose SYNs they log: IP options, or one that came as the port joined the set; dropped, the client resends it).", "kind")
	descQueueErrs   = desc("egressd_queue_errors_total", "Queue socket events: enobufs (the kernel could not deliver), receive, verdict, decode.", "queue", "kind")
	descSYNLog      = desc("egressd_syn_log_total", "The SYN log (SYNs forwarded without queueing, on ports where the policy decides no SYN): syn (read), lost (socket overruns: each loses SYNs, whose flows are then denied, limit syn_log), decode (messages without a TCP SYN).", "event")
	descQueueDrops  = desc("egressd_queue_dropped_total", "Packets dropped at a queue: by the kernel (nfnetlink_queue: full queue) or user (the reader failed), or by egressd (fail_open's drop queue: what an undecided flow may not carry).", "queue", "by")
	descDNS         = desc("egressd_dns_total", "DNS verification: queries sent, cache hits, mismatches (mismatch_requeried: after asking again for the flow; mismatch_cached: on an answer fetched after the flow began), grace (verified only within verify_dns.grace), budget_refused (over max_queries_per_second), errors.", "event")
	descReloads     = desc("egressd_policy_reload_total", "Policy reloads, by result.", "result")
	descPolicyInfo  = desc("egressd_policy_info", "The policy in force: its file's SHA-256.", "sha256")
	descPolicyRules = desc("egressd_policy_rules", "Rules in the policy in force.")
	descLogLines    = desc("egressd_decision_log_lines_total", "Decision lines, by outcome: written, dropped (buffer full), folded (per-source flood), failed (output error).", "outcome")
	descMode        = desc("egressd_monitor_mode", "1 when decisions are logged but not enforced (monitor mode).")
	descBuild       = desc("egressd_build_info", "egressd's version.", "version", "goversion")
	descExpiredRun  = desc("egressd_policy_rules_expired_total", "Rules dropped from the policy in force at their expires, while running.")
	descExpiredNow  = desc("egressd_policy_expired_rules", "Rules of the policy file that have expired and are not in force.")
	descNextExpiry  = desc("egressd_policy_next_expiry_timestamp_seconds", "When the next rule in force expires (Unix time); absent when none does.")
	descSources     = desc("egressd_sources_refresh_total", "Refreshes of the workload sources (from: security_groups, tags) from EC2, by result.", "result")
	descSourcesNone = desc("egressd_sources_empty_selectors", "Workload selectors of the policy in force that resolve to nothing (their rules match no source from them).")
)

func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descDecisions, descShadow, descFlows, descHeld, descLimits, descEngineErrs, descQueueErrs,
		descQueueDrops, descSYNLog, descDNS, descReloads, descPolicyInfo, descPolicyRules, descLogLines, descMode, descBuild,
		descExpiredRun, descExpiredNow, descNextExpiry, descSources, descSourcesNone} {
		ch <- d
	}
	for _, d := range gwlbDescs {
		ch <- d
	}
}

func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	d := m.d
	counter := func(desc *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(desc *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, v, labels...)
	}
	st := d.engine.Stats()
	for _, proto := range []policy.Proto{policy.TCP, policy.UDP} {
		for _, v := range []policy.Verdict{policy.Allow, policy.Deny} {
			for _, r := range policy.Reasons() {
				if n := st.Decisions(proto, v, r); n > 0 {
					counter(descDecisions, n, proto.String(), v.String(), r.String())
				}
			}
		}
	}
	counter(descShadow, st.ShadowDenials.Load())
	undecided := st.Undecided.Load()
	gauge(descFlows, float64(undecided), "undecided")
	gauge(descFlows, float64(st.Tracked.Load()-undecided), "decided")
	gauge(descHeld, float64(st.Held.Load()))
	for _, l := range engine.Limits() {
		counter(descLimits, st.Limited(l), l.String())
	}
	counter(descEngineErrs, st.ConcludeErrors.Load(), "conclude")
	counter(descEngineErrs, st.Internal.Load(), "internal")
	counter(descEngineErrs, st.SYNPayloads.Load(), "syn_payload")
	counter(descEngineErrs, st.SYNsQueuedLogged.Load(), "syn_queued")
	for _, q := range d.queues {
		n := strconv.Itoa(int(q.Num()))
		qs := q.Stats()
		counter(descQueueErrs, qs.ENOBUFS.Load(), n, "enobufs")
		counter(descQueueErrs, qs.RecvErrors.Load(), n, "receive")
		counter(descQueueErrs, qs.VerdictErrors.Load(), n, "verdict")
		counter(descQueueErrs, qs.DecodeErrors.Load(), n, "decode")
		if qs.Dropped.Load() > 0 {
			counter(descQueueDrops, qs.Dropped.Load(), n, "egressd")
		}
	}
	if d.synLog != nil {
		ls := d.synLog.Stats()
		counter(descSYNLog, ls.SYNs.Load(), "syn")
		counter(descSYNLog, ls.ENOBUFS.Load(), "lost")
		counter(descSYNLog, ls.DecodeErrors.Load(), "decode")
	}
	for num, drops := range readQueueDrops() {
		counter(descQueueDrops, drops[0], num, "kernel")
		counter(descQueueDrops, drops[1], num, "user")
	}
	if d.resolver != nil {
		rs := d.resolver.Stats()
		counter(descDNS, rs.Queries, "query")
		counter(descDNS, rs.Hits, "cache_hit")
		counter(descDNS, rs.Mismatches, "mismatch")
		counter(descDNS, rs.MismatchesRequeried, "mismatch_requeried")
		counter(descDNS, rs.MismatchesCached, "mismatch_cached")
		counter(descDNS, rs.Graces, "grace")
		counter(descDNS, rs.BudgetRefused, "budget_refused")
		counter(descDNS, rs.Errors, "error")
	}
	counter(descReloads, m.reloadOK.Load(), "ok")
	counter(descReloads, m.reloadKO.Load(), "error")
	pol := d.engine.Policy()
	gauge(descPolicyInfo, 1, pol.Hash())
	gauge(descPolicyRules, float64(pol.Stats().Rules))
	counter(descExpiredRun, m.rulesExpired.Load())
	gauge(descExpiredNow, float64(pol.Stats().Expired))
	if next, ok := pol.NextExpiry(); ok {
		gauge(descNextExpiry, float64(next.Unix()))
	}
	counter(descSources, m.sourcesOK.Load(), "ok")
	counter(descSources, m.sourcesKO.Load(), "error")
	empty := 0
	for _, u := range pol.SelectorUses() {
		if u.Count == 0 {
			empty++
		}
	}
	gauge(descSourcesNone, float64(empty))
	c := d.decisions.Counts()
	counter(descLogLines, c.Written, "written")
	counter(descLogLines, c.Dropped, "dropped")
	counter(descLogLines, c.Folded, "folded")
	counter(descLogLines, c.Failed, "failed")
	monitor := 0.0
	if d.engine.Mode() == engine.Monitor {
		monitor = 1
	}
	gauge(descMode, monitor)
	gauge(descBuild, 1, version, runtime.Version())
	m.collectGWLB(ch)
}

// readQueueDrops reads the kernel's per-queue drop counters for this
// network namespace: queue_dropped (queue full) and user_dropped (the
// reader's socket could not take the packet), columns 6 and 7 of
// /proc/net/netfilter/nfnetlink_queue.
func readQueueDrops() map[string][2]uint64 {
	f, err := os.Open("/proc/net/netfilter/nfnetlink_queue")
	if err != nil {
		return nil
	}
	defer f.Close()
	out := map[string][2]uint64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 7 {
			continue
		}
		q, _ := strconv.ParseUint(fs[5], 10, 64)
		u, _ := strconv.ParseUint(fs[6], 10, 64)
		out[fs[0]] = [2]uint64{q, u}
	}
	return out
}

// handler serves /metrics, /healthz and /readyz.
func (m *metrics) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", m.serveReadyz)
	return mux
}

// serveReadyz answers /readyz: 200 when ready, 503 with the problems.
func (m *metrics) serveReadyz(w http.ResponseWriter, _ *http.Request) {
	r := m.d.readiness()
	w.Header().Set("Content-Type", "application/json")
	if r.Status != "ready" {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	json.NewEncoder(w).Encode(r)
}

// readiness is /readyz's answer.
type readiness struct {
	Status       string   `json:"status"` // ready | not-ready
	Problems     []string `json:"problems,omitempty"`
	PolicySHA256 string   `json:"policy_sha256"`
	Policy       string   `json:"policy"`
	Rules        int      `json:"rules"`
	Mode         string   `json:"mode"`
	Queues       []int    `json:"queues"`
	LoadedAt     string   `json:"policy_loaded_at"`
}

func (d *daemon) readiness() readiness {
	pol := d.engine.Policy()
	r := readiness{
		PolicySHA256: pol.Hash(), Policy: pol.File(), Rules: pol.Stats().Rules,
		Mode: d.engine.Mode().String(), LoadedAt: d.loadedAt.Load().(time.Time).UTC().Format(time.RFC3339),
	}
	for _, q := range d.queues {
		r.Queues = append(r.Queues, int(q.Num()))
		if !q.Bound() {
			r.Problems = append(r.Problems, "queue "+strconv.Itoa(int(q.Num()))+" is not bound")
		}
	}
	if r.Rules == 0 {
		r.Problems = append(r.Problems, "the policy has no rules")
	}
	if d.ctx.Err() != nil {
		r.Problems = append(r.Problems, "stopping")
	}
	r.Problems = append(r.Problems, d.gwlbProblems()...)
	r.Status = "ready"
	if len(r.Problems) > 0 {
		r.Status = "not-ready"
	}
	return r
}
