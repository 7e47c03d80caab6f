package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/egressd/egressd/pkg/ha"
)

const haUsage = `Usage: egressd ha run|status|conntrackd-config [--config FILE]

High availability for one availability zone: two egressd instances, active
and standby, with the same policy. Each member runs "egressd ha run" beside
"egressd run"; the member the private route tables name carries the traffic.

  run                the member's agent: checks the peer's /readyz over the VPC every
                     ha.interval; when the active member fails ha.failure_threshold
                     checks in a row, the standby moves every route table's
                     0.0.0.0/0 (ha.route_tables, ha.route_table_tag) and the Elastic IP
                     (ha.eip) to its own ENI with the EC2 API, and verifies them. It
                     never takes the routes while it cannot filter itself (its
                     egressd's /readyz, the iptables rules, its links), never guesses
                     when the EC2 API does not answer (it retries with backoff), and
                     changes the owner at most once per ha.hold_down. The routes return
                     to the ha.preferred member once it has been ready for ha.hold_down,
                     unless ha.failback is false. Serves /readyz, /status and /metrics
                     on ha.listen.
  status             both members as their agents see them: role, readiness, who the
                     route tables and the Elastic IP name, each member's policy sha256
                     (a warning when they differ). Exit 0 when all is well, 1 with a
                     warning, 2 when neither agent answers.
  conntrackd-config  print (or --out FILE: write) the conntrackd.conf that keeps the
                     peer's connections, their NAT mapping and egressd's connmark, in
                     this member's kernel table (FTFW over UDP, ha.conntrackd).

The ha: section of the config (every key also EGRESSD_HA_<KEY>):

  ha:
    enabled: true
    member: a                      # this member; the peer is b
    eni: eni-0aaa...               # this member's ENI: the routes and the EIP name it while active
    preferred: true                # the routes return here after hold_down (one member of the pair)
    failback: true                 # false: whoever took over keeps the routes
    listen: ":9146"                # /readyz (for the peer), /status, /metrics
    interval: 1s                   # between checks; timeout: 500ms per check
    failure_threshold: 3           # failed checks in a row: detection in interval x failure_threshold
    hold_down: 60s
    route_tables: [rtb-0aaa...]    # and/or route_table_tag: egressd-ha=NAME-ZONE
    peer: {name: b, url: "http://10.0.0.11:9146", eni: eni-0bbb...}
    eip: {allocation_id: eipalloc-..., private_ip: 10.0.0.50}   # the floating address the EIP maps to
    snat_address: ""               # what both members SNAT to (egressd-iptables.sh --snat); "": eip.private_ip
    ec2: {region: "", endpoint: "", timeout: 5s, poll: 30s, max_backoff: 30s}
    local: {readyz: "", rules_check: [/usr/libexec/egressd/egressd-iptables.sh, status],
            rules_every: 10s, interfaces: []}
    conntrackd: {config: /run/egressd/conntrackd.conf, local: 10.0.0.10, peer: 10.0.0.11,
                 interface: ens5, port: 3780, ignore: [10.0.0.10], dir: /run/egressd}

EC2 credentials come from the environment or the instance role over IMDSv2.
`

func cmdHA(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, haUsage)
		return 2
	}
	switch args[0] {
	case "run":
		return cmdHARun(args[1:], stdout, stderr)
	case "status":
		return cmdHAStatus(args[1:], stdout, stderr)
	case "conntrackd-config":
		return cmdHAConntrackd(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, haUsage)
		return 0
	}
	fmt.Fprintf(stderr, "egressd ha: unknown command %q (run, status or conntrackd-config)\n\n%s", args[0], haUsage)
	return 2
}

// haLoad parses a subcommand's flags and loads the config's ha: section.
func haLoad(name, usage string, args []string, stderr io.Writer, extra func(*flag.FlagSet)) (*Config, *ha.Config, *ha.SyncConfig, int, bool) {
	fs := newFlagSet("ha "+name, usage, stderr)
	cfgPath := fs.String("config", "/etc/egressd/egressd.yaml", "config file (YAML) with an ha: section; every key also as EGRESSD_<KEY>")
	if extra != nil {
		extra(fs)
	}
	if code, ok := parseFlags(fs, args); !ok {
		return nil, nil, nil, code, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "egressd ha %s: unexpected argument %q\n", name, fs.Arg(0))
		return nil, nil, nil, 2, false
	}
	cfg, err := loadConfig(*cfgPath)
	if err == nil {
		var hc *ha.Config
		var sc *ha.SyncConfig
		if hc, sc, err = haSettings(cfg); err == nil {
			return cfg, hc, sc, 0, true
		}
		err = fmt.Errorf("%s: %w", orEnv(*cfgPath), err)
	}
	fmt.Fprintf(stderr, "egressd ha %s: bad config: %v\n", name, err)
	return nil, nil, nil, 1, false
}

const haRunUsage = `Usage: egressd ha run [--config FILE]

Run this member's HA agent (see "egressd ha --help"). Logs go to stderr as
JSON (log.format). Stops on SIGTERM or SIGINT; the routes stay where they are.

Flags:
`

func cmdHARun(args []string, _, stderr io.Writer) int {
	cfg, hc, _, code, ok := haLoad("run", haRunUsage, args, stderr, nil)
	if !ok {
		return code
	}
	log := newLogger(cfg, stderr, new(slog.LevelVar)).With("component", "ha")
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	api, err := ha.NewAPI(ctx, &hc.EC2)
	if err != nil {
		log.Error("not starting", "err", err)
		return 1
	}
	ln, err := net.Listen("tcp", hc.Listen)
	if err != nil {
		log.Error("not starting", "err", fmt.Errorf("ha.listen: %w", err))
		return 1
	}
	agent := ha.NewAgent(hc, api, log, version)
	srv := &http.Server{Handler: agent.Handler(), ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	n := newNotifier()
	n.ready("checking the peer " + hc.Peer.Name)
	agent.Run(ctx)
	n.stopping()
	shut, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	srv.Shutdown(shut)
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		log.Error("the HA endpoint failed", "err", err)
		return 1
	}
	log.Info("stopped")
	return 0
}

const haConntrackdUsage = `Usage: egressd ha conntrackd-config [--config FILE] [--out FILE]

Print the conntrackd.conf for this member (ha.conntrackd): FTFW over unicast
UDP from ha.conntrackd.local to ha.conntrackd.peer; the peer's connections,
with their NAT mapping and egressd's connmark, go straight into this kernel's
table (DisableExternalCache), and a member that starts asks the peer for its
whole table (StartupResync). With --out, write the file atomically instead
(egressd-conntrackd.service does, before it starts conntrackd).

Flags:
`

func cmdHAConntrackd(args []string, stdout, stderr io.Writer) int {
	var out *string
	_, _, sc, code, ok := haLoad("conntrackd-config", haConntrackdUsage, args, stderr, func(fs *flag.FlagSet) {
		out = fs.String("out", "", "write the file here (atomically) instead of printing it")
	})
	if !ok {
		return code
	}
	if sc == nil {
		fmt.Fprintln(stderr, "egressd ha conntrackd-config: ha.conntrackd.config is empty: this member syncs no connections")
		return 1
	}
	if sc.Interface == "" {
		// The interface is found at start (an ENI's name is known only once
		// it is attached): the one that has the sync address.
		name, err := interfaceWith(sc.Local)
		if err != nil {
			fmt.Fprintf(stderr, "egressd ha conntrackd-config: ha.conntrackd.interface is empty and %v\n", err)
			return 1
		}
		sc.Interface = name
	}
	text := sc.Render()
	if *out == "" {
		fmt.Fprint(stdout, text)
		return 0
	}
	if err := writeAtomic(*out, []byte(text)); err != nil {
		fmt.Fprintf(stderr, "egressd ha conntrackd-config: %v\n", err)
		return 1
	}
	return 0
}

// interfaceWith names the interface that has the address addr.
func interfaceWith(addr string) (string, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return "", err
	}
	for _, ifc := range ifs {
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.String() == addr {
				return ifc.Name, nil
			}
		}
	}
	return "", fmt.Errorf("no interface here has the address %s (ha.conntrackd.local)", addr)
}

// writeAtomic writes a file beside its final name, then renames it over.
func writeAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

const haStatusUsage = `Usage: egressd ha status [--config FILE] [--json]

Ask this member's agent (ha.listen) and the peer's (ha.peer.url) for their
status and print both members: role, readiness, each one's policy sha256,
and who the route tables and the Elastic IP name (as the member with the
freshest view read them from EC2). Warns when the policies differ, when a
member is not ready or does not answer, and when no member is active.
Exit 0 when all is well, 1 with a warning, 2 when neither agent answers.

Flags:
`

func cmdHAStatus(args []string, stdout, stderr io.Writer) int {
	var asJSON *bool
	_, hc, _, code, ok := haLoad("status", haStatusUsage, args, stderr, func(fs *flag.FlagSet) {
		asJSON = fs.Bool("json", false, "print both members' /status as one JSON object")
	})
	if !ok {
		return code
	}
	client := &http.Client{Timeout: 2 * time.Second}
	ctx := context.Background()
	type member struct {
		name, url string
		st        *ha.Status
		err       error
	}
	members := []*member{{name: hc.Member, url: localURL(hc.Listen, "")}, {name: hc.Peer.Name, url: strings.TrimSuffix(hc.Peer.URL, "/")}}
	for _, m := range members {
		m.st, m.err = ha.FetchStatus(ctx, client, m.url)
	}
	if *asJSON {
		out := map[string]any{}
		for _, m := range members {
			if m.st != nil {
				out[m.name] = m.st
			} else {
				out[m.name] = map[string]string{"error": m.err.Error()}
			}
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(out)
	}
	var warnings []string
	warn := func(format string, a ...any) { warnings = append(warnings, fmt.Sprintf(format, a...)) }
	if !*asJSON {
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "member\trole\tready\tsees peer\tpolicy sha256\teni\tnext")
		for _, m := range members {
			if m.st == nil {
				fmt.Fprintf(tw, "%s\t(no answer)\t\t\t\t\t%v\n", m.name, m.err)
				continue
			}
			s := m.st
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Member, s.Role, yesNo(s.Ready), yesNo(s.Peer.Up),
				short(s.PolicySHA256), s.ENI, s.Decision)
		}
		tw.Flush()
	}
	var view *ha.View
	var viewFrom string
	for _, m := range members {
		if m.st == nil {
			warn("member %s does not answer at %s: %v", m.name, m.url, m.err)
			continue
		}
		if !m.st.Ready {
			warn("member %s is not ready: %s", m.name, strings.Join(m.st.Problems, "; "))
		}
		if m.st.ViewError != "" {
			warn("member %s cannot read the EC2 API: %s", m.name, m.st.ViewError)
		}
		if v := m.st.View; v != nil && (view == nil || v.At.After(view.At)) {
			view, viewFrom = v, m.name
		}
	}
	if members[0].st == nil && members[1].st == nil {
		printWarnings(stderr, warnings)
		return 2
	}
	if a, b := members[0].st, members[1].st; a != nil && b != nil && a.PolicySHA256 != b.PolicySHA256 {
		warn("the members' policies differ: %s has %s, %s has %s", a.Member, cmp.Or(a.PolicySHA256, "none"), b.Member, cmp.Or(b.PolicySHA256, "none"))
	}
	names := map[string]string{hc.ENI: hc.Member, hc.Peer.ENI: hc.Peer.Name}
	if view != nil && !*asJSON {
		fmt.Fprintf(stdout, "\nroutes (as %s read them %s ago):\n", viewFrom, time.Since(view.At).Round(time.Millisecond))
		for _, r := range view.Routes {
			fmt.Fprintf(stdout, "  %s %s -> %s (%s)\n", r.Table, cmp.Or(hc.Destination, "0.0.0.0/0"), cmp.Or(r.ENI, r.Target), cmp.Or(names[r.ENI], "neither member"))
		}
		if e := view.EIP; e != nil {
			fmt.Fprintf(stdout, "elastic IP %s -> %s %s (%s)\n", e.PublicIP, cmp.Or(e.ENI, "(not associated)"), e.PrivateIP, cmp.Or(names[e.ENI], "neither member"))
		}
		for _, m := range members {
			if m.st != nil && m.st.LastMove != nil {
				lm := m.st.LastMove
				fmt.Fprintf(stdout, "last move by %s: %s (%s) at %s, %d changes", m.name, lm.Action, lm.Reason, lm.Start.UTC().Format(time.RFC3339), len(lm.Changes))
				if lm.Error != "" {
					fmt.Fprintf(stdout, ", FAILED: %s\n", lm.Error)
				} else {
					fmt.Fprintf(stdout, ", verified in %s\n", lm.Verified.Sub(lm.Start).Round(time.Millisecond))
				}
			}
		}
	}
	if view == nil {
		warn("no member has read the routes from EC2")
	} else if owner := view.Owner(hc.ENI, hc.Peer.ENI); owner == ha.OwnerNone {
		warn("the first route table names neither member: nobody filters this zone's traffic")
	} else if eni := map[ha.Owner]string{ha.OwnerSelf: hc.ENI, ha.OwnerPeer: hc.Peer.ENI}[owner]; !view.Complete(eni, hc.EIP.PrivateIP) {
		warn("the move to %s is incomplete: a route table or the Elastic IP names another ENI", names[eni])
	}
	printWarnings(stderr, warnings)
	if len(warnings) > 0 {
		return 1
	}
	return 0
}

func printWarnings(w io.Writer, warnings []string) {
	for _, s := range warnings {
		fmt.Fprintln(w, "WARNING: "+s)
	}
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func short(hash string) string {
	if len(hash) > 12 {
		return hash[:12]
	}
	return cmp.Or(hash, "-")
}
