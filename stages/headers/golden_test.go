package headers

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/readmetest"
)

var update = flag.Bool("update", false, "rewrite the golden out.eml files")

// readMessage reads a message stored with LF line ends as the CRLF message
// it stands for.
func readMessage(t *testing.T, path string) (stages.Header, []byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b = bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n"))
	r := bufio.NewReader(bytes.NewReader(b))
	h, err := stages.ParseHeader(r)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(r)
	return h, body
}

// TestGolden runs each testdata/<case>: in.eml through the headers stage
// of config.toml, with the envelope and earlier verdicts of tx.json if
// there is one, applies the edits with the pipeline's own ApplyEdits and
// compares the result with out.eml. go test -update rewrites out.eml.
func TestGolden(t *testing.T) {
	dirs, err := filepath.Glob("testdata/*/in.eml")
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no golden cases: %v", err)
	}
	for _, in := range dirs {
		dir := filepath.Dir(in)
		t.Run(filepath.Base(dir), func(t *testing.T) {
			conf, err := os.ReadFile(filepath.Join(dir, "config.toml"))
			if err != nil {
				t.Fatal(err)
			}
			tx := &stages.Transaction{}
			if b, err := os.ReadFile(filepath.Join(dir, "tx.json")); err == nil {
				if err := json.Unmarshal(b, tx); err != nil {
					t.Fatalf("tx.json: %v", err)
				}
			}
			h, body := readMessage(t, in)
			tx.Header, tx.Body = h, stages.BytesBody(body)
			for _, st := range readmetest.Load(t, filepath.Join(dir, "config.toml"), conf, "headers", New) {
				v, err := st.Filter.Run(context.Background(), stages.Data, tx)
				if err != nil {
					t.Fatal(err)
				}
				if strings.Contains(v.Reason, "skipped") {
					t.Errorf("reason %q", v.Reason)
				}
				if err := stages.ApplyEdits(tx, v.Edits); err != nil {
					t.Fatalf("ApplyEdits: %v\nedits: %+v", err, v.Edits)
				}
			}
			var out bytes.Buffer
			tx.Header.WriteTo(&out)
			out.Write(body)
			if i := bareLineEnd(out.Bytes()); i >= 0 {
				t.Fatalf("bare CR or LF at byte %d:\n%q", i, out.Bytes())
			}
			got := bytes.ReplaceAll(out.Bytes(), []byte("\r\n"), []byte("\n"))
			golden := filepath.Join(dir, "out.eml")
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs; got:\n%s", golden, got)
			}
		})
	}
}

// bareLineEnd returns the position of the first CR not followed by LF or
// LF not preceded by CR, or -1.
func bareLineEnd(b []byte) int {
	for i, c := range b {
		if c == '\r' && (i+1 == len(b) || b[i+1] != '\n') || c == '\n' && (i == 0 || b[i-1] != '\r') {
			return i
		}
	}
	return -1
}
