package main

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/egressd/egressd/pkg/policy"
)

const dashboardFile = "../../deploy/grafana/egressd.json"

// scrapeLabels are the labels Prometheus adds to every series it scrapes.
var scrapeLabels = []string{"instance", "job"}

// exposedMetrics are the metric names egressd's /metrics can show, each
// with its labels: the daemon's own (from their descriptors, so that a
// counter still at 0 counts), the latency histogram's series, and the Go
// and process collectors'.
func exposedMetrics(t *testing.T) map[string][]string {
	t.Helper()
	pol, err := policy.Parse("p.yaml", []byte("version: 1\ndefault: deny\nrules:\n  - {name: a, domains: [a.example], action: allow}\n"), policy.Options{})
	if err != nil {
		t.Fatal(err)
	}
	d, _ := testDaemon(t, pol)
	out := map[string][]string{}
	descRE := regexp.MustCompile(`fqName: "([^"]+)".*variableLabels: \{([^}]*)\}`)
	ch := make(chan *prometheus.Desc, 64)
	go func() { d.metrics.Describe(ch); close(ch) }()
	for desc := range ch {
		m := descRE.FindStringSubmatch(desc.String())
		if m == nil {
			t.Fatalf("cannot read the descriptor %s", desc)
		}
		out[m[1]] = nil
		if m[2] != "" {
			out[m[1]] = strings.Split(m[2], ",")
		}
	}
	fams, err := d.metrics.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		var labels []string
		for _, m := range f.Metric {
			for _, lp := range m.Label {
				if !slices.Contains(labels, lp.GetName()) {
					labels = append(labels, lp.GetName())
				}
			}
		}
		if f.GetType() == dto.MetricType_HISTOGRAM {
			out[f.GetName()+"_bucket"] = append(slices.Clone(labels), "le")
			out[f.GetName()+"_sum"] = labels
			out[f.GetName()+"_count"] = labels
			continue
		}
		if _, ok := out[f.GetName()]; !ok {
			out[f.GetName()] = labels
		}
	}
	return out
}

// TestGrafanaDashboard loads the dashboard and checks every metric and
// label its queries, variables and legends use against what egressd
// really exposes.
func TestGrafanaDashboard(t *testing.T) {
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title      string
		UID        string
		Templating struct {
			List []struct {
				Name, Type string
				Query      json.RawMessage
			}
		}
		Panels []struct {
			ID      int
			Title   string
			Targets []struct {
				Expr, LegendFormat, RefID string
			}
		}
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if dash.UID == "" || len(dash.Panels) < 10 {
		t.Fatalf("uid %q, %d panels", dash.UID, len(dash.Panels))
	}
	exposed := exposedMetrics(t)
	var exprs []struct{ where, expr, legend string }
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			exprs = append(exprs, struct{ where, expr, legend string }{fmt.Sprintf("panel %q %s", p.Title, tg.RefID), tg.Expr, tg.LegendFormat})
		}
	}
	for _, v := range dash.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct{ Query string }
		if err := json.Unmarshal(v.Query, &q); err != nil {
			t.Fatalf("variable %s: %v", v.Name, err)
		}
		exprs = append(exprs, struct{ where, expr, legend string }{"variable " + v.Name, q.Query, ""})
	}
	seen := map[string]bool{}
	for _, e := range exprs {
		uses, err := promQLUses(e.expr)
		if err != nil {
			t.Errorf("%s: %v: %s", e.where, err, e.expr)
			continue
		}
		if len(uses.metrics) == 0 {
			t.Errorf("%s uses no metric: %s", e.where, e.expr)
		}
		all := slices.Clone(scrapeLabels)
		for name, labels := range uses.metrics {
			have, ok := exposed[name]
			if !ok {
				t.Errorf("%s: metric %s is not one egressd exposes", e.where, name)
				continue
			}
			seen[name] = true
			all = append(all, have...)
			for _, l := range labels {
				if !slices.Contains(have, l) && !slices.Contains(scrapeLabels, l) {
					t.Errorf("%s: %s has no label %q (it has %v)", e.where, name, l, have)
				}
			}
		}
		legend := regexp.MustCompile(`\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}`).FindAllStringSubmatch(e.legend, -1)
		for _, l := range append(uses.grouping, legendLabels(legend)...) {
			if !slices.Contains(all, l) {
				t.Errorf("%s: label %q is on none of the metrics it reads", e.where, l)
			}
		}
	}
	for _, must := range []string{"egressd_decisions_total", "egressd_decision_latency_seconds_bucket", "egressd_limit_denials_total",
		"egressd_policy_next_expiry_timestamp_seconds", "egressd_queue_dropped_total"} {
		if !seen[must] {
			t.Errorf("the dashboard does not show %s", must)
		}
	}
}

func legendLabels(m [][]string) []string {
	var out []string
	for _, s := range m {
		out = append(out, s[1])
	}
	return out
}

// promUses is what a PromQL expression reads: each metric with the labels
// its matchers name, and the labels it groups or joins by.
type promUses struct {
	metrics  map[string][]string
	grouping []string
}

// promQLUses reads the metrics and labels out of a PromQL expression (and
// Grafana's label_values(metric, label)). It knows PromQL's lexical
// structure, not its grammar: enough to find every name a dashboard
// depends on.
func promQLUses(expr string) (promUses, error) {
	toks, err := lexPromQL(expr)
	if err != nil {
		return promUses{}, err
	}
	u := promUses{metrics: map[string][]string{}}
	keywords := []string{"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or", "unless",
		"sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values", "group", "inf", "nan"}
	next := func(i int) string {
		if i+1 < len(toks) {
			return toks[i+1].s
		}
		return ""
	}
	for i := 0; i < len(toks); i++ {
		tk := toks[i]
		if tk.kind != 'i' {
			continue
		}
		switch {
		case slices.Contains([]string{"by", "without", "on", "ignoring", "group_left", "group_right"}, tk.s) && next(i) == "(":
			for i += 2; i < len(toks) && toks[i].s != ")"; i++ {
				if toks[i].kind == 'i' {
					u.grouping = append(u.grouping, toks[i].s)
				}
			}
		case tk.s == "label_values" && next(i) == "(":
			// label_values(metric, label) or label_values(label)
			var args []string
			for i += 2; i < len(toks) && toks[i].s != ")"; i++ {
				if toks[i].kind == 'i' {
					args = append(args, toks[i].s)
				}
			}
			if len(args) == 2 {
				u.metrics[args[0]] = append(u.metrics[args[0]], args[1])
			}
		case next(i) == "(" || slices.Contains(keywords, tk.s):
			// a function, an aggregation, a keyword
		default:
			labels := u.metrics[tk.s]
			if next(i) == "{" {
				for i += 2; i < len(toks) && toks[i].s != "}"; i++ {
					if toks[i].kind == 'i' && i+1 < len(toks) && toks[i+1].kind == 'o' {
						labels = append(labels, toks[i].s)
					}
				}
			}
			u.metrics[tk.s] = labels
		}
	}
	return u, nil
}

type promTok struct {
	kind byte // 'i' identifier, 's' string, 'n' number, 'r' range, 'v' Grafana variable, 'o' matcher operator, 'p' punctuation
	s    string
}

func lexPromQL(s string) ([]promTok, error) {
	var out []promTok
	isIdent := func(c byte, first bool) bool {
		return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || !first && c >= '0' && c <= '9'
	}
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n':
			i++
		case isIdent(c, true):
			j := i + 1
			for j < len(s) && isIdent(s[j], false) {
				j++
			}
			out = append(out, promTok{'i', s[i:j]})
			i = j
		case c >= '0' && c <= '9' || c == '.':
			j := i + 1
			for j < len(s) && (s[j] >= '0' && s[j] <= '9' || s[j] == '.' || s[j] == 'e') {
				j++
			}
			out = append(out, promTok{'n', s[i:j]})
			i = j
		case c == '"' || c == '\'' || c == '`':
			j := i + 1
			for j < len(s) && s[j] != c {
				if s[j] == '\\' && c != '`' {
					j++
				}
				j++
			}
			if j >= len(s) {
				return nil, fmt.Errorf("unterminated string at %d", i)
			}
			out = append(out, promTok{'s', s[i+1 : j]})
			i = j + 1
		case c == '[':
			j := strings.IndexByte(s[i:], ']')
			if j < 0 {
				return nil, fmt.Errorf("unterminated range at %d", i)
			}
			out = append(out, promTok{'r', s[i : i+j+1]})
			i += j + 1
		case c == '$':
			j := i + 1
			for j < len(s) && isIdent(s[j], false) {
				j++
			}
			out = append(out, promTok{'v', s[i:j]})
			i = j
		case strings.HasPrefix(s[i:], "=~") || strings.HasPrefix(s[i:], "!~") || strings.HasPrefix(s[i:], "!="):
			out = append(out, promTok{'o', s[i : i+2]})
			i += 2
		case c == '=' && (i+1 >= len(s) || s[i+1] != '='):
			out = append(out, promTok{'o', "="})
			i++
		case strings.ContainsRune("(){},+-*/%^<>=!", rune(c)):
			out = append(out, promTok{'p', string(c)})
			i++
		default:
			return nil, fmt.Errorf("unexpected %q at %d", c, i)
		}
	}
	return out, nil
}

// TestPromQLUses holds the reader to a few expressions of each shape.
func TestPromQLUses(t *testing.T) {
	u, err := promQLUses(`100 * sum by (reason) (rate(egressd_decisions_total{verdict="deny", instance=~"$instance"}[$__rate_interval])) / ignoring(reason) group_left sum(x_total)`)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(u.metrics) != "map[egressd_decisions_total:[verdict instance] x_total:[]]" || fmt.Sprint(u.grouping) != "[reason reason]" {
		t.Errorf("%v %v", u.metrics, u.grouping)
	}
	if u, _ := promQLUses(`label_values(egressd_build_info, instance)`); fmt.Sprint(u.metrics) != "map[egressd_build_info:[instance]]" {
		t.Errorf("label_values: %v", u.metrics)
	}
	if _, err := promQLUses(`rate(x{a="b}[5m])`); err == nil {
		t.Error("an unterminated string was read")
	}
}
