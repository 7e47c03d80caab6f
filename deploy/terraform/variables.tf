variable "name" {
  type        = string
  default     = "egressd"
  description = "Prefix of every resource's name, and the value of the egressd tag that the SSM association targets."
}

variable "vpc_id" {
  type        = string
  description = "The VPC whose private subnets egressd filters."
}

variable "zones" {
  type = map(object({
    public_subnet_id        = string
    private_route_table_ids = list(string)
  }))
  description = "One entry per availability zone, keyed by its name (eu-west-1a): the public subnet the NAT instance lives in, and the private route tables whose 0.0.0.0/0 goes to it. Those route tables must not have a 0.0.0.0/0 route already."
}

variable "ami_id" {
  type        = string
  default     = ""
  description = "The egressd AMI (packer/). Empty: the newest AMI named ami_name_pattern owned by ami_owner whose architecture fits instance_type."
}

variable "ami_owner" {
  type        = string
  default     = "self"
  description = "Owner of the AMI looked up when ami_id is empty: self (you built it with Packer) or an account id."
}

variable "ami_name_pattern" {
  type        = string
  default     = "egressd-*-al2023-*"
  description = "Name pattern of the AMI looked up when ami_id is empty."
}

variable "instance_type" {
  type        = string
  default     = "t4g.small"
  description = "NAT instance type. t4g (Graviton) types need the arm64 AMI. Network bandwidth is the instance type's: size it for your peak."
}

variable "private_cidrs" {
  type        = list(string)
  default     = []
  description = "Source CIDRs the NAT instances accept traffic from. Empty: the VPC's primary CIDR block."
}

variable "policy_file" {
  type        = string
  description = "Path of the egressd policy to deploy (see examples/policy.yaml). Check it first: egressd check POLICY."
}

variable "policy_parameter_name" {
  type        = string
  default     = "/egressd/policy"
  description = "Parameter Store name that holds the policy. Values over 4 KB make it an Advanced parameter (8 KB at most, and charged); beyond that, push from S3."
}

variable "ssm_document_file" {
  type        = string
  default     = ""
  description = "Path of the SSM document egressd-push-policy.json. Empty: ../ssm/egressd-push-policy.json beside this example (also in the release tarball, ssm/)."
}

variable "push_timeout_seconds" {
  type        = number
  default     = 60
  description = "How long a policy push waits for egressd to report the new policy loaded before it rolls back."
}

variable "log_retention_days" {
  type        = number
  default     = 30
  description = "Retention of the CloudWatch log group that receives the decision log."
}

variable "tags" {
  type        = map(string)
  default     = {}
  description = "Tags added to every resource."
}

variable "dns_firewall_mode" {
  type        = string
  default     = "off"
  description = "Route 53 Resolver DNS Firewall on the VPC (dns_firewall.tf): off; alert (allow the policy's names and the AWS names a VPC needs, log every other query); block (answer every other query NXDOMAIN)."
  validation {
    condition     = contains(["off", "alert", "block"], var.dns_firewall_mode)
    error_message = "dns_firewall_mode must be off, alert or block."
  }
}

variable "dns_firewall_domains_file" {
  type        = string
  default     = ""
  description = "With dns_firewall_mode alert or block: the policy's names, one a line, as egressd export --format route53-dns-firewall POLICY writes them."
}

variable "dns_firewall_extra_domains" {
  type        = list(string)
  default     = []
  description = "More names the DNS Firewall allows, in its syntax (example.com, *.example.com): your private hosted zones, names of hosts reached by cidrs rules."
}

variable "denial_alarm_percent" {
  type        = number
  default     = 20
  description = "Alarm (alarms.tf) when more than this share of new flows, in percent, is denied for denial_alarm_minutes; 0: no alarm. From the EMF metrics egressd writes on the decision log (log.emf)."
  validation {
    condition     = var.denial_alarm_percent >= 0 && var.denial_alarm_percent <= 100
    error_message = "denial_alarm_percent is a percentage, 0 to 100."
  }
}

variable "denial_alarm_minutes" {
  type        = number
  default     = 5
  description = "How many consecutive minutes the denial rate must stay above denial_alarm_percent to alarm."
}

variable "alarm_actions" {
  type        = list(string)
  default     = []
  description = "ARNs notified when the denial-rate alarm fires and clears (an SNS topic)."
}

variable "emf_namespace" {
  type        = string
  default     = "egressd"
  description = "The CloudWatch namespace of egressd's EMF metrics (log.emf_namespace in egressd.yaml)."
}
