package policy

import (
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/mailgate/mailgate/stages"
)

// Load reads and validates the config file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes, fills in defaults and validates a config; file names it in
// errors. The error is an Errors listing every problem found.
func Parse(file string, data []byte) (*Config, error) {
	c, err := ParseAll(file, data)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// ParseAll is Parse for `mailgate check`, which goes on after errors to
// report every one in a run (what the kinds of the stages refuse too): it
// returns the config along with the Errors whenever data is TOML, and nil
// only when it is not. A config that came with errors must never be
// served.
func ParseAll(file string, data []byte) (*Config, error) {
	c, errs := decode(file, data)
	if c != nil {
		// A value that failed to decode left its field empty; checking that
		// field again would only report the same mistake twice.
		for _, e := range c.validate() {
			if !overlapsAny(e.Key, errs) {
				errs = append(errs, e)
			}
		}
	}
	return c, errs.err()
}

// StageError is an Error about a key of stage i, such as its kind or
// ("config", "address") a key of its [stage.config], at the key's line.
func (c *Config) StageError(i int, msg string, keys ...string) Error {
	k := key{}.field("stage").index(i)
	for _, f := range keys {
		k = k.field(f)
	}
	return Error{File: c.File, Line: c.src.line(k.dotted), Key: k.name, Msg: msg}
}

// Decode decodes a config and fills in defaults without validating it, for
// a caller that sets fields itself (data_dir, say) before calling Validate.
func Decode(file string, data []byte) (*Config, error) {
	c, errs := decode(file, data)
	if err := errs.err(); err != nil {
		return nil, err
	}
	return c, nil
}

// Position returns "file:line" of a dotted key such as
// "stage.2.config.address" (array elements count from 0), for errors found
// after loading, e.g. a plugin refusing its config. A key not written in the
// file gets the line of its table, and just the file name if none is known.
func (c *Config) Position(key string) string {
	return where(c.File, c.src.line(key))
}

// StageConfig returns the [stage.config] block of stage i for its kind to
// decode. Decode fails with positioned errors on keys the target lacks and
// on values of the wrong type; a stage without a block decodes nothing, so
// the target keeps its defaults.
func (c *Config) StageConfig(i int) stages.Config {
	return stageConfig{c: c, i: i}
}

// StageConfigJSON renders the [stage.config] block of stage i as a JSON
// object, for plugins that run out of process. No block gives {}.
func (c *Config) StageConfigJSON(i int) ([]byte, error) {
	k := stageConfigKey(i)
	if !c.src.isDefined(k.dotted) {
		return []byte("{}"), nil
	}
	c.src.mu.Lock()
	var raw any
	err := c.src.md.PrimitiveDecode(c.Stages[i].Config, &raw)
	c.src.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", c.Position(k.dotted), k.name, err)
	}
	b, err := json.Marshal(raw)
	if err != nil {
		return nil, fmt.Errorf("%s: %s: render as JSON: %w", c.Position(k.dotted), k.name, err)
	}
	return b, nil
}

var _ stages.Config = stageConfig{}

type stageConfig struct {
	c *Config
	i int
}

// Decode decodes the block the way the kind's plugin process will, from the
// JSON the engine sends it (stages.JSONConfig, matching json tags), so a
// test or a check sees exactly what the plugin sees; a refused key comes
// back with its position in the file.
func (s stageConfig) Decode(v any) error {
	b, err := s.c.StageConfigJSON(s.i)
	if err != nil {
		return err
	}
	err = stages.JSONConfig(b).Decode(v)
	var ce *stages.ConfigError
	if errors.As(err, &ce) {
		k := stageConfigKey(s.i).field(ce.Key)
		return Error{File: s.c.File, Line: s.c.src.line(k.dotted), Key: k.name, Msg: ce.Err.Error()}
	}
	return err
}

func stageConfigKey(i int) key { return key{}.field("stage").index(i).field("config") }

// source is what the loader keeps of a file after decoding.
type source struct {
	pos     positions
	defined map[string]bool // dotted keys the file sets, whether known or not

	mu sync.Mutex    // PrimitiveDecode writes to md
	md toml.MetaData // decodes [stage.config] blocks on request
}

func (s *source) line(key string) int {
	if s == nil {
		return 0
	}
	return s.pos.line(key)
}

func (s *source) isDefined(key string) bool { return s != nil && s.defined[key] }

// Error is one problem in a config file.
type Error struct {
	File string
	Line int    // 1-based; 0 if unknown
	Key  string // as users read it: stage[1].on_error; empty for syntax errors
	Msg  string
}

func (e Error) Error() string {
	s := where(e.File, e.Line)
	if e.Key != "" {
		s = join2(s, e.Key)
	}
	return join2(s, e.Msg)
}

func where(file string, line int) string {
	switch {
	case line == 0:
		return file
	case file == "": // a config that came from no file, such as an embedded one
		return "line " + strconv.Itoa(line)
	}
	return file + ":" + strconv.Itoa(line)
}

// About reports whether the error is about key, as users read it
// ("stage[1].config"), or about a key inside it.
func (e Error) About(key string) bool { return within(e.Key, key) }

func join2(a, b string) string {
	if a == "" {
		return b
	}
	return a + ": " + b
}

// Errors is every problem found in a config file, in line order.
type Errors []Error

// Error returns one problem per line.
func (e Errors) Error() string {
	lines := make([]string, len(e))
	for i, err := range e {
		lines[i] = err.Error()
	}
	return strings.Join(lines, "\n")
}

func (e Errors) Unwrap() []error {
	errs := make([]error, len(e))
	for i, err := range e {
		errs[i] = err
	}
	return errs
}

// err returns nil for no errors and otherwise the errors sorted by line;
// problems without a line (a missing key) come first.
func (e Errors) err() error {
	if len(e) == 0 {
		return nil
	}
	sort.SliceStable(e, func(i, j int) bool { return e[i].Line < e[j].Line })
	return e
}

// overlapsAny reports whether one of errs is about k, inside k or around k.
func overlapsAny(k string, errs Errors) bool {
	for _, e := range errs {
		if within(k, e.Key) || within(e.Key, k) {
			return true
		}
	}
	return false
}

// within reports whether key a is b or inside b.
func within(a, b string) bool {
	return b != "" && strings.HasPrefix(a, b) && (len(a) == len(b) || a[len(b)] == '.' || a[len(b)] == '[')
}

// key names a config value twice: as users read it (stage[1].on_error) and
// as the position index stores it (stage.1.on_error).
type key struct{ name, dotted string }

func (k key) field(f string) key {
	q := quote(f)
	return key{join(k.name, q), join(k.dotted, q)}
}

func (k key) index(i int) key {
	return key{k.name + "[" + strconv.Itoa(i) + "]", k.dotted + "." + strconv.Itoa(i)}
}

// reporter collects positioned errors.
type reporter struct {
	file string
	pos  positions
	errs Errors
}

func (r *reporter) errorf(k key, format string, args ...any) {
	r.errs = append(r.errs, Error{File: r.file, Line: r.pos.line(k.dotted), Key: k.name, Msg: fmt.Sprintf(format, args...)})
}

func decode(file string, data []byte) (*Config, Errors) {
	var top map[string]toml.Primitive
	md, err := toml.Decode(string(data), &top)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, Errors{{File: file, Line: pe.Position.Line, Msg: pe.Message}}
		}
		return nil, Errors{{File: file, Msg: err.Error()}}
	}
	c := &Config{File: file, src: &source{pos: scanPositions(string(data)), defined: map[string]bool{}, md: md}}
	d := &decoder{
		reporter: reporter{file: file, pos: c.src.pos},
		md:       &c.src.md,
		defined:  c.src.defined,
		positive: true,
	}
	d.fields(top, reflect.ValueOf(c).Elem(), key{})
	// The kind decodes its block later, but a block that is not a table
	// is wrong whatever the kind.
	for i, st := range c.Stages {
		k := stageConfigKey(i)
		if !c.src.defined[k.dotted] {
			continue
		}
		var raw any
		if err := d.md.PrimitiveDecode(st.Config, &raw); err != nil {
			d.errorf(k, "%v", err)
		} else if _, ok := raw.(map[string]any); !ok {
			d.errorf(k, "unexpected %s; expect a table", show(raw))
		}
	}
	c.setDefaults()
	return c, d.errs
}

// decoder decodes TOML values into Go values one key at a time, so that
// one bad value does not hide the others and every error has its key.
// BurntSushi/toml decodes each value (PrimitiveDecode); the decoder checks
// the type first to say what was expected, and refuses unknown keys.
type decoder struct {
	reporter
	md      *toml.MetaData
	defined map[string]bool // if not nil, records every key seen
	// positive refuses numbers of 0 and below. Every number in mailgate's own
	// schema is a count, a size, a duration or a score, and 0 in the struct
	// stands for "the default": a 0 written in the file would silently turn
	// into the default rather than what the admin asked for.
	positive bool
}

var (
	primitiveType = reflect.TypeFor[toml.Primitive]()
	durationType  = reflect.TypeFor[time.Duration]()
)

func (d *decoder) value(p toml.Primitive, rv reflect.Value, k key) {
	if d.defined != nil {
		d.defined[k.dotted] = true
	}
	if rv.Type() == primitiveType {
		rv.Set(reflect.ValueOf(p))
		return
	}
	var raw any
	if err := d.md.PrimitiveDecode(p, &raw); err != nil {
		d.errorf(k, "%v", err)
		return
	}
	switch rv.Addr().Interface().(type) {
	case toml.Unmarshaler:
		d.leaf(p, rv, k, raw)
		return
	case encoding.TextUnmarshaler:
		// A string only: BurntSushi/toml would hand the text of a number
		// over, and max_message_size = 50 would mean 50 bytes.
		if _, ok := raw.(string); !ok {
			d.mismatch(k, raw, rv.Type())
			return
		}
		d.leaf(p, rv, k, raw)
		return
	}
	switch rv.Kind() {
	case reflect.Pointer:
		if rv.IsNil() {
			rv.Set(reflect.New(rv.Type().Elem()))
		}
		d.value(p, rv.Elem(), k)
		return
	case reflect.Struct:
		if m, ok := d.table(p, raw); ok {
			d.fields(m, rv, k)
			return
		}
		d.mismatch(k, raw, rv.Type())
		return
	case reflect.Map:
		if rv.Type().Key().Kind() != reflect.String {
			break // BurntSushi/toml says what is wrong with it
		}
		m, ok := d.table(p, raw)
		if !ok {
			d.mismatch(k, raw, rv.Type())
			return
		}
		if rv.IsNil() {
			rv.Set(reflect.MakeMap(rv.Type()))
		}
		for _, name := range sortedKeys(m) {
			ev := reflect.New(rv.Type().Elem()).Elem()
			d.value(m[name], ev, k.field(name))
			rv.SetMapIndex(reflect.ValueOf(name).Convert(rv.Type().Key()), ev)
		}
		return
	case reflect.Slice:
		var elems []toml.Primitive
		if !isArray(raw) || d.md.PrimitiveDecode(p, &elems) != nil {
			d.mismatch(k, raw, rv.Type())
			return
		}
		rv.Set(reflect.MakeSlice(rv.Type(), len(elems), len(elems)))
		for i := range elems {
			d.value(elems[i], rv.Index(i), k.index(i))
		}
		return
	case reflect.Interface:
		if rv.NumMethod() == 0 {
			rv.Set(reflect.ValueOf(raw))
			return
		}
	}
	if !fits(raw, rv.Type()) {
		d.mismatch(k, raw, rv.Type())
		return
	}
	d.leaf(p, rv, k, raw)
}

// fits reports whether a TOML value has a type that decodes into t; for
// types it does not know it lets BurntSushi/toml decide.
func fits(raw any, t reflect.Type) bool {
	switch t.Kind() {
	case reflect.String:
		_, ok := raw.(string)
		return ok
	case reflect.Bool:
		_, ok := raw.(bool)
		return ok
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		// A time.Duration is "5s", as BurntSushi/toml allows, never a
		// number of nanoseconds.
		_, ok := raw.(int64)
		_, s := raw.(string)
		if t == durationType {
			return s
		}
		return ok
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, ok := raw.(int64)
		return ok && n >= 0
	case reflect.Float32, reflect.Float64:
		switch raw.(type) {
		case float64, int64:
			return true
		}
		return false
	}
	return true
}

// leaf lets BurntSushi/toml decode a value whose type has been checked.
func (d *decoder) leaf(p toml.Primitive, rv reflect.Value, k key, raw any) {
	if err := d.md.PrimitiveDecode(p, rv.Addr().Interface()); err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			d.errorf(k, "%s", pe.Message)
		} else {
			d.errorf(k, "%s", strings.TrimPrefix(err.Error(), "toml: "))
		}
		return
	}
	if !d.positive {
		return
	}
	var below bool
	switch rv.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		below = rv.Int() <= 0
	case reflect.Float32, reflect.Float64:
		below = !(rv.Float() > 0) // NaN too
	}
	if below {
		d.errorf(k, "unexpected %s; expect %s", show(raw), above0(rv.Type()))
	}
}

// table returns the keys of a TOML table.
func (d *decoder) table(p toml.Primitive, raw any) (map[string]toml.Primitive, bool) {
	if _, ok := raw.(map[string]any); !ok {
		return nil, false
	}
	var m map[string]toml.Primitive
	if err := d.md.PrimitiveDecode(p, &m); err != nil {
		return nil, false
	}
	return m, true
}

// fields decodes the keys of a table into the fields of a struct.
func (d *decoder) fields(m map[string]toml.Primitive, rv reflect.Value, k key) {
	fs := structFields(rv.Type())
	for _, name := range sortedKeys(m) {
		f, ok := fs.find(name)
		if !ok {
			if d.defined != nil {
				d.defined[k.field(name).dotted] = true
			}
			d.unknown(k.field(name), name, fs.names)
			continue
		}
		d.value(m[name], rv.FieldByIndex(f.index), k.field(name))
	}
}

func (d *decoder) unknown(k key, name string, names []string) {
	switch s := suggest(name, names); {
	case s != "":
		d.errorf(k, "unknown key; did you mean %s?", s)
	case len(names) == 0:
		d.errorf(k, "unknown key; expect no keys here")
	default:
		d.errorf(k, "unknown key; expect %s", oneOf(names))
	}
}

func (d *decoder) mismatch(k key, raw any, t reflect.Type) {
	if s, ok := raw.(string); ok && t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.String {
		d.errorf(k, "unexpected %q; expect an array of strings such as [%q]", s, s)
		return
	}
	d.errorf(k, "unexpected %s; expect %s", show(raw), describe(t))
}

type field struct {
	name   string
	index  []int
	tagged bool // named by a toml tag, so matched exactly
}

type fieldList struct {
	names []string // in struct order, for "expect a, b or c"
	list  []field
}

func (fs fieldList) find(name string) (field, bool) {
	for _, f := range fs.list {
		if f.name == name {
			return f, true
		}
	}
	// Like BurntSushi/toml, a field without a tag also matches in any case.
	for _, f := range fs.list {
		if !f.tagged && strings.EqualFold(f.name, name) {
			return f, true
		}
	}
	return field{}, false
}

// structFields lists the keys a struct type accepts, following toml tags
// and embedded structs as BurntSushi/toml does.
func structFields(t reflect.Type) fieldList {
	var fs fieldList
	var walk func(t reflect.Type, index []int)
	walk = func(t reflect.Type, index []int) {
		for i := range t.NumField() {
			sf := t.Field(i)
			tag, _, _ := strings.Cut(sf.Tag.Get("toml"), ",")
			if tag == "-" {
				continue
			}
			idx := append(append([]int(nil), index...), i)
			if sf.Anonymous && tag == "" && sf.Type.Kind() == reflect.Struct {
				walk(sf.Type, idx)
				continue
			}
			if !sf.IsExported() {
				continue
			}
			f := field{name: tag, index: idx, tagged: tag != ""}
			if tag == "" {
				f.name = sf.Name
			}
			fs.list = append(fs.list, f)
			fs.names = append(fs.names, f.name)
		}
	}
	walk(t, nil)
	return fs
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}

func isArray(raw any) bool {
	switch raw.(type) {
	case []map[string]any, []any:
		return true
	}
	return false
}

// show writes a TOML value for an error message.
func show(raw any) string {
	switch v := raw.(type) {
	case string:
		return strconv.Quote(v)
	case float64:
		switch {
		case math.IsNaN(v):
			return "nan"
		case math.IsInf(v, 1):
			return "inf"
		case math.IsInf(v, -1):
			return "-inf"
		}
		return strconv.FormatFloat(v, 'g', -1, 64)
	case map[string]any:
		return "table"
	case []map[string]any, []any:
		return "array"
	}
	return fmt.Sprint(raw)
}

// describe says what a Go type accepts, for "expect ...": stages' words,
// which give an example for durations and sizes.
func describe(t reflect.Type) string {
	if t == durationType {
		return stages.DurationExample
	}
	return stages.DescribeType(t)
}

func above0(t reflect.Type) string {
	switch t {
	case reflect.TypeFor[stages.Duration](), durationType:
		return `a duration above 0 such as "30s"`
	case reflect.TypeFor[stages.Size]():
		return `a size above 0 such as "50MB"`
	}
	return "a number above 0"
}

// oneOf lists choices as "a, b or c".
func oneOf(choices []string) string {
	if len(choices) <= 1 {
		return strings.Join(choices, "")
	}
	return strings.Join(choices[:len(choices)-1], ", ") + " or " + choices[len(choices)-1]
}

// suggest returns the choice closest to a mistyped name, if one is close
// enough to be what was meant: a quarter of the longer of the two may be
// wrong ("sofail" for "softfail" drops two of eight letters), at most 3.
func suggest(name string, choices []string) string {
	best, bestDist := "", 0
	for _, c := range choices {
		d := distance(strings.ToLower(name), strings.ToLower(c))
		if d > min(3, max(1, max(len(name), len(c))/4)) {
			continue
		}
		if best == "" || d < bestDist {
			best, bestDist = c, d
		}
	}
	return best
}

// distance is the optimal string alignment distance: edits are insertions,
// deletions, substitutions and swaps of two neighbours ("tsl" for "tls").
func distance(a, b string) int {
	prev2 := make([]int, len(b)+1)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(b)]
}

func (c *Config) setDefaults() {
	d := func(v *stages.Duration, def time.Duration) {
		if *v == 0 {
			*v = stages.Duration(def)
		}
	}
	i := func(v *int, def int) {
		if *v == 0 {
			*v = def
		}
	}
	str := func(v *string, def string) {
		if *v == "" {
			*v = def
		}
	}
	if c.Hostname == "" {
		c.Hostname, _ = os.Hostname()
	}
	s := &c.Server
	if len(s.Listen) == 0 {
		s.Listen = []string{"127.0.0.1:2525"}
	}
	if s.MaxMessageSize == 0 {
		s.MaxMessageSize = 50 * 1000 * 1000
	}
	i(&s.MaxRecipients, 1000)
	i(&s.MaxConnections, 2000)
	i(&s.MaxConnectionsPerIP, 50)
	i(&s.MaxLineLength, 16384)
	i(&s.MaxHops, 50)
	d(&s.CommandTimeout, 5*time.Minute)
	d(&s.DataTimeout, 10*time.Minute)
	d(&s.DataTotalTimeout, time.Hour)
	d(&s.FilterTimeout, 60*time.Second)
	str(&s.BareLF, "normalize")
	d(&s.PregreetGoodTTL, 24*time.Hour) // as postscreen_greet_ttl
	d(&s.PregreetBadTTL, time.Hour)
	d(&c.DNS.Timeout, 5*time.Second)
	d(&c.Quarantine.Retention, 720*time.Hour)
	d(&c.Trace.Retention, 720*time.Hour)
	// listen = "" turns the admin listener off, so only a missing key
	// gets the default.
	if !c.src.isDefined("admin.listen") {
		str(&c.Admin.Listen, "127.0.0.1:8025")
	}
	dl := &c.Delivery
	d(&dl.MaxAge, 120*time.Hour)
	d(&dl.RetryMin, time.Minute)
	d(&dl.RetryMax, time.Hour)
	d(&dl.ConnectTimeout, 30*time.Second)
	d(&dl.CommandTimeout, 5*time.Minute)
	d(&dl.IdleConnTimeout, 30*time.Second)
	i(&dl.MaxConnections, 20)
	str(&dl.BounceFrom, "MAILER-DAEMON@"+c.Hostname)
	str(&dl.HeloName, c.Hostname)
	for k := range c.Routes {
		str(&c.Routes[k].TLS, "opportunistic")
		if c.Routes[k].VerifyRcpts {
			str(&c.Routes[k].VerifyRcptsUnverified, "tempfail")
		}
	}
	for k := range c.Stages {
		st := &c.Stages[k]
		st.index = k
		str(&st.OnError, "tempfail")
		d(&st.Timeout, 10*time.Second)
	}
	for k := range c.RateLimits {
		r := &c.RateLimits[k]
		i(&r.Burst, r.Rate)
		str(&r.Count, "message")
		str(&r.Action, "defer")
		if r.Key == "client_net" {
			i(&r.IPv4Prefix, 24)
			i(&r.IPv6Prefix, 64)
		}
		// false is written to count trusted clients, so only a missing
		// key gets the default.
		if !c.src.isDefined(key{}.field("ratelimit").index(k).field("exempt_trusted").dotted) {
			r.ExemptTrusted = true
		}
	}
	p := &c.Policy
	if p.TagScore == 0 {
		p.TagScore = 5
	}
	if p.QuarantineScore == 0 {
		p.QuarantineScore = 10
	}
	if p.RejectScore == 0 {
		p.RejectScore = 15
	}
	// subject_tag = "" turns the tag off, so only a missing key gets the
	// default.
	if !c.src.isDefined("policy.subject_tag") {
		str(&p.SubjectTag, "[SPAM]")
	}
	str(&c.Log.Level, "info")
	str(&c.Log.Format, "text")
	cl := &c.Cluster
	if cl.Node == "" {
		cl.Node, _ = os.Hostname()
		cl.Node = strings.ToLower(cl.Node)
	}
	d(&cl.Timeout, 5*time.Second)
	d(&cl.ConnectTimeout, 5*time.Second)
	i(&cl.MaxConns, 10)
	d(&c.Web.SessionTTL, 12*time.Hour)
	d(&c.Web.LinkTTL, 7*24*time.Hour)
	for k := range c.Web.Users {
		str(&c.Web.Users[k].Role, "admin")
	}
	str(&c.Web.Digest.From, "quarantine@"+c.Hostname)
}
