// Command egressd is a transparent egress filter for NAT instances: it reads
// the name a new flow asks for (TLS SNI, QUIC SNI, HTTP Host), checks it and
// the destination against a policy, and tells the kernel to pass or reset
// the flow. See README.md and `egressd help`.
//
// This package only wires things together: flags, config, signals, logging.
package main

import (
	"fmt"
	"io"
	"os"
)

// version is stamped at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run dispatches a subcommand and returns the process exit code:
// 0 success, 1 a negative result (a policy that fails its check), 2 a usage
// or operational error.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "run":
		return cmdRun(args[1:], stdout, stderr)
	case "check":
		return cmdCheck(args[1:], stdout, stderr)
	case "explain":
		return cmdExplain(args[1:], stdout, stderr)
	case "replay":
		return cmdReplay(args[1:], stdout, stderr)
	case "suggest":
		return cmdSuggest(args[1:], stdout, stderr)
	case "import":
		return cmdImport(args[1:], stdout, stderr)
	case "export":
		return cmdExport(args[1:], stdout, stderr)
	case "ha":
		return cmdHA(args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintf(stdout, "egressd %s\n", version)
		return 0
	case "help", "-h", "--help":
		usage(stdout)
		return 0
	default:
		fmt.Fprintf(stderr, "egressd: unknown command %q\n\n", args[0])
		usage(stderr)
		return 2
	}
}

func usage(w io.Writer) {
	fmt.Fprint(w, `egressd: a transparent egress filter by name (TLS SNI, QUIC, HTTP Host) and address.

Usage:
  egressd run [--config FILE] [--mode enforce|monitor]
                                       the daemon: decide new flows from NFQUEUE
  egressd check POLICY.yaml            validate a policy and run its tests
  egressd explain --policy P --src IP --dst IP --port N [--proto tcp|udp] [--name NAME]
                                       decide one flow, as one decision-log line
  egressd replay --policy P [--resolve NAME=IP,...] [--baseline OLD] CAPTURE.pcap|LOG.jsonl
                                       decide captured or logged flows with a policy
  egressd suggest [--subnet CIDR]... LOG.jsonl|CAPTURE.pcap...
                                       write a policy that allows what was observed
  egressd import --from anf|squid|smokescreen [--role NAME=CIDR]... FILE...
                                       translate another filter's rules into a policy
  egressd export --format route53-dns-firewall POLICY
                                       the policy's names as a DNS Firewall domain list
  egressd ha run|status|conntrackd-config [--config FILE]
                                       high availability: an active and a standby member per zone
  egressd version                      print the version
  egressd help                         this text

Run "egressd COMMAND --help" for a command's flags.
`)
}
