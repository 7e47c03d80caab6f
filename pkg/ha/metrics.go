package ha

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the HA agent's Prometheus metrics. A nil *Metrics counts
// nothing.
type Metrics struct {
	Active        prometheus.Gauge
	Ready         prometheus.Gauge
	PeerUp        prometheus.Gauge
	PolicyDiffers prometheus.Gauge
	Checks        *prometheus.CounterVec
	Moves         *prometheus.CounterVec
	MoveSeconds   prometheus.Histogram
	EC2           *prometheus.CounterVec
}

// NewMetrics registers the metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Active: prometheus.NewGauge(prometheus.GaugeOpts{Name: "egressd_ha_active",
			Help: "1 while the first managed route table names this member (it carries the traffic)."}),
		Ready: prometheus.NewGauge(prometheus.GaugeOpts{Name: "egressd_ha_ready",
			Help: "1 while this member can filter: egressd ready, the rules in place, the links up."}),
		PeerUp: prometheus.NewGauge(prometheus.GaugeOpts{Name: "egressd_ha_peer_up",
			Help: "1 while the last check of the peer found it ready."}),
		PolicyDiffers: prometheus.NewGauge(prometheus.GaugeOpts{Name: "egressd_ha_policy_differs",
			Help: "1 while the peer reports another policy (sha256) than this member's egressd."}),
		Checks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "egressd_ha_peer_checks_total",
			Help: "Checks of the peer's /readyz, by result: ready, not_ready, unreachable."}, []string{"result"}),
		Moves: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "egressd_ha_moves_total",
			Help: "Moves of the routes and Elastic IP to this member, by action (failover, failback, claim, repair) and result (ok, error)."},
			[]string{"action", "result"}),
		MoveSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "egressd_ha_move_seconds",
			Help:    "How long a verified move took, from its first call to the view that shows it.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14)}),
		EC2: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "egressd_ha_ec2_requests_total",
			Help: "EC2 API calls, by action and result (ok, error, throttled)."}, []string{"action", "result"}),
	}
	reg.MustRegister(m.Active, m.Ready, m.PeerUp, m.PolicyDiffers, m.Checks, m.Moves, m.MoveSeconds, m.EC2)
	for _, a := range Actions() {
		for _, r := range []string{"ok", "error"} {
			m.Moves.WithLabelValues(a.String(), r)
		}
	}
	return m
}

func (m *Metrics) ec2Call(action string, err error) {
	if m == nil {
		return
	}
	result := "ok"
	var ae *APIError
	switch {
	case errors.As(err, &ae) && ae.Throttled():
		result = "throttled"
	case err != nil:
		result = "error"
	}
	m.EC2.WithLabelValues(action, result).Inc()
}

func gauge(g prometheus.Gauge, on bool) {
	if on {
		g.Set(1)
	} else {
		g.Set(0)
	}
}
