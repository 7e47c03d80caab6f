# Variables of the Gateway Load Balancer deployment (gwlb.tf). It is off
# while gwlb_zones is empty. It replaces the NAT pair of main.tf for the
# route tables it is given: list a route table in zones or in gwlb_zones,
# never both (set zones = {} to run only behind the load balancer).

variable "gwlb_zones" {
  type = map(object({
    appliance_subnet_id     = string
    endpoint_subnet_id      = string
    endpoint_route_table_id = string
    app_route_table_ids     = list(string)
    public_subnet_id        = string
    public_route_table_id   = string
  }))
  default     = {}
  description = "One entry per availability zone for egressd behind a Gateway Load Balancer (empty: none). appliance_subnet_id: the egressd instances and the load balancer (two-arm: a public subnet, the instances masquerade out of it). endpoint_subnet_id: the load balancer endpoint, whose route table endpoint_route_table_id gets 0.0.0.0/0 to the zone's NAT gateway (one-arm). app_route_table_ids: the clients' route tables, whose 0.0.0.0/0 goes to the endpoint. public_subnet_id and public_route_table_id: the zone's NAT gateway and its subnet's route table, which sends the clients' CIDRs back through the endpoint (one-arm; unused in two-arm)."
}

variable "gwlb_mode" {
  type        = string
  default     = "one-arm"
  description = "one-arm: allowed flows go back through the load balancer untranslated and a NAT gateway per zone translates them. two-arm: egressd masquerades out of its own interface (a public IP per instance)."
  validation {
    condition     = contains(["one-arm", "two-arm"], var.gwlb_mode)
    error_message = "gwlb_mode must be one-arm or two-arm."
  }
}

variable "gwlb_instances" {
  type        = object({ min = number, max = number, desired = number })
  default     = { min = 2, max = 4, desired = 2 }
  description = "Size of the Auto Scaling group of egressd targets (across the zones of gwlb_zones)."
}

variable "gwlb_drain_seconds" {
  type        = number
  default     = 300
  description = "The target group's deregistration delay, and egressd's gwlb.drain: how long a leaving instance keeps forwarding its flows with /readyz false."
}

variable "gwlb_target_failover" {
  type        = string
  default     = "rebalance"
  description = "What the load balancer does with a failed or deregistered target's flows: rebalance (move them to a healthy target, where a TCP flow met mid-stream is not adopted and ends; UDP is decided again) or no_rebalance (they die with it)."
  validation {
    condition     = contains(["rebalance", "no_rebalance"], var.gwlb_target_failover)
    error_message = "gwlb_target_failover must be rebalance or no_rebalance."
  }
}

variable "gwlb_tcp_idle_timeout_seconds" {
  type        = number
  default     = 350
  description = "The listener's TCP idle timeout (60-6000 s), and egressd's gwlb.tcp_idle_timeout: how long an idle flow's return path is kept."
}

variable "gwlb_health_port" {
  type        = number
  default     = 8081
  description = "Port of egressd's gwlb.health_listen, which serves /readyz alone for the target group's health check."
}

variable "gwlb_tcp_resets" {
  type        = bool
  default     = true
  description = "Have the load balancer send TCP resets when an idle flow times out (listener attribute send_tcp_reset.on_idle_timeout.enabled, set with the AWS CLI at apply time: the provider has no argument for it)."
}
