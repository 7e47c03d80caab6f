# egressd HA (README, "High availability"): with ha.enabled, two NAT
# instances per AZ, active and standby, with the same policy. Member "a" is
# the AZ's static ENI of main.tf (the routes and the Elastic IP start on it);
# member "b" gets a second static ENI here. Each member is an auto-scaling
# group of one with its own launch template, whose user data writes the ha:
# section of egressd.yaml and enables egressd-conntrackd and egressd-ha. When
# the active member fails, the standby moves the AZ's route tables'
# 0.0.0.0/0 (tagged egressd-ha = NAME-AZ below) and the Elastic IP (with its
# floating private address, the one both members SNAT to) to its own ENI with
# the EC2 API. Terraform leaves those moves alone (ignore_changes in main.tf).

variable "ha" {
  type = object({
    enabled           = bool
    failback          = optional(bool, true)
    interval          = optional(string, "1s")
    timeout           = optional(string, "500ms")
    failure_threshold = optional(number, 3)
    hold_down         = optional(string, "60s")
  })
  default     = { enabled = false }
  description = "An active and a standby NAT instance per AZ (egressd ha). failback: the routes return to member a once it has been ready for hold_down (false: whoever took over keeps them). Detection takes interval x failure_threshold."
}

locals {
  ha_zones     = var.ha.enabled ? var.zones : {}
  single_zones = var.ha.enabled ? {} : var.zones

  # The Elastic IP's private address: a secondary address of member a's ENI
  # that moves with it (AssignPrivateIpAddresses), the same SNAT source on
  # both members, so connections synced by conntrackd keep their NAT mapping.
  ha_floating_ip = {
    for az, eni in aws_network_interface.nat : az => one(setsubtract(eni.private_ips, [eni.private_ip])) if var.ha.enabled
  }

  ha_members = merge([
    for az, z in local.ha_zones : {
      "${az}/a" = { az = az, member = "a", peer = "b", preferred = true }
      "${az}/b" = { az = az, member = "b", peer = "a", preferred = false }
    }
  ]...)

  ha_eni = merge([
    for az, z in local.ha_zones : {
      "${az}/a" = aws_network_interface.nat[az]
      "${az}/b" = aws_network_interface.standby[az]
    }
  ]...)
}

resource "aws_network_interface" "standby" {
  for_each          = local.ha_zones
  subnet_id         = each.value.public_subnet_id
  security_groups   = [aws_security_group.nat.id]
  source_dest_check = false
  description       = "egressd NAT ENI for ${each.key}, member b (standby)"
  tags              = merge(local.tags, { "Name" = "${var.name}-nat-${each.key}-b" })

  # The floating address is moved here by egressd ha at a failover.
  lifecycle {
    ignore_changes = [private_ips, private_ips_count, private_ip_list]
  }
}

# The route tables egressd ha may change: the tag scopes ec2:ReplaceRoute.
resource "aws_ec2_tag" "ha_route_table" {
  for_each    = var.ha.enabled ? local.routes : {}
  resource_id = each.value.route_table_id
  key         = "egressd-ha"
  value       = "${var.name}-${each.value.az}"
}

# --- Security group: the members' health checks and connection sync. ---

resource "aws_security_group_rule" "ha_health" {
  count                    = var.ha.enabled ? 1 : 0
  type                     = "ingress"
  description              = "egressd ha: the peer's checks of /readyz and egressd ha status (TCP 9146)"
  security_group_id        = aws_security_group.nat.id
  source_security_group_id = aws_security_group.nat.id
  protocol                 = "tcp"
  from_port                = 9146
  to_port                  = 9146
}

resource "aws_security_group_rule" "ha_sync" {
  count                    = var.ha.enabled ? 1 : 0
  type                     = "ingress"
  description              = "conntrackd: the peer's connection sync (FTFW over UDP 3780)"
  security_group_id        = aws_security_group.nat.id
  source_security_group_id = aws_security_group.nat.id
  protocol                 = "udp"
  from_port                = 3780
  to_port                  = 3780
}

# --- IAM: move the AZ's routes and the Elastic IP, nothing else. ---

data "aws_iam_policy_document" "ha" {
  statement {
    sid     = "MoveTheTaggedRoutes"
    actions = ["ec2:ReplaceRoute"]
    resources = [
      "${local.arn_prefix}:ec2:${local.account_region}:route-table/*",
    ]
    condition {
      test     = "StringLike"
      variable = "ec2:ResourceTag/egressd-ha"
      values   = ["${var.name}-*"]
    }
  }

  statement {
    sid     = "MoveTheElasticIPToAMember"
    actions = ["ec2:AssociateAddress", "ec2:AssignPrivateIpAddresses"]
    resources = [
      "${local.arn_prefix}:ec2:${local.account_region}:elastic-ip/*",
      "${local.arn_prefix}:ec2:${local.account_region}:network-interface/*",
    ]
    condition {
      test     = "StringEquals"
      variable = "ec2:ResourceTag/egressd"
      values   = [var.name]
    }
  }

  # Describe calls take no resource-level conditions.
  statement {
    sid       = "ReadTheRoutesAndAddresses"
    actions   = ["ec2:DescribeRouteTables", "ec2:DescribeAddresses"]
    resources = ["*"]
  }
}

resource "aws_iam_role_policy" "ha" {
  count  = var.ha.enabled ? 1 : 0
  name   = "egressd-ha"
  role   = aws_iam_role.nat.id
  policy = data.aws_iam_policy_document.ha.json
}

# --- The members: a launch template and an auto-scaling group of one each. ---

resource "aws_launch_template" "ha" {
  for_each      = local.ha_members
  name_prefix   = "${var.name}-nat-${each.value.az}-${each.value.member}-"
  image_id      = local.ami_id
  instance_type = var.instance_type
  user_data = base64encode(templatefile("${path.module}/ha-user-data.sh.tftpl", {
    base = templatefile("${path.module}/user-data.sh.tftpl", {
      log_group = aws_cloudwatch_log_group.decisions.name
    })
    member            = each.value.member
    peer              = each.value.peer
    preferred         = each.value.preferred
    failback          = var.ha.failback
    interval          = var.ha.interval
    timeout           = var.ha.timeout
    failure_threshold = var.ha.failure_threshold
    hold_down         = var.ha.hold_down
    eni               = local.ha_eni[each.key].id
    self_ip           = local.ha_eni[each.key].private_ip
    peer_eni          = local.ha_eni["${each.value.az}/${each.value.peer}"].id
    peer_ip           = local.ha_eni["${each.value.az}/${each.value.peer}"].private_ip
    route_table_tag   = "egressd-ha=${var.name}-${each.value.az}"
    allocation_id     = aws_eip.nat[each.value.az].allocation_id
    floating_ip       = local.ha_floating_ip[each.value.az]
  }))

  iam_instance_profile {
    arn = aws_iam_instance_profile.nat.arn
  }

  network_interfaces {
    device_index                = 0
    associate_public_ip_address = true
    security_groups             = [aws_security_group.nat.id]
    delete_on_termination       = true
  }

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "enabled"
  }

  tag_specifications {
    resource_type = "instance"
    tags          = merge(local.tags, { "egressd-ha-member" = each.value.member })
  }

  tags = local.tags
}

resource "aws_autoscaling_group" "ha" {
  for_each                  = local.ha_members
  name                      = "${var.name}-nat-${each.value.az}-${each.value.member}"
  min_size                  = 1
  max_size                  = 1
  desired_capacity          = 1
  vpc_zone_identifier       = [var.zones[each.value.az].public_subnet_id]
  health_check_type         = "EC2"
  health_check_grace_period = 120

  launch_template {
    id      = aws_launch_template.ha[each.key].id
    version = aws_launch_template.ha[each.key].latest_version
  }

  # One member at a time: the other carries the traffic meanwhile.
  instance_refresh {
    strategy = "Rolling"
    preferences {
      min_healthy_percentage = 0
    }
  }

  tag {
    key                 = "egressd-eni"
    value               = local.ha_eni[each.key].id
    propagate_at_launch = true
  }

  # The SSM association pushes the policy to both members (one at a time).
  tag {
    key                 = "egressd"
    value               = var.name
    propagate_at_launch = true
  }

  tag {
    key                 = "Name"
    value               = "${var.name}-nat-${each.value.az}-${each.value.member}"
    propagate_at_launch = true
  }

  depends_on = [aws_iam_role_policy.nat, aws_iam_role_policy.ha, aws_iam_role_policy_attachment.ssm_core]
}

output "ha_members" {
  description = "With ha.enabled, per AZ and member (a, b): its ENI, its private address (the peer checks http://ADDRESS:9146/readyz) and its auto-scaling group. egressd ha status on either member shows both."
  value = {
    for k, m in local.ha_members : k => {
      eni               = local.ha_eni[k].id
      private_ip        = local.ha_eni[k].private_ip
      autoscaling_group = aws_autoscaling_group.ha[k].name
    }
  }
}
