package e2e

import (
	"context"
	"crypto/tls"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/test/lab"
)

// TestBannerServer: a server that speaks first. On a port without a name
// the flow is decided on the SYN and the banner arrives after the
// decision. On an inspected port nothing of the banner reaches the client
// while the flow is undecided; a denied flow never gets a byte of it.
func TestBannerServer(t *testing.T) {
	s := start(t, labRules+`
  - {name: banner-by-name, domains: [banner.example.test], ports: [443], action: allow}
`+labTests, lab.Rules{}, lab.EgressdOptions{})

	t.Run("decided on the SYN", func(t *testing.T) {
		c := dial(t, s, lab.ServerAddr+":2222")
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, len(lab.Banner))
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != lab.Banner {
			t.Fatalf("banner %q, %v", buf, err)
		}
		got := time.Now()
		d, err := s.E.WaitDecision(byConn(c), time.Second)
		if err != nil || d.Verdict != "allow" || d.Rule != "lab-banner" {
			t.Fatalf("decision %s: %v", d, err)
		}
		if d.Time.After(got) {
			t.Errorf("the banner arrived at %s, before the decision at %s", got, d.Time)
		}
	})

	for _, tc := range []struct {
		name    string
		sni     string
		allowed bool
	}{
		{"inspected port, allowed name", "banner.example.test", true},
		{"inspected port, denied name", "denied.example.test", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, s, lab.BannerAddr+":443")
			// The server has sent its banner; it must not arrive while
			// the flow is undecided.
			c.SetReadDeadline(time.Now().Add(700 * time.Millisecond))
			if n, err := c.Read(make([]byte, 64)); n > 0 {
				t.Fatalf("%d bytes of the banner reached the client of an undecided flow", n)
			} else if !isTimeout(err) {
				t.Fatalf("read on an undecided flow: %v", err)
			}
			c.Write(clientHello(t, &tls.Config{ServerName: tc.sni}))
			d, err := s.E.WaitDecision(byConn(c), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if !tc.allowed {
				if d.Verdict != "deny" {
					t.Fatalf("decision %s", d)
				}
				wantReset(t, c)
				return
			}
			// The server retransmits its banner; after the allow it passes.
			buf := make([]byte, len(lab.Banner))
			if _, err := io.ReadFull(c, buf); err != nil || string(buf) != lab.Banner {
				t.Fatalf("banner after the allow: %q, %v (decision %s)", buf, err, d)
			}
		})
	}
}

func isTimeout(err error) bool {
	type timeout interface{ Timeout() bool }
	t, ok := err.(timeout)
	return ok && t.Timeout()
}

// TestNoPayloadBeforeVerdict captures on the server's side of the lab and
// checks that no payload byte of a flow arrives before egressd's decision,
// and none at all for a denied flow.
func TestNoPayloadBeforeVerdict(t *testing.T) {
	s := start(t, labPolicy, lab.Rules{}, lab.EgressdOptions{})
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		host    string
		allowed bool
	}{
		{"allowed", "allowed.example.test", true},
		{"denied", "denied.example.test", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			capture, err := s.StartCapture(s.Inet, "i0", "tcp port 443 and src host "+lab.NATPublic)
			if err != nil {
				t.Fatal(err)
			}
			r := s.Curl(ctx, "https://"+tc.host+"/", tc.host, "443", lab.ServerAddr)
			if (r.Exit == 0) != tc.allowed {
				t.Fatalf("curl: %s", r)
			}
			d, err := s.E.WaitDecision(byName(tc.host), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			pkts, err := capture.Stop()
			if err != nil {
				t.Fatal(err)
			}
			var syns, payload int
			for _, p := range pkts {
				if p.SYN {
					syns++
				}
				if p.Payload == 0 {
					continue
				}
				payload++
				if !tc.allowed {
					t.Errorf("%d payload bytes of a denied flow reached the server at %s", p.Payload, p.Time.Format(time.StampMicro))
				} else if p.Time.Before(d.Time) {
					t.Errorf("%d payload bytes reached the server at %s, before the decision at %s", p.Payload, p.Time.Format(time.StampMicro), d.Time.Format(time.StampMicro))
				}
			}
			if syns != 1 || (tc.allowed && payload == 0) {
				t.Fatalf("capture saw %d SYNs and %d payload packets; want one flow, with payload iff allowed", syns, payload)
			}
		})
	}
}

// TestFailClosed: with egressd gone, the rules stay and new flows cannot
// pass; an allowed flow that was established keeps working, through the
// kernel alone; a restarted egressd decides new flows again.
func TestFailClosed(t *testing.T) {
	s := start(t, labPolicy, lab.Rules{}, lab.EgressdOptions{})
	ctx := context.Background()

	// An established allowed flow (keep-alive), used before and after.
	conn := dial(t, s, lab.ServerAddr+":443")
	tc := tls.Client(conn, &tls.Config{ServerName: "allowed.example.test", RootCAs: s.CA.Pool, NextProtos: []string{"http/1.1"}})
	get := func() string {
		tc.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(tc, "GET / HTTP/1.1\r\nHost: allowed.example.test\r\n\r\n"); err != nil {
			return err.Error()
		}
		buf := make([]byte, 4096)
		n, err := tc.Read(buf)
		if err != nil {
			return err.Error()
		}
		return string(buf[:n])
	}
	if r := get(); !strings.Contains(r, "200 OK") {
		t.Fatalf("first request: %q", r)
	}

	s.E.Kill() // a crash: no SIGTERM handling
	r := s.Curl(ctx, "https://allowed.example.test/", "allowed.example.test", "443", lab.ServerAddr, "--max-time", "3")
	if r.Exit == 0 {
		t.Fatalf("a new flow passed with egressd down and fail_open off: %s", r)
	}
	if r := get(); !strings.Contains(r, "200 OK") {
		t.Fatalf("the established allowed flow stopped working with egressd down: %q", r)
	}

	e, err := s.StartEgressd(lab.EgressdOptions{Binary: egressdBin, Policy: labPolicy})
	if err != nil {
		t.Fatal(err)
	}
	if r := s.Curl(ctx, "https://allowed.example.test/", "allowed.example.test", "443", lab.ServerAddr); r.Exit != 0 {
		t.Fatalf("after the restart: %s", r)
	}
	if r := s.Curl(ctx, "https://denied.example.test/", "denied.example.test", "443", lab.ServerAddr); r.Exit == 0 {
		t.Fatalf("after the restart a denied name passed: %s", r)
	}
	if r := get(); !strings.Contains(r, "200 OK") {
		t.Fatalf("the established flow after the restart: %q", r)
	}
	if _, err := e.WaitDecision(byName("denied.example.test"), 5*time.Second); err != nil {
		t.Fatal(err)
	}
}

// TestFailOpen: with fail_open (the rules' --queue-bypass), flows pass
// unfiltered while egressd is down.
func TestFailOpen(t *testing.T) {
	s := start(t, labPolicy, lab.Rules{FailOpen: true}, lab.EgressdOptions{Config: "fail_open: true\n"})
	ctx := context.Background()
	if r := s.Curl(ctx, "https://denied.example.test/", "denied.example.test", "443", lab.ServerAddr); r.Exit == 0 {
		t.Fatalf("a denied name passed while egressd runs: %s", r)
	}
	s.E.Kill()
	for _, host := range []string{"allowed.example.test", "denied.example.test"} {
		if r := s.Curl(ctx, "https://"+host+"/", host, "443", lab.ServerAddr); r.Exit != 0 {
			t.Fatalf("%s with egressd down and fail_open: %s", host, r)
		}
	}
}
