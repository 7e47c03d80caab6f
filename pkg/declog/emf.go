package declog

import (
	"cmp"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/egressd/egressd/pkg/policy"
)

// EMFConfig turns on metrics in CloudWatch Embedded Metric Format (EMF)
// on the decision log: every Interval, one line with the decisions and
// denials of the interval (no dimensions: the denial rate), and one line
// per reason and rule with that pair's denials. CloudWatch Logs extracts
// the metrics from the lines as it ingests the log (the CloudWatch agent
// ships it); no address is ever a dimension, and the rules are the
// policy's, so the number of metrics stays small. Parse reads the lines as
// ErrNotDecision, so replay and suggest skip them.
type EMFConfig struct {
	Namespace string        // the metrics' namespace; "": egressd
	Interval  time.Duration // 0: 60s
	// MaxPairs bounds the (reason, rule) pairs of one interval; denials
	// past it count under rule "(other)". 0: 256.
	MaxPairs int
}

// emf counts decisions between two EMF lines.
type emf struct {
	cfg       EMFConfig
	mu        sync.Mutex
	decisions uint64
	denials   uint64
	pairs     map[emfPair]uint64
}

type emfPair struct {
	reason policy.Reason
	rule   string
}

func newEMF(cfg EMFConfig) *emf {
	if cfg.Namespace == "" {
		cfg.Namespace = "egressd"
	}
	if cfg.Interval == 0 {
		cfg.Interval = time.Minute
	}
	if cfg.MaxPairs == 0 {
		cfg.MaxPairs = 256
	}
	return &emf{cfg: cfg, pairs: map[emfPair]uint64{}}
}

// count takes one record; it allocates only for a pair not seen in the
// interval.
func (e *emf) count(r *Record) {
	if r.Undecided {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.decisions++
	if r.Verdict != policy.Deny {
		return
	}
	e.denials++
	k := emfPair{r.Reason, r.Rule}
	if k.rule == "" {
		k.rule = "(none)"
	}
	if _, ok := e.pairs[k]; !ok && len(e.pairs) >= e.cfg.MaxPairs {
		k.rule = "(other)"
	}
	e.pairs[k]++
}

// lines returns the interval's EMF lines and starts the next interval.
func (e *emf) lines(now time.Time) []byte {
	e.mu.Lock()
	decisions, denials, pairs := e.decisions, e.denials, e.pairs
	e.decisions, e.denials, e.pairs = 0, 0, map[emfPair]uint64{}
	e.mu.Unlock()

	ts := strconv.AppendInt(nil, now.UnixMilli(), 10)
	head := func(b []byte, dims, metrics string) []byte {
		b = append(b, `{"_aws":{"Timestamp":`...)
		b = append(b, ts...)
		b = append(b, `,"CloudWatchMetrics":[{"Namespace":`...)
		b = AppendString(b, e.cfg.Namespace)
		b = append(b, `,"Dimensions":[`...)
		b = append(b, dims...)
		b = append(b, `],"Metrics":[`...)
		b = append(b, metrics...)
		return append(b, `]}]}`...)
	}
	var b []byte
	b = head(b, `[]`, `{"Name":"Decisions","Unit":"Count"},{"Name":"Denials","Unit":"Count"}`)
	b = append(b, `,"Decisions":`...)
	b = strconv.AppendUint(b, decisions, 10)
	b = append(b, `,"Denials":`...)
	b = strconv.AppendUint(b, denials, 10)
	b = append(b, "}\n"...)

	keys := make([]emfPair, 0, len(pairs))
	for k := range pairs {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(x, y emfPair) int { return cmp.Or(cmp.Compare(x.reason, y.reason), cmp.Compare(x.rule, y.rule)) })
	for _, k := range keys {
		b = head(b, `["Reason","Rule"],["Reason"]`, `{"Name":"Denials","Unit":"Count"}`)
		b = append(b, `,"Reason":`...)
		b = AppendString(b, k.reason.String())
		b = append(b, `,"Rule":`...)
		b = AppendString(b, k.rule)
		b = append(b, `,"Denials":`...)
		b = strconv.AppendUint(b, pairs[k], 10)
		b = append(b, "}\n"...)
	}
	return b
}
