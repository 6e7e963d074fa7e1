// Package dkimsign signs the mail the gateway relays out for its own
// domains with DKIM (RFC 6376; Ed25519 by RFC 8463), with the DKIM core
// the dkim and arc stages verify with (stages/internal/dkimcore): mail from a client in
// trusted_networks or an authenticated one, whose RFC5322.From domain has
// a configured key. The signature is computed over the message as the
// stage sees it and prepended as a DKIM-Signature field; the stage seals
// (stages.Info.Seals), so the pipeline runs it after every other stage and
// after the policy's own edits, and what it signed is what leaves.
package dkimsign

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"strconv"
	"strings"
	"time"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/address"
	"github.com/mailgate/mailgate/stages/internal/dkimcore"
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
	headerCanon, bodyCanon dkimcore.Canon
	now                    func() time.Time
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
		edits = append(edits, stages.Edit{Op: stages.HeaderInsert, Index: 0, Name: fieldName, Value: sig})
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
// header and body as they are written out (RFC 6376 §5): the header
// fields as Raw gives them, which are the bytes relayed.
//
// The value is folded before it is signed, so that the field hashed is
// the field that leaves, whatever the header canonicalization: tags are
// separated by "; " and the lines broken before a tag (stages.Fold), and
// the signature, the last tag, is broken into lines of its own, where
// white space is part of the b= value that verifiers delete (§3.5, b=).
func (f *Filter) sign(ctx context.Context, k key, tx *stages.Transaction) (string, error) {
	alg := dkimcore.Algorithm(k.algorithm)
	bh := dkimcore.NewBodyHasher(f.bodyCanon, alg.Hash().New(), -1)
	if err := dkimcore.ReadBody(ctx, tx.Body, bh); err != nil {
		return "", err
	}
	bh.Close()
	names := f.headerKeys(tx.Header)
	head := stages.Fold(fieldName, strings.Join([]string{
		"v=1", "a=" + k.algorithm, "c=" + string(f.headerCanon) + "/" + string(f.bodyCanon),
		"d=" + k.domain, "s=" + k.selector, "t=" + strconv.FormatInt(f.now().Unix(), 10),
		"h=" + strings.Join(names, ":"), "bh=" + base64.StdEncoding.EncodeToString(bh.Sum()), "b=",
	}, "; "))
	data := dkimcore.HeaderData(f.headerCanon, dkimcore.SignedFields(tx.Header, names), fieldName+": "+head)
	a, sig, err := dkimcore.Sign(k.signer, data)
	if err != nil {
		return "", err
	}
	if string(a) != k.algorithm {
		return "", fmt.Errorf("key %s makes %s signatures", k.file, a)
	}
	// The signature fills the line b= is on, then lines of its own. Its
	// first characters stay on b='s line: not every verifier deletes
	// white space right after the "=".
	b := base64.StdEncoding.EncodeToString(sig)
	last := fieldName + ": " + head
	if i := strings.LastIndex(last, "\r\n"); i >= 0 {
		last = last[i+2:]
	}
	n := min(len(b), max(78-len(last), 8))
	value := head + b[:n]
	for b = b[n:]; len(b) > 0; b = b[n:] {
		n = min(len(b), 77)
		value += "\r\n\t" + b[:n]
	}
	return value, nil
}

// fieldName is the name of the field the stage adds.
const fieldName = "DKIM-Signature"

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
