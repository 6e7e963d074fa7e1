package dkim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/internal/dkimcore"
	"github.com/mailgate/mailgate/stages/resolver"
)

// Per-signature results (RFC 8601 §2.7.1).
const (
	Pass      = "pass"
	Fail      = "fail"
	Policy    = "policy"
	Neutral   = "neutral"
	TempError = "temperror"
	PermError = "permerror"
	None      = "none"
)

// sigResult is the outcome of one DKIM-Signature field.
type sigResult struct {
	result     string
	problem    string // why it did not pass; for a policy result, the unsigned tail
	domain     string // header.d
	selector   string // header.s
	identifier string // header.i, when the signature has i=
	b          string // the b= value, for header.b
}

// verifier checks the DKIM signatures of a message.
type verifier struct {
	lookup  dkimcore.TXTLookup
	maxSigs int
	rules   dkimcore.Rules
	now     func() time.Time
}

// verification is what a message's signatures gave.
type verification struct {
	sigs    []*sigResult // in header order
	skipped int          // signatures past maxSigs, not evaluated
}

// candidate is a signature that passed its own checks and whose key and
// body hash are being fetched.
type candidate struct {
	sig *signature
	key *dkimcore.Key
	res *sigResult
	bh  *dkimcore.BodyHasher
	n   int64 // the canonical body's length
}

// verify evaluates the first maxSigs DKIM-Signature fields of the message
// in header order (top first). It returns an error only when the message
// could not be read or ctx ended while reading it.
func (v *verifier) verify(ctx context.Context, h stages.Header, body stages.Body) (verification, error) {
	var out verification
	var cands []*candidate
	for _, f := range h {
		if !strings.EqualFold(f.Name, "DKIM-Signature") {
			continue
		}
		if len(out.sigs) == v.maxSigs {
			out.skipped++
			continue
		}
		s, p := parseSignature(f, v.rules, v.now())
		res := &sigResult{domain: s.domain, selector: s.selector, b: s.b}
		out.sigs = append(out.sigs, res)
		if _, ok := s.tags.Get("i"); ok {
			res.identifier = s.identifier
		}
		if p != nil {
			res.result, res.problem = p.result, p.text
			continue
		}
		cands = append(cands, &candidate{sig: s, res: res})
	}
	if len(cands) == 0 {
		return out, nil
	}

	v.fetchKeys(ctx, cands)

	// One pass over the body feeds every signature still standing: the
	// work is the body size times at most maxSigs.
	var hashers []io.Writer
	var live []*candidate
	for _, c := range cands {
		if c.key == nil {
			continue
		}
		c.bh = dkimcore.NewBodyHasher(c.sig.bodyCanon, c.sig.algorithm.Hash().New(), c.sig.length)
		hashers = append(hashers, c.bh)
		live = append(live, c)
	}
	if len(live) == 0 {
		return out, nil
	}
	if err := dkimcore.ReadBody(ctx, body, io.MultiWriter(hashers...)); err != nil {
		return out, err
	}
	for _, c := range live {
		c.n = c.bh.Close()
		v.check(c, h)
	}
	return out, nil
}

// fetchKeys looks up the key of each candidate, the distinct names at the
// same time, and records the problem of those that have none usable.
func (v *verifier) fetchKeys(ctx context.Context, cands []*candidate) {
	type answer struct {
		key *dkimcore.Key
		err error
	}
	answers := map[string]*answer{}
	var wg sync.WaitGroup
	for _, c := range cands {
		name := strings.ToLower(c.sig.selector + "._domainkey." + c.sig.domain)
		if _, ok := answers[name]; ok {
			continue
		}
		a := &answer{}
		answers[name] = a
		wg.Go(func() { a.key, a.err = v.rules.LookupKey(ctx, v.lookup, c.sig.selector, c.sig.domain) })
	}
	wg.Wait()
	for _, c := range cands {
		a := answers[strings.ToLower(c.sig.selector+"._domainkey."+c.sig.domain)]
		switch {
		case errors.Is(a.err, dkimcore.ErrNoKey) || errors.Is(a.err, resolver.ErrBadName):
			c.res.result, c.res.problem = PermError, "no key record"
		case errors.Is(a.err, resolver.ErrTemporary) || errors.Is(a.err, context.DeadlineExceeded) || errors.Is(a.err, context.Canceled):
			// RFC 6376 §6.1.2: TEMPFAIL (key unavailable).
			c.res.result, c.res.problem = TempError, "key lookup failed"
		case errors.Is(a.err, dkimcore.ErrKeyRecord):
			c.res.result, c.res.problem = PermError, a.err.Error()
		case a.err != nil:
			c.res.result, c.res.problem = TempError, "key lookup failed"
		default:
			if p := c.sig.checkKey(a.key); p != nil {
				c.res.result, c.res.problem = p.result, p.text
				continue
			}
			c.key = a.key
		}
	}
}

// check compares the body hash, hashes the signed header fields and
// verifies the signature (RFC 6376 §6.1.3).
func (v *verifier) check(c *candidate, h stages.Header) {
	s := c.sig
	if s.length > c.n {
		// The signer claims more body than there is: the body is not
		// what was signed, or the signer is broken (OpenDKIM refuses it
		// alike).
		c.res.result, c.res.problem = PermError, "the signed length is past the end of the body"
		return
	}
	if string(c.bh.Sum()) != string(s.bodyHash) {
		c.res.result, c.res.problem = Fail, "body hash did not verify"
		return
	}
	data := dkimcore.HeaderData(s.headerCanon, dkimcore.SignedFields(h, s.headers), dkimcore.BlankField(s.field, s.tags.Find("b")))
	if err := dkimcore.Verify(c.key, s.algorithm, data, s.sig); err != nil {
		c.res.result, c.res.problem = Fail, err.Error()
		return
	}
	if s.length >= 0 && c.n > s.length {
		// §8.2: content past l= is not signed; an attacker may have
		// added it. The signature is good but the message is not what
		// was signed, so it does not pass.
		c.res.result, c.res.problem = Policy, fmt.Sprintf("%d octets of the body past the signed length are not signed", c.n-s.length)
		return
	}
	c.res.result = Pass
}
