package policy

import (
	"errors"
	"fmt"
	"slices"
)

// CheckResults checks every result word the config maps, in [stage.results]
// and in the results of each [[policy.override]], against the words the
// kind of the stage declares (stages.Info.Results). words returns the kind
// and its words for stage i, and ok false when they are not known, which
// skips the stage: a plugin's words are known only once it runs, a
// built-in kind's before. A word the kind never reports is a typo that
// would silently never apply (fial = "reject"), so it is an error with its
// position and the nearest word the kind has.
func (c *Config) CheckResults(words func(i int) (kind string, words []string, ok bool)) error {
	v := &validator{reporter: reporter{file: c.File}}
	if c.src != nil {
		v.pos = c.src.pos
	}
	check := func(i int, k key, m map[string]string) {
		if len(m) == 0 {
			return
		}
		kind, ws, ok := words(i)
		if !ok {
			return
		}
		for _, w := range sortedKeys(m) {
			if w == "" || slices.Contains(ws, w) {
				continue // an empty word is the loader's to report
			}
			switch s := suggest(w, ws); {
			case len(ws) == 0:
				v.errorf(k.field(w), "unknown result; kind %s declares no result words, so none can be mapped", kind)
			case s != "":
				v.errorf(k.field(w), "unknown result of kind %s; did you mean %s?", kind, s)
			default:
				v.errorf(k.field(w), "unknown result of kind %s; expect %s", kind, oneOf(ws))
			}
		}
	}
	stage := map[string]int{}
	for i, st := range c.Stages {
		stage[st.Name] = i
		check(i, key{}.field("stage").index(i).field("results"), st.Results)
	}
	for j, o := range c.Policy.Overrides {
		for _, name := range sortedKeys(o.Results) {
			if i, ok := stage[name]; ok {
				check(i, key{}.field("policy").field("override").index(j).field("results").field(name), o.Results[name])
			}
		}
	}
	return v.errs.err()
}

// CheckKinds checks what is known of the stages before any plugin runs:
// that each names one of kinds, the built-in kinds with the result words
// each declares, or "plugin"; and the result words mapped for the stages
// of those kinds (see CheckResults).
func (c *Config) CheckKinds(kinds map[string][]string) error {
	names := append(sortedKeys(kinds), "plugin")
	var errs Errors
	for i, st := range c.Stages {
		if _, ok := kinds[st.Kind]; ok || st.Kind == "plugin" || st.Kind == "" {
			continue // an empty kind is the loader's to report
		}
		msg := fmt.Sprintf("unexpected %q; expect %s", st.Kind, oneOf(names))
		if s := suggest(st.Kind, names); s != "" {
			msg = fmt.Sprintf("unexpected %q; did you mean %s?", st.Kind, s)
		}
		errs = append(errs, c.StageError(i, msg, "kind"))
	}
	var more Errors
	if errors.As(c.CheckResults(func(i int) (string, []string, bool) {
		words, ok := kinds[c.Stages[i].Kind]
		return c.Stages[i].Kind, words, ok
	}), &more) {
		errs = append(errs, more...)
	}
	return errs.err()
}
