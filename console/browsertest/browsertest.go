// Package browsertest drives Debian's chromium, headless, through
// chromedp, for tests of the console's pages in a real browser. It is
// for tests only, like net/http/httptest.
//
// chromium is found on PATH; when it is missing, a test fails under CI
// (CI=true: `make deps` installs it there) and is skipped elsewhere,
// naming the Debian package either way (stages/testkit.Need).
package browsertest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/mailgate/mailgate/stages/testkit"
)

// Timeout bounds a whole browser test: an upper bound for a loaded
// machine, never a measure.
const Timeout = 3 * time.Minute

// Browser is a headless chromium for one test.
type Browser struct {
	t    testing.TB
	root context.Context // the browser's first tab: Tab's parent
	// Shots is where Screenshot writes: $MAILGATE_SCREENSHOTS, else a
	// directory of the test's own.
	Shots string
}

// Start starts chromium for the length of t, with a profile of its own.
func Start(t testing.TB) *Browser {
	t.Helper()
	path := testkit.Need(t, "chromium", "chromium")
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
		chromedp.Flag("disable-dev-shm-usage", true),
	)
	if os.Geteuid() == 0 {
		// chromium refuses to run as root with its sandbox (CI runs as
		// root); the pages it loads are the test's own.
		opts = append(opts, chromedp.NoSandbox)
	}
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	alloc, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	root, cancelRoot := chromedp.NewContext(alloc)
	t.Cleanup(func() {
		cancelRoot()
		cancelAlloc()
		cancel()
	})
	if err := chromedp.Do(root); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	b := &Browser{t: t, root: root, Shots: os.Getenv("MAILGATE_SCREENSHOTS")}
	if b.Shots == "" {
		b.Shots = t.TempDir()
	}
	return b
}

// Tab opens a new window in a browser context of its own (its own
// cookies, as another browser has): a second user, or the same user in a
// second browser.
func (b *Browser) Tab() context.Context {
	b.t.Helper()
	ctx, cancel := chromedp.NewContext(b.root, chromedp.WithNewBrowserContext())
	b.t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil {
		b.t.Fatalf("open a tab: %v", err)
	}
	return ctx
}

// Do runs actions in tab, failing the test with what was being done.
func (b *Browser) Do(tab context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(tab, actions...); err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

// Run runs an action with a value in tab, failing the test with what was
// being done.
func Run[T any](b *Browser, tab context.Context, what string, action chromedp.Action[T]) T {
	b.t.Helper()
	v, err := chromedp.Run(tab, action)
	if err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
	return v
}

// Screenshot writes the whole page of tab to Shots/name.png, for a
// reviewer to look at.
func (b *Browser) Screenshot(tab context.Context, name string) {
	b.t.Helper()
	png := Run(b, tab, "screenshot "+name, chromedp.FullScreenshot(100))
	file := filepath.Join(b.Shots, name+".png")
	if err := os.MkdirAll(b.Shots, 0o755); err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(file, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("screenshot %s", file)
}

// Text returns the text of the page's body, as a person reads it.
func (b *Browser) Text(tab context.Context) string {
	b.t.Helper()
	return Run(b, tab, "read the page", chromedp.Text(chromedp.CSS("body")))
}

// Contains reports whether the page's text has each of want.
func (b *Browser) Contains(tab context.Context, want ...string) bool {
	text := b.Text(tab)
	for _, w := range want {
		if !strings.Contains(text, w) {
			return false
		}
	}
	return true
}
