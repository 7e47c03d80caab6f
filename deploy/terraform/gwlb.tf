# egressd behind an AWS Gateway Load Balancer: an Auto Scaling group of egressd
# instances from the same AMI as GENEVE targets (cmd/egressd gwlb:, scripts/gwlb),
# a load balancer endpoint per zone that the clients' route tables send 0.0.0.0/0
# to, and in one-arm mode a NAT gateway per zone behind the endpoint. Off while
# var.gwlb_zones is empty. README.md ("Scaling out behind a Gateway Load
# Balancer") says when to choose it over the NAT pair of main.tf, and what it
# costs.
#
#   one-arm: client -> endpoint -> GWLB -> egressd -> GWLB -> endpoint -> NAT gateway -> internet
#            (replies: NAT gateway -> endpoint -> GWLB -> egressd -> GWLB -> endpoint -> client)
#   two-arm: client -> endpoint -> GWLB -> egressd (MASQUERADE, its public IP) -> internet
#            (replies: internet -> egressd -> GWLB -> endpoint -> client)

locals {
  gwlb_on        = length(var.gwlb_zones) > 0
  gwlb_one_arm   = local.gwlb_on && var.gwlb_mode == "one-arm"
  gwlb_nat_zones = local.gwlb_one_arm ? var.gwlb_zones : {}

  # One entry per (zone, client route table).
  gwlb_app_routes = merge([
    for az, z in var.gwlb_zones : {
      for rtb in z.app_route_table_ids : "${az}/${rtb}" => { az = az, route_table_id = rtb }
    }
  ]...)
  # One-arm: the NAT gateway's subnet sends each client CIDR back through the zone's endpoint.
  gwlb_return_routes = merge([
    for az, z in local.gwlb_nat_zones : {
      for cidr in local.private_cidrs : "${az}/${cidr}" => { az = az, route_table_id = z.public_route_table_id, cidr = cidr }
    }
  ]...)
}

resource "aws_security_group" "gwlb" {
  count       = local.gwlb_on ? 1 : 0
  name_prefix = "${var.name}-gwlb-"
  description = "egressd GWLB targets: GENEVE and health checks from the load balancer, anything out (two-arm: egressd decides)."
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { "Name" = "${var.name}-gwlb" })

  ingress {
    description = "GENEVE from the load balancer (its interfaces are in the appliance subnets)."
    from_port   = 6081
    to_port     = 6081
    protocol    = "udp"
    cidr_blocks = [data.aws_vpc.this.cidr_block]
  }

  ingress {
    description = "The target group's health check of /readyz."
    from_port   = var.gwlb_health_port
    to_port     = var.gwlb_health_port
    protocol    = "tcp"
    cidr_blocks = [data.aws_vpc.this.cidr_block]
  }

  egress {
    description = "GENEVE back to the load balancer, the instance's own calls, and (two-arm) the flows egressd allowed."
    from_port   = 0
    to_port     = 0
    protocol    = "-1"
    cidr_blocks = ["0.0.0.0/0"]
  }

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_lb" "gwlb" {
  count              = local.gwlb_on ? 1 : 0
  name               = "${var.name}-gwlb"
  load_balancer_type = "gateway"
  subnets            = [for z in var.gwlb_zones : z.appliance_subnet_id]
  # A zone's endpoint uses its own zone's targets: a failed zone does not
  # send its traffic through another (the NAT gateway is per zone too).
  enable_cross_zone_load_balancing = false
  tags                             = local.tags
}

resource "aws_lb_target_group" "gwlb" {
  count       = local.gwlb_on ? 1 : 0
  name        = "${var.name}-gwlb"
  port        = 6081
  protocol    = "GENEVE"
  vpc_id      = var.vpc_id
  target_type = "instance"
  # Flows stick to a target by 5-tuple: no stickiness block (its 3- and
  # 2-tuple modes would put all of a client's flows on one target).
  deregistration_delay = var.gwlb_drain_seconds

  health_check {
    protocol            = "HTTP"
    port                = tostring(var.gwlb_health_port)
    path                = "/readyz"
    matcher             = "200"
    interval            = 10
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }

  target_failover {
    on_deregistration = var.gwlb_target_failover
    on_unhealthy      = var.gwlb_target_failover
  }

  tags = local.tags
}

resource "aws_lb_listener" "gwlb" {
  count                    = local.gwlb_on ? 1 : 0
  load_balancer_arn        = aws_lb.gwlb[0].arn
  tcp_idle_timeout_seconds = var.gwlb_tcp_idle_timeout_seconds

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.gwlb[0].arn
  }

  tags = local.tags
}

# TCP resets on idle timeout: a listener attribute the provider has no
# argument for, set with the AWS CLI where terraform apply runs.
resource "terraform_data" "gwlb_tcp_resets" {
  count            = local.gwlb_on ? 1 : 0
  triggers_replace = [aws_lb_listener.gwlb[0].arn, var.gwlb_tcp_resets]

  provisioner "local-exec" {
    command = "aws elbv2 modify-listener-attributes --listener-arn ${aws_lb_listener.gwlb[0].arn} --attributes Key=send_tcp_reset.on_idle_timeout.enabled,Value=${var.gwlb_tcp_resets}"
  }
}

resource "aws_vpc_endpoint_service" "gwlb" {
  count                      = local.gwlb_on ? 1 : 0
  acceptance_required        = false
  gateway_load_balancer_arns = [aws_lb.gwlb[0].arn]
  tags                       = merge(local.tags, { "Name" = "${var.name}-gwlb" })
}

resource "aws_vpc_endpoint" "gwlb" {
  for_each          = var.gwlb_zones
  vpc_id            = var.vpc_id
  service_name      = aws_vpc_endpoint_service.gwlb[0].service_name
  vpc_endpoint_type = "GatewayLoadBalancer"
  subnet_ids        = [each.value.endpoint_subnet_id]
  tags              = merge(local.tags, { "Name" = "${var.name}-gwlb-${each.key}" })
}

# --- Routes: the clients to their zone's endpoint; one-arm, the endpoint to the NAT gateway and back. ---

resource "aws_route" "to_gwlb_endpoint" {
  for_each               = local.gwlb_app_routes
  route_table_id         = each.value.route_table_id
  destination_cidr_block = "0.0.0.0/0"
  vpc_endpoint_id        = aws_vpc_endpoint.gwlb[each.value.az].id
}

resource "aws_eip" "gwlb_nat" {
  for_each = local.gwlb_nat_zones
  domain   = "vpc"
  tags     = merge(local.tags, { "Name" = "${var.name}-gwlb-nat-${each.key}" })
}

resource "aws_nat_gateway" "gwlb" {
  for_each      = local.gwlb_nat_zones
  subnet_id     = each.value.public_subnet_id
  allocation_id = aws_eip.gwlb_nat[each.key].id
  tags          = merge(local.tags, { "Name" = "${var.name}-gwlb-${each.key}" })
}

resource "aws_route" "gwlb_endpoint_to_nat" {
  for_each               = local.gwlb_nat_zones
  route_table_id         = each.value.endpoint_route_table_id
  destination_cidr_block = "0.0.0.0/0"
  nat_gateway_id         = aws_nat_gateway.gwlb[each.key].id
}

resource "aws_route" "gwlb_return" {
  for_each               = local.gwlb_return_routes
  route_table_id         = each.value.route_table_id
  destination_cidr_block = each.value.cidr
  vpc_endpoint_id        = aws_vpc_endpoint.gwlb[each.value.az].id
}

# --- The targets: the egressd AMI, configured for the load balancer by user data. ---

data "aws_iam_policy_document" "gwlb" {
  statement {
    sid       = "TwoArmSourceDestCheckOff"
    actions   = ["ec2:ModifyInstanceAttribute"]
    resources = ["${local.arn_prefix}:ec2:${local.account_region}:instance/*"]
    condition {
      test     = "StringEquals"
      variable = "ec2:ResourceTag/egressd"
      values   = [var.name]
    }
  }
}

resource "aws_iam_role_policy" "gwlb" {
  count  = local.gwlb_on ? 1 : 0
  name   = "egressd-gwlb"
  role   = aws_iam_role.nat.id
  policy = data.aws_iam_policy_document.gwlb.json
}

resource "aws_launch_template" "gwlb" {
  count         = local.gwlb_on ? 1 : 0
  name_prefix   = "${var.name}-gwlb-"
  image_id      = local.ami_id
  instance_type = var.instance_type
  user_data = base64encode(templatefile("${path.module}/gwlb-user-data.sh.tftpl", {
    nat_user_data = templatefile("${path.module}/user-data.sh.tftpl", { log_group = aws_cloudwatch_log_group.decisions.name })
    mode          = var.gwlb_mode
    drain_seconds = var.gwlb_drain_seconds
    health_port   = var.gwlb_health_port
    tcp_idle      = var.gwlb_tcp_idle_timeout_seconds
    vpc_cidr      = data.aws_vpc.this.cidr_block
    endpoint_ids  = join(",", [for e in aws_vpc_endpoint.gwlb : e.id])
    net_script    = base64encode(file("${path.module}/../../scripts/gwlb/egressd-gwlb-net.sh"))
  }))

  iam_instance_profile {
    arn = aws_iam_instance_profile.nat.arn
  }

  network_interfaces {
    device_index                = 0
    associate_public_ip_address = var.gwlb_mode == "two-arm"
    security_groups             = [aws_security_group.gwlb[0].id]
    delete_on_termination       = true
  }

  # IMDSv2 only; egressd reads the Auto Scaling lifecycle state there
  # (gwlb.lifecycle_imds).
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "enabled"
  }

  tag_specifications {
    resource_type = "instance"
    tags          = local.tags
  }

  tags = local.tags
}

resource "aws_autoscaling_group" "gwlb" {
  count                     = local.gwlb_on ? 1 : 0
  name                      = "${var.name}-gwlb"
  min_size                  = var.gwlb_instances.min
  max_size                  = var.gwlb_instances.max
  desired_capacity          = var.gwlb_instances.desired
  vpc_zone_identifier       = [for z in var.gwlb_zones : z.appliance_subnet_id]
  target_group_arns         = [aws_lb_target_group.gwlb[0].arn]
  health_check_type         = "ELB"
  health_check_grace_period = 180

  launch_template {
    id      = aws_launch_template.gwlb[0].id
    version = aws_launch_template.gwlb[0].latest_version
  }

  # A leaving instance is held in Terminating:Wait while egressd drains
  # (it reads the lifecycle state and turns /readyz false); the hook then
  # lets the termination go on by itself.
  initial_lifecycle_hook {
    name                 = "${var.name}-gwlb-drain"
    lifecycle_transition = "autoscaling:EC2_INSTANCE_TERMINATING"
    heartbeat_timeout    = var.gwlb_drain_seconds + 60
    default_result       = "CONTINUE"
  }

  # Replace instances one by one, keeping the rest serving.
  instance_refresh {
    strategy = "Rolling"
    preferences {
      min_healthy_percentage = 50
    }
  }

  tag {
    key                 = "egressd"
    value               = var.name
    propagate_at_launch = true
  }

  tag {
    key                 = "Name"
    value               = "${var.name}-gwlb"
    propagate_at_launch = true
  }

  depends_on = [aws_iam_role_policy.nat, aws_iam_role_policy.gwlb, aws_iam_role_policy_attachment.ssm_core]
}
