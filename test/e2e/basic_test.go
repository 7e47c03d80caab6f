package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/test/lab"
)

func byName(name string) func(lab.Decision) bool {
	return func(d lab.Decision) bool { return d.Name == name }
}

func TestCurlHTTPS(t *testing.T) {
	s := start(t, labPolicy, lab.Rules{}, lab.EgressdOptions{})
	ctx := context.Background()

	r := s.Curl(ctx, "https://allowed.example.test/", "allowed.example.test", "443", lab.ServerAddr)
	if r.Exit != 0 || r.Stdout != lab.Body("allowed.example.test", lab.ServerAddr+":443") {
		t.Fatalf("allowed name: %s", r)
	}
	d, err := s.E.WaitDecision(byName("allowed.example.test"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if d.Verdict != "allow" || d.Rule != "lab-web" || d.Reason != "rule" || d.NameFrom != "sni" ||
		d.Src != lab.ClientAddr || d.Dst != lab.ServerAddr || d.Dport != 443 || d.Proto != "tcp" ||
		!d.Enforced || d.DNSCheck != "verified" {
		t.Errorf("allow line: %s", d)
	}

	r = s.Curl(ctx, "https://denied.example.test/", "denied.example.test", "443", lab.ServerAddr)
	// curl: (35) Recv failure: Connection reset by peer
	if r.Exit == 0 || !strings.Contains(r.Stderr, "reset") {
		t.Fatalf("denied name: want a TCP reset, got %s", r)
	}
	d, err = s.E.WaitDecision(byName("denied.example.test"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if d.Verdict != "deny" || d.Rule != "lab-deny" || d.Reason != "rule" {
		t.Errorf("deny line: %s", d)
	}
}

func TestCurlHTTP(t *testing.T) {
	s := start(t, labPolicy, lab.Rules{}, lab.EgressdOptions{})
	ctx := context.Background()
	r := s.Curl(ctx, "http://allowed.example.test/", "allowed.example.test", "80", lab.ServerAddr)
	if r.Exit != 0 || r.Stdout != lab.Body("allowed.example.test", lab.ServerAddr+":80") {
		t.Fatalf("allowed Host: %s", r)
	}
	d, err := s.E.WaitDecision(byName("allowed.example.test"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if d.Verdict != "allow" || d.NameFrom != "host" || d.Dport != 80 {
		t.Errorf("allow line: %s", d)
	}
	r = s.Curl(ctx, "http://denied.example.test/", "denied.example.test", "80", lab.ServerAddr)
	if r.Exit == 0 || !strings.Contains(r.Stderr, "reset") {
		t.Fatalf("denied Host: want a reset, got %s", r)
	}
	if d, err := s.E.WaitDecision(byName("denied.example.test"), 5*time.Second); err != nil || d.NameFrom != "host" || d.Verdict != "deny" {
		t.Fatalf("deny line %s: %v", d, err)
	}
}

func TestOpenSSLClient(t *testing.T) {
	s := start(t, labPolicy, lab.Rules{}, lab.EgressdOptions{})
	openssl := func(name string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cmd := lab.Command(ctx, s.Client, "openssl", "s_client", "-connect", lab.ServerAddr+":443",
			"-servername", name, "-CAfile", s.CA.PEMPath, "-verify_return_error", "-brief")
		cmd.Stdin = strings.NewReader("")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := openssl("allowed.example.test")
	if err != nil || !strings.Contains(out, "Verification: OK") {
		t.Fatalf("openssl to an allowed name: %v\n%s", err, out)
	}
	if _, err := s.E.WaitDecision(byName("allowed.example.test"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	out, err = openssl("denied.example.test")
	// openssl reports the reset as errno=104 (ECONNRESET).
	if err == nil || strings.Contains(out, "Verification: OK") || !strings.Contains(out, "errno=104") {
		t.Fatalf("openssl to a denied name completed or failed for another reason than a reset: %v\n%s", err, out)
	}
	if d, err := s.E.WaitDecision(byName("denied.example.test"), 5*time.Second); err != nil || d.Verdict != "deny" {
		t.Fatalf("deny line %s: %v", d, err)
	}
}

func TestGoHTTPClient(t *testing.T) {
	s := start(t, labPolicy, lab.Rules{}, lab.EgressdOptions{})
	c := s.HTTPClient(lab.TestNames)
	resp, err := c.Get("https://allowed.example.test/")
	if err != nil {
		t.Fatal(err)
	}
	body := readAll(t, resp)
	if resp.StatusCode != 200 || body != lab.Body("allowed.example.test", lab.ServerAddr+":443") {
		t.Fatalf("allowed: %d %q", resp.StatusCode, body)
	}
	if _, err := c.Get("https://denied.example.test/"); err == nil || !strings.Contains(err.Error(), "reset") {
		t.Fatalf("denied: want connection reset, got %v", err)
	}
	// Go's hello carries an X25519MLKEM768 key share: more than one
	// segment's worth on some paths. The line shows it was read whole.
	if d, err := s.E.WaitDecision(byName("allowed.example.test"), 5*time.Second); err != nil || d.NameFrom != "sni" {
		t.Fatalf("allow line %s: %v", d, err)
	}
}
