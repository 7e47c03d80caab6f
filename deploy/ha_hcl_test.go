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

// statements returns an IAM policy document's statements by sid, with
// their actions.
func statements(t *testing.T, doc *hclsyntax.Block) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, st := range doc.Body.Blocks {
		if st.Type != "statement" {
			continue
		}
		sid := literal(t, st, "sid").AsString()
		for _, v := range literal(t, st, "actions").AsValueSlice() {
			out[sid] = append(out[sid], v.AsString())
		}
	}
	return out
}

// ignored is a resource's lifecycle ignore_changes, as attribute names.
func ignored(t *testing.T, b *hclsyntax.Block) []string {
	t.Helper()
	lc := nested(t, b, "lifecycle")
	a, ok := lc.Body.Attributes["ignore_changes"]
	if !ok {
		t.Fatalf("%s %q: lifecycle has no ignore_changes", b.Type, b.Labels)
	}
	tup, ok := a.Expr.(*hclsyntax.TupleConsExpr)
	if !ok {
		t.Fatalf("%s %q: ignore_changes is not a list", b.Type, b.Labels)
	}
	var out []string
	for _, e := range tup.Exprs {
		for _, tr := range e.Variables() {
			out = append(out, tr.RootName())
		}
	}
	return out
}

// TestTerraformHA checks the HA pair in the example (ha.tf and what
// main.tf does for it): the second member per AZ, its launch template's ha:
// section, the IAM permissions scoped by tag, the security group rules,
// Terraform leaving egressd ha's moves alone, the push reaching both.
func TestTerraformHA(t *testing.T) {
	dir := repoPath("deploy/terraform")
	c := parseHCLDir(t, dir, ".tf")

	v := c.one(t, "variable", "ha")
	if def := literal(t, v, "default"); !def.GetAttr("enabled").RawEquals(cty.False) {
		t.Errorf("variable ha defaults to %#v: HA must be asked for", def)
	}

	standby := c.one(t, "resource", "aws_network_interface", "standby")
	if !literal(t, standby, "source_dest_check").RawEquals(cty.False) {
		t.Error("member b's ENI checks source/destination: it could not forward")
	}
	if r := refs(standby, "for_each"); !slices.Contains(r, "local.ha_zones") {
		t.Errorf("member b's ENI for_each %v, want local.ha_zones", r)
	}
	if got := ignored(t, standby); !slices.Contains(got, "private_ips") {
		t.Errorf("member b's ENI ignores %v: Terraform would take the floating address back", got)
	}

	// Terraform leaves egressd ha's moves alone.
	for _, x := range []struct {
		typ, name, attr string
	}{
		{"aws_route", "default_via_nat", "network_interface_id"},
		{"aws_eip", "nat", "network_interface"},
		{"aws_eip", "nat", "associate_with_private_ip"},
		{"aws_network_interface", "nat", "private_ips"},
	} {
		if got := ignored(t, c.one(t, "resource", x.typ, x.name)); !slices.Contains(got, x.attr) {
			t.Errorf("%s.%s ignores %v, not %s: the next apply would undo a failover", x.typ, x.name, got, x.attr)
		}
	}
	if r := refs(c.one(t, "resource", "aws_eip", "nat"), "associate_with_private_ip"); !slices.Contains(r, "local.ha_floating_ip") {
		t.Errorf("the Elastic IP maps to %v, want the floating address (local.ha_floating_ip)", r)
	}
	if r := refs(c.one(t, "resource", "aws_autoscaling_group", "nat"), "for_each"); !slices.Contains(r, "local.single_zones") {
		t.Errorf("main.tf's groups for_each %v: with HA they would run a third instance per AZ", r)
	}

	// The route tables carry the tag that scopes ReplaceRoute.
	tag := c.one(t, "resource", "aws_ec2_tag", "ha_route_table")
	if !literal(t, tag, "key").RawEquals(cty.StringVal("egressd-ha")) {
		t.Errorf("the route tables' tag is %#v, want egressd-ha", literal(t, tag, "key"))
	}

	// IAM: the four calls egressd ha makes (and the floating address),
	// the changes scoped by tag.
	doc := c.one(t, "data", "aws_iam_policy_document", "ha")
	sts := statements(t, doc)
	var all []string
	for _, a := range sts {
		all = append(all, a...)
	}
	for _, a := range []string{"ec2:ReplaceRoute", "ec2:DescribeRouteTables", "ec2:AssociateAddress", "ec2:DescribeAddresses", "ec2:AssignPrivateIpAddresses"} {
		if !slices.Contains(all, a) {
			t.Errorf("the HA policy lacks %s (has %v)", a, all)
		}
	}
	for _, st := range doc.Body.Blocks {
		if st.Type != "statement" {
			continue
		}
		acts := sts[literal(t, st, "sid").AsString()]
		mutating := slices.ContainsFunc(acts, func(a string) bool { return !strings.HasPrefix(a, "ec2:Describe") })
		var cond *hclsyntax.Block
		for _, b := range st.Body.Blocks {
			if b.Type == "condition" {
				cond = b
			}
		}
		if mutating && cond == nil {
			t.Errorf("statement %v changes resources with no tag condition", acts)
		}
		if cond != nil {
			tagKey := literal(t, cond, "variable").AsString()
			if !strings.HasPrefix(tagKey, "ec2:ResourceTag/egressd") {
				t.Errorf("statement %v is scoped by %s, want an egressd tag", acts, tagKey)
			}
			if slices.Contains(acts, "ec2:ReplaceRoute") && tagKey != "ec2:ResourceTag/egressd-ha" {
				t.Errorf("ReplaceRoute is scoped by %s, want the route tables' egressd-ha tag", tagKey)
			}
		}
	}
	if r := refs(c.one(t, "resource", "aws_iam_role_policy", "ha"), "role"); !slices.Contains(r, "aws_iam_role.nat.id") {
		t.Errorf("the HA policy is attached to %v, want the instances' role", r)
	}

	// Security group: health checks (TCP 9146) and the sync (UDP 3780)
	// between the members, and only between them.
	for name, want := range map[string]struct {
		proto string
		port  int64
	}{"ha_health": {"tcp", 9146}, "ha_sync": {"udp", 3780}} {
		r := c.one(t, "resource", "aws_security_group_rule", name)
		if !literal(t, r, "protocol").RawEquals(cty.StringVal(want.proto)) ||
			!literal(t, r, "from_port").RawEquals(cty.NumberIntVal(want.port)) || !literal(t, r, "to_port").RawEquals(cty.NumberIntVal(want.port)) {
			t.Errorf("security group rule %s: want %s %d", name, want.proto, want.port)
		}
		if src := refs(r, "source_security_group_id"); !slices.Contains(src, "aws_security_group.nat.id") {
			t.Errorf("security group rule %s admits %v, want the members' own group", name, src)
		}
	}

	// The members: groups of one, tagged for the push and for their ENI.
	asg := c.one(t, "resource", "aws_autoscaling_group", "ha")
	for _, attr := range []string{"min_size", "max_size", "desired_capacity"} {
		if !literal(t, asg, attr).RawEquals(cty.NumberIntVal(1)) {
			t.Errorf("aws_autoscaling_group.ha: %s is not 1", attr)
		}
	}
	if r := refs(asg, "for_each"); !slices.Contains(r, "local.ha_members") {
		t.Errorf("aws_autoscaling_group.ha for_each %v, want local.ha_members (two per AZ)", r)
	}
	tags := map[string]*hclsyntax.Block{}
	for _, b := range asg.Body.Blocks {
		if b.Type == "tag" {
			tags[literal(t, b, "key").AsString()] = b
		}
	}
	if b := tags["egressd"]; b == nil || !slices.Contains(refs(b, "value"), "var.name") || !literal(t, b, "propagate_at_launch").RawEquals(cty.True) {
		t.Error("the members are not tagged egressd = var.name: the SSM association would not push their policy")
	}
	if b := tags["egressd-eni"]; b == nil || !slices.Contains(refs(b, "value"), "local.ha_eni") {
		t.Error("the members are not tagged with their ENI (egressd-eni)")
	}
	assoc := c.one(t, "resource", "aws_ssm_association", "push_policy")
	if !literal(t, assoc, "max_concurrency").RawEquals(cty.StringVal("1")) {
		t.Error("the push runs on more than one instance at a time: both members of a pair could be reloading at once")
	}
	if tg := nested(t, assoc, "targets"); !literal(t, tg, "key").RawEquals(cty.StringVal("tag:egressd")) {
		t.Error("the push does not target tag:egressd, which both members carry")
	}

	// The launch template: IMDSv2 only, and user data whose ha: section
	// uses only what templatefile passes, and reads as egressd ha's config.
	lt := c.one(t, "resource", "aws_launch_template", "ha")
	if !literal(t, nested(t, lt, "metadata_options"), "http_tokens").RawEquals(cty.StringVal("required")) {
		t.Error("the members' launch template allows IMDSv1")
	}
	ud, ok := lt.Body.Attributes["user_data"]
	if !ok {
		t.Fatal("aws_launch_template.ha has no user_data")
	}
	var passed []string
	hclsyntax.VisitAll(ud.Expr, func(n hclsyntax.Node) hcl.Diagnostics {
		if call, ok := n.(*hclsyntax.FunctionCallExpr); ok && call.Name == "templatefile" && len(call.Args) == 2 {
			if obj, ok := call.Args[1].(*hclsyntax.ObjectConsExpr); ok && len(passed) == 0 {
				for _, item := range obj.Items {
					k, _ := item.KeyExpr.Value(nil)
					passed = append(passed, k.AsString())
				}
			}
		}
		return nil
	})
	tpl := readFile(t, filepath.Join(dir, "ha-user-data.sh.tftpl"))
	te, diags := hclsyntax.ParseTemplate([]byte(tpl), "ha-user-data.sh.tftpl", hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatalf("ha-user-data.sh.tftpl: %s", diags.Error())
	}
	for _, tr := range te.Variables() {
		if !slices.Contains(passed, tr.RootName()) {
			t.Errorf("ha-user-data.sh.tftpl uses ${%s}, which templatefile does not pass (%v)", tr.RootName(), passed)
		}
	}
	for _, want := range []string{"enabled: true", "systemctl enable --now egressd-conntrackd.service egressd-ha.service",
		"EGRESSD_SNAT_ADDRESS=${floating_ip}", "systemctl restart egressd-iptables.service", "${base}"} {
		if !strings.Contains(tpl, want) {
			t.Errorf("ha-user-data.sh.tftpl lacks %q", want)
		}
	}
	if !strings.HasPrefix(tpl, "#!/bin/bash\n") {
		t.Error("ha-user-data.sh.tftpl does not start with #!/bin/bash")
	}

	// Rendered with a member's values, its ha: section is a config egressd
	// ha takes (bad config: exit 1; here the agents just do not answer: 2).
	vals := map[string]cty.Value{"base": cty.StringVal("# the common user data"), "member": cty.StringVal("a"), "peer": cty.StringVal("b"),
		"preferred": cty.True, "failback": cty.True, "interval": cty.StringVal("1s"), "timeout": cty.StringVal("500ms"),
		"failure_threshold": cty.NumberIntVal(3), "hold_down": cty.StringVal("60s"), "eni": cty.StringVal("eni-0aaaa"),
		"self_ip": cty.StringVal("192.0.2.10"), "peer_eni": cty.StringVal("eni-0bbbb"), "peer_ip": cty.StringVal("192.0.2.11"),
		"route_table_tag": cty.StringVal("egressd-ha=egressd-eu-west-1a"), "allocation_id": cty.StringVal("eipalloc-0aaaa"),
		"floating_ip": cty.StringVal("192.0.2.50")}
	out, diags := te.Value(&hcl.EvalContext{Variables: vals})
	if diags.HasErrors() {
		t.Fatalf("rendering ha-user-data.sh.tftpl: %s", diags.Error())
	}
	script := out.AsString()
	start := strings.Index(script, "\nha:\n")
	end := strings.Index(script, "\nYAML\n")
	if start < 0 || end < start {
		t.Fatalf("no ha: section in the rendered user data:\n%s", script)
	}
	cfg := filepath.Join(t.TempDir(), "egressd.yaml")
	writeFile(t, cfg, readFile(t, repoPath("deploy/etc/egressd.yaml"))+script[start+1:end+1], 0o644)
	r := runCmd(t, nil, egressdBin, "ha", "status", "--config", cfg)
	if r.code != 2 || strings.Contains(r.stderr, "bad config") {
		t.Errorf("egressd ha status on the rendered config: %v; want exit 2 (no agent answers), not a bad config", r)
	}
}
