package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/egressd/egressd/pkg/policy"
)

// newFlagSet returns a FlagSet whose -h/--help prints the command's usage
// text followed by its flags.
func newFlagSet(name, usage string, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args; when it returns ok false the command exits with
// code (0 after --help, 2 after a usage error).
func parseFlags(fs *flag.FlagSet, args []string) (code int, ok bool) {
	err := fs.Parse(args)
	switch {
	case err == nil:
		return 0, true
	case errors.Is(err, flag.ErrHelp):
		return 0, false
	default:
		return 2, false
	}
}

// inspectFlags adds --inspect-tcp and --inspect-udp (the config's
// inspect_ports) and returns a function that reads them as policy options.
func inspectFlags(fs *flag.FlagSet) func() (policy.Options, error) {
	tcp := fs.String("inspect-tcp", "80,443", "TCP ports that carry a name (the daemon's inspect_ports.tcp)")
	udp := fs.String("inspect-udp", "443", "UDP ports that carry a name (the daemon's inspect_ports.udp)")
	return func() (policy.Options, error) {
		t, err := parsePortList(*tcp)
		if err != nil {
			return policy.Options{}, fmt.Errorf("--inspect-tcp: %w", err)
		}
		u, err := parsePortList(*udp)
		if err != nil {
			return policy.Options{}, fmt.Errorf("--inspect-udp: %w", err)
		}
		return policy.Options{InspectTCP: t, InspectUDP: u}, nil
	}
}

// parsePortList reads "80,443" ("" is no ports).
func parsePortList(s string) ([]uint16, error) {
	out := []uint16{}
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.ParseUint(f, 10, 16)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("%q is not a port (1-65535)", f)
		}
		out = append(out, uint16(n))
	}
	return out, nil
}
