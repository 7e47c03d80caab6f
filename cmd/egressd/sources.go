package main

import (
	"context"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/egressd/egressd/pkg/policy"
	"github.com/egressd/egressd/pkg/sources"
)

// Workload sources (from: security_groups / tags): the daemon resolves
// the policy's selectors with EC2 DescribeNetworkInterfaces, through
// pkg/sources, and compiles the policy with the answers; when an answer
// changes it swaps in the policy compiled with the new one.

// newSourcesClient is the EC2 client of the instance's role, in the
// instance's region unless sources.region says otherwise.
func newSourcesClient(ctx context.Context, cfg *Config) (*ec2.Client, error) {
	opts := []func(*awsconfig.LoadOptions) error{}
	if cfg.Sources.Region != "" {
		opts = append(opts, awsconfig.WithRegion(cfg.Sources.Region))
	} else {
		opts = append(opts, awsconfig.WithEC2IMDSRegion())
	}
	ac, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("sources: AWS configuration: %w", err)
	}
	return ec2.NewFromConfig(ac, func(o *ec2.Options) {
		if cfg.Sources.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Sources.Endpoint)
		}
	}), nil
}

// ensureSources sets up the resolver the first time a policy selects
// workloads: the cache file's answers, then one refresh (bounded by its
// timeout; on failure the cache's answers stand).
func (d *daemon) ensureSources(ctx context.Context, pol *policy.Policy) error {
	sels := pol.Selectors()
	if d.sources != nil || len(sels) == 0 {
		return nil
	}
	client, err := newSourcesClient(ctx, d.cfg)
	if err != nil {
		return err
	}
	d.sources = sources.New(sources.Config{Client: client, VPC: d.cfg.Sources.VPCID, CacheFile: d.cfg.Sources.CacheFile,
		Logger: d.log.With("component", "sources")})
	if _, err := d.sources.Refresh(ctx, sels); err != nil {
		d.log.Error("workload sources: EC2 did not answer; the last good answers stand (none: those selectors match nothing)", "err", err)
	}
	if d.sourcesKick == nil {
		d.sourcesKick = make(chan struct{}, 1)
	}
	return nil
}

// withSources compiles pol with the workload sources, and logs the
// selectors that resolve to nothing.
func (d *daemon) withSources(pol *policy.Policy) *policy.Policy {
	if len(pol.Selectors()) == 0 {
		return pol
	}
	if err := d.ensureSources(d.ctx, pol); err != nil {
		d.log.Error("workload sources: cannot ask EC2; selectors match nothing", "err", err)
		return pol
	}
	if d.sourcesKick != nil {
		select {
		case d.sourcesKick <- struct{}{}:
		default:
		}
	}
	pol = pol.WithSources(d.sources)
	d.logEmptySelectors(pol)
	return pol
}

// logEmptySelectors warns of each selector that matches no source.
func (d *daemon) logEmptySelectors(pol *policy.Policy) {
	for _, u := range pol.SelectorUses() {
		if u.Count > 0 {
			continue
		}
		why := "EC2 has not answered for it yet"
		if u.Resolved {
			why = "it selects no network interface"
		}
		d.log.Warn("workload selector resolves to nothing: the rule matches no source from it", "rule", u.Rule,
			"file", u.File, "line", u.Line, "selector", u.Selector.String(), "why", why)
	}
}

// refreshSources asks EC2 again every sources.refresh (and at once for a
// new policy), and swaps in the policy compiled with the new answers when
// one changed.
func (d *daemon) refreshSources(ctx context.Context) error {
	d.reloadMu.Lock()
	every := d.cfg.Sources.Refresh // a restart key: it stays what it was at start
	d.reloadMu.Unlock()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-d.sourcesKick:
		}
		sels := d.engine.Policy().Selectors()
		changed, err := d.sources.Refresh(ctx, sels)
		if err != nil {
			d.metrics.sourcesKO.Add(1)
			d.log.Warn("workload sources: refresh failed; the last good answers stand", "err", err)
		} else {
			d.metrics.sourcesOK.Add(1)
		}
		if !changed {
			continue
		}
		d.reloadMu.Lock()
		pol := d.engine.Policy().WithSources(d.sources)
		d.setPolicy(pol)
		d.log.Info("workload sources changed: policy recompiled", "selectors", len(sels), "policy_sha256", pol.Hash())
		d.logEmptySelectors(pol)
		d.reloadMu.Unlock()
	}
}
