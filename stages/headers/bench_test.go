package headers

import (
	"context"
	"net/netip"
	"testing"

	"github.com/mailgate/mailgate/stages"
)

// BenchmarkHeaders is the header rewriting of the default chain: the
// headers stage with Authentication-Results and spam headers on a typical
// header, after spf and spam, and the pipeline applying its edits.
func BenchmarkHeaders(b *testing.B) {
	f := newFilter(b, `{"authentication_results": true, "spam_headers": true}`)
	header := stages.Header{
		{Name: "Received", Value: "from mail.sender.test (mail.sender.test [192.0.2.7])\r\n\tby relay.sender.test with ESMTPS id 4Xk2; Mon, 02 Mar 2026 10:00:00 +0000"},
		{Name: "From", Value: "Bench Sender <bench@sender.test>"},
		{Name: "To", Value: "Bench Recipient <user@bench.test>"},
		{Name: "Subject", Value: "Quarterly figures for the planning meeting"},
		{Name: "Date", Value: "Mon, 02 Mar 2026 10:00:00 +0000"},
		{Name: "Message-ID", Value: "<20260302100000.4Xk2@sender.test>"},
		{Name: "MIME-Version", Value: "1.0"},
		{Name: "Content-Type", Value: "text/plain; charset=utf-8"},
	}
	results := []stages.Result{
		{Stage: "spf", Kind: "spf", Result: "pass", Reason: "spf=pass smtp.mailfrom=sender.test"},
		{Stage: "dnsbl", Kind: "dnsbl"},
		{Stage: "spam", Kind: "spam", Score: 1.5, Result: "ham", Reason: "MISSING_MID=0.5,BODY_EXCLAIM=1"},
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		tx := &stages.Transaction{
			QueueID: "0123456789ABCDEF",
			Client:  stages.Client{Addr: netip.MustParseAddr("192.0.2.7"), Helo: "mail.sender.test"},
			From:    "bench@sender.test",
			Rcpts:   []string{"user@bench.test"},
			Header:  header,
			Results: results,
		}
		v, err := f.Run(ctx, stages.Data, tx)
		if err != nil {
			b.Fatal(err)
		}
		if err := stages.ApplyEdits(tx, v.Edits); err != nil {
			b.Fatal(err)
		}
		if len(tx.Header) <= len(header) {
			b.Fatalf("no header added: %v", v.Edits)
		}
	}
}
