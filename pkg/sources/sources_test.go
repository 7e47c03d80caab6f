package sources

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/google/go-cmp/cmp"

	"github.com/egressd/egressd/pkg/policy"
	"github.com/egressd/egressd/test/fakeec2/nis"
)

// client is aws-sdk-go-v2's EC2 client pointed at the fake endpoint.
func client(url string) *ec2.Client {
	return ec2.New(ec2.Options{Region: "eu-west-1", BaseEndpoint: aws.String(url),
		Credentials: aws.NewCredentialsCache(aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: "AKIDEXAMPLE", SecretAccessKey: "secret", Source: "test"}, nil
		})),
		RetryMaxAttempts: 1})
}

var (
	bySG   = policy.Selector{SecurityGroups: []string{"sg-0123456789abcdef0"}}
	byTags = policy.Selector{Tags: []policy.Tag{{Key: "Env", Value: "prod"}, {Key: "Team", Value: "payments"}}}
	nobody = policy.Selector{Tags: []policy.Tag{{Key: "Team", Value: "nobody"}}}
)

func addrs(t *testing.T, r *Resolver, s policy.Selector) string {
	t.Helper()
	a, ok := r.Addresses(s)
	if !ok {
		return "(unresolved)"
	}
	var out []string
	for _, x := range a {
		out = append(out, x.String())
	}
	return strings.Join(out, " ")
}

// TestResolver: selectors resolve through the real SDK against the fake
// EC2 (filters, pages, secondary addresses, the VPC); the last good answer
// stays across a failure and a restart; a selector that selects nothing
// resolves to nothing.
func TestResolver(t *testing.T) {
	srv := nis.New()
	defer srv.Close()
	srv.Set(
		nis.Interface{ID: "eni-1", VPC: "vpc-1", IPs: []string{"10.0.2.5", "10.0.2.6"}, Groups: []string{"sg-0123456789abcdef0"}, Tags: map[string]string{"Team": "payments", "Env": "prod"}},
		nis.Interface{ID: "eni-2", VPC: "vpc-1", IPs: []string{"10.0.2.7"}, Groups: []string{"sg-0123456789abcdef0", "sg-01234567"}},
		nis.Interface{ID: "eni-3", VPC: "vpc-1", IPs: []string{"10.0.3.9"}, Groups: []string{"sg-0123456789abcdef0"}, Tags: map[string]string{"Team": "payments", "Env": "prod"}},
		nis.Interface{ID: "eni-4", VPC: "vpc-2", IPs: []string{"10.9.0.1"}, Groups: []string{"sg-0123456789abcdef0"}, Tags: map[string]string{"Team": "payments", "Env": "prod"}},
		nis.Interface{ID: "eni-5", VPC: "vpc-1", IPs: []string{"10.0.4.1"}, Tags: map[string]string{"Team": "payments", "Env": "dev"}},
	)
	cache := filepath.Join(t.TempDir(), "sources.json")
	r := New(Config{Client: client(srv.URL), VPC: "vpc-1", CacheFile: cache})
	sels := []policy.Selector{bySG, byTags, nobody}
	changed, err := r.Refresh(context.Background(), sels)
	if err != nil || !changed {
		t.Fatalf("refresh: changed %v, %v", changed, err)
	}
	for _, tc := range []struct {
		sel  policy.Selector
		want string
	}{
		{bySG, "10.0.2.5 10.0.2.6 10.0.2.7 10.0.3.9"}, // three pages of two: every page read; not eni-4 of another VPC
		{byTags, "10.0.2.5 10.0.2.6 10.0.3.9"},
		{nobody, ""},
	} {
		if got := addrs(t, r, tc.sel); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.sel, got, tc.want)
		}
	}
	if changed, err := r.Refresh(context.Background(), sels); err != nil || changed {
		t.Errorf("the same answers again: changed %v, %v", changed, err)
	}

	// EC2 fails: the last good answers stay, and say so.
	srv.Fail("UnauthorizedOperation")
	changed, err = r.Refresh(context.Background(), sels)
	if err == nil || !strings.Contains(err.Error(), "UnauthorizedOperation") || changed {
		t.Errorf("a failing EC2: changed %v, %v", changed, err)
	}
	if got := addrs(t, r, bySG); got != "10.0.2.5 10.0.2.6 10.0.2.7 10.0.3.9" {
		t.Errorf("after a failure: %q", got)
	}

	// A restart with EC2 still failing: the cache's answers.
	r2 := New(Config{Client: client(srv.URL), VPC: "vpc-1", CacheFile: cache})
	if _, err := r2.Refresh(context.Background(), sels); err == nil {
		t.Error("no error from a failing EC2")
	}
	if got := addrs(t, r2, byTags); got != "10.0.2.5 10.0.2.6 10.0.3.9" {
		t.Errorf("after a restart: %q", got)
	}
	if a, ok := r2.Answer(byTags); !ok || a.At.IsZero() {
		t.Errorf("the cached answer has no time: %+v", a)
	}

	// EC2 answers again, and an interface went away.
	srv.Fail("")
	srv.Set(nis.Interface{ID: "eni-1", VPC: "vpc-1", IPs: []string{"10.0.2.5"}, Groups: []string{"sg-0123456789abcdef0"}})
	if changed, err := r2.Refresh(context.Background(), sels); err != nil || !changed {
		t.Errorf("a change: changed %v, %v", changed, err)
	}
	if got := addrs(t, r2, byTags); got != "" {
		t.Errorf("tags that select nothing now: %q", got)
	}

	// The policy compiled with the resolver.
	p, err := policy.Parse("p.yaml", []byte("version: 1\ndefault: deny\nrules:\n  - {name: pay, from: [{security_groups: [sg-0123456789abcdef0]}], domains: [api.stripe.com], action: allow}\n"), policy.Options{Sources: r2})
	if err != nil {
		t.Fatal(err)
	}
	q := policy.Query{Src: netip.MustParseAddr("10.0.2.5"), Dst: netip.MustParseAddr("203.0.113.1"), Port: 443, Proto: policy.TCP, Inspected: true, Name: "api.stripe.com"}
	if d := p.Decide(q); d.Rule != "pay" {
		t.Errorf("decide: %+v", d)
	}
	if srv.Requests() < 8 {
		t.Errorf("%d requests", srv.Requests())
	}
}

// TestCacheFileProblems: a cache that cannot be read is left aside.
func TestCacheFileProblems(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte("{not json"), 0o600)
	if got := addrs(t, New(Config{CacheFile: bad}), bySG); got != "(unresolved)" {
		t.Errorf("a corrupt cache: %q", got)
	}
	if _, err := New(Config{}).Refresh(context.Background(), []policy.Selector{bySG}); err == nil {
		t.Error("a refresh without a client")
	}
	r := New(Config{CacheFile: filepath.Join(dir, "none.json")})
	if diff := cmp.Diff("(unresolved)", addrs(t, r, bySG)); diff != "" {
		t.Error(diff)
	}
}
