# The Amazon plugin. Kept apart from egressd.pkr.hcl because the offline check
# (Debian's packer 1.6.6, which predates required_plugins) leaves this file
# out; `packer init .` reads it before a real build.
packer {
  required_version = ">= 1.8.0"
  required_plugins {
    amazon = {
      version = ">= 1.3.0"
      source  = "github.com/hashicorp/amazon"
    }
  }
}
