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
// and fsynced under tmp/, then renamed into new/ so that a reader never
// sees a partial message. It returns the file name in new/.
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
	tmp := filepath.Join(dir, "tmp", name)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("maildir: %w", err)
	}
	err = writeMaildir(f, from, msg)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, "new", name))
	}
	if err == nil {
		err = durable.Sync(filepath.Join(dir, "new"))
	}
	if err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("maildir: %w", err)
	}
	return name, nil
}

// writeMaildir writes the message as delivered. This is final delivery,
// where RFC 5321 §4.4 has the envelope sender recorded in Return-Path.
func writeMaildir(f *os.File, from string, msg io.Reader) error {
	if _, err := fmt.Fprintf(f, "Return-Path: <%s>\r\n", from); err != nil {
		return err
	}
	if _, err := io.Copy(f, msg); err != nil {
		return err
	}
	return f.Sync()
}
