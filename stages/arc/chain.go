package arc

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/internal/dkimcore"
	"github.com/mailgate/mailgate/stages/resolver"
)

// The ARC header fields (RFC 8617 §4.1).
const (
	fieldAAR = "ARC-Authentication-Results"
	fieldAMS = "ARC-Message-Signature"
	fieldAS  = "ARC-Seal"
)

// Limits that bound the work one message can cause.
const (
	// maxInstances is the highest instance an ARC Set can have, and so
	// the most sets a chain can have (RFC 8617 §4.2.1: "i" is an integer
	// from 1 to 50; §5.2 step 1: more sets than that is "fail").
	maxInstances = 50
	// maxFields is the most ARC header fields a chain of 50 sets has.
	// More are refused before any is parsed, so a message with thousands
	// of them costs a count.
	maxFields = 3 * maxInstances
	// maxSignedNames bounds the names of one h= list: each is looked for
	// in the whole header.
	maxSignedNames = 128
)

// Outcome is what verifying a message's chain found.
type Outcome struct {
	CV Result
	// OldestPass is the lowest instance whose AMS still verifies, 0 when
	// all do (RFC 8617 §5.2 step 5); only for a pass.
	OldestPass int
	N          int    // the highest instance, 0 for none
	Problem    string // why the chain failed
	// FailedBefore is a chain whose newest seal says cv=fail: a hop
	// before found it failed, and no further set is added to it (RFC 8617
	// §5.1.2).
	FailedBefore bool
}

func fail(format string, args ...any) Outcome {
	return Outcome{CV: Fail, Problem: fmt.Sprintf(format, args...)}
}

// set is one ARC Set: the three fields of one instance.
type set struct {
	aar, ams, as *stages.Field
	amsTags      dkimcore.Tags
	asTags       dkimcore.Tags
}

// verifier checks chains. lookup fetches key records; the keys a message
// needs are fetched once each.
type verifier struct {
	lookup dkimcore.TXTLookup
}

// check verifies the chain of the message (RFC 8617 §5.2, with the order
// of steps 5 and 6 swapped: the seals decide the result, so they are
// checked before the optional oldest-pass, which is worked out for a
// passing chain only).
func (v *verifier) check(ctx context.Context, h stages.Header, body stages.Body) Outcome {
	sets, n, bad := collect(h)
	if bad != nil {
		return *bad
	}
	if n == 0 {
		return Outcome{CV: None}
	}
	c := &check{v: v, ctx: ctx, h: h, body: body, sets: sets, keys: map[string]keyResult{}}
	// Step 4: the newest AMS.
	if err := c.verifyAMS(n); err != nil {
		return Outcome{CV: Fail, N: n, Problem: fmt.Sprintf("ARC-Message-Signature i=%d: %v", n, err)}
	}
	// Step 6: every seal, newest first.
	for i := n; i >= 1; i-- {
		if err := c.verifyAS(i); err != nil {
			return Outcome{CV: Fail, N: n, Problem: fmt.Sprintf("ARC-Seal i=%d: %v", i, err)}
		}
	}
	// Step 5: the oldest AMS that still verifies.
	out := Outcome{CV: Pass, N: n}
	for i := n - 1; i >= 1; i-- {
		if c.verifyAMS(i) != nil {
			out.OldestPass = i + 1
			break
		}
	}
	return out
}

// collect gathers the ARC Sets of a header and checks their structure
// (RFC 8617 §5.2 steps 1 to 3). It returns the sets by instance and the
// highest instance, N (0: no ARC fields, cv=none), or the outcome of a
// chain that fails already; its N is the highest instance found, if any.
func collect(h stages.Header) ([]set, int, *Outcome) {
	failed := func(n int, format string, args ...any) ([]set, int, *Outcome) {
		o := fail(format, args...)
		o.N = n
		return nil, n, &o
	}
	// Step 1: collect the ARC Sets.
	var fields []int
	for i, f := range h {
		switch {
		case strings.EqualFold(f.Name, fieldAAR), strings.EqualFold(f.Name, fieldAMS), strings.EqualFold(f.Name, fieldAS):
			fields = append(fields, i)
			if len(fields) > maxFields {
				return failed(0, "more than %d ARC header fields (at most %d ARC Sets, RFC 8617 §4.2.1)", maxFields, maxInstances)
			}
		}
	}
	if len(fields) == 0 {
		return nil, 0, nil
	}
	sets := make([]set, maxInstances+1) // by instance; 0 unused
	n := 0
	for _, i := range fields {
		f := &h[i]
		name := canonicalName(f.Name)
		var inst int
		var err error
		var tags dkimcore.Tags
		if name == fieldAAR {
			inst, err = aarInstance(f.Value)
		} else {
			if tags, err = dkimcore.ParseTags(f.Value); err == nil {
				inst, err = tagInstance(tags)
			}
		}
		if err != nil {
			return failed(0, "%s: %v", name, err)
		}
		s := &sets[inst]
		var slot **stages.Field
		switch name {
		case fieldAAR:
			slot = &s.aar
		case fieldAMS:
			slot, s.amsTags = &s.ams, tags
		default:
			slot, s.asTags = &s.as, tags
		}
		if *slot != nil {
			return failed(0, "two %s fields with i=%d (RFC 8617 §5.2 step 3)", name, inst)
		}
		*slot = f
		n = max(n, inst)
	}

	// Step 2: the newest seal says the chain failed already.
	if top := sets[n]; top.as != nil {
		if cv, _ := top.asTags.Get("cv"); cv == "fail" {
			_, _, o := failed(n, "ARC-Seal i=%d has cv=fail (RFC 8617 §5.2 step 2)", n)
			o.FailedBefore = true
			return nil, n, o
		}
	}
	// Step 3: the structure: sets 1..N complete, cv=none at 1, pass above.
	for i := 1; i <= n; i++ {
		s := sets[i]
		switch {
		case s.aar == nil:
			return failed(n, "no %s with i=%d (RFC 8617 §5.2 step 3)", fieldAAR, i)
		case s.ams == nil:
			return failed(n, "no %s with i=%d (RFC 8617 §5.2 step 3)", fieldAMS, i)
		case s.as == nil:
			return failed(n, "no %s with i=%d (RFC 8617 §5.2 step 3)", fieldAS, i)
		}
		want := "pass"
		if i == 1 {
			want = "none"
		}
		if cv, _ := s.asTags.Get("cv"); cv != want {
			return failed(n, "ARC-Seal i=%d has cv=%q; expect %s (RFC 8617 §5.2 step 3)", i, clip(cv), want)
		}
	}
	return sets, n, nil
}

// canonicalName returns the ARC field name f matches, in its usual case.
func canonicalName(name string) string {
	for _, n := range []string{fieldAAR, fieldAMS, fieldAS} {
		if strings.EqualFold(name, n) {
			return n
		}
	}
	return name
}

// tagInstance reads the i= tag of an AMS or AS.
func tagInstance(ts dkimcore.Tags) (int, error) {
	v, ok := ts.Get("i")
	if !ok {
		return 0, errors.New("no i= tag")
	}
	return parseInstance(v)
}

// parseInstance reads an instance: 1 to 50 (RFC 8617 §4.2.1), digits only.
// Long digit strings are refused before conversion.
func parseInstance(v string) (int, error) {
	if v == "" || len(v) > 2 || strings.Trim(v, "0123456789") != "" {
		return 0, fmt.Errorf("i=%q; expect an instance from 1 to %d", clip(v), maxInstances)
	}
	n, _ := strconv.Atoi(v)
	if n < 1 || n > maxInstances {
		return 0, fmt.Errorf("i=%d; expect an instance from 1 to %d", n, maxInstances)
	}
	return n, nil
}

// aarInstance reads the instance an ARC-Authentication-Results starts with
// (RFC 8617 §4.1.1):
//
//	arc-info = instance [CFWS] ";" authres-payload
//	instance = [CFWS] %s"i" [CFWS] "=" [CFWS] 1*2DIGIT
//
// Comments are not read: no sealer writes them there.
func aarInstance(v string) (int, error) {
	s := strings.TrimLeft(unfoldWS(v), " ")
	rest, ok := strings.CutPrefix(s, "i")
	if !ok {
		return 0, errors.New("does not start with i=")
	}
	rest, ok = strings.CutPrefix(strings.TrimLeft(rest, " "), "=")
	if !ok {
		return 0, errors.New("does not start with i=")
	}
	num, _, ok := strings.Cut(rest, ";")
	if !ok {
		return 0, errors.New("no ';' after the instance")
	}
	return parseInstance(strings.Trim(num, " "))
}

// unfoldWS unfolds v and makes every tab a space.
func unfoldWS(v string) string {
	v = strings.ReplaceAll(v, "\r\n", "")
	return strings.ReplaceAll(v, "\t", " ")
}

// check is the verification of one message's chain.
type check struct {
	v    *verifier
	ctx  context.Context
	h    stages.Header
	body stages.Body
	sets []set
	keys map[string]keyResult
	// bodyHashes holds the body hash of each canonicalization computed,
	// with the canonicalized length: at most two passes over the body.
	bodyHashes map[dkimcore.Canon]bodyHash
}

type keyResult struct {
	key *dkimcore.Key
	err error
}

type bodyHash struct {
	sum   []byte
	total int64
	err   error
}

// sigTags are the tags both AMS and AS need, read and checked.
type sigTags struct {
	alg     dkimcore.Algorithm
	sig     []byte
	d, s    string
	hasTime bool
}

func readSigTags(ts dkimcore.Tags) (sigTags, error) {
	var st sigTags
	for _, name := range []string{"a", "b", "d", "s"} {
		if _, ok := ts.Get(name); !ok {
			return st, fmt.Errorf("no %s= tag", name)
		}
	}
	a, _ := ts.Get("a")
	alg, err := dkimcore.Rules{}.ParseAlgorithm(a)
	if err != nil {
		return st, fmt.Errorf("a=: %w", err)
	}
	st.alg = alg
	b, _ := ts.Get("b")
	if st.sig, err = decode64(b); err != nil {
		return st, fmt.Errorf("b=: %w", err)
	}
	st.d, _ = ts.Get("d")
	if !dkimcore.ValidDomain(st.d) {
		return st, fmt.Errorf("d=%q is not a domain name", clip(st.d))
	}
	st.s, _ = ts.Get("s")
	if !dkimcore.ValidDomain(st.s) {
		return st, fmt.Errorf("s=%q is not a selector", clip(st.s))
	}
	// t= is optional; when present it is a number of seconds (RFC 6376
	// §3.5: 1*12DIGIT).
	if t, ok := ts.Get("t"); ok {
		if t == "" || len(t) > 12 || strings.Trim(t, "0123456789") != "" {
			return st, fmt.Errorf("t=%q is not a time", clip(t))
		}
	}
	return st, nil
}

func decode64(v string) ([]byte, error) {
	v = dkimcore.StripFWS(v)
	if v == "" {
		return nil, errors.New("empty")
	}
	b, err := base64.StdEncoding.DecodeString(v)
	if err != nil {
		return nil, errors.New("not base64")
	}
	return b, nil
}

// key returns the key of selector s in domain d, fetched once.
func (c *check) key(s, d string) (*dkimcore.Key, error) {
	id := strings.ToLower(s + "._domainkey." + d)
	if r, ok := c.keys[id]; ok {
		return r.key, r.err
	}
	k, err := dkimcore.Rules{}.LookupKey(c.ctx, c.v.lookup, s, d)
	if err != nil {
		switch {
		case errors.Is(err, resolver.ErrTemporary), c.ctx.Err() != nil:
			err = fmt.Errorf("key %s: temporary DNS failure", id)
		case errors.Is(err, resolver.ErrBadName):
			err = fmt.Errorf("key %s: not a DNS name", clip(id))
		}
	}
	c.keys[id] = keyResult{k, err}
	return k, err
}

// verifyAMS checks the ARC-Message-Signature of instance i: a DKIM
// signature without v= (RFC 8617 §4.1.2) that must not sign ARC-Seal
// fields.
func (c *check) verifyAMS(i int) error {
	s := c.sets[i]
	st, err := readSigTags(s.amsTags)
	if err != nil {
		return err
	}
	hv, ok := s.amsTags.Get("h")
	if !ok {
		return errors.New("no h= tag")
	}
	names := dkimcore.SplitList(hv)
	if len(names) > maxSignedNames {
		return fmt.Errorf("h= names %d fields; at most %d are accepted", len(names), maxSignedNames)
	}
	for _, n := range names {
		if strings.EqualFold(n, fieldAS) {
			// RFC 8617 §4.1.2: ARC-Seal fields MUST NOT be in h=.
			return errors.New("h= includes ARC-Seal")
		}
	}
	hc, bc := dkimcore.Simple, dkimcore.Simple
	if cv, ok := s.amsTags.Get("c"); ok {
		if hc, bc, err = dkimcore.ParseCanon(cv); err != nil {
			return fmt.Errorf("c=: %w", err)
		}
	}
	bhv, ok := s.amsTags.Get("bh")
	if !ok {
		return errors.New("no bh= tag")
	}
	bh, err := decode64(bhv)
	if err != nil {
		return fmt.Errorf("bh=: %w", err)
	}
	length := int64(-1)
	if l, ok := s.amsTags.Get("l"); ok {
		if l == "" || len(l) > 18 || strings.Trim(l, "0123456789") != "" {
			return fmt.Errorf("l=%q is not a length", clip(l))
		}
		length, _ = strconv.ParseInt(l, 10, 64)
	}
	got := c.bodyHash(bc)
	if got.err != nil {
		return got.err
	}
	if length >= 0 && length != got.total {
		// RFC 6376 §8.2: content past l= is unsigned. An ARC hop that
		// vouches for part of a body vouches for nothing we can show.
		return fmt.Errorf("l=%d does not cover the body (%d bytes)", length, got.total)
	}
	if string(bh) != string(got.sum) {
		return errors.New("body hash does not match")
	}

	return c.verifySig(st, dkimcore.HeaderData(hc, dkimcore.SignedFields(c.h, names), dkimcore.BlankField(*s.ams, s.amsTags.Find("b"))))
}

// verifyAS checks the ARC-Seal of instance i: its signature covers the
// sets 1..i, each as AAR, AMS, AS, with relaxed header canonicalization
// and its own b= blank (RFC 8617 §5.1.1). An AS has no h= (§4.1.3).
func (c *check) verifyAS(i int) error {
	s := c.sets[i]
	if _, ok := s.asTags.Get("h"); ok {
		return errors.New("has an h= tag, which an ARC-Seal must not have (RFC 8617 §4.1.3)")
	}
	st, err := readSigTags(s.asTags)
	if err != nil {
		return err
	}
	var fields []stages.Field
	for j := 1; j <= i; j++ {
		sj := c.sets[j]
		fields = append(fields, *sj.aar, *sj.ams)
		if j < i {
			fields = append(fields, *sj.as)
		}
	}
	return c.verifySig(st, dkimcore.HeaderData(dkimcore.Relaxed, fields, dkimcore.BlankField(*s.as, s.asTags.Find("b"))))
}

func (c *check) verifySig(st sigTags, data []byte) error {
	k, err := c.key(st.s, st.d)
	if err != nil {
		return err
	}
	if err := dkimcore.Verify(k, st.alg, data, st.sig); err != nil {
		return fmt.Errorf("d=%s s=%s: %w", st.d, st.s, err)
	}
	return nil
}

// bodyHash hashes the body in canonicalization bc, once per message.
func (c *check) bodyHash(bc dkimcore.Canon) bodyHash {
	if r, ok := c.bodyHashes[bc]; ok {
		return r
	}
	if c.bodyHashes == nil {
		c.bodyHashes = map[dkimcore.Canon]bodyHash{}
	}
	r := hashBody(c.ctx, c.body, bc)
	c.bodyHashes[bc] = r
	return r
}

func hashBody(ctx context.Context, body stages.Body, bc dkimcore.Canon) bodyHash {
	h := sha256.New()
	bw := dkimcore.NewBodyHasher(bc, h, -1)
	if err := dkimcore.ReadBody(ctx, body, bw); err != nil {
		return bodyHash{err: err}
	}
	total := bw.Close()
	return bodyHash{sum: h.Sum(nil), total: total}
}

// clip shortens text from the message quoted in a problem.
func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}
