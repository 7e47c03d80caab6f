# egressd NAT instance AMIs: Amazon Linux 2023 minimal, arm64 (Graviton) and
# x86_64, with egressd installed from the `make dist` tarballs by provision.sh.
#
#   make dist
#   cd packer && packer init . && packer build -var version=$(git describe --tags) .
#
# One architecture only: -only='amazon-ebs.arm64' (or amazon-ebs.x86_64). The
# instances that build and run the image answer IMDSv2 only; an instance booted
# from the image closes its filter until a policy is pushed (deny-all starter
# policy).

variable "region" {
  type        = string
  default     = "eu-west-1"
  description = "AWS region to build the AMIs in."
}

variable "version" {
  type        = string
  description = "egressd version being packaged: must match the dist tarballs' name (egressd-VERSION-linux-ARCH.tar.gz)."
}

variable "instance_type_arm64" {
  type        = string
  default     = "t4g.small"
  description = "Build instance type for the arm64 (Graviton) image."
}

variable "instance_type_x86_64" {
  type        = string
  default     = "t3.small"
  description = "Build instance type for the x86_64 image."
}

variable "subnet_id" {
  type        = string
  default     = ""
  description = "Subnet for the build instance (needs a route to the internet for dnf and SSH from Packer); empty: the default VPC."
}

variable "dist_dir" {
  type        = string
  default     = "../dist"
  description = "Directory with the make dist tarballs and SHA256SUMS, relative to where packer runs."
}

variable "starter_policy" {
  type        = string
  default     = "../deploy/etc/policy.yaml"
  description = "Policy the image ships in /etc/egressd/policy.yaml; the default denies everything until a policy is pushed."
}

variable "ami_name_prefix" {
  type        = string
  default     = "egressd"
  description = "AMI names are PREFIX-VERSION-al2023-ARCH-TIMESTAMP."
}

locals {
  timestamp = regex_replace(timestamp(), "[- TZ:]", "")
  ami_tags = {
    "egressd:version" = var.version
    "os"              = "al2023-minimal"
  }
}

# What the two images share; the build block below names one per
# architecture and adds its instance type, AMI filter and name.
source "amazon-ebs" "al2023" {
  region       = var.region
  subnet_id    = var.subnet_id
  ssh_username = "ec2-user"

  launch_block_device_mappings {
    device_name           = "/dev/xvda"
    volume_size           = 8
    volume_type           = "gp3"
    iops                  = 3000
    throughput            = 125
    delete_on_termination = true
  }

  # IMDSv2 only, on the build instance; the Terraform example's launch
  # template asks the same of every NAT instance.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }
}

build {
  source "source.amazon-ebs.al2023" {
    name          = "arm64"
    instance_type = var.instance_type_arm64
    ami_name      = "${var.ami_name_prefix}-${var.version}-al2023-arm64-${local.timestamp}"
    tags          = merge(local.ami_tags, { "Name" = "egressd ${var.version} arm64" })

    source_ami_filter {
      filters = {
        name                = "al2023-ami-minimal-2023.*-arm64"
        architecture        = "arm64"
        root-device-type    = "ebs"
        virtualization-type = "hvm"
      }
      owners      = ["amazon"]
      most_recent = true
    }
  }

  source "source.amazon-ebs.al2023" {
    name          = "x86_64"
    instance_type = var.instance_type_x86_64
    ami_name      = "${var.ami_name_prefix}-${var.version}-al2023-x86_64-${local.timestamp}"
    tags          = merge(local.ami_tags, { "Name" = "egressd ${var.version} x86_64" })

    source_ami_filter {
      filters = {
        name                = "al2023-ami-minimal-2023.*-x86_64"
        architecture        = "x86_64"
        root-device-type    = "ebs"
        virtualization-type = "hvm"
      }
      owners      = ["amazon"]
      most_recent = true
    }
  }

  provisioner "shell" {
    inline = ["mkdir -p /tmp/egressd-dist"]
  }

  # The tarballs of both architectures and SHA256SUMS; provision.sh picks and
  # verifies the one for this image.
  provisioner "file" {
    source      = "${var.dist_dir}/"
    destination = "/tmp/egressd-dist"
  }

  provisioner "file" {
    source      = var.starter_policy
    destination = "/tmp/egressd-starter-policy.yaml"
  }

  provisioner "shell" {
    script           = "${path.root}/provision.sh"
    execute_command  = "chmod +x {{ .Path }}; sudo -E {{ .Path }} /tmp/egressd-dist"
    environment_vars = ["EGRESSD_STARTER_POLICY=/tmp/egressd-starter-policy.yaml"]
  }

  provisioner "shell" {
    inline = ["sudo rm -rf /tmp/egressd-dist /tmp/egressd-starter-policy.yaml"]
  }
}
