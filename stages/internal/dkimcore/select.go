package dkimcore

import (
	"strings"

	"github.com/mailgate/mailgate/stages"
)

// SignedFields returns the header fields an h= list names, in the order
// the hash takes them (RFC 6376 §5.4.2): for each name, the last field of
// that name not taken yet, counting from the bottom of the header; a name
// with no such field left (a field that does not exist, or is named more
// often than it occurs, "oversigning") contributes nothing. names are
// compared without regard to case (§3.5, h=).
func SignedFields(h stages.Header, names []string) []stages.Field {
	used := make([]bool, len(h))
	var out []stages.Field
	for _, n := range names {
		for i := len(h) - 1; i >= 0; i-- {
			if !used[i] && strings.EqualFold(h[i].Name, n) {
				used[i] = true
				out = append(out, h[i])
				break
			}
		}
	}
	return out
}

// SplitNames splits an h= value into its field names, white space
// removed; empty entries ("from::to") are dropped.
func SplitNames(v string) []string { return splitColon(v) }
