output "gwlb_endpoint_ids" {
  description = "The Gateway Load Balancer endpoint per zone (the clients' route tables send 0.0.0.0/0 to it), for egressd's gwlb.endpoints."
  value       = { for az, e in aws_vpc_endpoint.gwlb : az => e.id }
}

output "gwlb_target_group_arn" {
  description = "The GENEVE target group of the egressd instances (empty without gwlb_zones)."
  value       = local.gwlb_on ? aws_lb_target_group.gwlb[0].arn : ""
}

output "gwlb_nat_public_ips" {
  description = "One-arm: the NAT gateways' public IPs, where allowed traffic leaves (two-arm: the instances' own public IPs, which change with them)."
  value       = { for az, e in aws_eip.gwlb_nat : az => e.public_ip }
}
