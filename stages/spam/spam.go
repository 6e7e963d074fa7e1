// Package spam is the spam scorer kind: weighted rules on the decoded
// header, text and links of a message, URI blocklists looked up over DNS,
// the results of earlier stages, and optionally the score of an external
// SpamAssassin (spamd) or rspamd. It reports a score and a result word;
// the policy thresholds decide what happens to the message.
//
// The MIME walk and text extraction live here (mime.go, html.go): every
// size and depth a sender controls is bounded.
package spam

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"strconv"
	"strings"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/resolver"
)

// Spam is a configured spam scorer.
type Spam struct {
	spamScore float64
	maxText   int
	rules     []rule
	uribls    []list
	resolver  *resolver.Resolver // nil without URIBLs
	backend   backend            // nil for the native scorer alone
	weight    float64            // backend score multiplier
}

var (
	_ stages.Filter = (*Spam)(nil)
	_ stages.Closer = (*Spam)(nil)
)

// maxShownSymbols bounds the backend rule names written to the reason.
const maxShownSymbols = 20

// Info says the scorer runs at the end of DATA, reads the whole message and
// the verdicts of the stages before it, and never edits.
func (s *Spam) Info() stages.Info {
	return stages.Info{
		Kind:    "spam",
		Version: "1",
		Phases:  stages.Data,
		Needs:   stages.NeedHeader | stages.NeedBody | stages.NeedResults,
		Results: Results(),
	}
}

// Results are the result words of the kind's verdicts.
func Results() []string { return []string{"spam", "ham", "gtube"} }

// Run scores the message. The error return is for a backend that could not
// be asked, or a body that could not be read.
func (s *Spam) Run(ctx context.Context, _ stages.Phase, tx *stages.Transaction) (stages.Verdict, error) {
	var body io.Reader
	if tx.Body != nil {
		rc, err := tx.Body.Open()
		if err != nil {
			return stages.Verdict{}, fmt.Errorf("open body: %w", err)
		}
		defer rc.Close()
		body = rc
	}

	// The backend reads the message on its own: start it first so that its
	// round trip overlaps the local work.
	var bres backendResult
	var berr error
	done := make(chan struct{})
	if s.backend != nil {
		go func() {
			defer close(done)
			bres, berr = s.backend.check(ctx, tx)
		}()
	} else {
		close(done)
	}

	c := extract(tx.Header, body, s.maxText)
	m := &message{content: c, scan: newScanText(c.text, c.lower), results: tx.Results}
	var hits []hit
	isGTUBE := strings.Contains(c.text, gtube)
	if isGTUBE {
		hits = append(hits, hit{name: "GTUBE", score: gtubeScore})
	}
	for _, r := range s.rules {
		if r.score != 0 && r.match(m) {
			hits = append(hits, hit{name: r.name, score: r.score})
		}
	}
	var notes []string
	if len(s.uribls) > 0 {
		uh, skipped := s.uriblHits(ctx, uriDomains(c.uris))
		hits = append(hits, uh...)
		for _, sk := range skipped {
			slog.Warn("spam: URIBL lookup failed; list skipped", "queue_id", tx.QueueID, "list", sk)
			notes = append(notes, "skipped "+sk)
		}
	}

	<-done
	if berr != nil {
		return stages.Verdict{}, berr
	}
	if s.backend != nil {
		if bres.skipped != "" {
			notes = append(notes, bres.name+" not asked: "+bres.skipped)
		} else {
			hits = append(hits, hit{name: bres.name, score: bres.score * s.weight, detail: symbolList(bres.symbols)})
		}
	}

	var total float64
	var parts []string
	for _, h := range hits {
		total += h.score
		parts = append(parts, h.name+"="+strconv.FormatFloat(h.score, 'f', -1, 64)+h.detail)
	}
	// Rounded so that a sum of tenths reads as one in logs and headers.
	total = math.Round(total*1000) / 1000

	v := stages.Verdict{Score: total, Result: "ham", Reason: strings.Join(parts, ",")}
	switch {
	case isGTUBE:
		v.Result = "gtube"
	case total >= s.spamScore:
		v.Result = "spam"
	}
	if len(notes) > 0 {
		if v.Reason != "" {
			v.Reason += "; "
		}
		v.Reason += strings.Join(notes, "; ")
	}
	return v, nil
}

// Close releases the backend's idle connections.
func (s *Spam) Close() error {
	if c, ok := s.backend.(stages.Closer); ok {
		return c.Close()
	}
	return nil
}

// symbolList renders a backend's rule names as "[A B C]", bounded.
func symbolList(syms []string) string {
	if len(syms) == 0 {
		return ""
	}
	more := ""
	if len(syms) > maxShownSymbols {
		more = fmt.Sprintf(" +%d", len(syms)-maxShownSymbols)
		syms = syms[:maxShownSymbols]
	}
	return "[" + strings.Join(syms, " ") + more + "]"
}
