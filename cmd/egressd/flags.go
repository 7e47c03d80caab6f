package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/egressd/egressd/internal/defaults"
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

// inspectFlags adds --inspect-tcp and --inspect-udp and returns a function
// that reads what a policy means from them. With cfgPath (a --config flag
// of the caller's) the ports come from the daemon's config file instead
// (with its EGRESSD_* overrides); the two are never both given. Without
// either, the defaults.
func inspectFlags(fs *flag.FlagSet, cfgPath *string) func() (policy.Options, error) {
	if cfgPath == nil {
		cfgPath = new(string)
	}
	tcp := fs.String("inspect-tcp", portList(defaults.InspectTCP), "TCP ports that carry a name (the daemon's inspect_ports.tcp)")
	udp := fs.String("inspect-udp", portList(defaults.InspectUDP), "UDP ports that carry a name (the daemon's inspect_ports.udp)")
	return func() (policy.Options, error) {
		if *cfgPath != "" {
			set := false
			fs.Visit(func(f *flag.Flag) { set = set || f.Name == "inspect-tcp" || f.Name == "inspect-udp" })
			if set {
				return policy.Options{}, errors.New("--config and --inspect-tcp/--inspect-udp both say which ports carry a name: give one")
			}
			cfg, err := loadConfig(*cfgPath)
			if err != nil {
				return policy.Options{}, err
			}
			return cfg.policyOptions(), nil
		}
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

func portList(ports []uint16) string {
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = strconv.Itoa(int(p))
	}
	return strings.Join(s, ",")
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

// atFlag adds --at, the instant at which rules' expires are judged, and
// returns a function that reads it (the zero time, for now, when unset).
func atFlag(fs *flag.FlagSet) func() (time.Time, error) {
	at := fs.String("at", "", "judge rules' expires at this RFC 3339 time instead of now (\"what will be in force then\")")
	return func() (time.Time, error) {
		if *at == "" {
			return time.Time{}, nil
		}
		t, err := time.Parse(time.RFC3339, *at)
		if err != nil {
			return time.Time{}, fmt.Errorf("--at %q is not an RFC 3339 time (like 2026-12-24T06:00:00Z)", *at)
		}
		return t, nil
	}
}

// policyOutputFlags adds the flags of the commands that write a policy
// (suggest, import): -o, and --config or --inspect-tcp/--inspect-udp for
// what the policy will mean.
func policyOutputFlags(fs *flag.FlagSet) (outPath *string, opts func() (policy.Options, error)) {
	outPath = fs.String("o", "", "write the policy to this file instead of stdout")
	cfgPath := fs.String("config", "", "the daemon's config file: read inspect_ports from it (and from EGRESSD_* variables)")
	return outPath, inspectFlags(fs, cfgPath)
}

// failer returns a command's error reporter: it prints "egressd CMD:
// message" and returns exit status 2.
func failer(stderr io.Writer, cmd string) func(format string, a ...any) int {
	return func(format string, a ...any) int {
		fmt.Fprintf(stderr, "egressd "+cmd+": "+format+"\n", a...)
		return 2
	}
}

// writeOutput writes data to the file at path, or to stdout when path is "".
func writeOutput(path string, stdout io.Writer, data []byte) error {
	if path == "" {
		_, err := stdout.Write(data)
		return err
	}
	return os.WriteFile(path, data, 0o644)
}
