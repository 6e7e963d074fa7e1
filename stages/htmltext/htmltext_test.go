package htmltext

import (
	"slices"
	"testing"
)

func TestText(t *testing.T) {
	tests := []struct {
		in, text, targets string // Text without options, and with Targets
		links             []string
	}{
		{"<p>Hello,&nbsp;<b>W</b>orld</p>", "\nHello, World\n", "\nHello, World\n", nil},
		{"<head><title>T</title><style>p{}</style><script>alert('x')</script></head>visible<!-- hidden -->", "\nT\nvisible", "\nT\nvisible", nil},
		{"<SCRIPT>never closed", "", "", nil},
		{"a<br/>b<BR>c<table><tr><td>1</td><td>2</td></tr></table>", "a\nb\nc\n\n\n1\n\n2\n\n\n", "a\nb\nc\n\n\n1\n\n2\n\n\n", nil},
		{"Claim <a href=\"https://phish.example/\">your <a href=''>prize</a></a>.", "Claim your prize.", "Claim your prize [https://phish.example/].", []string{"https://phish.example/", ""}},
		{"<img src=\"http://t.example/p.gif\" onerror=\"alert(1)\"><form action=/post><iframe src=x></iframe>", "", "[image]", []string{"http://t.example/p.gif", "/post", "x"}},
		{"&lt;script&gt;alert(1)&lt;/script&gt; &amp;amp;", "<script>alert(1)</script> &amp;", "<script>alert(1)</script> &amp;", nil},
		{"  spaced \n\t out  ", "spaced out ", "spaced out ", nil},
	}
	for _, tt := range tests {
		var links []string
		text := Text(tt.in, Options{Link: func(u string) { links = append(links, u) }})
		if text != tt.text || !slices.Equal(links, tt.links) {
			t.Errorf("Text(%q) = %q, links %q; want %q, %q", tt.in, text, links, tt.text, tt.links)
		}
		if got := Text(tt.in, Options{Targets: true}); got != tt.targets {
			t.Errorf("Text(%q, Targets) = %q; want %q", tt.in, got, tt.targets)
		}
	}
}
