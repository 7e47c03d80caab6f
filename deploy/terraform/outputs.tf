output "egress_public_ips" {
  description = "Per AZ, the Elastic IP that the filtered traffic leaves from: give these to partners that allowlist you. They survive instance replacement."
  value       = { for az, eip in aws_eip.nat : az => eip.public_ip }
}

output "nat_eni_ids" {
  description = "Per AZ, the ENI that the private route tables' 0.0.0.0/0 points at."
  value       = { for az, eni in aws_network_interface.nat : az => eni.id }
}

output "autoscaling_group_names" {
  description = "Per AZ, the auto-scaling group (of one) that keeps a NAT instance running."
  value       = { for az, asg in aws_autoscaling_group.nat : az => asg.name }
}

output "security_group_id" {
  description = "Security group of the NAT ENIs."
  value       = aws_security_group.nat.id
}

output "policy_parameter_name" {
  description = "Parameter Store parameter holding the policy; change the policy_file and apply to push a new one."
  value       = aws_ssm_parameter.policy.name
}

output "ssm_document_name" {
  description = "SSM Command document that pushes a policy: aws ssm send-command --document-name NAME --targets Key=tag:egressd,Values=NAME_PREFIX --parameters PolicySource=s3://bucket/key"
  value       = aws_ssm_document.push_policy.name
}

output "decision_log_group" {
  description = "CloudWatch log group with egressd's decision log (one JSON line per flow)."
  value       = aws_cloudwatch_log_group.decisions.name
}

output "dns_firewall_rule_group_id" {
  description = "The DNS Firewall rule group associated with the VPC (empty with dns_firewall_mode off)."
  value       = local.dns_firewall ? aws_route53_resolver_firewall_rule_group.egressd[0].id : ""
}
