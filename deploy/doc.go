// Package deploy holds what users deploy egressd on AWS with, and the tests
// that validate it without AWS: the systemd units and files the AMI installs
// (systemd/, etc/, libexec/), the SSM Command document that pushes a policy
// (ssm/), and the Terraform example (terraform/). The Packer template is in
// the repository's packer/ directory.
//
// The Go code here only generates the SSM document from its shell script
// (SSMDocument, run by `make ssm-doc`); the tests run the shell parts for
// real, in network namespaces they create, and parse the HCL with
// github.com/hashicorp/hcl/v2 where the real tools are not available.
package deploy
