package main

import (
	"strings"
	"testing"
)

// t4gSmall is what the shipped unit gives egressd on the Terraform
// example's default instance: MemoryMax=60% of a t4g.small's 2 GiB (of
// which the kernel reports about 93% as MemTotal), and 9/10 of that.
const t4gSmall = int64(2<<30) * 93 / 100 * 60 / 100 * 9 / 10

// TestShippedConfigFits: the AMI's config, its limits chosen from what the
// default instance gives egressd, fits it, and keeps the full flow table.
func TestShippedConfigFits(t *testing.T) {
	cfg, err := loadConfig("../../deploy/etc/egressd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	m := memory{Bytes: t4gSmall, From: "t4g.small"}
	cfg.autoLimits(m)
	if err := cfg.checkMemory(m); err != nil {
		t.Fatal(err)
	}
	if cfg.Limits.Flows != 65536 || cfg.Limits.BufferBytes < 32<<20 || cfg.VerifyDNS.CacheMax < 50_000 {
		t.Errorf("limits chosen for a t4g.small: flows %d, buffer_bytes %d, cache_max %d", cfg.Limits.Flows, cfg.Limits.BufferBytes, cfg.VerifyDNS.CacheMax)
	}
	t.Logf("t4g.small: %s given, worst case %s", mib(m.Bytes), mib(cfg.memoryBound().Total()))
}

// TestAutoLimitsFit: whatever memory egressd is given, from 256 MiB up,
// the limits chosen for it fit it; and they never shrink with more.
func TestAutoLimitsFit(t *testing.T) {
	var last *Config
	for mb := int64(256); mb <= 64<<10; mb *= 2 {
		cfg, err := loadConfig("")
		if err != nil {
			t.Fatal(err)
		}
		m := memory{Bytes: mb << 20}
		cfg.autoLimits(m)
		if err := cfg.checkMemory(m); err != nil {
			t.Errorf("%d MiB: %v", mb, err)
		}
		if last != nil && (cfg.Limits.Flows < last.Limits.Flows || cfg.Limits.BufferBytes < last.Limits.BufferBytes || cfg.VerifyDNS.CacheMax < last.VerifyDNS.CacheMax) {
			t.Errorf("%d MiB: limits shrank: %+v after %+v", mb, cfg.Limits, last.Limits)
		}
		last = cfg
	}
}

// TestSetLimitsOverMemoryRefused: limits set past what egressd is given
// are refused with the figures and what to change.
func TestSetLimitsOverMemoryRefused(t *testing.T) {
	t.Setenv("EGRESSD_LIMITS_BUFFER_BYTES", "1073741824")
	cfg, err := loadConfig("")
	if err != nil {
		t.Fatal(err)
	}
	m := memory{Bytes: 1 << 30, From: "a test"}
	cfg.autoLimits(m)
	err = cfg.checkMemory(m)
	if err == nil || !strings.Contains(err.Error(), "limits.buffer_bytes") || !strings.Contains(err.Error(), "1024.0 MiB egressd is given (a test)") {
		t.Fatalf("error %v", err)
	}
}
