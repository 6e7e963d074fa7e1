package policy

import (
	"fmt"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

// TestReferenceHasEveryKey: every key the loader takes (Config by
// reflection, as the loader walks it) has its Reference entry with a text,
// and Reference documents no key that is gone. The message says which
// line to write.
func TestReferenceHasEveryKey(t *testing.T) {
	seen := map[string]bool{}
	prev := "the start"
	for _, k := range Keys() {
		seen[k.Key] = true
		switch {
		case !k.Documented && k.Table:
			t.Errorf("config table %s has no reference text: add this line to Reference in policy/reference.go, after the line of %s, saying what the table is for:\n\t{%q, \"\", nil, \"What the table is for.\"},",
				k.Name, prev, k.Key)
		case !k.Documented:
			t.Errorf("config key %s (%s) has no reference text: add this line to Reference in policy/reference.go, after the line of %s:\n\t{%q, `DEFAULT`, nil, \"what it does\"},\n"+
				"with DEFAULT its default as TOML (`\"5m\"`, `1000`, `[]`), or \"\" for none, or \"(text)\" for one that depends on other keys; then go test ./policy -run TestReferenceDocs -update",
				k.Name, k.Type, prev, k.Key)
		case strings.TrimSpace(k.Text) == "":
			t.Errorf("config key %s: its line in Reference (policy/reference.go) has no text; say what it does", k.Name)
		case k.Values != nil && k.Type != "string":
			t.Errorf("config key %s: Values are for string keys, it is %s", k.Name, k.Type)
		}
		prev = strconv.Quote(k.Key)
	}
	for _, d := range Reference {
		if !seen[d.Key] {
			t.Errorf("Reference (policy/reference.go) documents %q, which Config does not have: remove its line", d.Key)
		}
	}
}

// TestReferenceDefaults: a default written as a TOML value is what the
// loader fills in, in each element of the arrays of tables too; a key
// without a default is left empty.
func TestReferenceDefaults(t *testing.T) {
	probe, err := Decode("probe.toml", []byte("[[route]]\n[[stage]]\n[[ratelimit]]\n[[policy.override]]\n[[web.user]]\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range Keys() {
		if k.Table || strings.HasPrefix(k.Default, "(") {
			continue
		}
		got := fieldAt(t, reflect.ValueOf(probe).Elem(), k.Key)
		want := reflect.New(got.Type()).Elem()
		if k.Default != "" {
			var v struct{ V toml.Primitive }
			md, err := toml.Decode("V = "+k.Default, &v)
			if err == nil {
				err = md.PrimitiveDecode(v.V, want.Addr().Interface())
			}
			if err != nil {
				t.Errorf("%s: default %s in Reference does not decode into %s: %v", k.Name, k.Default, got.Type(), err)
				continue
			}
		}
		if !sameValue(got, want) {
			t.Errorf("%s: Reference says default %s, the loader fills in %#v; fix one of them", k.Name, cmpOr(k.Default, "none"), got.Interface())
		}
	}
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// fieldAt follows a Reference path into c, taking the first element of an
// array of tables.
func fieldAt(t *testing.T, v reflect.Value, path string) reflect.Value {
	t.Helper()
	for _, name := range strings.Split(path, ".") {
		if v.Kind() == reflect.Slice {
			v = v.Index(0)
		}
		f, ok := structFields(v.Type()).find(name)
		if !ok {
			t.Fatalf("%s: no field %s in %s", path, name, v.Type())
		}
		v = v.FieldByIndex(f.index)
	}
	return v
}

// sameValue is DeepEqual, with nil and empty slices and maps the same.
func sameValue(a, b reflect.Value) bool {
	switch a.Kind() {
	case reflect.Slice, reflect.Map:
		if a.Len() == 0 && b.Len() == 0 {
			return true
		}
	}
	if a.Type() == primitiveType {
		return true // [stage.config]: the kind's
	}
	return reflect.DeepEqual(a.Interface(), b.Interface())
}

// TestReferenceValues: a key with Values refuses any other word and lists
// exactly those in its error.
func TestReferenceValues(t *testing.T) {
	setUp := map[string]string{"route.verify_rcpts_unverified": "verify_rcpts = true\n"}
	tables := map[string]Key{}
	for _, k := range Keys() {
		if k.Table {
			tables[k.Key] = k
		}
	}
	n := 0
	for _, k := range Keys() {
		if k.Values == nil {
			continue
		}
		n++
		cfg := "hostname = \"mx.example.test\"\ndata_dir = \"/tmp/x\"\n"
		parent, leaf := "", k.Key
		if i := strings.LastIndex(k.Key, "."); i >= 0 {
			parent, leaf = k.Key[:i], k.Key[i+1:]
		}
		name := k.Name
		switch p := tables[parent]; {
		case parent == "":
		case p.Type == "array of tables":
			cfg += "[[" + parent + "]]\n"
			name = strings.Replace(name, "[]", "[0]", 1)
		default:
			cfg += "[" + parent + "]\n"
		}
		cfg += setUp[k.Key] + leaf + " = \"bogus\"\n"
		_, err := ParseAll("values.toml", []byte(cfg))
		want := fmt.Sprintf("values.toml:%d: %s: unexpected \"bogus\"; expect %s", strings.Count(cfg, "\n"), name, oneOf(k.Values))
		if err == nil || !strings.Contains(err.Error()+"\n", want+"\n") {
			t.Errorf("%s = \"bogus\": want the error\n\t%s\ngot\n\t%v", k.Name, want, err)
		}
	}
	if n < 5 {
		t.Fatalf("only %d keys with Values", n)
	}
}

// TestReferenceDocs: the configuration reference in README.md is the one
// Reference makes. -update writes it.
func TestReferenceDocs(t *testing.T) {
	const file = "../README.md"
	const begin = "<!-- reference: made from policy/reference.go by go test ./policy -run TestReferenceDocs -update -->\n"
	const end = "<!-- end of reference -->\n"
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	i, j := strings.Index(doc, begin), strings.Index(doc, end)
	if i < 0 || j < i {
		t.Fatalf("%s has no %q ... %q", file, begin, end)
	}
	want := doc[:i] + begin + referenceMarkdown() + end + doc[j+len(end):]
	if want == doc {
		return
	}
	if *update {
		if err := os.WriteFile(file, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("the config reference in README.md is not the one policy/reference.go makes: run\n\tgo test ./policy -run TestReferenceDocs -update")
}

// referenceMarkdown renders Reference as one Markdown table per table of
// the config.
func referenceMarkdown() string {
	var b strings.Builder
	head := func(title, text string) {
		if title != "" {
			fmt.Fprintf(&b, "\n%s %s\n", title, text)
		}
		b.WriteString("\n| key | type | default | what |\n|---|---|---|---|\n")
	}
	head("", "")
	for _, k := range Keys() {
		if k.Table {
			name := "[" + k.Key + "]"
			if k.Type == "array of tables" {
				name = "[" + name + "]"
			}
			head("**`"+name+"`**", k.Text)
			continue
		}
		typ := k.Type
		if k.Values != nil {
			typ = "`" + strings.Join(k.Values, "`, `") + "`"
		}
		def := k.Default
		switch {
		case strings.HasPrefix(def, "("):
			def = strings.TrimSuffix(strings.TrimPrefix(def, "("), ")")
		case def != "":
			def = "`" + def + "`"
		}
		leaf := k.Key[strings.LastIndex(k.Key, ".")+1:]
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", leaf, typ, def, strings.ReplaceAll(k.Text, "|", `\|`))
	}
	b.WriteString("\n")
	return b.String()
}
