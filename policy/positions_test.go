package policy

import (
	"testing"

	"github.com/BurntSushi/toml"
)

// scanSrc has every form of key and value the scanner must step through.
const scanSrc = `# comment [not.a.table]
top = 1
"quoted.key" = 2
'literal' = 3
dotted.inner.leaf = "x" # trailing comment with = sign
text = """
[fake]
fake = 1
"""
lit = '''
[[fake]]'''
arr = [
  "a", # a comment ]
  [1, 2],
  { k = "v" },
]

[server]
listen = ["0.0.0.0:25"]
  [server . "sub table"]
  x = "it's"

[[stage]]
name = "first"
[stage.config]
address = "a"

[[stage]]
name = "second"
config = { address = "b", nested = { deep = 1 } }
[[stage.hook]]
on = "data"
[[stage.hook]]
on = "rcpt"

[policy]
"esc\u0041ped" = 1
`

func TestScanPositions(t *testing.T) {
	if _, err := toml.Decode(scanSrc, new(map[string]any)); err != nil {
		t.Fatalf("the test input is not TOML: %v", err)
	}
	pos := scanPositions(scanSrc)
	tests := []struct {
		key  string
		line int
	}{
		{"top", 2},
		{`"quoted.key"`, 3},
		{"literal", 4},
		{"dotted", 5},
		{"dotted.inner.leaf", 5},
		{"text", 6},
		{"lit", 10},
		{"arr", 12},
		{"arr.0", 13},
		{"arr.1", 14},
		{"arr.1.1", 14},
		{"arr.2", 15},
		{"arr.2.k", 15},
		{"server", 18},
		{"server.listen.0", 19},
		{`server."sub table"`, 20},
		{`server."sub table".x`, 21},
		{"stage", 23},
		{"stage.0", 23},
		{"stage.0.name", 24},
		{"stage.0.config", 25},
		{"stage.0.config.address", 26},
		{"stage.1", 28},
		{"stage.1.config.address", 30},
		{"stage.1.config.nested.deep", 30},
		{"stage.1.hook.0", 31},
		{"stage.1.hook.1.on", 34},
		{"policy.escAped", 37},
	}
	for _, tt := range tests {
		if got, ok := pos[tt.key]; !ok || got != tt.line {
			t.Errorf("line of %s = %d (found %v), want %d", tt.key, got, ok, tt.line)
		}
	}
	for _, fake := range []string{"fake", "server.fake", "stage.1.fake"} {
		if n, ok := pos[fake]; ok {
			t.Errorf("found %s on line %d, inside a string", fake, n)
		}
	}
	if got := pos.line("stage.1.hook.1.missing"); got != 33 {
		t.Errorf("a missing key is on line %d, want its table's line 33", got)
	}
}

func TestScanPositionsCRLF(t *testing.T) {
	pos := scanPositions("a = 1\r\n[t]\r\nb = \"\"\"x\r\ny\"\"\"\r\nc = 2\r\n")
	for key, line := range map[string]int{"a": 1, "t": 2, "t.b": 3, "t.c": 5} {
		if pos[key] != line {
			t.Errorf("line of %s = %d, want %d", key, pos[key], line)
		}
	}
}
