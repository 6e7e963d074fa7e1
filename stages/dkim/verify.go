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

// keyLookup fetches the TXT records of a key name: the strings of each
// record joined (RFC 6376 §3.6.2.2). It returns errNoKey when the name or
// record does not exist and an error wrapping resolver.ErrTemporary when DNS
// failed.
type keyLookup func(ctx context.Context, name string) ([]string, error)

var errNoKey = errors.New("no key record")

// verifier checks the DKIM signatures of a message.
type verifier struct {
	lookup  keyLookup
	maxSigs int
	rules   rules
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
	key *key
	res *sigResult
	bh  *bodyHasher
}

// verify evaluates the first maxSigs DKIM-Signature fields of the message
// in header order (top first). It returns an error only when the message
// could not be read or ctx ended while reading it.
func (v *verifier) verify(ctx context.Context, h stages.Header, body stages.Body) (verification, error) {
	var out verification
	fields := rawFields(h)
	var cands []*candidate
	for _, f := range fields {
		if f.name != "dkim-signature" {
			continue
		}
		if len(out.sigs) == v.maxSigs {
			out.skipped++
			continue
		}
		s, p := parseSignature(f.raw, v.rules, v.now())
		res := &sigResult{domain: s.domain, selector: s.selector, b: s.b}
		out.sigs = append(out.sigs, res)
		if _, ok := s.tags.get("i"); ok {
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
		c.bh = newBodyHasher(c.sig.bodyCanon, c.sig.hash.New(), c.sig.length)
		hashers = append(hashers, c.bh)
		live = append(live, c)
	}
	if len(live) == 0 {
		return out, nil
	}
	if err := readBody(ctx, body, io.MultiWriter(hashers...)); err != nil {
		return out, err
	}
	for _, c := range live {
		c.bh.finish()
		v.check(c, fields)
	}
	return out, nil
}

// fetchKeys looks up the key of each candidate, the distinct names at the
// same time, and records the problem of those that have none usable.
func (v *verifier) fetchKeys(ctx context.Context, cands []*candidate) {
	type answer struct {
		txts []string
		err  error
	}
	answers := map[string]*answer{}
	var wg sync.WaitGroup
	for _, c := range cands {
		name := c.sig.selector + "._domainkey." + c.sig.domain
		if _, ok := answers[strings.ToLower(name)]; ok {
			continue
		}
		a := &answer{}
		answers[strings.ToLower(name)] = a
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.txts, a.err = v.lookup(ctx, name)
		}()
	}
	wg.Wait()
	for _, c := range cands {
		a := answers[strings.ToLower(c.sig.selector+"._domainkey."+c.sig.domain)]
		switch {
		case errors.Is(a.err, resolver.ErrTemporary) || errors.Is(a.err, context.DeadlineExceeded) || errors.Is(a.err, context.Canceled):
			// RFC 6376 §6.1.2: TEMPFAIL (key unavailable).
			c.res.result, c.res.problem = TempError, "key lookup failed"
		case errors.Is(a.err, errNoKey) || errors.Is(a.err, resolver.ErrBadName):
			c.res.result, c.res.problem = PermError, "no key record"
		case a.err != nil:
			c.res.result, c.res.problem = TempError, "key lookup failed"
		case len(a.txts) == 0:
			c.res.result, c.res.problem = PermError, "no key record"
		case len(a.txts) > 1:
			// §3.6.2.2: several records give undefined results; none
			// is picked over the others.
			c.res.result, c.res.problem = PermError, "several key records"
		default:
			k, p := parseKey(a.txts[0], c.sig, v.rules)
			if p != nil {
				c.res.result, c.res.problem = p.result, p.text
				continue
			}
			c.key = k
		}
	}
}

// check compares the body hash, hashes the signed header fields and
// verifies the signature (RFC 6376 §6.1.3).
func (v *verifier) check(c *candidate, fields []rawField) {
	s := c.sig
	if s.length > c.bh.n {
		// The signer claims more body than there is: the body is not
		// what was signed, or the signer is broken (OpenDKIM refuses it
		// alike).
		c.res.result, c.res.problem = PermError, "the signed length is past the end of the body"
		return
	}
	if string(c.bh.h.Sum(nil)) != string(s.bodyHash) {
		c.res.result, c.res.problem = Fail, "body hash did not verify"
		return
	}
	hh := s.hash.New()
	pick := newPicker(fields)
	for _, name := range s.headers {
		if raw, ok := pick.next(name); ok {
			hh.Write([]byte(canonHeader(s.headerCanon, raw)))
		}
	}
	sf := canonHeader(s.headerCanon, s.withoutB())
	hh.Write([]byte(strings.TrimSuffix(sf, "\r\n")))
	if !verifySig(c.key, s.hash, hh.Sum(nil), s.sig) {
		c.res.result, c.res.problem = Fail, "signature did not verify"
		return
	}
	if s.length >= 0 && c.bh.n > s.length {
		// §8.2: content past l= is not signed; an attacker may have
		// added it. The signature is good but the message is not what
		// was signed, so it does not pass.
		c.res.result, c.res.problem = Policy, fmt.Sprintf("%d octets of the body past the signed length are not signed", c.bh.n-s.length)
		return
	}
	c.res.result = Pass
}

// readBody streams the body into w, checking ctx between chunks.
func readBody(ctx context.Context, body stages.Body, w io.Writer) error {
	if body == nil {
		return nil
	}
	r, err := body.Open()
	if err != nil {
		return fmt.Errorf("open body: %w", err)
	}
	defer r.Close()
	buf := make([]byte, 64<<10)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := r.Read(buf)
		w.Write(buf[:n])
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read body: %w", err)
		}
	}
}

// rawField is a header field as the signer saw it on the wire.
type rawField struct {
	name string // lower case, without surrounding WSP
	raw  string // "Name: value" with folding, no final CRLF
}

// rawFields is the wire form of each field (stages.Field.Raw): the bytes
// the message came with for every field no stage edited. A line the parser
// could not split (a name with WSP before the colon) is kept whole.
func rawFields(h stages.Header) []rawField {
	out := make([]rawField, 0, len(h))
	for _, f := range h {
		raw := f.Raw()
		name, _, _ := strings.Cut(raw, ":")
		out = append(out, rawField{name: strings.ToLower(strings.Trim(name, " \t")), raw: raw})
	}
	return out
}

// picker hands out the fields h= names from the bottom of the header up,
// each instance once (RFC 6376 §5.4.2). Its work is linear in the header
// and h=, whatever h= repeats.
type picker struct {
	byName map[string][]string // remaining instances, top first
}

func newPicker(fields []rawField) *picker {
	p := &picker{byName: map[string][]string{}}
	for _, f := range fields {
		p.byName[f.name] = append(p.byName[f.name], f.raw)
	}
	return p
}

func (p *picker) next(name string) (string, bool) {
	name = strings.ToLower(name)
	l := p.byName[name]
	if len(l) == 0 {
		return "", false
	}
	p.byName[name] = l[:len(l)-1]
	return l[len(l)-1], true
}
