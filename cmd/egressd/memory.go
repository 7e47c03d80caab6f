package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/egressd/egressd/pkg/engine"
	"github.com/egressd/egressd/pkg/gwlb"
	"github.com/egressd/egressd/pkg/resolve"
)

// The memory egressd is given, and what its bounded structures may take of
// it. Every budget that grows with traffic (the flow table, the flow-head
// buffers, the DNS verifications in flight, the resolver's cache, the
// decision log's queue) has a limit; the sum of them all full, plus the
// runtime's own, must fit what egressd is given, or it does not start.
// Limits the config leaves at 0 are chosen from that memory.

// memory is what egressd may use, and where the figure came from.
type memory struct {
	Bytes int64
	From  string
}

// Shares of the memory given that the auto limits aim for: the flow table,
// the buffers (counted twice in the bound) and the resolver's cache. The
// rest is the verifications, the log, the sockets, the runtime and
// headroom for the garbage collector.
const (
	shareFlows   = 0.35
	shareBuffers = 0.10
	shareCache   = 0.15
	shareVerify  = 0.05

	// runtimeBytes is the Go runtime's own (stacks of the fixed
	// goroutines, the GC's metadata, the binary's data).
	runtimeBytes = 48 << 20
)

// memoryGiven is the memory egressd may use: GOMEMLIMIT when it is set;
// else nine tenths of its cgroup's memory.max (the systemd unit's
// MemoryMax), which it then sets as its Go memory limit, so the collector
// works before the kernel kills; else half the machine's RAM.
func memoryGiven() (memory, error) {
	if v := os.Getenv("GOMEMLIMIT"); v != "" {
		// The runtime parsed it already; read its value back.
		return memory{Bytes: debug.SetMemoryLimit(-1), From: "GOMEMLIMIT=" + v}, nil
	}
	if max, path, ok := cgroupMemoryMax(); ok {
		m := memory{Bytes: max / 10 * 9, From: fmt.Sprintf("9/10 of %s (%d bytes)", path, max)}
		return m, nil
	}
	total, err := memTotal()
	if err != nil {
		return memory{}, err
	}
	return memory{Bytes: total / 2, From: fmt.Sprintf("half of MemTotal (%d bytes)", total)}, nil
}

// cgroupMemoryMax reads the memory.max of the process's cgroup (v2).
func cgroupMemoryMax() (int64, string, bool) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return 0, "", false
	}
	for _, line := range strings.Split(string(b), "\n") {
		rel, ok := strings.CutPrefix(line, "0::")
		if !ok {
			continue
		}
		path := filepath.Join("/sys/fs/cgroup", rel, "memory.max")
		v, err := os.ReadFile(path)
		if err != nil {
			return 0, "", false
		}
		n, err := strconv.ParseInt(strings.TrimSpace(string(v)), 10, 64)
		if err != nil { // "max": no limit
			return 0, "", false
		}
		return n, path, true
	}
	return 0, "", false
}

func memTotal() (int64, error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/meminfo: %q", sc.Text())
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("/proc/meminfo: no MemTotal")
}

// autoLimits fills the limits the config left at 0 from the memory given:
// the flow table the largest power of two whose worst case fits its share,
// the buffers and the resolver's cache their shares, within bounds.
func (c *Config) autoLimits(m memory) {
	if c.Limits.Flows == 0 {
		n := 65536
		for ; n > 1024; n /= 2 {
			e := c.engineConfig()
			e.MaxFlows = n
			if float64(e.FlowTableBound()) <= shareFlows*float64(m.Bytes) {
				break
			}
		}
		c.Limits.Flows = n
	}
	if c.Limits.BufferBytes == 0 {
		c.Limits.BufferBytes = int(clamp(int64(shareBuffers*float64(m.Bytes)/2), 8<<20, 256<<20))
	}
	if c.Limits.DNSInFlight == 0 {
		c.Limits.DNSInFlight = int(clamp(int64(shareVerify*float64(m.Bytes))/engine.VerificationBytes, 256, 4096))
	}
	if c.VerifyDNS.CacheMax == 0 {
		per := resolve.MemoryBound(1, 0)
		c.VerifyDNS.CacheMax = int(clamp(int64(shareCache*float64(m.Bytes))/per, 10_000, 100_000))
	}
}

func clamp(v, lo, hi int64) int64 { return max(lo, min(hi, v)) }

// memoryBound is the daemon's worst case, part by part.
func (c *Config) memoryBound() engine.Memory {
	m := c.engineConfig().MemoryBound(c.Queue.Count)
	queues := int64(c.Queue.Count)
	if c.FailOpen {
		queues++
	}
	if c.VerifyDNS.Enabled {
		m = append(m, engine.MemoryPart{What: "DNS cache (verify_dns.cache_max)", Bytes: resolve.MemoryBound(c.VerifyDNS.CacheMax, 0)})
	}
	if c.GWLB.Mode != "" {
		flows := c.GWLB.Flows
		if flows == 0 {
			flows = 65536
		}
		m = append(m, engine.MemoryPart{What: "GENEVE return paths (gwlb.flows)", Bytes: gwlb.MemoryBound(flows)})
	}
	m = append(m,
		engine.MemoryPart{What: "decision log queue", Bytes: 65536 * 512},
		engine.MemoryPart{What: "queue sockets (8 MiB receive buffer each)", Bytes: queues * (8<<20 + int64(c.Hello.MaxBytes) + 4096)},
		engine.MemoryPart{What: "Go runtime", Bytes: runtimeBytes},
	)
	return m
}

// checkMemory returns an error when the worst case does not fit.
func (c *Config) checkMemory(m memory) error {
	if total := c.memoryBound().Total(); total > m.Bytes {
		return fmt.Errorf("the limits' worst case, %s, is more than the %s egressd is given (%s): lower limits.flows, limits.buffer_bytes, "+
			"limits.dns_in_flight or verify_dns.cache_max, or leave them at 0 to have them chosen, or give egressd more memory (MemoryMax)",
			mib(total), mib(m.Bytes), m.From)
	}
	return nil
}

// printMemory writes the worst case as a table.
func (c *Config) printMemory(w io.Writer, m memory) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "memory: the worst case, every limit full (limits.flows %d, limits.buffer_bytes %d, limits.dns_in_flight %d, verify_dns.cache_max %d):\n",
		c.Limits.Flows, c.Limits.BufferBytes, c.Limits.DNSInFlight, c.VerifyDNS.CacheMax)
	bound := c.memoryBound()
	for _, p := range bound {
		fmt.Fprintf(&b, "  %10s  %s\n", mib(p.Bytes), p.What)
	}
	fmt.Fprintf(&b, "  %10s  in all, of %s given (%s)\n", mib(bound.Total()), mib(m.Bytes), m.From)
	w.Write(b.Bytes())
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
