package dkimcore

import (
	"slices"
	"strings"

	"github.com/mailgate/mailgate/stages"
)

// SignedFields returns the header fields an h= list names, in the order
// the hash takes them (RFC 6376 §5.4.2): for each name, the last field of
// that name not taken yet, counting from the bottom of the header; a name
// with no such field left (a field that does not exist, or is named more
// often than it occurs, "oversigning") contributes nothing. Names compare
// without regard to case (§3.5, h=). A line that is no field by RFC 5322
// but has a colon, such as "Subject : x" with white space before the
// colon (obsolete syntax, RFC 5322 §4.5), counts under the name before
// the colon, as relaxed canonicalization reads it (§3.4.2).
//
// The work is linear in the header and in names, however often names
// repeats one.
func SignedFields(h stages.Header, names []string) []stages.Field {
	left := make(map[string][]int, len(h)) // positions not taken yet, top first
	for i, f := range h {
		n := fieldName(f)
		left[n] = append(left[n], i)
	}
	var out []stages.Field
	for _, n := range names {
		n = strings.ToLower(n)
		l := left[n]
		if len(l) == 0 {
			continue
		}
		out = append(out, h[l[len(l)-1]])
		left[n] = l[:len(l)-1]
	}
	return out
}

// fieldName is the lower-case name a field is picked by.
func fieldName(f stages.Field) string {
	if f.Name != "" {
		return strings.ToLower(f.Name)
	}
	name, _, _ := strings.Cut(f.Value, ":")
	return strings.ToLower(strings.Trim(name, " \t"))
}

// HeaderData returns what a signature's header hash covers (RFC 6376
// §3.7): each of fields canonicalized with c, then the signature field
// itself, sigRaw (as on the wire, b= blanked: BlankField), canonicalized
// and without its final CRLF.
func HeaderData(c Canon, fields []stages.Field, sigRaw string) []byte {
	var b strings.Builder
	for _, f := range fields {
		b.WriteString(CanonHeader(c, f.Raw()))
	}
	b.WriteString(strings.TrimSuffix(CanonHeader(c, sigRaw), "\r\n"))
	return []byte(b.String())
}

// ContainsFold says whether list has s, in any case: header field names,
// tag values such as q= and method names compare without case (RFC 6376
// §3.2, §3.5).
func ContainsFold(list []string, s string) bool {
	return slices.ContainsFunc(list, func(l string) bool { return strings.EqualFold(l, s) })
}
