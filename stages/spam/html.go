package spam

import "github.com/mailgate/mailgate/stages/htmltext"

// htmlText reduces an HTML document to the text a reader would see
// (htmltext.Text). It calls link with every URL in an href, src or action
// attribute that links somewhere (linkURI), which is where the URLs a
// reader clicks or loads hide.
func htmlText(doc string, link func(string)) string {
	return htmltext.Text(doc, htmltext.Options{Link: func(v string) {
		if u := linkURI(v); u != "" {
			link(u)
		}
	}})
}
