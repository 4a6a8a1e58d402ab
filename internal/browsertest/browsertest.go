// Package browsertest starts the headless Chromium that the dashboard's
// tests drive (through chromedp) and keeps their screenshots. It is for
// tests only.
package browsertest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/chromedp/chromedp"
)

// Path returns the path of Debian's chromium, and fails the test when it
// is missing (scripts/setup.sh --tests, run by `make test`, installs it): never a skip.
func Path(t testing.TB) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("no chromium: run `make setup-test` (scripts/setup.sh --tests), which installs it")
	return ""
}

// New starts a headless Chromium with a fresh profile and a window of
// width × height, ended with the test. The flags keep it from reaching
// out to the network this machine does not have.
func New(t testing.TB, width, height int) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(Path(t)),
		chromedp.Flag("headless", true), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true), chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(width, height),
	}
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	ctx, cancel2 := chromedp.NewContext(actx)
	t.Cleanup(cancel2)
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return ctx
}

// Keep is where screenshots are copied when $PODSWITCH_SCREENSHOTS is not
// set, so that they outlive the test's temporary folder.
const Keep = "/tmp/podswitch-screenshots"

// ScreenshotDir returns the folder for screenshots: $PODSWITCH_SCREENSHOTS,
// else a folder of the test's, copied to Keep when the test ends.
func ScreenshotDir(t testing.TB) string {
	t.Helper()
	if d := os.Getenv("PODSWITCH_SCREENSHOTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	d := filepath.Join(t.TempDir(), "screenshots")
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = os.MkdirAll(Keep, 0o755)
		files, _ := os.ReadDir(d)
		for _, f := range files {
			if b, err := os.ReadFile(filepath.Join(d, f.Name())); err == nil {
				_ = os.WriteFile(filepath.Join(Keep, f.Name()), b, 0o644)
			}
		}
		t.Logf("screenshots copied to %s", Keep)
	})
	return d
}
