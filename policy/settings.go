package policy

import (
	"bytes"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/mailgate/mailgate/stages"
)

// Setting is one key of a loaded config with the value in force, as
// `mailgate config` prints it (the way postconf prints main.cf).
type Setting struct {
	// Key names it as errors do: "server.listen", "route[0].tls",
	// "stage[1].config.address".
	Key string
	// Value is the value in force, written as TOML: `"5m"`, `["a", "b"]`;
	// or, for a key whose default is decided elsewhere, that default as
	// Reference says it: "([policy]'s)".
	Value string
	// Set is true for a key the file writes; the others have their
	// default (or are empty).
	Set bool
}

// Settings lists every key of the config with its value in force, in the
// order of Reference; each element of an array of tables has all its
// keys. [stage.config] and the result mappings list the keys written.
func (c *Config) Settings() []Setting {
	var out []Setting
	var walk func(v reflect.Value, k key)
	walk = func(v reflect.Value, k key) {
		for _, f := range structFields(v.Type()).list {
			fv, fk := v.FieldByIndex(f.index), k.field(f.name)
			switch {
			case fv.Type() == primitiveType:
				if c.src.isDefined(fk.dotted) {
					var raw any
					c.src.mu.Lock()
					err := c.src.md.PrimitiveDecode(fv.Interface().(toml.Primitive), &raw)
					c.src.mu.Unlock()
					if err == nil {
						out = flatten(out, raw, fk, func(key) bool { return true })
					}
				}
			case fv.Kind() == reflect.Struct && !decodesItself(fv.Type()):
				walk(fv, fk)
			case fv.Kind() == reflect.Slice && fv.Type().Elem().Kind() == reflect.Struct:
				for i := range fv.Len() {
					walk(fv.Index(i), fk.index(i))
				}
			case fv.Kind() == reflect.Map:
				out = flatten(out, fv.Interface(), fk, func(k key) bool { return c.src.isDefined(k.dotted) })
			case fv.IsZero() && !c.src.isDefined(fk.dotted) && strings.HasPrefix(docOf(fk.dotted).Default, "("):
				// Not in the config: decided elsewhere, as the default
				// says ("([policy]'s)", "(the nameservers of
				// /etc/resolv.conf)").
				out = append(out, Setting{Key: fk.name, Value: docOf(fk.dotted).Default})
			default:
				out = append(out, Setting{Key: fk.name, Value: tomlValue(fv.Interface()), Set: c.src.isDefined(fk.dotted)})
			}
		}
	}
	walk(reflect.ValueOf(c).Elem(), key{})
	return out
}

// flatten lists the leaves of a table that policy does not know the keys
// of ([stage.config], [stage.results]) under k, in key order.
func flatten(out []Setting, v any, k key, set func(key) bool) []Setting {
	rv := reflect.ValueOf(v)
	switch {
	case rv.Kind() == reflect.Map && rv.Type().Key().Kind() == reflect.String:
		keys := make([]string, 0, rv.Len())
		for _, mk := range rv.MapKeys() {
			keys = append(keys, mk.String())
		}
		slices.Sort(keys)
		for _, name := range keys {
			out = flatten(out, rv.MapIndex(reflect.ValueOf(name).Convert(rv.Type().Key())).Interface(), k.field(name), set)
		}
		return out
	case rv.Kind() == reflect.Slice && rv.Len() > 0 && isTable(rv.Index(0).Interface()):
		for i := range rv.Len() {
			out = flatten(out, rv.Index(i).Interface(), k.index(i), set)
		}
		return out
	}
	return append(out, Setting{Key: k.name, Value: tomlValue(v), Set: set(k)})
}

func isTable(v any) bool {
	_, ok := v.(map[string]any)
	return ok
}

// tomlValue writes v as a TOML value; a duration as it would be written
// ("5m", not "5m0s").
func tomlValue(v any) string {
	if d, ok := v.(stages.Duration); ok {
		return `"` + shortDuration(time.Duration(d)) + `"`
	}
	var b bytes.Buffer
	if err := toml.NewEncoder(&b).Encode(map[string]any{"v": v}); err != nil {
		return "(" + err.Error() + ")"
	}
	s := strings.TrimSpace(b.String())
	if s == "" { // a nil slice: BurntSushi/toml writes nothing
		return "[]"
	}
	return strings.TrimPrefix(s, "v = ")
}

// shortDuration drops the zero units time.Duration.String writes: "5m",
// "1h", "720h", "1m30s".
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
