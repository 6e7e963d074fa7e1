//go:debug rsa1024min=0

package dkim

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The //go:debug line lets the legacy run below check the corpus's
// 512-bit signatures: crypto/rsa refuses keys under 1024 bits by default,
// as RFC 8301 does; the stage itself refuses them before crypto/rsa sees
// them.

// corpus is testdata/mail-dkim-expected.json, as far as the tests read it.
type corpus struct {
	Cases []struct {
		File          string `json:"file"`
		Expected      string `json:"expected"`
		SkippedInPerl bool   `json:"skipped_in_perl"`
		Signatures    []struct {
			Header   string   `json:"header"`
			Kind     string   `json:"kind"`
			Legacy   []string `json:"pre_rfc8301_or_legacy"`
			Expected *string  `json:"expected"`
			D        *string  `json:"d"`
		} `json:"signatures"`
	} `json:"cases"`
}

func loadCorpus(t *testing.T) corpus {
	t.Helper()
	data, err := os.ReadFile("testdata/mail-dkim-expected.json")
	if err != nil {
		t.Fatal(err)
	}
	var c corpus
	if err := json.Unmarshal(data, &c); err != nil {
		t.Fatal(err)
	}
	if len(c.Cases) != 79 {
		t.Fatalf("corpus has %d cases, want 79", len(c.Cases))
	}
	return c
}

// agrees reports whether our result is the corpus's word in RFC 8601
// terms: Mail::DKIM's "invalid" is every signature that could not be
// checked, permerror or neutral here (temperror for a DNS failure).
func agrees(corpusWord, ours string) bool {
	switch corpusWord {
	case "invalid":
		return ours == PermError || ours == Neutral || ours == TempError
	default:
		return corpusWord == ours
	}
}

func TestCorpusDump(t *testing.T) {
	c := loadCorpus(t)
	srv := serveDNSFiles(t, "testdata/mail-dkim/FAKE_DNS.dat")
	for _, mode := range []rules{{}, {legacy: true}} {
		v := newTestVerifier(t, srv, mode)
		for _, cs := range c.Cases {
			ver := verifyFile(t, v, filepath.Join("testdata", cs.File))
			i := 0
			for _, s := range cs.Signatures {
				if s.Kind != "dkim" {
					continue
				}
				exp := "null"
				if s.Expected != nil {
					exp = *s.Expected
				}
				got := &sigResult{}
				if i < len(ver.sigs) {
					got = ver.sigs[i]
				}
				i++
				mark := " "
				if s.Expected != nil && !agrees(exp, got.result) {
					mark = "X"
				}
				fmt.Printf("%v %s %-22s %-8s %-9s %-10s %s legacy=%d\n", mode.legacy, mark, filepath.Base(cs.File), exp, got.result, got.problem, strings.Join([]string{}, ""), len(s.Legacy))
			}
			_ = slices.Contains[[]string]
		}
	}
}
