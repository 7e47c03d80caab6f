package deploy_test

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

// TestTerraformGWLB checks the Gateway Load Balancer deployment (gwlb.tf) as
// TestTerraformExample checks the rest: the load balancer and its GENEVE
// target group (5-tuple, /readyz, failover, the drain), the listener's idle
// timeout and resets, an endpoint per zone and the routes through it, one
// NAT gateway per zone in one-arm mode, and an Auto Scaling group of
// egressd targets with a lifecycle hook long enough for the drain, whose
// user data configures egressd to match.
func TestTerraformGWLB(t *testing.T) {
	dir := repoPath("deploy/terraform")
	c := parseHCLDir(t, dir, ".tf")
	vars := checkVariables(t, c)
	for _, v := range []string{"gwlb_zones", "gwlb_mode", "gwlb_instances", "gwlb_drain_seconds", "gwlb_target_failover", "gwlb_tcp_idle_timeout_seconds", "gwlb_health_port"} {
		if vars[v] == nil {
			t.Errorf("no variable %q", v)
		} else if _, ok := vars[v].Body.Attributes["default"]; !ok {
			t.Errorf("variable %q has no default: the GWLB deployment must stay off unless asked for", v)
		}
	}
	has := func(b *hclsyntax.Block, attr, ref string) {
		t.Helper()
		if r := refs(b, attr); !slices.Contains(r, ref) {
			t.Errorf("%s %q: %s refers to %v, want %s", b.Type, b.Labels, attr, r, ref)
		}
	}
	str := func(b *hclsyntax.Block, attr, want string) {
		t.Helper()
		if v := literal(t, b, attr); !v.RawEquals(cty.StringVal(want)) {
			t.Errorf("%s %q: %s = %#v, want %q", b.Type, b.Labels, attr, v, want)
		}
	}

	lb := c.one(t, "resource", "aws_lb", "gwlb")
	str(lb, "load_balancer_type", "gateway")

	tg := c.one(t, "resource", "aws_lb_target_group", "gwlb")
	str(tg, "protocol", "GENEVE")
	if v := literal(t, tg, "port"); !v.RawEquals(cty.NumberIntVal(6081)) {
		t.Errorf("target group port %#v, want 6081", v)
	}
	for _, b := range tg.Body.Blocks {
		if b.Type == "stickiness" {
			t.Error("the target group has a stickiness block: flows must stick by 5-tuple (the default)")
		}
	}
	has(tg, "deregistration_delay", "var.gwlb_drain_seconds")
	hc := nested(t, tg, "health_check")
	str(hc, "protocol", "HTTP")
	str(hc, "path", "/readyz")
	has(hc, "port", "var.gwlb_health_port")
	fo := nested(t, tg, "target_failover")
	has(fo, "on_deregistration", "var.gwlb_target_failover")
	has(fo, "on_unhealthy", "var.gwlb_target_failover")

	ln := c.one(t, "resource", "aws_lb_listener", "gwlb")
	has(ln, "tcp_idle_timeout_seconds", "var.gwlb_tcp_idle_timeout_seconds")
	has(nested(t, ln, "default_action"), "target_group_arn", "aws_lb_target_group.gwlb")
	resets := c.one(t, "resource", "terraform_data", "gwlb_tcp_resets")
	if cmd := exprText(t, dir, nested(t, resets, "provisioner"), "command"); !strings.Contains(cmd, "send_tcp_reset.on_idle_timeout.enabled") {
		t.Errorf("the TCP reset step runs %s", cmd)
	}

	has(c.one(t, "resource", "aws_vpc_endpoint_service", "gwlb"), "gateway_load_balancer_arns", "aws_lb.gwlb")
	ep := c.one(t, "resource", "aws_vpc_endpoint", "gwlb")
	str(ep, "vpc_endpoint_type", "GatewayLoadBalancer")
	has(ep, "for_each", "var.gwlb_zones")
	to := c.one(t, "resource", "aws_route", "to_gwlb_endpoint")
	str(to, "destination_cidr_block", "0.0.0.0/0")
	has(to, "vpc_endpoint_id", "aws_vpc_endpoint.gwlb")
	has(c.one(t, "resource", "aws_route", "gwlb_endpoint_to_nat"), "nat_gateway_id", "aws_nat_gateway.gwlb")
	has(c.one(t, "resource", "aws_route", "gwlb_return"), "vpc_endpoint_id", "aws_vpc_endpoint.gwlb")
	has(c.one(t, "resource", "aws_nat_gateway", "gwlb"), "for_each", "local.gwlb_nat_zones")

	sg := c.one(t, "resource", "aws_security_group", "gwlb")
	var geneve, health bool
	for _, b := range sg.Body.Blocks {
		if b.Type != "ingress" {
			continue
		}
		if literal(t, b, "protocol").RawEquals(cty.StringVal("udp")) && literal(t, b, "from_port").RawEquals(cty.NumberIntVal(6081)) {
			geneve = true
		}
		if slices.Contains(refs(b, "from_port"), "var.gwlb_health_port") {
			health = true
		}
	}
	if !geneve || !health {
		t.Errorf("the targets' security group lets in GENEVE %v, the health check %v; want both", geneve, health)
	}

	asg := c.one(t, "resource", "aws_autoscaling_group", "gwlb")
	str(asg, "health_check_type", "ELB")
	has(asg, "target_group_arns", "aws_lb_target_group.gwlb")
	hook := nested(t, asg, "initial_lifecycle_hook")
	str(hook, "lifecycle_transition", "autoscaling:EC2_INSTANCE_TERMINATING")
	str(hook, "default_result", "CONTINUE")
	if got := exprText(t, dir, hook, "heartbeat_timeout"); !strings.Contains(got, "var.gwlb_drain_seconds +") {
		t.Errorf("the lifecycle hook's heartbeat is %s: want longer than the drain", got)
	}

	lt := c.one(t, "resource", "aws_launch_template", "gwlb")
	if v := literal(t, nested(t, lt, "metadata_options"), "http_tokens"); !v.RawEquals(cty.StringVal("required")) {
		t.Errorf("the targets' metadata_options.http_tokens = %#v, want required", v)
	}
	ud := lt.Body.Attributes["user_data"].Expr
	passed := map[string]bool{}
	hclsyntax.VisitAll(ud.(hclsyntax.Node), func(n hclsyntax.Node) hcl.Diagnostics {
		if o, ok := n.(*hclsyntax.ObjectConsExpr); ok {
			for _, item := range o.Items {
				if k, diags := item.KeyExpr.Value(nil); !diags.HasErrors() {
					passed[k.AsString()] = true
				}
			}
		}
		return nil
	})
	tpl := readFile(t, filepath.Join(dir, "gwlb-user-data.sh.tftpl"))
	te, diags := hclsyntax.ParseTemplate([]byte(tpl), "gwlb-user-data.sh.tftpl", hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatalf("gwlb-user-data.sh.tftpl: %s", diags.Error())
	}
	for _, tr := range te.Variables() {
		if !passed[tr.RootName()] {
			t.Errorf("gwlb-user-data.sh.tftpl uses ${%s}, which templatefile does not pass (passes %v)", tr.RootName(), passed)
		}
	}
	// egressd's side agrees with the target group's.
	for _, want := range []string{
		"EGRESSD_GWLB_MODE=${mode}", "EGRESSD_GWLB_DRAIN=${drain_seconds}s", "EGRESSD_GWLB_HEALTH_LISTEN=0.0.0.0:${health_port}",
		"EGRESSD_GWLB_TCP_IDLE_TIMEOUT=${tcp_idle}s", "EGRESSD_GWLB_LIFECYCLE_IMDS=", "egressd-gwlb-net.sh apply --mode ${mode}",
		"--no-masquerade", "DeviceAllow=/dev/net/tun rw", "CAP_NET_RAW", "TimeoutStopSec=${drain_seconds + 30}",
	} {
		if !strings.Contains(tpl, want) {
			t.Errorf("gwlb-user-data.sh.tftpl lacks %q", want)
		}
	}
	for name, want := range map[string]string{"drain_seconds": "var.gwlb_drain_seconds", "health_port": "var.gwlb_health_port", "tcp_idle": "var.gwlb_tcp_idle_timeout_seconds", "mode": "var.gwlb_mode"} {
		if !strings.Contains(exprText(t, dir, lt, "user_data"), name+" ") || !strings.Contains(exprText(t, dir, lt, "user_data"), want) {
			t.Errorf("the user data does not pass %s = %s", name, want)
		}
	}
	for _, o := range []string{"gwlb_endpoint_ids", "gwlb_target_group_arn", "gwlb_nat_public_ips"} {
		c.one(t, "output", o)
	}
}
