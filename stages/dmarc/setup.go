// Package dmarc checks that the RFC5322.From domain of a message is
// authenticated by an aligned SPF or DKIM pass (DMARC, RFC 7489, with the
// DMARCbis tags np, psd and t), using the results of the spf, dkim and arc
// stages before it, and reports the disposition the domain's policy asks
// for as the result word (reject, quarantine, fail, ...), which
// [stage.results] maps like every kind's. With reports = true it records
// each evaluation in the data dir and writes one aggregate report a day
// per reporting domain (RFC 7489 §7.2) for the gateway to send.
package dmarc

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"time"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/address"
	"github.com/mailgate/mailgate/stages/resolver"
)

// Config is the [stage.config] block of a dmarc stage.
type Config struct {
	// TrustedARCSealers are the forwarders (mailing lists) whose ARC
	// seal lets a DMARC failure through (RFC 8617 §7.2).
	TrustedARCSealers []string `json:"trusted_arc_sealers"`
	// Reports turns on aggregate reports (RFC 7489 §7.2).
	Reports bool `json:"reports"`
	// ReportFrom is the address reports are sent from; required with
	// reports.
	ReportFrom string `json:"report_from"`
	// OrgName is the reporting organisation's name in the reports;
	// required with reports.
	OrgName string `json:"org_name"`
	// PublicSuffixList is a public_suffix_list.dat to use instead of the
	// list built into the binary.
	PublicSuffixList string `json:"public_suffix_list"`
	// dns_timeout and cache_size, as every kind that looks names up.
	resolver.Settings
}

const defaultDNSTimeout = 3 * time.Second

// New builds a dmarc filter from its config block. With reports on, the
// daily report run starts with it and ends at Close.
func New(env stages.Env, cfg stages.Config) (stages.Filter, error) {
	f, err := build(env, cfg, time.Now, func() int { return rand.IntN(100) })
	if err != nil {
		return nil, err
	}
	if rep, ok := f.reporter.(*Reporter); ok {
		ctx, cancel := context.WithCancel(context.Background())
		f.stop = cancel
		go rep.daily(ctx, time.Now)
	}
	return f, nil
}

// build is New with the clock and the pct sampler given, and no daily run:
// tests call SendDue at the times they choose.
func build(env stages.Env, cfg stages.Config, now func() time.Time, sample func() int) (*Filter, error) {
	c := Config{Settings: resolver.Defaults(env, defaultDNSTimeout, 4096)}
	if err := cfg.Decode(&c); err != nil {
		return nil, err
	}
	f := &Filter{
		org:     PSL{},
		trusted: map[string]bool{},
		sample:  sample,
		now:     now,
	}
	for i, s := range c.TrustedARCSealers {
		d, err := address.Domain(s)
		if err != nil || d == "" || d[0] == '[' {
			return nil, &stages.ConfigError{Key: fmt.Sprintf("trusted_arc_sealers[%d]", i), Err: fmt.Errorf("unexpected %q; expect a domain name", s)}
		}
		f.trusted[d] = true
	}
	if c.PublicSuffixList != "" {
		fh, err := os.Open(c.PublicSuffixList)
		if err != nil {
			return nil, &stages.ConfigError{Key: "public_suffix_list", Err: err}
		}
		l, err := ReadList(fh)
		fh.Close()
		if err != nil {
			return nil, &stages.ConfigError{Key: "public_suffix_list", Err: err}
		}
		f.org = l
	}
	r, err := c.New(env)
	if err != nil {
		return nil, err
	}
	f.dns = r
	if c.Reports {
		rep, err := newReporter(env, c, r, f.org)
		if err != nil {
			return nil, err
		}
		f.reporter = rep
	} else if c.ReportFrom != "" || c.OrgName != "" {
		key := "report_from"
		if c.ReportFrom == "" {
			key = "org_name"
		}
		return nil, &stages.ConfigError{Key: key, Err: errors.New("set without reports = true; expect reports = true or no report keys")}
	}
	return f, nil
}
