package deploy_test

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/zclconf/go-cty/cty"
)

// dnsFirewallDomain is a DNS Firewall domain list entry: an optional
// leading "*.", then labels of letters, digits and hyphens.
var dnsFirewallDomain = regexp.MustCompile(`^(\*\.)?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*$`)

// TestTerraformDNSFirewall: with dns_firewall_mode on, the example allows
// the exported names and the AWS names a VPC needs, then blocks or alerts
// on every other query of the VPC; off, it creates nothing.
func TestTerraformDNSFirewall(t *testing.T) {
	dir := repoPath("deploy/terraform")
	c := parseHCLDir(t, dir, ".tf")
	for _, typ := range []string{"aws_route53_resolver_firewall_domain_list", "aws_route53_resolver_firewall_rule_group",
		"aws_route53_resolver_firewall_rule", "aws_route53_resolver_firewall_rule_group_association", "aws_route53_resolver_firewall_config"} {
		bs := c.find("resource", typ)
		if len(bs) == 0 {
			t.Errorf("no %s", typ)
		}
		for _, b := range bs {
			if r := refs(b, "count"); !slices.Contains(r, "local.dns_firewall") {
				t.Errorf("%s %q is not counted by local.dns_firewall (off must create nothing)", typ, b.Labels[1])
			}
		}
	}
	allow := c.one(t, "resource", "aws_route53_resolver_firewall_rule", "allow_policy_names")
	rest := c.one(t, "resource", "aws_route53_resolver_firewall_rule", "everything_else")
	if v := literal(t, allow, "action"); !v.RawEquals(cty.StringVal("ALLOW")) {
		t.Errorf("allow rule action %#v", v)
	}
	if v := literal(t, allow, "firewall_domain_redirection_action"); !v.RawEquals(cty.StringVal("TRUST_REDIRECTION_DOMAIN")) {
		t.Errorf("the allow rule inspects CNAME targets too: %#v", v)
	}
	if pa, pr := literal(t, allow, "priority"), literal(t, rest, "priority"); !pa.LessThan(pr).True() {
		t.Errorf("the allow rule (priority %#v) must come before the rest (%#v)", pa, pr)
	}
	if got := exprText(t, dir, rest, "action"); got != `var.dns_firewall_mode == "block" ? "BLOCK" : "ALERT"` {
		t.Errorf("the rest's action: %s", got)
	}
	if !slices.Contains(refs(rest, "firewall_domain_list_id"), "aws_route53_resolver_firewall_domain_list.everything") {
		t.Error("the rest rule does not use the list of every name")
	}
	every := c.one(t, "resource", "aws_route53_resolver_firewall_domain_list", "everything")
	if v := literal(t, every, "domains"); v.LengthInt() != 1 || !v.Index(cty.NumberIntVal(0)).RawEquals(cty.StringVal("*")) {
		t.Errorf("the list of every name is %#v, want [\"*\"]", v)
	}
	if r := refs(c.one(t, "resource", "aws_route53_resolver_firewall_domain_list", "allowed"), "domains"); !slices.Contains(r, "local.dns_firewall_allowed") {
		t.Errorf("the allowed list is %v", r)
	}
	assoc := c.one(t, "resource", "aws_route53_resolver_firewall_rule_group_association", "vpc")
	if r := refs(assoc, "vpc_id"); !slices.Contains(r, "var.vpc_id") {
		t.Errorf("the association is with %v, want var.vpc_id", r)
	}
	if v := literal(t, c.one(t, "resource", "aws_route53_resolver_firewall_config", "vpc"), "firewall_fail_open"); !v.RawEquals(cty.StringVal("DISABLED")) {
		t.Errorf("firewall_fail_open %#v: the DNS firewall must fail closed, as egressd does", v)
	}
	mode := c.one(t, "variable", "dns_firewall_mode")
	if v := literal(t, mode, "default"); !v.RawEquals(cty.StringVal("off")) {
		t.Errorf("dns_firewall_mode defaults to %#v, want off", v)
	}
	nested(t, mode, "validation")

	// The AWS names are valid entries.
	var locals map[string]bool
	for _, b := range c.find("locals") {
		if a, ok := b.Body.Attributes["dns_firewall_aws_names"]; ok {
			v, diags := a.Expr.Value(nil)
			if diags.HasErrors() {
				t.Fatal(diags.Error())
			}
			locals = map[string]bool{}
			for _, n := range v.AsValueSlice() {
				locals[n.AsString()] = true
				if !dnsFirewallDomain.MatchString(n.AsString()) {
					t.Errorf("AWS name %q is not a DNS Firewall domain", n.AsString())
				}
			}
		}
	}
	for _, n := range []string{"*.amazonaws.com", "*.compute.internal"} {
		if !locals[n] {
			t.Errorf("the AWS names lack %s", n)
		}
	}
}

// TestExportForDNSFirewall: egressd export writes every allowed name of
// the shipped policies in the DNS Firewall's syntax, one a line, as the
// Terraform example reads it.
func TestExportForDNSFirewall(t *testing.T) {
	for _, pol := range []string{"examples/policy.yaml", "examples/policy.d"} {
		out := filepath.Join(t.TempDir(), "dns.txt")
		r := runCmd(t, nil, egressdBin, "export", "--format", "route53-dns-firewall", "-o", out, repoPath(pol))
		if r.code != 0 {
			t.Fatalf("%s: %v", pol, r)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
		if len(lines) < 10 || !slices.Contains(lines, "github.com") || !slices.Contains(lines, "*.github.com") {
			t.Errorf("%s: %d lines:\n%s", pol, len(lines), b)
		}
		for _, l := range lines {
			if !dnsFirewallDomain.MatchString(l) {
				t.Errorf("%s: %q is not a DNS Firewall domain", pol, l)
			}
		}
	}
}
