package spam

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/stages"
)

// benchMessage is a plain-text business message of about size bytes, as
// cmd/mailbench sends: a few header fields and lines of ordinary prose.
func benchMessage(size int) string {
	var b strings.Builder
	b.WriteString("From: Bench Sender <bench@sender.test>\n")
	b.WriteString("To: Bench Recipient <user@bench.test>\n")
	b.WriteString("Subject: Quarterly figures for the planning meeting\n")
	b.WriteString("Date: Mon, 02 Mar 2026 10:00:00 +0000\n")
	b.WriteString("MIME-Version: 1.0\n")
	b.WriteString("Content-Type: text/plain; charset=utf-8\n\n")
	words := []string{"budget", "travel", "review", "schedule", "office", "report", "project", "team"}
	for i := 0; b.Len() < size; i++ {
		if i%8 == 7 {
			fmt.Fprintf(&b, "Item %d: %s %s %d.%02d, see https://intranet.example.com/figures/%d\n", i, words[i%len(words)], words[(i/8)%len(words)], i*37%1000, i%100, i)
			continue
		}
		b.WriteString("Please find below the figures we discussed on Tuesday, with the notes\n")
	}
	return b.String()
}

// benchHTMLMessage is a multipart/alternative newsletter of about size
// bytes: the same text as plain and as quoted-printable HTML with links.
func benchHTMLMessage(size int) string {
	var plain, html strings.Builder
	for i := 0; plain.Len()+html.Len() < size; i++ {
		fmt.Fprintf(&plain, "Our offer number %d for the team: see https://shop.example.net/offer/%d today.\n", i, i)
		fmt.Fprintf(&html, "<p>Our offer number %d for the <b>team</b>: see <a href=3D\"https://shop.example.net/offer/%d\">the=\n offer</a> today.</p>\n", i, i)
	}
	return "From: Shop <news@shop.example.net>\nTo: user@bench.test\nSubject: This week's offers\n" +
		"Date: Mon, 02 Mar 2026 10:00:00 +0000\nMessage-ID: <1@shop.example.net>\nMIME-Version: 1.0\n" +
		"Content-Type: multipart/alternative; boundary=\"b1\"\n\n--b1\nContent-Type: text/plain; charset=utf-8\n\n" +
		plain.String() + "\n--b1\nContent-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n" +
		html.String() + "\n--b1--\n"
}

// BenchmarkSpam scores messages with the built-in rules and no backend, as
// the default chain runs it: the whole cost of one Run in the plugin
// process, past the gRPC decoding.
func BenchmarkSpam(b *testing.B) {
	f, err := New(stages.Env{}, stages.JSONConfig([]byte(`{}`)))
	if err != nil {
		b.Fatal(err)
	}
	s := f.(*Spam)
	for _, bc := range []struct {
		name string
		msg  string
	}{
		{"plain-5KiB", benchMessage(5 << 10)},
		{"plain-100KiB", benchMessage(100 << 10)},
		{"html-100KiB", benchHTMLMessage(100 << 10)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			tx := parse(b, bc.msg)
			tx.Results = []stages.Result{{Stage: "spf", Kind: "spf", Result: "pass"}}
			b.SetBytes(int64(len(bc.msg)))
			b.ReportAllocs()
			for b.Loop() {
				v, err := s.Run(context.Background(), stages.Data, tx)
				if err != nil || v.Result != "ham" {
					b.Fatalf("verdict %+v, error %v", v, err)
				}
			}
		})
	}
}
