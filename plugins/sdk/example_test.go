package sdk_test

import (
	"context"
	"strings"

	"github.com/mailgate/mailgate/plugins/sdk"
	"github.com/mailgate/mailgate/stages"
)

// config is the stage's [stage.config] block.
type config struct {
	Score float64 `json:"score"` // added for a HELO name without a dot
}

// heloCheck scores clients whose HELO name has no dot: a mail server greets
// with its fully qualified domain name (RFC 5321 §4.1.1.1).
type heloCheck struct{ cfg config }

func newHeloCheck(_ stages.Env, c stages.Config) (stages.Filter, error) {
	cfg := config{Score: 2}
	if err := c.Decode(&cfg); err != nil { // unknown keys are errors
		return nil, err
	}
	return &heloCheck{cfg}, nil
}

func (h *heloCheck) Info() stages.Info {
	// Only the HELO phase, only the envelope: nothing else is sent.
	// Results are the words Run reports, which [stage.results] may map.
	return stages.Info{Kind: "helocheck", Version: "0.1.0", Phases: stages.Helo, Results: []string{"fqdn", "no-dot"}}
}

func (h *heloCheck) Run(_ context.Context, _ stages.Phase, tx *stages.Transaction) (stages.Verdict, error) {
	if strings.Contains(tx.Client.Helo, ".") {
		return stages.Verdict{Action: stages.Continue, Result: "fqdn"}, nil
	}
	return stages.Verdict{
		Action: stages.Tag,
		Score:  h.cfg.Score,
		Result: "no-dot",
		Reason: "HELO " + tx.Client.Helo,
	}, nil
}

// In a plugin's package main, main is this one call.
func Example() {
	sdk.Serve(newHeloCheck)
}
