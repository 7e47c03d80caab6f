// Package sources resolves the workload selectors of a policy's rules
// (from: security_groups and tags) to the private addresses of the network
// interfaces they select, with EC2 DescribeNetworkInterfaces, on the NAT
// instance and with its role (ec2:DescribeNetworkInterfaces).
//
// The answers are refreshed on an interval. A selector keeps its last good
// answer across a failed call, and across a restart (the cache file); a
// selector never answered resolves to nothing, so its rule matches no
// source from it until EC2 answers. The Resolver implements
// policy.Sources; the daemon compiles a policy with it and compiles it
// again when an answer changes, so deciding a flow never waits on EC2.
package sources
