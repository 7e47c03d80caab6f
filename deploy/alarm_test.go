package deploy_test

import (
	"context"
	"encoding/json"
	"io"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/zclconf/go-cty/cty"

	"github.com/egressd/egressd/internal/testenv"
	"github.com/egressd/egressd/pkg/declog"
	"github.com/egressd/egressd/pkg/policy"
)

// emfMetrics runs a decision log writer with EMF on and returns the
// namespace and the metric names of the lines it writes without
// dimensions.
func emfMetrics(t *testing.T) (string, []string) {
	t.Helper()
	var out testenv.Buffer
	w := declog.NewWriter(declog.WriterConfig{Outputs: []io.Writer{&out}, EMF: &declog.EMFConfig{Interval: 20 * time.Millisecond}})
	ctx, cancel := context.WithCancel(context.Background())
	go w.Run(ctx)
	w.Log(&declog.Record{Src: netip.MustParseAddr("10.0.1.7"), Dst: netip.MustParseAddr("203.0.113.9"), DstPort: 443,
		Proto: policy.TCP, Verdict: policy.Deny, Reason: policy.ReasonDefault, Rule: "default"})
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(out.String(), `"_aws"`) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	w.Wait()
	for line := range strings.Lines(out.String()) {
		var l struct {
			AWS struct {
				CloudWatchMetrics []struct {
					Namespace  string
					Dimensions [][]string
					Metrics    []struct{ Name string }
				}
			} `json:"_aws"`
		}
		if json.Unmarshal([]byte(line), &l) != nil || len(l.AWS.CloudWatchMetrics) != 1 {
			continue
		}
		d := l.AWS.CloudWatchMetrics[0]
		if len(d.Dimensions) == 1 && len(d.Dimensions[0]) == 0 {
			var names []string
			for _, m := range d.Metrics {
				names = append(names, m.Name)
			}
			return d.Namespace, names
		}
	}
	t.Fatalf("no EMF line without dimensions in:\n%s", out.String())
	return "", nil
}

// TestTerraformDenialAlarm: the alarm divides the metrics egressd really
// writes on the decision log, in the namespace it writes them to.
func TestTerraformDenialAlarm(t *testing.T) {
	dir := repoPath("deploy/terraform")
	c := parseHCLDir(t, dir, ".tf")
	a := c.one(t, "resource", "aws_cloudwatch_metric_alarm", "denial_rate")
	if got := exprText(t, dir, a, "count"); got != "var.denial_alarm_percent > 0 ? 1 : 0" {
		t.Errorf("count %s", got)
	}
	if r := refs(a, "alarm_actions"); !slices.Contains(r, "var.alarm_actions") {
		t.Errorf("alarm_actions %v", r)
	}
	ns, written := emfMetrics(t)
	if def := literal(t, c.one(t, "variable", "emf_namespace"), "default"); !def.RawEquals(cty.StringVal(ns)) {
		t.Errorf("emf_namespace defaults to %#v, egressd writes %q", def, ns)
	}
	used := map[string]string{}
	var expr string
	for _, q := range a.Body.Blocks {
		if q.Type != "metric_query" {
			continue
		}
		id := literal(t, q, "id").AsString()
		if _, ok := q.Body.Attributes["expression"]; ok {
			expr = exprText(t, dir, q, "expression")
			if !literal(t, q, "return_data").RawEquals(cty.True) {
				t.Error("the expression is not the alarm's data")
			}
			continue
		}
		m := nested(t, q, "metric")
		if r := refs(m, "namespace"); !slices.Contains(r, "var.emf_namespace") {
			t.Errorf("metric_query %s: namespace %v", id, r)
		}
		if _, ok := m.Body.Attributes["dimensions"]; ok {
			t.Errorf("metric_query %s has dimensions; egressd's totals have none", id)
		}
		used[id] = literal(t, m, "metric_name").AsString()
	}
	for id, name := range used {
		if !slices.Contains(written, name) {
			t.Errorf("metric_query %s reads %s, which egressd does not write (it writes %v)", id, name, written)
		}
		if !strings.Contains(expr, id) {
			t.Errorf("the expression %s does not use %s", expr, id)
		}
	}
	if used["denials"] != "Denials" || used["decisions"] != "Decisions" {
		t.Errorf("metrics %v", used)
	}
}
