package stages

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// ConfigError is a config value a kind refuses, with the key it is about,
// so the engine can point the admin at the line in the config file.
type ConfigError struct {
	Key string
	Err error
}

func (e *ConfigError) Error() string { return e.Key + ": " + e.Err.Error() }

func (e *ConfigError) Unwrap() error { return e.Err }

// ReplacedByResults is the error for a [stage.config] key that chose an
// action before [stage.results] was the one place that does. The old key
// is refused rather than ignored, and the error shows what to write
// instead: mappings are the result words and actions the old key meant.
//
//	infected: replaced by [stage.results]: infected = "quarantine"
func ReplacedByResults(key string, mappings map[string]string) error {
	if len(mappings) == 0 {
		return &ConfigError{Key: key, Err: errors.New("replaced by [stage.results]; remove the key")}
	}
	words := make([]string, 0, len(mappings))
	for w := range mappings {
		words = append(words, w)
	}
	slices.Sort(words)
	for i, w := range words {
		words[i] = fmt.Sprintf("%s = %q", w, mappings[w])
	}
	return &ConfigError{Key: key, Err: errors.New("replaced by [stage.results]: " + strings.Join(words, ", "))}
}

// JSONConfig is a Config held as one JSON object: the [stage.config] block
// as the engine sends it to a plugin process. Struct fields are matched by
// their json tags, which are the config key names.
func JSONConfig(object []byte) Config { return jsonConfig(object) }

type jsonConfig []byte

// Decode decodes the object into v, refusing keys v does not have. It
// decodes one key at a time so that every error names its key: encoding/json
// alone reports "unknown field" with a key but a bad duration without one.
func (c jsonConfig) Decode(v any) error {
	raw := bytes.TrimSpace(c)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return fmt.Errorf("config is not a JSON object: %w", err)
	}
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		one, err := json.Marshal(map[string]json.RawMessage{k: fields[k]})
		if err != nil {
			return &ConfigError{Key: k, Err: err}
		}
		dec := json.NewDecoder(bytes.NewReader(one))
		dec.DisallowUnknownFields()
		if err := dec.Decode(v); err != nil {
			return &ConfigError{Key: k, Err: plainError(k, err)}
		}
	}
	return nil
}

// plainError rewrites encoding/json's errors, which speak of Go types, in
// the words of a config file.
// Errors inside a nested table keep the nested key's path.
func plainError(key string, err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		msg := fmt.Sprintf("unexpected %s; expect %s", te.Value, DescribeType(te.Type))
		if te.Field != "" && te.Field != key {
			msg = te.Field + ": " + msg
		}
		return errors.New(msg)
	}
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		if name, err := strconv.Unquote(name); err == nil && name != key {
			return fmt.Errorf("unknown key %q", name)
		}
		return errors.New("unknown key")
	}
	return err
}

var textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()

// DescribeType says what a Go type accepts, for the "expect ..." of a config
// error, in the words of TOML (string, integer, array, table): the engine's
// config loader and a kind's JSONConfig both answer an admin who wrote the
// value in a TOML file, so they speak of types alike.
func DescribeType(t reflect.Type) string {
	switch t {
	case reflect.TypeFor[Duration]():
		return DurationExample
	case reflect.TypeFor[Size]():
		return SizeExample
	}
	if reflect.PointerTo(t).Implements(textUnmarshaler) {
		return "a string"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		switch t.Elem().Kind() {
		case reflect.String:
			return "an array of strings"
		case reflect.Struct, reflect.Map:
			return "an array of tables"
		}
		return "an array"
	case reflect.Struct, reflect.Map:
		return "a table"
	case reflect.Pointer:
		return DescribeType(t.Elem())
	}
	return t.String()
}
