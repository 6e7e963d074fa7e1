package policy

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

// TestREADMEReferenceHasEveryKey: README.md's configuration reference
// lists every key of mailgate's own tables, so the reference cannot miss
// a key the loader takes. [policy] is policy/README.md's.
func TestREADMEReferenceHasEveryKey(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	start := strings.Index(readme, "### Reference")
	if start < 0 {
		t.Fatal("README.md has no ### Reference")
	}
	ref := readme[start:]
	ref = ref[:strings.Index(ref[4:], "\n## ")+4]

	pol, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		doc, where string
		v          any
	}{
		{ref, "README.md", Config{}},
		{ref, "README.md", Server{}},
		{ref, "README.md", DNS{}},
		{ref, "README.md", Admin{}},
		{ref, "README.md", Delivery{}},
		{ref, "README.md", Route{}},
		{ref, "README.md", StageConfig{}},
		{ref, "README.md", RateLimit{}},
		{ref, "README.md", Log{}},
		{ref, "README.md", Retention{}},
		{ref, "README.md", Web{}},
		{ref, "README.md", WebUser{}},
		{ref, "README.md", WebDigest{}},
		{string(pol), "policy/README.md", Policy{}},
		{string(pol), "policy/README.md", Override{}},
		{string(pol), "policy/README.md", List{}},
	} {
		typ := reflect.TypeOf(c.v)
		for i := range typ.NumField() {
			key, _, _ := strings.Cut(typ.Field(i).Tag.Get("toml"), ",")
			if key == "" || key == "-" {
				continue
			}
			if sub := typ.Field(i).Type; sub.Kind() == reflect.Struct && sub.Name() != "Duration" && sub.Name() != "Size" && sub.Name() != "Primitive" {
				continue // a table: its keys are checked with its type
			}
			if sub := typ.Field(i).Type; sub.Kind() == reflect.Slice && sub.Elem().Kind() == reflect.Struct {
				continue // an array of tables, likewise
			}
			if !strings.Contains(c.doc, "`"+key+"`") {
				t.Errorf("%s does not document %s key %q", c.where, typ.Name(), key)
			}
		}
	}
}
