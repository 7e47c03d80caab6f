package ha

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// SyncConfig is what a member's conntrackd.conf says: FTFW (reliable,
// acknowledged) over unicast UDP to the peer, since the VPC carries no
// multicast.
type SyncConfig struct {
	Member    string
	Local     string   // this member's sync address (the VPC or a dedicated link)
	Peer      string   // the peer's
	Interface string   // the interface of Local
	Port      int      // UDP port, both ends
	Ignore    []string // addresses or CIDRs whose connections are not synced: the members' own
	Dir       string   // where the lock file and the control socket go
	LogFile   string   // "" logs to syslog
	HashLimit int      // entries conntrackd keeps at most: twice nf_conntrack_max
}

// Validate checks a SyncConfig, naming keys under prefix.
func (c *SyncConfig) Validate(prefix string) error {
	var errs []error
	bad := func(key, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s%s: %s", prefix, key, fmt.Sprintf(format, a...)))
	}
	for key, v := range map[string]string{"local": c.Local, "peer": c.Peer} {
		if a, err := netip.ParseAddr(v); err != nil || !a.Is4() {
			bad(key, "%q is not an IPv4 address (the sync address on the VPC or the dedicated link)", v)
		}
	}
	if c.Local == c.Peer && c.Local != "" {
		bad("peer", "%s is this member's own sync address", c.Peer)
	}
	if strings.ContainsAny(c.Interface, " \t\n{}#\"") {
		bad("interface", "%q is not an interface name (\"\": the one that has the local address)", c.Interface)
	}
	if c.Port < 1 || c.Port > 65535 {
		bad("port", "%d is outside 1-65535", c.Port)
	}
	for _, a := range c.Ignore {
		if _, err := netip.ParsePrefix(a); err != nil {
			if _, err := netip.ParseAddr(a); err != nil {
				bad("ignore", "%q is not an address or CIDR", a)
			}
		}
	}
	if !filepath.IsAbs(c.Dir) || strings.ContainsAny(c.Dir, " \t\n{}#\"") {
		bad("dir", "%q is not an absolute path without spaces", c.Dir)
	}
	if c.LogFile != "" && (!filepath.IsAbs(c.LogFile) || strings.ContainsAny(c.LogFile, " \t\n{}#\"")) {
		bad("log_file", "%q is not an absolute path without spaces", c.LogFile)
	}
	if c.HashLimit < 1024 {
		bad("hash_limit", "%d is below 1024", c.HashLimit)
	}
	return errors.Join(errs...)
}

// Render returns the conntrackd.conf text. It is valid only for a valid
// config.
//
// The choices, and why:
//   - DisableExternalCache: the peer's connections go straight into this
//     member's kernel table, with their NAT mapping and their connmark
//     (egressd's verdict), so nothing has to be committed at the moment of
//     a failover: the first packet that reaches this member after the routes
//     move finds its connection, marked allowed or denied as it was. The
//     price: a copied entry's timer runs from the last event the active
//     member sent (a state change), so a flow that changes no state for
//     longer than its conntrack timeout (UDP: 120 s) has expired here and
//     does not survive (README).
//   - StartupResync: a member that comes back asks the peer for its whole
//     table, so the connections made while it was away are there before the
//     routes return to it.
//   - TCP and UDP only; the members' own addresses are ignored (their own
//     traffic, the health checks and the sync itself are not forwarded).
func (c *SyncConfig) Render() string {
	var b strings.Builder
	fmt.Fprintf(&b, `# conntrackd.conf for egressd HA member %s, written by egressd ha conntrackd-config.
# FTFW over unicast UDP to the peer; the peer's connections are injected into
# this kernel's table as they come (their NAT mapping and egressd's connmark
# included), and a full resync is asked for at start.
Sync {
	Mode FTFW {
		DisableExternalCache On
		StartupResync On
	}
	UDP {
		IPv4_address %s
		IPv4_Destination_Address %s
		Port %d
		Interface %s
		SndSocketBuffer 1249280
		RcvSocketBuffer 1249280
		Checksum on
	}
}
General {
	HashSize 32768
	HashLimit %d
`, c.Member, c.Local, c.Peer, c.Port, c.Interface, c.HashLimit)
	if c.LogFile != "" {
		fmt.Fprintf(&b, "\tLogFile %s\n", c.LogFile)
	} else {
		b.WriteString("\tLogFile off\n\tSyslog on\n")
	}
	fmt.Fprintf(&b, `	LockFile %s
	UNIX {
		Path %s
	}
	NetlinkBufferSize 2097152
	NetlinkBufferSizeMaxGrowth 8388608
	Filter From Userspace {
		Protocol Accept {
			TCP
			UDP
		}
		Address Ignore {
			IPv4_address 127.0.0.1
`, filepath.Join(c.Dir, "conntrackd.lock"), filepath.Join(c.Dir, "conntrackd.ctl"))
	seen := map[string]bool{"127.0.0.1": true}
	for _, a := range append([]string{c.Local}, c.Ignore...) {
		if !seen[a] {
			seen[a] = true
			fmt.Fprintf(&b, "\t\t\tIPv4_address %s\n", a)
		}
	}
	b.WriteString("\t\t}\n\t}\n}\n")
	return b.String()
}

// SyncStats is what conntrackd -s says, in short.
type SyncStats struct {
	Running bool   `json:"running"`
	Error   string `json:"error,omitempty"`
	// Connections in conntrackd's cache of this member's own table.
	Local int `json:"local_connections"`
	// Peer connections written into this member's kernel table: created,
	// updated, and writes that failed.
	Injected     int `json:"injected"`
	Updated      int `json:"inject_updated"`
	InjectFailed int `json:"inject_failed"`
	Sent         int `json:"messages_sent"`
	Received     int `json:"messages_received"`
	Lost         int `json:"messages_lost"`
}

// ReadSyncStats runs conntrackd -C conf -s.
func ReadSyncStats(ctx context.Context, conf string) SyncStats {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "conntrackd", "-C", conf, "-s").CombinedOutput()
	if err != nil {
		return SyncStats{Error: fmt.Sprintf("conntrackd -s: %v: %s", err, strings.TrimSpace(string(out)))}
	}
	return ParseSyncStats(string(out))
}

// ParseSyncStats reads conntrackd -s output.
func ParseSyncStats(out string) SyncStats {
	s := SyncStats{Running: true}
	section := ""
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasSuffix(line, ":") && !strings.Contains(line, "\t") {
			section = line
			continue
		}
		f := strings.Fields(line)
		num := func(i int) int {
			if i < len(f) {
				n, _ := strconv.Atoi(f[i])
				return n
			}
			return 0
		}
		switch {
		case section == "cache internal:" && strings.HasPrefix(line, "current active connections:"):
			s.Local = num(3)
		case section == "external inject:" && strings.HasPrefix(line, "connections created:"):
			s.Injected, s.InjectFailed = num(2), s.InjectFailed+num(4)
		case section == "external inject:" && strings.HasPrefix(line, "connections updated:"):
			s.Updated, s.InjectFailed = num(2), s.InjectFailed+num(4)
		case strings.HasPrefix(section, "UDP traffic") && len(f) == 6 && f[1] == "Pckts":
			s.Sent, s.Received = num(0), num(3)
		case section == "message tracking:" && len(f) == 6 && f[4] == "Lost":
			s.Lost = num(3)
		}
	}
	return s
}

// RefreshStandby replaces this member's own entries of forwarded
// connections (those NATed to snat) with the active peer's copies:
//
//  1. conntrackd -f internal: forget this member's own cache, so that
//     removing the entries below sends no "destroyed" to the peer (which
//     would remove them from the active member's table too);
//  2. conntrack -D --reply-dst snat: remove them from the kernel;
//  3. conntrackd -n: ask the peer for its whole table, injected afresh.
//
// Why: an entry this member made while it was active tracks the TCP window
// as it was then; after the peer carried the flow for a while, the flow's
// sequence numbers are past that window, and if the routes came back such
// an entry would make every packet INVALID (the rules drop INVALID first)
// and stall the flow for good. Copies injected by conntrackd do not track
// the window (conntrackd's TCPWindowTracking is off), so they carry on.
// It returns how many entries it removed.
func RefreshStandby(ctx context.Context, conf, snat string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "conntrackd", "-C", conf, "-f", "internal").CombinedOutput(); err != nil {
		return 0, fmt.Errorf("conntrackd -f internal: %v: %s", err, strings.TrimSpace(string(out)))
	}
	// conntrack -D exits 1 when it deleted nothing; the count says.
	out, err := exec.CommandContext(ctx, "conntrack", "-D", "--reply-dst", snat).CombinedOutput()
	n, perr := deletedCount(string(out))
	if perr != nil {
		return 0, fmt.Errorf("conntrack -D --reply-dst %s: %v: %s", snat, cmp.Or(err, perr), strings.TrimSpace(string(out)))
	}
	if out, err := exec.CommandContext(ctx, "conntrackd", "-C", conf, "-n").CombinedOutput(); err != nil {
		return n, fmt.Errorf("conntrackd -n: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return n, nil
}

// deletedCount reads conntrack -D's "N flow entries have been deleted."
func deletedCount(out string) (int, error) {
	for line := range strings.SplitSeq(out, "\n") {
		if _, rest, ok := strings.Cut(line, "): "); ok {
			if f := strings.Fields(rest); len(f) > 1 && strings.HasPrefix(rest[len(f[0]):], " flow entries have been deleted") {
				return strconv.Atoi(f[0])
			}
		}
	}
	return 0, errors.New("no count of deleted entries in the output")
}

// PromoteSync is run by a member that has just taken the routes: it
// loads its whole kernel table into conntrackd's own cache (conntrackd -R)
// and sends it to the peer (conntrackd -B). Copies injected from the peer
// are not in that cache (conntrackd only caches what its own kernel
// reports), so without this a connection this member inherited would not
// be sent back to the peer when it asks for a resync, and would be lost at
// the failback.
func PromoteSync(ctx context.Context, conf string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, op := range []string{"-R", "-B"} {
		if out, err := exec.CommandContext(ctx, "conntrackd", "-C", conf, op).CombinedOutput(); err != nil {
			return fmt.Errorf("conntrackd %s: %v: %s", op, err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}
