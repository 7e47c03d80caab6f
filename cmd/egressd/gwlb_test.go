package main

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestGWLBConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(body string) string {
		p := filepath.Join(dir, "egressd.yaml")
		if err := os.WriteFile(p, []byte("policy: /dev/null\n"+body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cfg, err := loadConfig(write(""))
	if err != nil || cfg.GWLB.Mode != "" || cfg.GWLB.Listen != "0.0.0.0:6081" || cfg.GWLB.Drain != 300*time.Second {
		t.Fatalf("defaults: %+v %v", cfg.GWLB, err)
	}
	cfg, err = loadConfig(write(`gwlb: {mode: one-arm, endpoints: [vpce-0a1b2c3d4e5f60718, "00ff"], drain: 30s, health_listen: "0.0.0.0:8081"}`))
	if err != nil || cfg.GWLB.Mode != "one-arm" || len(cfg.GWLB.Endpoints) != 2 {
		t.Fatalf("a one-arm config: %+v %v", cfg.GWLB, err)
	}
	t.Setenv("EGRESSD_GWLB_MODE", "two-arm")
	if cfg, err = loadConfig(write("")); err != nil || cfg.GWLB.Mode != "two-arm" {
		t.Fatalf("EGRESSD_GWLB_MODE: %+v %v", cfg.GWLB, err)
	}
	// As the GWLB user data sets it: a comma-separated list.
	t.Setenv("EGRESSD_GWLB_ENDPOINTS", "vpce-0a1b2c3d4e5f60718,vpce-0b1b2c3d4e5f60719")
	if cfg, err = loadConfig(write("")); err != nil || len(cfg.GWLB.Endpoints) != 2 || cfg.GWLB.Endpoints[1] != "vpce-0b1b2c3d4e5f60719" {
		t.Fatalf("EGRESSD_GWLB_ENDPOINTS: %+v %v", cfg.GWLB, err)
	}
	t.Setenv("EGRESSD_GWLB_ENDPOINTS", "")
	t.Setenv("EGRESSD_GWLB_MODE", "")
	for body, want := range map[string]string{
		"gwlb: {mode: three-arm}":                                    "gwlb.mode must be one-arm, two-arm",
		"gwlb: {mode: one-arm, endpoints: [vpce-xyz]}":               `"vpce-xyz" is not an endpoint id`,
		"gwlb: {mode: one-arm, endpoints: [vpce-1ffffffffffffffff]}": "is not an endpoint id",
		"gwlb: {mode: one-arm, listen: \"[::]:6081\"}":               "not an IPv4 address and port",
		"gwlb: {mode: one-arm, tcp_idle_timeout: 10s}":               "within 60s..6000s",
		"gwlb: {mode: one-arm, drain: 2h}":                           "gwlb.drain 2h0m0s must be within",
		"gwlb: {mode: one-arm, cookie: 1}":                           "cookie",
	} {
		if _, err := loadConfig(write(body)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want one saying %q", body, err, want)
		}
	}
}

func TestParseEndpointID(t *testing.T) {
	for in, want := range map[string]uint64{"vpce-0a1b2c3d4e5f60718": 0xa1b2c3d4e5f60718, "VPCE-00000000000000001": 1, "ff": 0xff} {
		if got, err := parseEndpointID(in); err != nil || got != want {
			t.Errorf("parseEndpointID(%q) = %x, %v; want %x", in, got, err, want)
		}
	}
	for _, in := range []string{"", "vpce-", "vpce-g", "vpce-10000000000000000"} {
		if _, err := parseEndpointID(in); err == nil {
			t.Errorf("parseEndpointID(%q) accepted", in)
		}
	}
}

// TestDrain: a signal starts the drain once (a second one means now); a
// drain the lifecycle hook began counts toward the signal's.
func TestDrain(t *testing.T) {
	g := &gwlbState{drain: time.Minute}
	if left, ok := g.begin("terminated"); !ok || left != time.Minute {
		t.Fatalf("first signal: %v %v", left, ok)
	}
	if _, ok := g.begin("terminated"); ok {
		t.Fatal("a second signal did not stop at once")
	}
	g = &gwlbState{drain: time.Minute}
	g.begin("lifecycle")
	g.drainSince = g.drainSince.Add(-50 * time.Second)
	if left, ok := g.begin("terminated"); !ok || left > 11*time.Second || left < 9*time.Second {
		t.Fatalf("signal after the lifecycle hook: %v %v, want about 10s left", left, ok)
	}
}

// TestLifecycleIMDS: the watcher reads the state with an IMDSv2 token and
// drains on Terminated.
func TestLifecycleIMDS(t *testing.T) {
	state := "InService"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodPut && r.URL.Path == "/latest/api/token" && r.Header.Get("X-aws-ec2-metadata-token-ttl-seconds") != "":
			w.Write([]byte("tok"))
		case r.Method == http.MethodGet && r.URL.Path == "/latest/meta-data/autoscaling/target-lifecycle-state" && r.Header.Get("X-aws-ec2-metadata-token") == "tok":
			w.Write([]byte(state + "\n"))
		default:
			http.Error(w, "no", http.StatusUnauthorized)
		}
	}))
	defer srv.Close()
	got, err := imdsGet(context.Background(), srv.Client(), srv.URL, "/latest/meta-data/autoscaling/target-lifecycle-state")
	if err != nil || got != "InService" {
		t.Fatalf("imdsGet = %q, %v", got, err)
	}
	state = "Terminated"
	d := &daemon{log: slog.New(slog.DiscardHandler), gwlbWanted: true}
	g := &gwlbState{drain: time.Minute}
	d.gwlb.Store(g)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.watchLifecycle(ctx, srv.URL); err != nil {
		t.Fatal(err)
	}
	if g.drainSince.IsZero() || g.why != "lifecycle" {
		t.Errorf("not draining after Terminated: %+v", g)
	}
	if p := (&daemon{gwlbWanted: true}).gwlbProblems(); !slices.Contains(p, "the GENEVE path is not up yet") {
		t.Errorf("problems before the path is up: %v", p)
	}
}
