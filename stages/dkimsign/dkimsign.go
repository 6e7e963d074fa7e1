// Package dkimsign signs the mail the gateway relays out for its own
// domains with DKIM (RFC 6376; Ed25519 by RFC 8463): mail from a client in
// trusted_networks or an authenticated one, whose RFC5322.From domain has
// a configured key. The signature is computed over the message as the
// stage sees it and prepended as a DKIM-Signature field; the stage seals
// (stages.Info.Seals), so the pipeline runs it after every other stage and
// after the policy's own edits, and what it signed is what leaves.
package dkimsign

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"strings"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/address"
)

// Result words.
const (
	Signed  = "signed"  // one signature per key of the domain added
	Skipped = "skipped" // not relayed out: the client is neither trusted nor authenticated
	NoKey   = "nokey"   // relayed out, but no key for the From domain, or no single From address to take it from
)

// Results are the result words of the kind's verdicts.
func Results() []string { return []string{Signed, Skipped, NoKey} }

// Filter is one configured dkim-sign stage.
type Filter struct {
	keys                   map[string][]key // by domain, in config order
	headers                []string
	oversign               []string // lower case
	headerCanon, bodyCanon dkim.Canonicalization
}

var _ stages.Filter = (*Filter)(nil)

// Info declares the data phase, the whole message, edits and sealing.
func (f *Filter) Info() stages.Info {
	return stages.Info{
		Kind:    "dkim-sign",
		Version: "1",
		Phases:  stages.Data,
		Needs:   stages.NeedHeader | stages.NeedBody,
		Edits:   true,
		Seals:   true,
		Results: Results(),
	}
}

// Run signs the message when it goes out for one of our domains. The
// verdict is always continue; a signature that cannot be made (the body
// unreadable) is a stage error, so on_error decides whether the message
// leaves unsigned.
func (f *Filter) Run(ctx context.Context, _ stages.Phase, tx *stages.Transaction) (stages.Verdict, error) {
	if !tx.Client.Trusted && tx.Client.AuthUser == "" {
		return stages.Verdict{Result: Skipped, Reason: "client neither in trusted_networks nor authenticated"}, nil
	}
	from, err := fromDomain(tx.Header)
	if err != nil {
		return stages.Verdict{Result: NoKey, Reason: err.Error()}, nil
	}
	d, keys := f.lookup(from)
	if keys == nil {
		return stages.Verdict{Result: NoKey, Reason: "no key for header.from=" + from}, nil
	}
	var (
		edits   []stages.Edit
		reasons []string
	)
	for _, k := range keys {
		sig, err := f.sign(ctx, k, tx)
		if err != nil {
			return stages.Verdict{}, fmt.Errorf("sign d=%s s=%s a=%s: %w", k.domain, k.selector, k.algorithm, err)
		}
		// Each signature goes on top; neither signs the other, since
		// DKIM-Signature is not among the signed fields.
		edits = append(edits, stages.Edit{Op: stages.HeaderInsert, Index: 0, Name: "DKIM-Signature", Value: sig})
		reasons = append(reasons, fmt.Sprintf("header.d=%s header.s=%s header.a=%s", k.domain, k.selector, k.algorithm))
	}
	reason := strings.Join(reasons, "; ")
	if d != from {
		reason += " (for header.from=" + from + ")"
	}
	return stages.Verdict{Result: Signed, Reason: reason, Edits: edits}, nil
}

// lookup returns the keys for domain d: its own, or else those of its
// nearest parent that has keys. A parent's signature aligns with the From
// domain under DMARC's relaxed alignment (RFC 7489 §3.1.1), the default,
// so mail from sales.example.test passes DMARC with example.test's key.
func (f *Filter) lookup(d string) (string, []key) {
	for {
		if ks := f.keys[d]; ks != nil {
			return d, ks
		}
		_, parent, ok := strings.Cut(d, ".")
		if !ok || !strings.Contains(parent, ".") {
			return "", nil // never a key of a top-level domain alone
		}
		d = parent
	}
}

// sign returns the value of the DKIM-Signature field key k makes over tx's
// header and body as they are written out.
func (f *Filter) sign(ctx context.Context, k key, tx *stages.Transaction) (string, error) {
	s, err := dkim.NewSigner(&dkim.SignOptions{
		Domain:                 k.domain,
		Selector:               k.selector,
		Signer:                 k.signer,
		HeaderCanonicalization: f.headerCanon,
		BodyCanonicalization:   f.bodyCanon,
		HeaderKeys:             f.headerKeys(tx.Header),
	})
	if err != nil {
		return "", err
	}
	defer s.Close()
	if _, err := tx.Header.WriteTo(s); err != nil {
		return "", err
	}
	if tx.Body != nil {
		body, err := tx.Body.Open()
		if err != nil {
			return "", fmt.Errorf("open body: %w", err)
		}
		defer body.Close()
		if _, err := io.Copy(s, ctxReader{ctx, body}); err != nil {
			return "", fmt.Errorf("read body: %w", err)
		}
	}
	if err := s.Close(); err != nil {
		return "", err
	}
	// go-msgauth folds the field already; the edit keeps that folding,
	// so even simple header canonicalization sees the bytes signed.
	name, value, _ := strings.Cut(strings.TrimRight(s.Signature(), "\r\n"), ":")
	if !strings.EqualFold(name, "DKIM-Signature") {
		return "", fmt.Errorf("unexpected signature field %q", name)
	}
	return strings.TrimLeft(value, " "), nil
}

// headerKeys lists the fields to sign (h=): each configured field as often
// as the message has it, and an oversigned one once more, so that a
// verifier counts one more instance (the "null" one) than there is and a
// field added later breaks the signature (RFC 6376 §5.4.2, §8.15).
func (f *Filter) headerKeys(h stages.Header) []string {
	count := map[string]int{}
	for _, fl := range h {
		count[strings.ToLower(fl.Name)]++
	}
	var keys []string
	for _, name := range f.headers {
		n := count[strings.ToLower(name)]
		for _, o := range f.oversign {
			if o == strings.ToLower(name) {
				n++
			}
		}
		for range n {
			keys = append(keys, name)
		}
	}
	return keys
}

// fromDomain returns the domain of the message's author: the one address
// of the one From field (RFC 5322 §3.6.2), in the canonical form of
// package address. DMARC judges by that domain too (RFC 7489 §6.6.1); a
// message with several From fields or addresses is not signed.
func fromDomain(h stages.Header) (string, error) {
	froms := h.Values("From")
	switch len(froms) {
	case 0:
		return "", errors.New("no From field")
	case 1:
	default:
		return "", fmt.Errorf("%d From fields", len(froms))
	}
	// An encoded display name in an unknown charset is still a name:
	// only the address matters here.
	p := mail.AddressParser{WordDecoder: &mime.WordDecoder{CharsetReader: func(_ string, r io.Reader) (io.Reader, error) { return r, nil }}}
	addrs, err := p.ParseList(froms[0])
	if err != nil {
		return "", fmt.Errorf("From field not parsable: %v", err)
	}
	if len(addrs) != 1 {
		return "", fmt.Errorf("From field with %d addresses", len(addrs))
	}
	_, d, ok := address.Split(addrs[0].Address)
	if !ok {
		return "", fmt.Errorf("From address %q has no domain", addrs[0].Address)
	}
	dom, err := address.Domain(d)
	if err != nil {
		return "", fmt.Errorf("From domain %q: %v", d, err)
	}
	return dom, nil
}

// ctxReader stops a long body read when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, context.Cause(c.ctx)
	}
	return c.r.Read(p)
}
