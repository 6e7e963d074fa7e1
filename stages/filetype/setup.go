package filetype

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/mailgate/mailgate/stages"
)

// Config is the [stage.config] block of a filetype stage.
type Config struct {
	// BlockTypes are real types (by content) refused: "application/zip",
	// or "image/*" for a whole top-level type. A type matches its
	// aliases and its parents: application/x-ole-storage matches .msi,
	// .doc and .xls alike.
	BlockTypes *[]string `json:"block_types"`
	// AllowTypes are real types let through whatever the block-lists say.
	AllowTypes []string `json:"allow_types"`
	// BlockExtensions are file name extensions refused ("exe", ".exe").
	BlockExtensions *[]string `json:"block_extensions"`
	// AllowExtensions are extensions let through whatever the
	// block-lists say.
	AllowExtensions []string `json:"allow_extensions"`
	// Archives: look into zip and rar attachments, one level.
	Archives *bool `json:"archives"`
	// MaxDepth bounds MIME nesting (multiparts and attached messages).
	MaxDepth int `json:"max_depth"`
	// MaxParts bounds the MIME parts looked at.
	MaxParts int `json:"max_parts"`
	// MaxArchiveMembers bounds the members looked at in one archive.
	MaxArchiveMembers int `json:"max_archive_members"`
	// MaxBytes bounds the decoded bytes read of one message: the first
	// bytes of each part and the archives looked into.
	MaxBytes stages.Size `json:"max_bytes"`
}

// DefaultBlockTypes are the real types refused unless block_types says
// otherwise: programs, installers, shortcuts and disk images, which run or
// mount something when opened, and never need to travel by mail.
func DefaultBlockTypes() []string {
	return []string{
		"application/vnd.microsoft.portable-executable",
		"application/x-ms-installer",
		"application/x-ms-shortcut",
		"application/x-elf",
		"application/x-mach-binary",
		"application/java-archive",
		"application/vnd.ms-htmlhelp",
		"application/x-iso9660-image",
		"application/x-vhd",
		"application/x-vhdx",
	}
}

// DefaultBlockExtensions are the extensions refused unless
// block_extensions says otherwise: what Windows runs, installs, mounts or
// hands to a script host on a double click. Scripts are text, so their
// name is all there is to go by.
func DefaultBlockExtensions() []string {
	return []string{
		"exe", "scr", "com", "pif", "cpl", "dll", "msi", "msp", "msc",
		"bat", "cmd", "ps1", "psm1", "vbs", "vbe", "js", "jse", "wsf", "wsh", "hta", "sct",
		"jar", "lnk", "scf", "reg", "inf", "chm",
		"iso", "img", "vhd", "vhdx", "appx", "msix", "appref-ms", "application",
	}
}

// Defaults of the limits. A 25 MB message (the default max_message_size)
// decodes to less than 25 MiB, so max_bytes never stops the default
// configuration short of a whole message.
const (
	defaultMaxDepth   = 10
	defaultMaxParts   = 500
	defaultMaxMembers = 1000
	defaultMaxBytes   = 25 << 20
)

// mediaTypePattern is what a type list entry looks like (RFC 6838 §4.2
// names, and type/* for a whole top-level type).
var mediaTypePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9!#$&^_.+-]*/([a-z0-9][a-z0-9!#$&^_.+-]*|\*)$`)

// New builds a filetype filter from its config block.
func New(_ stages.Env, cfg stages.Config) (stages.Filter, error) {
	var c Config
	if err := cfg.Decode(&c); err != nil {
		return nil, err
	}
	f := &Filter{
		archives:   c.Archives == nil || *c.Archives,
		maxDepth:   defaultMaxDepth,
		maxParts:   defaultMaxParts,
		maxMembers: defaultMaxMembers,
		maxBytes:   defaultMaxBytes,
	}
	for _, l := range []struct {
		key string
		in  []string
		out *[]string
	}{
		{"block_types", orDefault(c.BlockTypes, DefaultBlockTypes), &f.blockTypes},
		{"allow_types", c.AllowTypes, &f.allowTypes},
	} {
		for _, t := range l.in {
			t = strings.ToLower(strings.TrimSpace(t))
			if !mediaTypePattern.MatchString(t) {
				return nil, &stages.ConfigError{Key: l.key, Err: fmt.Errorf("unexpected %q; expect a media type such as \"application/zip\" or \"image/*\"", t)}
			}
			*l.out = append(*l.out, t)
		}
	}
	for _, l := range []struct {
		key string
		in  []string
		out *map[string]bool
	}{
		{"block_extensions", orDefault(c.BlockExtensions, DefaultBlockExtensions), &f.blockExts},
		{"allow_extensions", c.AllowExtensions, &f.allowExts},
	} {
		*l.out = map[string]bool{}
		for _, e := range l.in {
			e = strings.ToLower(strings.TrimPrefix(strings.TrimSpace(e), "."))
			if e == "" || strings.ContainsAny(e, `./\ `) {
				return nil, &stages.ConfigError{Key: l.key, Err: fmt.Errorf("unexpected %q; expect an extension such as \"exe\" or \".exe\"", e)}
			}
			(*l.out)[e] = true
		}
	}
	for _, n := range []struct {
		key string
		v   int
		out *int
	}{
		{"max_depth", c.MaxDepth, &f.maxDepth},
		{"max_parts", c.MaxParts, &f.maxParts},
		{"max_archive_members", c.MaxArchiveMembers, &f.maxMembers},
	} {
		switch {
		case n.v < 0:
			return nil, &stages.ConfigError{Key: n.key, Err: fmt.Errorf("unexpected %d; expect an integer above 0, or 0 for the default %d", n.v, *n.out)}
		case n.v > 0:
			*n.out = n.v
		}
	}
	switch {
	case c.MaxBytes < 0:
		return nil, &stages.ConfigError{Key: "max_bytes", Err: fmt.Errorf("unexpected %d; expect a size above 0 such as \"25MiB\"", c.MaxBytes)}
	case c.MaxBytes > 0:
		f.maxBytes = int64(c.MaxBytes)
	}
	return f, nil
}

// orDefault is the list the admin wrote, an empty one included (no
// extension blocked), or the default when the key is absent.
func orDefault(l *[]string, def func() []string) []string {
	if l == nil {
		return def()
	}
	return *l
}
