# The DNS side door. Hosts ask the VPC resolver (169.254.169.253, or the VPC's
# .2 address) directly, never through the NAT, so egressd never sees DNS: a host
# can tunnel data out in the queries it makes for any zone. Route 53 Resolver
# DNS Firewall filters those queries at the resolver, and here it applies the
# same policy: allow the policy's names (egressd export --format
# route53-dns-firewall) and the AWS names a VPC needs, then block the rest
# (dns_firewall_mode = "block") or only log it (dns_firewall_mode = "alert",
# to try first). The firewall is VPC-wide: a rule's from: and ports do not
# carry over. Off by default.

locals {
  dns_firewall = var.dns_firewall_mode != "off"

  # What a VPC resolves for itself: AWS endpoints (public and the private DNS
  # of interface endpoints), instance host names, reverse lookups. Queries
  # for these go to AWS's own name servers, so they cannot carry a tunnel to
  # a zone someone else runs.
  dns_firewall_aws_names = [
    "amazonaws.com",
    "*.amazonaws.com",
    "*.compute.internal",
    "ec2.internal",
    "*.ec2.internal",
    "*.in-addr.arpa",
    "*.ip6.arpa",
  ]

  dns_firewall_policy_names = var.dns_firewall_domains_file == "" ? [] : [
    for l in split("\n", file(var.dns_firewall_domains_file)) : trimspace(l) if trimspace(l) != ""
  ]

  dns_firewall_allowed = distinct(concat(local.dns_firewall_policy_names, local.dns_firewall_aws_names, var.dns_firewall_extra_domains))
}

resource "aws_route53_resolver_firewall_domain_list" "allowed" {
  count   = local.dns_firewall ? 1 : 0
  name    = "${var.name}-allowed"
  domains = local.dns_firewall_allowed
  tags    = local.tags

  lifecycle {
    precondition {
      condition     = var.dns_firewall_domains_file != ""
      error_message = "dns_firewall_mode is on: set dns_firewall_domains_file to the output of egressd export --format route53-dns-firewall POLICY."
    }
  }
}

resource "aws_route53_resolver_firewall_domain_list" "everything" {
  count   = local.dns_firewall ? 1 : 0
  name    = "${var.name}-everything"
  domains = ["*"]
  tags    = local.tags
}

resource "aws_route53_resolver_firewall_rule_group" "egressd" {
  count = local.dns_firewall ? 1 : 0
  name  = "${var.name}-dns"
  tags  = local.tags
}

resource "aws_route53_resolver_firewall_rule" "allow_policy_names" {
  count                   = local.dns_firewall ? 1 : 0
  name                    = "${var.name}-allow-policy-names"
  firewall_rule_group_id  = aws_route53_resolver_firewall_rule_group.egressd[0].id
  firewall_domain_list_id = aws_route53_resolver_firewall_domain_list.allowed[0].id
  priority                = 100
  action                  = "ALLOW"
  # An allowed name's CNAME chain (a CDN's names) is answered too; only the
  # name asked is in the list.
  firewall_domain_redirection_action = "TRUST_REDIRECTION_DOMAIN"
}

resource "aws_route53_resolver_firewall_rule" "everything_else" {
  count                   = local.dns_firewall ? 1 : 0
  name                    = "${var.name}-${var.dns_firewall_mode}-everything-else"
  firewall_rule_group_id  = aws_route53_resolver_firewall_rule_group.egressd[0].id
  firewall_domain_list_id = aws_route53_resolver_firewall_domain_list.everything[0].id
  priority                = 200
  action                  = var.dns_firewall_mode == "block" ? "BLOCK" : "ALERT"
  block_response          = var.dns_firewall_mode == "block" ? "NXDOMAIN" : null
}

resource "aws_route53_resolver_firewall_rule_group_association" "vpc" {
  count                  = local.dns_firewall ? 1 : 0
  name                   = "${var.name}-dns"
  firewall_rule_group_id = aws_route53_resolver_firewall_rule_group.egressd[0].id
  vpc_id                 = var.vpc_id
  priority               = 101
  tags                   = local.tags
}

resource "aws_route53_resolver_firewall_config" "vpc" {
  count              = local.dns_firewall ? 1 : 0
  resource_id        = var.vpc_id
  firewall_fail_open = "DISABLED" # if DNS Firewall cannot answer, queries fail rather than pass unfiltered
}
