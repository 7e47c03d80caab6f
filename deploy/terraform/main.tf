# egressd on AWS: one NAT instance per availability zone, each an auto-scaling
# group of one built from the egressd AMI (packer/). The private route tables'
# 0.0.0.0/0 points at a static ENI per AZ (source/destination check off, an
# Elastic IP); whichever instance the group runs attaches it at boot
# (egressd-eni.service, from the instance tag egressd-eni), so a replaced
# instance takes the route and the public IP over. The policy lives in
# Parameter Store; an SSM association pushes it with the egressd-push-policy
# document whenever it changes, to every new instance, and every 30 minutes.
#
# Copy this directory (with ../ssm/egressd-push-policy.json, or set
# ssm_document_file), fill in terraform.tfvars (see terraform.tfvars.example),
# then terraform init && terraform apply. deploy/README.md walks through it.

data "aws_partition" "current" {}
data "aws_region" "current" {}
data "aws_caller_identity" "current" {}

data "aws_vpc" "this" {
  id = var.vpc_id
}

data "aws_ec2_instance_type" "nat" {
  instance_type = var.instance_type
}

data "aws_ami" "egressd" {
  count       = var.ami_id == "" ? 1 : 0
  most_recent = true
  owners      = [var.ami_owner]

  filter {
    name   = "name"
    values = [var.ami_name_pattern]
  }

  filter {
    name   = "architecture"
    values = data.aws_ec2_instance_type.nat.supported_architectures
  }
}

locals {
  ami_id            = var.ami_id != "" ? var.ami_id : data.aws_ami.egressd[0].id
  private_cidrs     = length(var.private_cidrs) > 0 ? var.private_cidrs : [data.aws_vpc.this.cidr_block]
  ssm_document_file = var.ssm_document_file != "" ? var.ssm_document_file : "${path.module}/../ssm/egressd-push-policy.json"
  policy            = file(var.policy_file)
  tags              = merge(var.tags, { "egressd" = var.name })
  arn_prefix        = "arn:${data.aws_partition.current.partition}"
  account_region    = "${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}"

  # One entry per (AZ, private route table).
  routes = merge([
    for az, z in var.zones : {
      for rtb in z.private_route_table_ids : "${az}/${rtb}" => { az = az, route_table_id = rtb }
    }
  ]...)
}

# --- Network: the static ENIs the routes point at, their public IPs, the routes. ---

resource "aws_security_group" "nat" {
  name_prefix = "${var.name}-nat-"
  description = "egressd NAT instances: traffic from the private subnets in, anything out (egressd decides)."
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { "Name" = "${var.name}-nat" })

  ingress {
    description = "Everything from the private subnets: egressd filters what may leave."
    from_port   = 0
    to_port     = 0
    protocol    = "-1"
    cidr_blocks = local.private_cidrs
  }

  egress {
    description = "Forwarded flows that egressd allowed, and the instance's own calls (SSM, CloudWatch, EC2)."
    from_port   = 0
    to_port     = 0
    protocol    = "-1"
    cidr_blocks = ["0.0.0.0/0"]
  }

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_network_interface" "nat" {
  for_each          = var.zones
  subnet_id         = each.value.public_subnet_id
  security_groups   = [aws_security_group.nat.id]
  source_dest_check = false
  description       = "egressd NAT ENI for ${each.key}: the private route tables' 0.0.0.0/0"
  tags              = merge(local.tags, { "Name" = "${var.name}-nat-${each.key}" })
  # HA (ha.tf): one secondary address, the Elastic IP's, that moves between the members.
  private_ips_count = var.ha.enabled ? 1 : 0

  lifecycle {
    ignore_changes = [private_ips, private_ips_count, private_ip_list]
  }
}

resource "aws_eip" "nat" {
  for_each                  = var.zones
  domain                    = "vpc"
  network_interface         = aws_network_interface.nat[each.key].id
  associate_with_private_ip = var.ha.enabled ? local.ha_floating_ip[each.key] : null
  tags                      = merge(local.tags, { "Name" = "${var.name}-nat-${each.key}" })

  # With HA, egressd ha moves it to the active member.
  lifecycle {
    ignore_changes = [network_interface, associate_with_private_ip]
  }
}

resource "aws_route" "default_via_nat" {
  for_each               = local.routes
  route_table_id         = each.value.route_table_id
  destination_cidr_block = "0.0.0.0/0"
  network_interface_id   = aws_network_interface.nat[each.value.az].id

  # With HA, egressd ha points it at the active member.
  lifecycle {
    ignore_changes = [network_interface_id]
  }
}

# --- The instances' role: SSM (policy pushes, sessions), CloudWatch logs, attaching their ENI. ---

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "nat" {
  name_prefix        = "${var.name}-nat-"
  assume_role_policy = data.aws_iam_policy_document.assume.json
  tags               = local.tags
}

resource "aws_iam_role_policy_attachment" "ssm_core" {
  role       = aws_iam_role.nat.name
  policy_arn = "${local.arn_prefix}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

data "aws_iam_policy_document" "nat" {
  statement {
    sid     = "AttachTheStaticENI"
    actions = ["ec2:AttachNetworkInterface"]
    resources = concat(
      [for eni in aws_network_interface.nat : "${local.arn_prefix}:ec2:${local.account_region}:network-interface/${eni.id}"],
      ["${local.arn_prefix}:ec2:${local.account_region}:instance/*"],
    )
    condition {
      test     = "StringEquals"
      variable = "ec2:ResourceTag/egressd"
      values   = [var.name]
    }
  }

  statement {
    sid       = "FindTheStaticENI"
    actions   = ["ec2:DescribeNetworkInterfaces"]
    resources = ["*"]
  }

  statement {
    sid       = "ReadThePolicy"
    actions   = ["ssm:GetParameter"]
    resources = [aws_ssm_parameter.policy.arn]
  }

  statement {
    sid       = "ShipTheDecisionLog"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
    resources = [aws_cloudwatch_log_group.decisions.arn, "${aws_cloudwatch_log_group.decisions.arn}:*"]
  }
}

resource "aws_iam_role_policy" "nat" {
  name   = "egressd-nat"
  role   = aws_iam_role.nat.id
  policy = data.aws_iam_policy_document.nat.json
}

resource "aws_iam_instance_profile" "nat" {
  name_prefix = "${var.name}-nat-"
  role        = aws_iam_role.nat.name
  tags        = local.tags
}

# --- The instances: one launch template, one auto-scaling group of one per AZ. ---

resource "aws_cloudwatch_log_group" "decisions" {
  name              = "/${var.name}/decisions"
  retention_in_days = var.log_retention_days
  tags              = local.tags
}

resource "aws_launch_template" "nat" {
  name_prefix   = "${var.name}-nat-"
  image_id      = local.ami_id
  instance_type = var.instance_type
  user_data = base64encode(templatefile("${path.module}/user-data.sh.tftpl", {
    log_group = aws_cloudwatch_log_group.decisions.name
  }))

  iam_instance_profile {
    arn = aws_iam_instance_profile.nat.arn
  }

  # The primary ENI: the instance's own traffic until the static ENI is
  # attached (the EC2 call that attaches it needs a way out).
  network_interfaces {
    device_index                = 0
    associate_public_ip_address = true
    security_groups             = [aws_security_group.nat.id]
    delete_on_termination       = true
  }

  # IMDSv2 only; instance tags in the metadata, where egressd-eni.service
  # reads the egressd-eni tag.
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

resource "aws_autoscaling_group" "nat" {
  for_each                  = local.single_zones # with HA, ha.tf's groups instead
  name                      = "${var.name}-nat-${each.key}"
  min_size                  = 1
  max_size                  = 1
  desired_capacity          = 1
  vpc_zone_identifier       = [each.value.public_subnet_id]
  health_check_type         = "EC2"
  health_check_grace_period = 120

  launch_template {
    id      = aws_launch_template.nat.id
    version = aws_launch_template.nat.latest_version
  }

  # A new AMI or instance type replaces the instance (a few minutes without
  # egress in that AZ: min_healthy_percentage 0 with a group of one).
  instance_refresh {
    strategy = "Rolling"
    preferences {
      min_healthy_percentage = 0
    }
  }

  tag {
    key                 = "egressd-eni"
    value               = aws_network_interface.nat[each.key].id
    propagate_at_launch = true
  }

  tag {
    key                 = "egressd"
    value               = var.name
    propagate_at_launch = true
  }

  tag {
    key                 = "Name"
    value               = "${var.name}-nat-${each.key}"
    propagate_at_launch = true
  }

  depends_on = [aws_iam_role_policy.nat, aws_iam_role_policy_attachment.ssm_core]
}

# --- The policy and its push. ---

resource "aws_ssm_parameter" "policy" {
  name        = var.policy_parameter_name
  description = "egressd policy, pushed to the NAT instances by the ${var.name}-push-policy association"
  type        = "String"
  tier        = length(local.policy) > 4096 ? "Advanced" : "Standard"
  value       = local.policy
  tags        = local.tags
}

resource "aws_ssm_document" "push_policy" {
  name            = "${var.name}-push-policy"
  document_type   = "Command"
  document_format = "JSON"
  content         = file(local.ssm_document_file)
  tags            = local.tags
}

resource "aws_ssm_association" "push_policy" {
  association_name    = "${var.name}-push-policy"
  name                = aws_ssm_document.push_policy.name
  schedule_expression = "rate(30 minutes)"
  max_concurrency     = "1"
  max_errors          = "1"

  targets {
    key    = "tag:egressd"
    values = [var.name]
  }

  # The parameter's version in the source makes every policy change a change
  # of the association, which State Manager then runs at once.
  parameters = {
    PolicySource   = "ssm:${aws_ssm_parameter.policy.name}:${aws_ssm_parameter.policy.version}"
    TimeoutSeconds = tostring(var.push_timeout_seconds)
  }
}
