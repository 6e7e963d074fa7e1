package spam

import (
	"bufio"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/mailgate/mailgate/stages"
)

// extractMsg runs the extractor on a message written with \n line ends.
func extractMsg(t testing.TB, msg string, maxText int) *content {
	tx := parse(t, msg)
	body, _ := tx.Body.Open()
	return extract(tx.Header, body, maxText)
}

func TestExtract(t *testing.T) {
	tests := []struct {
		name      string
		msg       string
		text      string
		uris      []string
		plain     bool
		html      bool
		malformed bool
	}{
		{
			name: "no MIME at all", msg: "Subject: x\n\nhello http://a.example/x.\n",
			text: "hello http://a.example/x.\n\n", uris: []string{"http://a.example/x"}, plain: true,
		},
		{
			name: "alternative with windows-1252 QP and HTML entities",
			msg: `Content-Type: multipart/alternative; boundary="=_b"

--=_b
Content-Type: text/plain; charset=windows-1252
Content-Transfer-Encoding: quoted-printable

caf=E9 =80 www.shop.example
--=_b
Content-Type: text/html; charset=utf-8

<html><body><p>caf&eacute; &euro;<br>see <a href='https://x.example/p?a=1&amp;b=2'>here</a>
<img src="//cdn.example/i.png"></p></body></html>
--=_b--
`,
			text:  "café € www.shop.example\n\ncafé €\nsee here \n\n",
			uris:  []string{"http://www.shop.example", "https://x.example/p?a=1&b=2", "http://cdn.example/i.png"},
			plain: true, html: true,
		},
		{
			name: "digest parts default to message/rfc822",
			msg: `Content-Type: multipart/digest; boundary=d

--d

Subject: one

first
--d--
`,
			text: "first\n", plain: true,
		},
		{
			name: "non-text parts are not read",
			msg: `Content-Type: multipart/mixed; boundary=m

--m
Content-Type: application/octet-stream
Content-Transfer-Encoding: base64

aGVsbG8gaHR0cDovL2hpZGRlbi5leGFtcGxlLw==
--m
Content-Type: image/png

PNG
--m--
`,
		},
		{
			name: "broken Content-Type still finds the boundary",
			msg: `Content-Type: multipart/mixed; boundary="x"; junk

--x
Content-Type: text/plain

inside
--x--
`,
			text: "inside\n", plain: true, malformed: true,
		},
		{
			name: "multipart without a boundary", msg: "Content-Type: multipart/mixed\n\nbody\n", malformed: true,
		},
		{
			name: "unterminated multipart keeps what it read",
			msg: `Content-Type: multipart/mixed; boundary=u

--u
Content-Type: text/plain

kept
`,
			text: "kept\n", plain: true, malformed: true,
		},
		{
			name: "base64 with junk between the lines",
			msg: `Content-Type: text/plain
Content-Transfer-Encoding: BASE64

aGVs bG8g
!!d29y
bGQ=
`,
			text: "hello world\n", plain: true,
		},
		{
			name: "unknown charset is read as it is",
			msg:  "Content-Type: text/plain; charset=x-klingon\n\nqapla\xff\n",
			text: "qapla\uFFFD\n\n", plain: true,
		},
		{
			name: "header line without a colon",
			msg:  "Subject: x\nnot a field\n\nbody\n",
			text: "body\n\n", plain: true, malformed: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := extractMsg(t, tt.msg, 1<<20)
			if c.text != tt.text {
				t.Errorf("text %q; want %q", c.text, tt.text)
			}
			if !slices.Equal(c.uris, tt.uris) {
				t.Errorf("uris %q; want %q", c.uris, tt.uris)
			}
			if c.plain != tt.plain || c.html != tt.html || c.malformed != tt.malformed {
				t.Errorf("plain %v html %v malformed %v; want %v %v %v", c.plain, c.html, c.malformed, tt.plain, tt.html, tt.malformed)
			}
		})
	}
}

func TestExtractHeader(t *testing.T) {
	c := extractMsg(t, "Subject: =?utf-8?q?caf=C3=A9?= =?utf-8?b?wqE=?=\n\tmore\nX-Bad: =?x-unknown?q?a?=\nX-8bit: gr\xfc\xdf\n\n", 1<<20)
	want := []field{
		{"Subject", "café¡\tmore", "=?utf-8?q?caf=C3=A9?= =?utf-8?b?wqE=?=\tmore"},
		{"X-Bad", "=?x-unknown?q?a?=", "=?x-unknown?q?a?="},
		{"X-8bit", "gr\uFFFD", "gr\xfc\xdf"},
	}
	if !slices.Equal(c.header, want) {
		t.Errorf("header %q; want %q", c.header, want)
	}
}

// TestBounds checks that a hostile shape costs bounded work and keeps what
// is within the bounds.
func TestBounds(t *testing.T) {
	// Nesting deeper than maxDepth.
	var b strings.Builder
	for i := range maxDepth + 5 {
		b.WriteString("Content-Type: multipart/mixed; boundary=b" + strconv.Itoa(i) + "\n\n--b" + strconv.Itoa(i) + "\n")
	}
	b.WriteString("Content-Type: text/plain\n\ndeep\n")
	c := extractMsg(t, b.String(), 1<<20)
	if !c.malformed || strings.Contains(c.text, "deep") {
		t.Errorf("nesting beyond %d: malformed %v, text %q", maxDepth, c.malformed, c.text)
	}

	// More parts than maxParts.
	b.Reset()
	b.WriteString("Content-Type: multipart/mixed; boundary=p\n\n")
	for i := range maxParts + 10 {
		b.WriteString("--p\nContent-Type: text/plain\n\npart" + strconv.Itoa(i) + "\n")
	}
	b.WriteString("--p--\n")
	c = extractMsg(t, b.String(), 1<<20)
	if !strings.Contains(c.text, "part"+strconv.Itoa(maxParts-2)) || strings.Contains(c.text, "part"+strconv.Itoa(maxParts)) {
		t.Errorf("parts beyond %d were read: %d bytes of text", maxParts, len(c.text))
	}

	// The text budget.
	c = extractMsg(t, "Subject: x\n\n"+strings.Repeat("spam ", 1000)+gtube+"\n", 100)
	if len(c.text) > 101 || strings.Contains(c.text, "GTUBE") {
		t.Errorf("text budget 100: %d bytes", len(c.text))
	}

	// URLs.
	c = extractMsg(t, "Subject: x\n\n"+strings.Repeat("http://a.example/"+strings.Repeat("x", 3000)+" ", 3)+
		strings.Repeat("http://b.example/ ", 10), 1<<20)
	if len(c.uris) != 2 || len(c.uris[0]) != maxURILen {
		t.Errorf("uris: %d, first %d bytes; want 2, cut to %d", len(c.uris), len(c.uris[0]), maxURILen)
	}
}

func TestHTMLText(t *testing.T) {
	tests := []struct {
		in, text string
		links    []string
	}{
		{"<p>Hello,&nbsp;<b>W</b>orld</p>", "\nHello, World\n", nil},
		{"<style>p{}</style><script>alert('x')</script>visible<!-- hidden -->", "visible", nil},
		{"<SCRIPT>never closed", "", nil},
		{"a<br/>b<BR>c", "a\nb\nc", nil},
		{"<a href=\"mailto:x@y\">m</a><a href=\"#top\">t</a><a href=\"/rel\">r</a>", "mtr", nil},
		{"<form action='https://phish.example/login'><a HREF=HTTP://X.EXAMPLE>x</a>", "x", []string{"https://phish.example/login", "HTTP://X.EXAMPLE"}},
		{"&lt;tag&gt; &amp;amp; &#x41;&#66;", "<tag> &amp; AB", nil},
		{"  spaced \n\t out  ", "spaced out ", nil},
	}
	for _, tt := range tests {
		var links []string
		text := htmlText(tt.in, func(u string) { links = append(links, u) })
		if text != tt.text || !slices.Equal(links, tt.links) {
			t.Errorf("htmlText(%q) = %q, %q; want %q, %q", tt.in, text, links, tt.text, tt.links)
		}
	}
}

func TestURIs(t *testing.T) {
	tests := []struct {
		text string
		uris []string
	}{
		{"Go to https://example.com/a?b=c.", []string{"https://example.com/a?b=c"}},
		{"(see www.example.org/x), or ftp://files.example/f!", []string{"http://www.example.org/x", "ftp://files.example/f"}},
		{"<http://[2001:db8::1]:8080/p> and \"http://user:pw@10.0.0.1/\"", []string{"http://[2001:db8::1]:8080/p", "http://user:pw@10.0.0.1/"}},
		{"mailto:a@b.example and example.com alone are not links; nor http:// alone", nil},
	}
	for _, tt := range tests {
		if got := findURIs(tt.text, lowerASCII(tt.text)); !slices.Equal(got, tt.uris) {
			t.Errorf("findURIs(%q) = %q; want %q", tt.text, got, tt.uris)
		}
	}

	hosts := []struct{ uri, host, domain string }{
		{"http://www.Example.COM./x", "www.example.com", "example.com"},
		{"https://a.b.shop.example.co.uk:443/", "a.b.shop.example.co.uk", "example.co.uk"},
		{"http://user@evil.test\\@good.example/", "evil.test", "evil.test"},
		{"http://good.example@evil.test/", "evil.test", "evil.test"},
		{"http://192.0.2.1:8080/", "192.0.2.1", ""},
		{"http://[2001:db8::1]/", "2001:db8::1", ""},
		{"http://bücher.example/", "bücher.example", "xn--bcher-kva.example"},
		{"http://localhost/", "localhost", ""},
		{"http://co.uk/", "co.uk", ""},
	}
	for _, h := range hosts {
		host := uriHost(h.uri)
		if host != h.host || uriDomain(host) != h.domain {
			t.Errorf("%s: host %q domain %q; want %q %q", h.uri, host, uriDomain(host), h.host, h.domain)
		}
	}
}

// TestMalformedMessages feeds broken messages through the whole filter:
// none may crash it or make it fail.
func TestMalformedMessages(t *testing.T) {
	s := newSpam(t, stages.Env{}, `{}`)
	msgs := []string{
		"",
		"\n",
		"Content-Type: multipart/mixed; boundary=\"\"\n\n--\n--\n",
		"Content-Type: multipart/mixed; boundary=a\n\n--a\n--a\n--a\n",
		"Content-Type: multipart/mixed; boundary=a\n\n--a\nContent-Type: multipart/mixed; boundary=a\n\n--a\n--a--\n",
		"Content-Type: message/rfc822\n\nnot a header at all\x00\xff",
		"Content-Type: text/plain\nContent-Transfer-Encoding: quoted-printable\n\n=ZZ =\x01 =",
		"Content-Type: text/plain\nContent-Transfer-Encoding: base64\n\n====AAAA====\n",
		"Content-Type: text/html; charset=\"utf-16\"\n\n<\x00p\x00>\x00",
		"Content-Type: text/html\n\n<a href=\"" + strings.Repeat("x", 100000) + "\"><<<>>>&#xffffffff;",
		"Subject: =?utf-8?b?!!!?= =?\n\n",
		"From: \"a@b.c\" <\n\n",
		"Content-Type: ;;;=;\"\n\n",
	}
	for _, m := range msgs {
		run(t, s, parse(t, m))
	}
}

func FuzzExtract(f *testing.F) {
	f.Add([]byte("Subject: x\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n<p>a=3Db</p>\r\n--b--\r\n"))
	f.Add([]byte("Content-Type: message/rfc822\r\n\r\nContent-Type: text/plain; charset=iso-2022-jp\r\nContent-Transfer-Encoding: base64\r\n\r\nGyRCJEgbKEI=\r\n"))
	f.Add([]byte("Content-Type: multipart/digest; boundary=\"d\"\r\n\r\n--d\r\n\r\nSubject: =?utf-8?q?x?=\r\n\r\nwww.a.example\r\n--d--"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		r := bufio.NewReader(strings.NewReader(string(msg)))
		h, _ := stages.ParseHeader(r)
		c := extract(h, r, 4096)
		if len(c.text) > 4096*3+maxParts+4096 { // U+FFFD triples a byte at most, plus separators
			t.Fatalf("text of %d bytes from a budget of 4096", len(c.text))
		}
		if !utf8.ValidString(c.text) {
			t.Fatal("text is not UTF-8")
		}
		if len(c.uris) > maxURIs {
			t.Fatalf("%d uris", len(c.uris))
		}
		for _, u := range c.uris {
			if uriHost(u) == "" || len(u) > maxURILen {
				t.Fatalf("uri %q", u)
			}
		}
	})
}

func FuzzHTMLText(f *testing.F) {
	f.Add("<html><head><title>t</title><style>x</style></head><body><a href='http://a.example'>a&amp;b</a><script>s</script></body>")
	f.Add("<p>unclosed <b>tags<div>&#0;&#x110000;&bogus;")
	f.Fuzz(func(t *testing.T, doc string) {
		n := 0
		text := htmlText(doc, func(u string) {
			n++
			if uriHost(u) == "" {
				t.Fatalf("link %q has no host", u)
			}
		})
		if len(text) > 3*len(doc)+len(doc) {
			t.Fatalf("%d bytes of text from %d of HTML", len(text), len(doc))
		}
	})
}
