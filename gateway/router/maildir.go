package router

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mailgate/mailgate/stages/durable"
)

// deliverMaildir stores one copy of a message in the Maildir dir: written
// and flushed under tmp/, then renamed into new/ (durable.Write), so that
// a reader never sees a partial message. It returns the file name in new/.
func deliverMaildir(dir, id, hostname, from string, msg io.Reader) (string, error) {
	for _, sub := range []string{"tmp", "new", "cur"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return "", fmt.Errorf("maildir: %w", err)
		}
	}
	// Unique names are time, a unique part and the host; "/" and ":" are
	// not allowed in the host part.
	host := strings.NewReplacer("/", `\057`, ":", `\072`).Replace(hostname)
	name := fmt.Sprintf("%d.%s.%s", time.Now().UnixNano(), id, host)
	// This is final delivery, where RFC 5321 §4.4 has the envelope sender
	// recorded in Return-Path.
	msg = io.MultiReader(strings.NewReader("Return-Path: <"+from+">\r\n"), msg)
	if err := durable.Write(filepath.Join(dir, "new", name), msg, filepath.Join(dir, "tmp")); err != nil {
		return "", fmt.Errorf("maildir: %w", err)
	}
	return name, nil
}
