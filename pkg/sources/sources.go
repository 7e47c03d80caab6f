package sources

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/egressd/egressd/pkg/policy"
)

// EC2 is the one call the resolver makes.
type EC2 interface {
	DescribeNetworkInterfaces(context.Context, *ec2.DescribeNetworkInterfacesInput, ...func(*ec2.Options)) (*ec2.DescribeNetworkInterfacesOutput, error)
}

// Config configures a Resolver.
type Config struct {
	Client    EC2           // nil: only the cache file's answers (egressd check)
	VPC       string        // when set, only interfaces of this VPC
	CacheFile string        // the last good answers, kept across restarts; "": none
	Timeout   time.Duration // of one selector's refresh; 0: 20s
	Logger    *slog.Logger  // nil: discard
	Now       func() time.Time
}

// Answer is what EC2 said of one selector.
type Answer struct {
	Addresses []netip.Addr `json:"addresses"`
	At        time.Time    `json:"at"` // when EC2 said so
}

// Resolver holds the answers.
type Resolver struct {
	cfg     Config
	mu      sync.RWMutex
	answers map[string]Answer // by Selector.String()
}

// cacheFile is the cache file's content.
type cacheFile struct {
	Version   int               `json:"version"`
	Selectors map[string]Answer `json:"selectors"`
}

// New returns a Resolver with the cache file's answers, if it has one. A
// cache file that cannot be read is logged and left aside.
func New(cfg Config) *Resolver {
	if cfg.Timeout == 0 {
		cfg.Timeout = 20 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	r := &Resolver{cfg: cfg, answers: map[string]Answer{}}
	if cfg.CacheFile == "" {
		return r
	}
	b, err := os.ReadFile(cfg.CacheFile)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		cfg.Logger.Warn("workload sources: cannot read the cache; selectors resolve to nothing until EC2 answers", "file", cfg.CacheFile, "err", err)
	default:
		var c cacheFile
		if err := json.Unmarshal(b, &c); err != nil || c.Version != 1 {
			cfg.Logger.Warn("workload sources: the cache is not one this egressd wrote; left aside", "file", cfg.CacheFile, "err", err)
			break
		}
		for k, a := range c.Selectors {
			r.answers[k] = a
		}
	}
	return r
}

// Addresses implements policy.Sources.
func (r *Resolver) Addresses(sel policy.Selector) ([]netip.Addr, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	a, ok := r.answers[sel.String()]
	return a.Addresses, ok
}

// Answer returns the selector's answer, and whether there is one.
func (r *Resolver) Answer(sel policy.Selector) (Answer, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	a, ok := r.answers[sel.String()]
	return a, ok
}

// Refresh asks EC2 about each selector. A selector whose call fails keeps
// its last good answer; the errors are returned together. changed says
// whether any selector's addresses changed. The answers are written to the
// cache file when any call succeeded.
func (r *Resolver) Refresh(ctx context.Context, sels []policy.Selector) (changed bool, err error) {
	if r.cfg.Client == nil {
		return false, errors.New("workload sources: no EC2 client")
	}
	var errs []error
	ok := 0
	for _, s := range sels {
		addrs, err := r.describe(ctx, s)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", s, err))
			continue
		}
		ok++
		r.mu.Lock()
		old, had := r.answers[s.String()]
		if !had || !slices.Equal(old.Addresses, addrs) {
			changed = true
		}
		r.answers[s.String()] = Answer{Addresses: addrs, At: r.cfg.Now().UTC()}
		r.mu.Unlock()
	}
	if ok > 0 && r.cfg.CacheFile != "" {
		if err := r.save(); err != nil {
			errs = append(errs, fmt.Errorf("cache %s: %w", r.cfg.CacheFile, err))
		}
	}
	return changed, errors.Join(errs...)
}

// describe is one selector's DescribeNetworkInterfaces, every page.
func (r *Resolver) describe(ctx context.Context, s policy.Selector) ([]netip.Addr, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	in := &ec2.DescribeNetworkInterfacesInput{}
	if len(s.SecurityGroups) > 0 {
		in.Filters = append(in.Filters, types.Filter{Name: aws.String("group-id"), Values: s.SecurityGroups})
	}
	for _, t := range s.Tags {
		in.Filters = append(in.Filters, types.Filter{Name: aws.String("tag:" + t.Key), Values: []string{t.Value}})
	}
	if r.cfg.VPC != "" {
		in.Filters = append(in.Filters, types.Filter{Name: aws.String("vpc-id"), Values: []string{r.cfg.VPC}})
	}
	var out []netip.Addr
	pages := ec2.NewDescribeNetworkInterfacesPaginator(r.cfg.Client, in)
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		for _, ni := range page.NetworkInterfaces {
			ips := []string{aws.ToString(ni.PrivateIpAddress)}
			for _, p := range ni.PrivateIpAddresses {
				ips = append(ips, aws.ToString(p.PrivateIpAddress))
			}
			for _, ip := range ips {
				if a, err := netip.ParseAddr(ip); err == nil {
					out = append(out, a.Unmap())
				}
			}
		}
	}
	slices.SortFunc(out, func(a, b netip.Addr) int { return a.Compare(b) })
	return slices.Compact(out), nil
}

// save writes the answers beside the cache file and renames it over it.
func (r *Resolver) save() error {
	r.mu.RLock()
	c := cacheFile{Version: 1, Selectors: map[string]Answer{}}
	for k, a := range r.answers {
		c.Selectors[k] = a
	}
	r.mu.RUnlock()
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(r.cfg.CacheFile), ".sources-*.json")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), r.cfg.CacheFile)
}
