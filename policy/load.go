package policy

import (
	"fmt"
	"os"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/mailgate/mailgate/stages"
)

// positions maps config keys to lines. (Filled in by the loader.)
type positions struct{}

// Load reads and validates the config file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes and validates a config; file names it in errors.
func Parse(file string, data []byte) (*Config, error) {
	c := &Config{File: file}
	md, err := toml.Decode(string(data), c)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if u := md.Undecoded(); len(u) > 0 {
		return nil, fmt.Errorf("%s: unknown key %s", file, u[0])
	}
	c.setDefaults()
	return c, nil
}

func (c *Config) setDefaults() {
	d := func(v *stages.Duration, def time.Duration) {
		if *v == 0 {
			*v = stages.Duration(def)
		}
	}
	i := func(v *int, def int) {
		if *v == 0 {
			*v = def
		}
	}
	if c.Hostname == "" {
		c.Hostname, _ = os.Hostname()
	}
	s := &c.Server
	if len(s.Listen) == 0 {
		s.Listen = []string{"127.0.0.1:2525"}
	}
	if s.MaxMessageSize == 0 {
		s.MaxMessageSize = 50 * 1000 * 1000
	}
	i(&s.MaxRecipients, 1000)
	i(&s.MaxConnections, 2000)
	i(&s.MaxConnectionsPerIP, 50)
	i(&s.MaxLineLength, 16384)
	i(&s.MaxHops, 50)
	d(&s.CommandTimeout, 5*time.Minute)
	d(&s.DataTimeout, 10*time.Minute)
	d(&s.FilterTimeout, 60*time.Second)
	if s.BareLF == "" {
		s.BareLF = "normalize"
	}
	d(&c.DNS.Timeout, 5*time.Second)
	dl := &c.Delivery
	d(&dl.MaxAge, 120*time.Hour)
	d(&dl.RetryMin, time.Minute)
	d(&dl.RetryMax, time.Hour)
	d(&dl.ConnectTimeout, 30*time.Second)
	d(&dl.CommandTimeout, 5*time.Minute)
	d(&dl.IdleConnTimeout, 30*time.Second)
	i(&dl.MaxConnections, 20)
	if dl.BounceFrom == "" {
		dl.BounceFrom = "MAILER-DAEMON@" + c.Hostname
	}
	if dl.HeloName == "" {
		dl.HeloName = c.Hostname
	}
	for k := range c.Routes {
		if c.Routes[k].TLS == "" {
			c.Routes[k].TLS = "opportunistic"
		}
	}
	for k := range c.Stages {
		st := &c.Stages[k]
		st.index = k
		if st.OnError == "" {
			st.OnError = "tempfail"
		}
		d(&st.Timeout, 10*time.Second)
	}
	p := &c.Policy
	if p.TagScore == 0 {
		p.TagScore = 5
	}
	if p.QuarantineScore == 0 {
		p.QuarantineScore = 10
	}
	if p.RejectScore == 0 {
		p.RejectScore = 15
	}
	if p.SubjectTag == "" {
		p.SubjectTag = "[SPAM]"
	}
}
