package main

import (
	"errors"
	"fmt"
	"net"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"

	"github.com/egressd/egressd/internal/defaults"
	"github.com/egressd/egressd/pkg/declog"
	"github.com/egressd/egressd/pkg/engine"
	"github.com/egressd/egressd/pkg/policy"
	"github.com/egressd/egressd/pkg/resolve"
)

// Config is the daemon's configuration file (design.md, "Daemon config").
// Every key can be overridden by EGRESSD_<KEY>, dots as underscores
// (EGRESSD_VERIFY_DNS_ENABLED=false). The zero value of each field is
// replaced by the default shown in defaults().
type Config struct {
	Mode string `mapstructure:"mode"` // enforce | monitor
	// MonitorUntil, an RFC 3339 time, ends a monitor-mode trial: egressd
	// switches to enforce at that moment by itself (a forgotten trial is an
	// open door). "": no end.
	MonitorUntil string `mapstructure:"monitor_until"`
	Policy       string `mapstructure:"policy"`    // path of the policy file
	FailOpen     bool   `mapstructure:"fail_open"` // new flows pass when egressd is down or its queue is full
	Queue        struct {
		First int `mapstructure:"first"` // first NFQUEUE number
		Count int `mapstructure:"count"` // readers: queues first..first+count-1
		Len   int `mapstructure:"len"`   // kernel queue length per queue
	} `mapstructure:"queue"`
	// SYNLog reads the SYNs the rules forward without queueing
	// (egressd-iptables.sh --syn-log-group): on the inspected TCP ports
	// where the policy decides no SYN, a new flow's SYN does not wait for
	// egressd. Group must match the rules'. Disabled, egressd leaves the
	// rules' port set empty and every SYN is queued.
	SYNLog struct {
		Enabled bool `mapstructure:"enabled"`
		Group   int  `mapstructure:"group"` // NFLOG group
	} `mapstructure:"syn_log"`
	InspectPorts struct {
		TCP []int `mapstructure:"tcp"`
		UDP []int `mapstructure:"udp"`
	} `mapstructure:"inspect_ports"`
	Hello struct {
		MaxBytes int           `mapstructure:"max_bytes"`
		Timeout  time.Duration `mapstructure:"timeout"`
	} `mapstructure:"hello"`
	// Limits bound what undecided flows take; every source has a fair
	// share of each pool (see the README). 0 in flows, buffer_bytes,
	// dns_in_flight (and verify_dns.cache_max): chosen from the memory
	// egressd is given.
	Limits struct {
		Flows        int     `mapstructure:"flows"`          // undecided flows in the table
		HeldPackets  int     `mapstructure:"held_packets"`   // packets held per undecided flow
		HeldTotal    int     `mapstructure:"held_total"`     // packets held in all; 0: 3/4 of queue.len per queue
		BufferBytes  int     `mapstructure:"buffer_bytes"`   // flow-head bytes buffered in all
		DNSInFlight  int     `mapstructure:"dns_in_flight"`  // DNS verifications waiting for an answer
		DNSPerSource float64 `mapstructure:"dns_per_source"` // DNS lookups per second per source (bursts of twice as many)
	} `mapstructure:"limits"`
	VerifyDNS struct {
		Enabled   bool          `mapstructure:"enabled"`
		Resolvers []string      `mapstructure:"resolvers"`
		CacheMax  int           `mapstructure:"cache_max"`
		Timeout   time.Duration `mapstructure:"timeout"`
		// Grace keeps an address verified for a name this long after its
		// TTL ends (dns_check "grace"): clients cache answers past their
		// TTL (a JVM 30 s, browsers 60 s) and the VPC resolver's fleet
		// can hand a client an answer egressd's lookup does not get. The
		// cost: an address that left the name stays trusted this long. 0
		// turns it off.
		Grace time.Duration `mapstructure:"grace"`
		// MaxQueriesPerSecond bounds the packets egressd sends the
		// resolvers per second (the Route 53 Resolver takes about 1,024
		// per ENI); the refresh of the policy's names is never starved by
		// lookups of unlisted ones.
		MaxQueriesPerSecond int `mapstructure:"max_queries_per_second"`
	} `mapstructure:"verify_dns"`
	Log struct {
		Format string `mapstructure:"format"` // json | text (operational logs; decisions are always JSON)
		Level  string `mapstructure:"level"`  // debug | info | warn | error
		// DecisionsFile also writes the decision lines to this file,
		// rotated by size. "": stdout only.
		DecisionsFile  string        `mapstructure:"decisions_file"`
		DecisionsMaxMB int           `mapstructure:"decisions_max_mb"` // rotate past this size
		DecisionsKeep  int           `mapstructure:"decisions_keep"`   // rotated files kept
		FoldPerSource  int           `mapstructure:"fold_per_source"`  // denied flows/s per source logged one by one; 0: never fold
		FoldWindow     time.Duration `mapstructure:"fold_window"`      // how often fold summaries are written
		// FlushDelay is how long decision lines are gathered before they
		// are written: one write (and one wake-up of the writer and of
		// whoever reads stdout) per batch, not per flow. 0: every line at once.
		FlushDelay time.Duration `mapstructure:"flush_delay"`
		// EMF adds metrics in CloudWatch Embedded Metric Format to the
		// decision lines every EMFInterval: decisions and denials, and
		// denials per reason and rule (never an address).
		EMF          bool          `mapstructure:"emf"`
		EMFNamespace string        `mapstructure:"emf_namespace"` // the CloudWatch namespace
		EMFInterval  time.Duration `mapstructure:"emf_interval"`
	} `mapstructure:"log"`
	Metrics struct {
		Listen string `mapstructure:"listen"` // host:port for /metrics, /healthz, /readyz; "" disables
	} `mapstructure:"metrics"`
	// Sources resolve the workload selectors of rules' from (security
	// groups, tags) with EC2 DescribeNetworkInterfaces; used only when the
	// policy has some.
	Sources struct {
		Refresh   time.Duration `mapstructure:"refresh"`    // how often EC2 is asked again
		CacheFile string        `mapstructure:"cache_file"` // the last good answers, across restarts; "": none
		VPCID     string        `mapstructure:"vpc_id"`     // only interfaces of this VPC; "": any the role sees
		Region    string        `mapstructure:"region"`     // "": the instance's (IMDS)
		Endpoint  string        `mapstructure:"endpoint"`   // "": EC2's; a URL for tests or a VPC endpoint
	} `mapstructure:"sources"`
	HA   haConfig   `mapstructure:"ha"`   // egressd ha's (haconfig.go); run ignores it
	GWLB GWLBConfig `mapstructure:"gwlb"` // behind a Gateway Load Balancer (gwlb.go); off unless gwlb.mode is set
}

// setDefaults are design.md's (internal/defaults), and what an empty file means.
func setDefaults(v *viper.Viper) {
	v.SetDefault("mode", "enforce")
	v.SetDefault("policy", "/etc/egressd/policy.yaml")
	v.SetDefault("fail_open", false)
	v.SetDefault("queue.first", 0)
	v.SetDefault("queue.count", defaults.QueueCount)
	v.SetDefault("queue.len", defaults.QueueLen)
	v.SetDefault("syn_log.enabled", true)
	v.SetDefault("syn_log.group", defaults.SYNLogGroup)
	v.SetDefault("inspect_ports.tcp", ints(defaults.InspectTCP))
	v.SetDefault("inspect_ports.udp", ints(defaults.InspectUDP))
	v.SetDefault("hello.max_bytes", defaults.HelloMaxBytes)
	v.SetDefault("hello.timeout", defaults.HelloTimeout.String())
	v.SetDefault("limits.flows", 0)
	v.SetDefault("limits.held_packets", defaults.MaxHeld)
	v.SetDefault("limits.held_total", 0)
	v.SetDefault("limits.buffer_bytes", 0)
	v.SetDefault("limits.dns_in_flight", 0)
	v.SetDefault("limits.dns_per_source", defaults.VerifyRate)
	v.SetDefault("verify_dns.enabled", true)
	v.SetDefault("verify_dns.resolvers", []string{"169.254.169.253:53"})
	v.SetDefault("verify_dns.cache_max", 0)
	v.SetDefault("verify_dns.timeout", "2s")
	v.SetDefault("verify_dns.grace", resolve.DefaultGrace.String())
	v.SetDefault("verify_dns.max_queries_per_second", resolve.DefaultMaxQueriesPerSecond)
	v.SetDefault("log.format", "json")
	v.SetDefault("log.level", "info")
	v.SetDefault("log.decisions_file", "")
	v.SetDefault("log.decisions_max_mb", 100)
	v.SetDefault("log.decisions_keep", 5)
	v.SetDefault("log.fold_per_source", 50)
	v.SetDefault("log.fold_window", "10s")
	v.SetDefault("log.flush_delay", defaults.DecisionFlushDelay.String())
	v.SetDefault("log.emf", false)
	v.SetDefault("log.emf_namespace", "egressd")
	v.SetDefault("log.emf_interval", "60s")
	v.SetDefault("monitor_until", "")
	v.SetDefault("metrics.listen", "127.0.0.1:9145")
	v.SetDefault("sources.refresh", "60s")
	v.SetDefault("sources.cache_file", "/var/lib/egressd/sources.json")
	v.SetDefault("sources.vpc_id", "")
	v.SetDefault("sources.region", "")
	v.SetDefault("sources.endpoint", "")
	setHADefaults(v)
	setGWLBDefaults(v)
}

// loadConfig reads the config file (path "" means defaults and the
// environment only), applies EGRESSD_* overrides, decodes strictly
// (unknown keys are errors) and validates.
func loadConfig(path string) (*Config, error) {
	v := viper.New()
	setDefaults(v)
	v.SetEnvPrefix("EGRESSD")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	if path != "" {
		v.SetConfigFile(path)
		v.SetConfigType("yaml")
		if err := v.ReadInConfig(); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	var c Config
	err := v.UnmarshalExact(&c, viper.DecodeHook(mapstructure.ComposeDecodeHookFunc(
		mapstructure.StringToTimeDurationHookFunc(),
		stringToIntSlice,
		mapstructure.StringToSliceHookFunc(","),
	)))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", orEnv(path), err)
	}
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", orEnv(path), err)
	}
	return &c, nil
}

// stringToIntSlice reads "80,443" (an EGRESSD_* variable) into a []int
// field; mapstructure's own hook only makes []string.
func stringToIntSlice(from, to reflect.Type, data any) (any, error) {
	if from.Kind() != reflect.String || to != reflect.TypeFor[[]int]() {
		return data, nil
	}
	out := []int{}
	for f := range strings.SplitSeq(data.(string), ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("%q is not a number", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func orEnv(path string) string {
	if path == "" {
		return "configuration (environment)"
	}
	return path
}

func (c *Config) validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if _, err := engine.ParseMode(c.Mode); err != nil {
		bad("mode: %v", err)
	}
	if c.MonitorUntil != "" {
		if _, err := time.Parse(time.RFC3339, c.MonitorUntil); err != nil {
			bad("monitor_until %q is not an RFC 3339 time (like 2026-12-01T18:00:00Z)", c.MonitorUntil)
		}
	}
	if c.Log.DecisionsFile != "" && (c.Log.DecisionsMaxMB < 1 || c.Log.DecisionsKeep < 1) {
		bad("log.decisions_max_mb and log.decisions_keep must be at least 1")
	}
	if c.Log.FoldPerSource < 0 || c.Log.FoldWindow < time.Second {
		bad("log.fold_per_source must be >= 0 and log.fold_window >= 1s")
	}
	if c.Log.FlushDelay < 0 || c.Log.FlushDelay > time.Second {
		bad("log.flush_delay %s: between 0 and 1s", c.Log.FlushDelay)
	}
	if c.Log.EMF && (c.Log.EMFNamespace == "" || c.Log.EMFInterval < time.Second) {
		bad("log.emf_namespace must be set and log.emf_interval at least 1s")
	}
	if c.Sources.Refresh < time.Second {
		bad("sources.refresh %s must be at least 1s", c.Sources.Refresh)
	}
	if c.Policy == "" {
		bad("policy: the policy file's path is required")
	}
	if c.Queue.Count < 1 || c.Queue.First < 0 || c.Queue.First+c.Queue.Count > 65536 {
		bad("queue: first %d, count %d: need count >= 1 and queues within 0..65535", c.Queue.First, c.Queue.Count)
	}
	if c.Queue.Len < 1 {
		bad("queue.len %d must be positive", c.Queue.Len)
	}
	if c.SYNLog.Group < 0 || c.SYNLog.Group > 65535 {
		bad("syn_log.group %d: an NFLOG group is 0..65535 (egressd-iptables.sh --syn-log-group)", c.SYNLog.Group)
	}

	for _, ports := range []struct {
		name string
		list []int
	}{{"inspect_ports.tcp", c.InspectPorts.TCP}, {"inspect_ports.udp", c.InspectPorts.UDP}} {
		for _, p := range ports.list {
			if p < 1 || p > 65535 {
				bad("%s: port %d is outside 1-65535", ports.name, p)
			}
		}
	}
	if c.Hello.MaxBytes < 512 || c.Hello.MaxBytes > 1<<20 {
		bad("hello.max_bytes %d must be within 512..1048576", c.Hello.MaxBytes)
	}
	if c.Hello.Timeout < 100*time.Millisecond || c.Hello.Timeout > time.Minute {
		bad("hello.timeout %s must be within 100ms..1m", c.Hello.Timeout)
	}
	if c.Limits.Flows < 0 || c.Limits.HeldPackets < 1 || c.Limits.HeldTotal < 0 || c.Limits.BufferBytes < 0 ||
		c.Limits.DNSInFlight < 0 || c.Limits.DNSPerSource <= 0 {
		bad("limits: flows, held_total, buffer_bytes and dns_in_flight must be >= 0 (0: chosen), held_packets and dns_per_source positive")
	}
	if c.Limits.HeldTotal > 0 && c.Limits.HeldTotal > c.Queue.Len*c.Queue.Count {
		bad("limits.held_total %d is more than the kernel's queues hold (queue.len %d × queue.count %d): the queues would overflow; leave it at 0 for 3/4 of them",
			c.Limits.HeldTotal, c.Queue.Len, c.Queue.Count)
	}
	if c.VerifyDNS.Enabled {
		if len(c.VerifyDNS.Resolvers) == 0 {
			bad("verify_dns.resolvers: at least one resolver (host:port) when verify_dns.enabled")
		}
		for _, r := range c.VerifyDNS.Resolvers {
			if _, _, err := net.SplitHostPort(r); err != nil {
				bad("verify_dns.resolvers: %q is not host:port (the VPC resolver is 169.254.169.253:53)", r)
			}
		}
		if c.VerifyDNS.Grace < 0 || c.VerifyDNS.Grace > time.Hour {
			bad("verify_dns.grace %s must be within 0 (off)..1h", c.VerifyDNS.Grace)
		}
		if c.VerifyDNS.MaxQueriesPerSecond < 1 || c.VerifyDNS.MaxQueriesPerSecond > 1024 {
			bad("verify_dns.max_queries_per_second %d must be within 1..1024 (the VPC resolver's limit per ENI)", c.VerifyDNS.MaxQueriesPerSecond)
		}
		if c.VerifyDNS.CacheMax < 0 {
			bad("verify_dns.cache_max %d must be >= 0 (0: chosen from the memory egressd is given)", c.VerifyDNS.CacheMax)
		}
	}
	c.GWLB.validate(bad)
	switch c.Log.Format {
	case "json", "text":
	default:
		bad("log.format must be json or text, not %q", c.Log.Format)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level must be debug, info, warn or error, not %q", c.Log.Level)
	}
	return errors.Join(errs...)
}

func ints(list []uint16) []int {
	out := make([]int, len(list))
	for i, p := range list {
		out[i] = int(p)
	}
	return out
}

func ports16(list []int) []uint16 {
	out := make([]uint16, len(list))
	for i, p := range list {
		out[i] = uint16(p)
	}
	return out
}

// engineConfig is the config's part that the engine takes (the daemon
// and replay share it). The caller adds the verifier and the log.
func (c *Config) engineConfig() engine.Config {
	m, _ := engine.ParseMode(c.Mode) // validated with the config
	return engine.Config{
		Mode:             m,
		InspectTCP:       ports16(c.InspectPorts.TCP),
		InspectUDP:       ports16(c.InspectPorts.UDP),
		HelloMaxBytes:    c.Hello.MaxBytes,
		HelloTimeout:     c.Hello.Timeout,
		MaxFlows:         c.Limits.Flows,
		MaxHeld:          c.Limits.HeldPackets,
		MaxHeldTotal:     c.heldTotal(),
		MaxBufferBytes:   c.Limits.BufferBytes,
		MaxVerifications: c.Limits.DNSInFlight,
		VerifyRate:       c.Limits.DNSPerSource,
		VerifyBurst:      max(1, int(2*c.Limits.DNSPerSource)),
	}
}

// heldTotal is limits.held_total, or its default: three quarters of the
// kernel's queues, so that what egressd holds never fills them.
func (c *Config) heldTotal() int {
	if c.Limits.HeldTotal > 0 {
		return c.Limits.HeldTotal
	}
	return int(defaults.HeldShare * float64(c.Queue.Len*c.Queue.Count))
}

// policyOptions are the config's parts that change what a policy means.
func (c *Config) policyOptions() policy.Options {
	return policy.Options{InspectTCP: ports16(c.InspectPorts.TCP), InspectUDP: ports16(c.InspectPorts.UDP)}
}

// emfConfig is the decision log's EMF settings, or nil when off.
func (c *Config) emfConfig() *declog.EMFConfig {
	if !c.Log.EMF {
		return nil
	}
	return &declog.EMFConfig{Namespace: c.Log.EMFNamespace, Interval: c.Log.EMFInterval}
}
