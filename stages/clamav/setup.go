package clamav

import (
	"fmt"
	"net"
	"strings"

	"github.com/mailgate/mailgate/stages"
)

// Config is the [stage.config] block of a clamav stage.
type Config struct {
	// Address is clamd's socket: "unix:/path" or "tcp:host:port"; a
	// plain "/path" or "host:port" works too.
	Address string `json:"address"`
	// MaxSize is the largest message sent to clamd. Keep it at or below
	// clamd's StreamMaxLength, or clamd refuses larger messages with an
	// error instead of scanning them.
	MaxSize stages.Size `json:"max_size"`
	// Oversize is what a message larger than MaxSize gets: "skip" (not
	// scanned, result "skipped") or "error" (a stage error: on_error
	// applies).
	Oversize string `json:"oversize"`
	// Score is added to the message's score when a virus is found.
	Score float64 `json:"score"`
	// Infected chose the action for a virus before [stage.results] did
	// (infected = "quarantine" there); it is refused with that pointer.
	Infected *string `json:"infected"`
}

const (
	// defaultAddress is where Debian's clamav-daemon listens.
	defaultAddress = "unix:/run/clamav/clamd.ctl"
	// defaultMaxSize is clamd's default StreamMaxLength, 25M in
	// clamd.conf(5), where M means MiB.
	defaultMaxSize = 25 << 20
)

// New builds a clamav filter from its config block.
func New(_ stages.Env, cfg stages.Config) (stages.Filter, error) {
	c := Config{
		Address:  defaultAddress,
		MaxSize:  defaultMaxSize,
		Oversize: "skip",
	}
	if err := cfg.Decode(&c); err != nil {
		return nil, err
	}
	if c.Infected != nil {
		return nil, stages.ReplacedByResults("infected", map[string]string{"infected": *c.Infected})
	}
	network, addr, err := parseAddress(c.Address)
	if err != nil {
		return nil, fmt.Errorf("address: %w", err)
	}
	if c.MaxSize <= 0 {
		return nil, fmt.Errorf("max_size: unexpected %d; expect a size above 0 such as \"25MiB\"", c.MaxSize)
	}
	if c.Oversize != "skip" && c.Oversize != "error" {
		return nil, fmt.Errorf("oversize: unexpected %q; expect skip or error", c.Oversize)
	}
	return &ClamAV{
		network: network,
		addr:    addr,
		maxSize: int64(c.MaxSize),
		skipBig: c.Oversize == "skip",
		score:   c.Score,
	}, nil
}

// parseAddress splits "unix:/path", "tcp:host:port", "/path" or
// "host:port" into a network and an address for net.Dial.
func parseAddress(s string) (network, addr string, err error) {
	switch {
	case strings.HasPrefix(s, "unix:"):
		network, addr = "unix", strings.TrimPrefix(s, "unix:")
	case strings.HasPrefix(s, "tcp:"):
		network, addr = "tcp", strings.TrimPrefix(s, "tcp:")
	case strings.HasPrefix(s, "/"):
		network, addr = "unix", s
	default:
		network, addr = "tcp", s
	}
	bad := fmt.Errorf("unexpected %q; expect \"unix:/run/clamav/clamd.ctl\" or \"tcp:127.0.0.1:3310\"", s)
	if network == "unix" {
		if !strings.HasPrefix(addr, "/") {
			return "", "", bad
		}
		return network, addr, nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" || port == "" {
		return "", "", bad
	}
	return network, addr, nil
}
