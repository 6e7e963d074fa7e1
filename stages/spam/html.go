package spam

import (
	"strings"
	"unicode"

	"golang.org/x/net/html"
)

// htmlText reduces an HTML document to the text a reader would see: tags
// dropped, script and style contents dropped, entities decoded, runs of
// white space collapsed, a line break for block elements. It calls link with
// every href, src and action attribute value, which is where the URLs a
// reader clicks or loads hide.
func htmlText(doc string, link func(string)) string {
	z := html.NewTokenizer(strings.NewReader(doc))
	var b strings.Builder
	space := true // the text so far ends in white space (or is empty)
	skip := ""    // the raw-text element whose content is being dropped
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
			for more {
				var k, v []byte
				k, v, more = z.TagAttr()
				switch string(k) {
				case "href", "src", "action":
					if u := linkURI(string(v)); u != "" {
						link(u)
					}
				}
			}
			tag := string(name)
			switch {
			case tt == html.EndTagToken && tag == skip:
				skip = ""
			case tt == html.StartTagToken && (tag == "script" || tag == "style"):
				skip = tag
			case isBlock(tag):
				// A block ends a line; trailing spaces stay, they do no harm.
				b.WriteByte('\n')
				space = true
			}
		}
	}
}

// isBlock reports whether an element starts or ends a line of visible text.
func isBlock(tag string) bool {
	switch tag {
	case "br", "p", "div", "tr", "td", "th", "li", "ul", "ol", "table", "title",
		"h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "hr":
		return true
	}
	return false
}
