// Package htmltext reduces an HTML document to the text a reader would
// see. It is the one such reduction of mailgate: the spam stage scores the
// text of HTML mail and collects the links in it, and the console shows a
// quarantined HTML message as that text, so that none of the message's
// markup reaches a browser. It sits under stages so that stages and the
// console alike can import it.
package htmltext

import (
	"strings"
	"unicode"

	"golang.org/x/net/html"
)

// Options say what Text does besides the text.
type Options struct {
	// Link, when set, is called with the value of every href, src and
	// action attribute, as written: where the URLs a reader clicks, or a
	// mail client loads, hide.
	Link func(string)
	// Targets writes each link's address after its text ("your prize
	// [https://…]") and each image as "[image]": for a person reading
	// the text, who sees where a message points without anything loaded.
	Targets bool
}

// Text reduces doc to its text: tags dropped, script and style contents
// dropped, entities decoded, runs of white space collapsed to one space,
// a line break for each block element. The result is text, never markup:
// what was a tag in doc is gone, and "&lt;script&gt;" is "<script>", for
// the caller to escape if it writes HTML.
func Text(doc string, o Options) string {
	z := html.NewTokenizer(strings.NewReader(doc))
	var b strings.Builder
	space := true      // the text so far ends in white space (or is empty)
	skip := ""         // the raw-text element whose content is being dropped
	var hrefs []string // with Targets, the addresses of the links open
	for {
		tt := z.Next()
		switch tt {
		case html.ErrorToken:
			return b.String()
		case html.TextToken:
			if skip != "" {
				continue
			}
			for _, r := range string(z.Text()) {
				if unicode.IsSpace(r) {
					if !space {
						b.WriteByte(' ')
						space = true
					}
					continue
				}
				b.WriteRune(r)
				space = false
			}
		case html.StartTagToken, html.SelfClosingTagToken, html.EndTagToken:
			name, more := z.TagName()
			tag := string(name)
			var href string
			for more {
				var k, v []byte
				k, v, more = z.TagAttr()
				switch string(k) {
				case "href", "src", "action":
					if o.Link != nil {
						o.Link(string(v))
					}
					if string(k) == "href" && tag == "a" {
						href = string(v)
					}
				}
			}
			switch {
			case tt == html.EndTagToken && tag == skip:
				skip = ""
			case tt == html.StartTagToken && (tag == "script" || tag == "style"):
				skip = tag
			case o.Targets && tag == "a" && tt == html.StartTagToken:
				hrefs = append(hrefs, href)
			case o.Targets && tag == "a" && tt == html.EndTagToken && len(hrefs) > 0:
				if h := hrefs[len(hrefs)-1]; h != "" && skip == "" {
					b.WriteString(" [" + h + "]")
					space = false
				}
				hrefs = hrefs[:len(hrefs)-1]
			case o.Targets && tag == "img" && skip == "":
				b.WriteString("[image]")
				space = false
			case isBlock(tag):
				// A block ends a line; trailing spaces stay, they do
				// no harm.
				b.WriteByte('\n')
				space = true
			}
		}
	}
}

// isBlock reports whether an element starts or ends a line of visible
// text.
func isBlock(tag string) bool {
	switch tag {
	case "br", "p", "div", "tr", "td", "th", "li", "ul", "ol", "table", "title",
		"h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "hr":
		return true
	}
	return false
}
