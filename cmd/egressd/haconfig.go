package main

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/viper"

	"github.com/egressd/egressd/pkg/ha"
)

// haConfig is the ha: section of egressd.yaml (README, "High
// availability"). egressd run ignores it; egressd ha reads it. Every key
// can be overridden as EGRESSD_HA_<KEY> like the rest of the file.
type haConfig struct {
	Enabled          bool          `mapstructure:"enabled"`           // egressd ha refuses to run without it
	Member           string        `mapstructure:"member"`            // this member's name
	ENI              string        `mapstructure:"eni"`               // this member's ENI: what the routes name while it is active
	Preferred        bool          `mapstructure:"preferred"`         // the routes return here (failback); one member of a pair
	Failback         bool          `mapstructure:"failback"`          // false: whoever took over keeps the routes
	Listen           string        `mapstructure:"listen"`            // the HA endpoint: /readyz, /status, /metrics
	Interval         time.Duration `mapstructure:"interval"`          // between checks
	Timeout          time.Duration `mapstructure:"timeout"`           // of one check
	FailureThreshold int           `mapstructure:"failure_threshold"` // failed checks in a row that make the peer down
	HoldDown         time.Duration `mapstructure:"hold_down"`         // least time between two changes of owner; ready time before failback
	RouteTables      []string      `mapstructure:"route_tables"`      // route table IDs; the first decides who is active
	RouteTableTag    string        `mapstructure:"route_table_tag"`   // key=value: more route tables, found by tag
	Destination      string        `mapstructure:"destination"`       // the route moved
	Peer             struct {
		Name string `mapstructure:"name"`
		URL  string `mapstructure:"url"` // its HA endpoint: http://10.0.0.11:9146
		ENI  string `mapstructure:"eni"`
	} `mapstructure:"peer"`
	EIP struct {
		AllocationID string `mapstructure:"allocation_id"` // "": the Elastic IP is left alone
		PrivateIP    string `mapstructure:"private_ip"`    // the floating address it maps to, that both members SNAT to
	} `mapstructure:"eip"`
	SNATAddress string `mapstructure:"snat_address"` // what both members SNAT to (egressd-iptables.sh --snat); "": eip.private_ip
	EC2         struct {
		Region     string        `mapstructure:"region"`   // "": from IMDSv2
		Endpoint   string        `mapstructure:"endpoint"` // "": the region's
		Timeout    time.Duration `mapstructure:"timeout"`
		Poll       time.Duration `mapstructure:"poll"`
		MaxBackoff time.Duration `mapstructure:"max_backoff"`
	} `mapstructure:"ec2"`
	Local struct {
		Readyz     string        `mapstructure:"readyz"`      // "": egressd's, from metrics.listen
		RulesCheck []string      `mapstructure:"rules_check"` // [] skips it
		RulesEvery time.Duration `mapstructure:"rules_every"`
		Interfaces []string      `mapstructure:"interfaces"`
	} `mapstructure:"local"`
	Conntrackd struct {
		Config    string   `mapstructure:"config"`    // the conntrackd.conf egressd ha conntrackd-config writes; "": no sync
		Local     string   `mapstructure:"local"`     // this member's sync address
		Peer      string   `mapstructure:"peer"`      // the peer's
		Interface string   `mapstructure:"interface"` // of local; "": the one that has it, found at start
		Port      int      `mapstructure:"port"`
		Ignore    []string `mapstructure:"ignore"` // the members' own addresses (never the SNAT address)
		Dir       string   `mapstructure:"dir"`
		LogFile   string   `mapstructure:"log_file"`
		HashLimit int      `mapstructure:"hash_limit"` // 0: twice nf_conntrack_max
	} `mapstructure:"conntrackd"`
}

func setHADefaults(v *viper.Viper) {
	v.SetDefault("ha.enabled", false)
	v.SetDefault("ha.member", "")
	v.SetDefault("ha.eni", "")
	v.SetDefault("ha.preferred", false)
	v.SetDefault("ha.failback", true)
	v.SetDefault("ha.listen", ":9146")
	v.SetDefault("ha.interval", "1s")
	v.SetDefault("ha.timeout", "500ms")
	v.SetDefault("ha.failure_threshold", 3)
	v.SetDefault("ha.hold_down", "60s")
	v.SetDefault("ha.route_tables", []string{})
	v.SetDefault("ha.route_table_tag", "")
	v.SetDefault("ha.destination", "0.0.0.0/0")
	v.SetDefault("ha.peer.name", "")
	v.SetDefault("ha.peer.url", "")
	v.SetDefault("ha.peer.eni", "")
	v.SetDefault("ha.eip.allocation_id", "")
	v.SetDefault("ha.eip.private_ip", "")
	v.SetDefault("ha.snat_address", "")
	v.SetDefault("ha.ec2.region", "")
	v.SetDefault("ha.ec2.endpoint", "")
	v.SetDefault("ha.ec2.timeout", "5s")
	v.SetDefault("ha.ec2.poll", "30s")
	v.SetDefault("ha.ec2.max_backoff", "30s")
	v.SetDefault("ha.local.readyz", "")
	v.SetDefault("ha.local.rules_check", []string{"/usr/libexec/egressd/egressd-iptables.sh", "status"})
	v.SetDefault("ha.local.rules_every", "10s")
	v.SetDefault("ha.local.interfaces", []string{})
	v.SetDefault("ha.conntrackd.config", "")
	v.SetDefault("ha.conntrackd.local", "")
	v.SetDefault("ha.conntrackd.peer", "")
	v.SetDefault("ha.conntrackd.interface", "")
	v.SetDefault("ha.conntrackd.port", 3780)
	v.SetDefault("ha.conntrackd.ignore", []string{})
	v.SetDefault("ha.conntrackd.dir", "/run/egressd")
	v.SetDefault("ha.conntrackd.log_file", "")
	v.SetDefault("ha.conntrackd.hash_limit", 0)
}

// localURL turns a listen address into a URL for this host: an empty or
// unspecified host is the loopback address.
func localURL(listen, path string) string {
	if listen == "" {
		return ""
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return ""
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port) + path
}

// haSettings checks the ha: section of a loaded config and returns the
// agent's config (and the sync daemon's, nil without conntrackd.config).
func haSettings(cfg *Config) (*ha.Config, *ha.SyncConfig, error) {
	h := &cfg.HA
	if !h.Enabled {
		return nil, nil, errors.New("ha.enabled is false: this config has no HA pair (set ha.enabled: true and the ha: keys, README \"High availability\")")
	}
	c := &ha.Config{
		Member: h.Member, ENI: h.ENI, Preferred: h.Preferred, Failback: h.Failback, Listen: h.Listen,
		Peer:     ha.Peer{Name: h.Peer.Name, URL: h.Peer.URL, ENI: h.Peer.ENI},
		Interval: h.Interval, Timeout: h.Timeout, FailureThreshold: h.FailureThreshold, HoldDown: h.HoldDown,
		RouteTables: h.RouteTables, RouteTableTag: h.RouteTableTag, Destination: h.Destination,
		EIP: ha.EIP{AllocationID: h.EIP.AllocationID, PrivateIP: h.EIP.PrivateIP}, SNATAddress: h.SNATAddress,
		EC2: ha.EC2{Region: h.EC2.Region, Endpoint: h.EC2.Endpoint, Timeout: h.EC2.Timeout, Poll: h.EC2.Poll, MaxBackoff: h.EC2.MaxBackoff},
		Local: ha.Local{Readyz: h.Local.Readyz, RulesCheck: h.Local.RulesCheck, RulesEvery: h.Local.RulesEvery,
			Interfaces: h.Local.Interfaces, Conntrackd: h.Conntrackd.Config},
	}
	if c.Local.Readyz == "" {
		c.Local.Readyz = localURL(cfg.Metrics.Listen, "/readyz")
	}
	errs := []error{c.Validate("ha.")}
	var sync *ha.SyncConfig
	if h.Conntrackd.Config != "" {
		sync = &ha.SyncConfig{
			Member: h.Member, Local: h.Conntrackd.Local, Peer: h.Conntrackd.Peer, Interface: h.Conntrackd.Interface,
			Port: h.Conntrackd.Port, Ignore: h.Conntrackd.Ignore, Dir: h.Conntrackd.Dir, LogFile: h.Conntrackd.LogFile,
			HashLimit: h.Conntrackd.HashLimit,
		}
		if sync.HashLimit == 0 {
			sync.HashLimit = defaultHashLimit()
		}
		errs = append(errs, sync.Validate("ha.conntrackd."))
		snat := cmp.Or(h.SNATAddress, h.EIP.PrivateIP)
		for _, a := range sync.Ignore {
			if a == snat && a != "" {
				errs = append(errs, fmt.Errorf("ha.conntrackd.ignore: %s is the address every forwarded connection is NATed to (snat_address, eip.private_ip): ignoring it would sync none of them", a))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, nil, err
	}
	return c, sync, nil
}

// defaultHashLimit is conntrackd's advice: twice nf_conntrack_max (which
// egressd-up.sh sizes for the instance's memory), at least 131072.
func defaultHashLimit() int {
	b, err := os.ReadFile("/proc/sys/net/netfilter/nf_conntrack_max")
	if err != nil {
		return 131072
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 131072
	}
	return max(2*n, 131072)
}
