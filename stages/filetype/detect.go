package filetype

import (
	"bytes"
	"mime"
	"path"
	"slices"
	"strings"

	"github.com/gabriel-vasile/mimetype"
)

// headLen is how much of a file's decoded content is read to tell its type:
// mimetype looks at the first 4 KiB at most, and an ISO 9660 or UDF image
// says what it is at offset 32769, after the 32 KiB system area (ECMA-119
// §6.2, ECMA-167 2/9.1).
const headLen = 0x8001 + 5

// fileType is the real type of a file, found by its content: a mimetype
// result, or one of the few disk image formats mimetype does not know.
type fileType struct {
	m     *mimetype.MIME // nil for an image
	image string         // "application/x-iso9660-image", … when m is nil
}

// detect names the type of a file from its first bytes.
func detect(head []byte) fileType {
	switch {
	case len(head) >= headLen && (bytes.Equal(head[0x8001:headLen], []byte("CD001")) || bytes.Equal(head[0x8001:headLen], []byte("BEA01"))):
		// The volume descriptor of ISO 9660, or the start of UDF's volume
		// recognition sequence: a disk image Windows mounts with a
		// double click, a favourite wrapper for malware.
		return fileType{image: "application/x-iso9660-image"}
	case bytes.HasPrefix(head, []byte("conectix")):
		return fileType{image: "application/x-vhd"} // a dynamic VHD starts with its footer's copy
	case bytes.HasPrefix(head, []byte("vhdxfile")):
		return fileType{image: "application/x-vhdx"}
	}
	m := mimetype.Detect(head)
	if m.Is("application/vnd.microsoft.portable-executable") && !bytes.Contains(head[:min(len(head), 64)], []byte{0}) {
		// mimetype calls anything starting "MZ" a program, a mail
		// body starting "MZ Tours" too. A DOS header (64 bytes, every
		// program has one) is binary: its fields hold NULs.
		m = mimetype.Detect(head[2:])
	}
	return fileType{m: m}
}

// String is the type without parameters ("text/plain", not "text/plain;
// charset=utf-8").
func (t fileType) String() string {
	if t.m == nil {
		return t.image
	}
	s, _, err := mime.ParseMediaType(t.m.String())
	if err != nil {
		return t.m.String()
	}
	return s
}

// chain is the type and its parents, most specific first (a .docx is also
// a zip), without the root application/octet-stream unless that is all
// that is known: a list entry application/octet-stream means "a binary of
// no known type", not "anything".
func (t fileType) chain() []*mimetype.MIME {
	var c []*mimetype.MIME
	for m := t.m; m != nil; m = m.Parent() {
		if m.Parent() == nil && len(c) > 0 {
			break
		}
		c = append(c, m)
	}
	return c
}

// is reports whether the type, one of its aliases or one of its parents is
// pattern: "application/zip", or "image/*" for a whole top-level type.
func (t fileType) is(pattern string) bool {
	top, wildcard := strings.CutSuffix(pattern, "/*")
	if t.m == nil {
		if wildcard {
			return strings.HasPrefix(t.image, top+"/")
		}
		return strings.EqualFold(t.image, pattern)
	}
	for _, m := range t.chain() {
		if wildcard {
			if strings.HasPrefix(strings.ToLower(m.String()), top+"/") {
				return true
			}
		} else if m.Is(pattern) {
			return true
		}
	}
	return false
}

// active lists the types that run, install or mount something when opened,
// with the extensions such a file is rightly named with. A file of one of
// these types whose name or Content-Type claims anything else is a
// mismatch: that disguise is the trick (an invoice.pdf that is a Windows
// program), whatever the block- and allow-lists say of the type itself.
var active = []struct {
	mime string
	exts []string
}{
	{"application/vnd.microsoft.portable-executable", []string{"exe", "dll", "scr", "com", "cpl", "ocx", "sys", "drv", "efi", "mui", "pif"}},
	{"application/x-ms-installer", []string{"msi", "msp", "mst"}},
	{"application/x-ms-shortcut", []string{"lnk"}},
	{"application/x-elf", []string{"so", "o", "bin", "elf", "run", "out", "ko"}},
	{"application/x-mach-binary", []string{"dylib", "bundle", "o", "bin"}},
	{"application/java-archive", []string{"jar", "war", "ear"}},
	{"application/vnd.ms-htmlhelp", []string{"chm"}},
	{"application/x-iso9660-image", []string{"iso", "img", "udf"}},
	{"application/x-vhd", []string{"vhd"}},
	{"application/x-vhdx", []string{"vhdx"}},
}

// activeExts returns the extensions of an active type, or false when the
// type is not active.
func activeExts(t fileType) ([]string, bool) {
	for _, a := range active {
		if t.is(a.mime) {
			return a.exts, true
		}
	}
	return nil, false
}

// mismatch says how a file of an active type misnames itself: "named .pdf"
// or "sent as application/pdf", or "" when it does not. ext is the file
// name's extension ("" for none: a program without an extension claims
// nothing), claimed the Content-Type the sender gave ("" for none). Only a
// claimed type mimetype knows counts: application/x-msdownload and
// application/octet-stream are honest names for a program, application/pdf
// is not.
func mismatch(t fileType, ext, claimed string) string {
	exts, ok := activeExts(t)
	if !ok {
		return ""
	}
	if ext != "" && !slices.Contains(exts, ext) {
		return "named ." + ext
	}
	if claimed != "" && mimetype.Lookup(claimed) != nil && !t.is(claimed) && !strings.EqualFold(claimed, "application/octet-stream") {
		return "sent as " + claimed
	}
	return ""
}

// extension returns a file name's last extension, lower case, without the
// dot. Windows ignores trailing dots and spaces, so "invoice.exe. " runs
// as an .exe and its extension is exe. A name that is only an extension
// (".bashrc") has none.
func extension(name string) string {
	name = strings.TrimRight(name, ". \t")
	if i := strings.LastIndexAny(name, `/\`); i >= 0 {
		name = name[i+1:]
	}
	ext := path.Ext(name)
	if ext == name {
		return ""
	}
	return strings.ToLower(strings.TrimPrefix(ext, "."))
}
