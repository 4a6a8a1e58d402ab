package caddymodule

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// writePage writes body to a file in a temporary directory and returns its
// path.
func writePage(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// A page that cannot be read, is empty, too large or not a file is refused
// by caddy adapt at the setting's line, naming the setting and the file.
func TestPageCaddyfileErrors(t *testing.T) {
	dir := t.TempDir()
	big := writePage(t, "big.html", strings.Repeat("x", maxPageSize+1))
	empty := writePage(t, "empty.html", "")
	missing := filepath.Join(dir, "missing.html")
	ok := writePage(t, "ok.html", "<p>ok</p>")
	app := func(lines ...string) string {
		return "{\n\tpodswitch {\n\t\tapp blog {\n\t\t\timage localhost/blog:v1\n\t\t\t" +
			strings.Join(lines, "\n\t\t\t") + "\n\t\t}\n\t}\n}\n"
	}
	for _, tc := range []struct {
		name, caddyfile, want string
		line                  string
	}{
		{"missing file", app("web 1", "maintenance_page "+missing), `app "blog": maintenance_page "` + missing + `": cannot read it: no such file or directory`, "6"},
		{"too large", app("pause_page " + big), `pause_page "` + big + `": larger than the limit of 1 MiB`, "5"},
		{"empty", app("pause_page " + empty), `pause_page "` + empty + `": the file is empty`, "5"},
		{"a directory", app("maintenance_page " + dir), `maintenance_page "` + dir + `": not a regular file`, "5"},
		{"no value", app("maintenance_page"), `maintenance_page: want one value`, "5"},
		{"given twice", app("pause_page "+ok, "pause_page "+ok), `app "blog": pause_page is given twice`, "6"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := adaptCaddyfile(t, []byte(tc.caddyfile))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("adapt: %v, want an error containing %q", err, tc.want)
			}
			if !strings.Contains(err.Error(), "Caddyfile:"+tc.line) {
				t.Errorf("error %q does not name Caddyfile:%s", err, tc.line)
			}
		})
	}

	out := mustAdapt(t, []byte(app("maintenance_page "+ok, "pause_page "+ok)), true)
	var cfg struct {
		Apps struct {
			Podswitch App `json:"podswitch"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	if c := cfg.Apps.Podswitch.Apps["blog"]; c == nil || c.MaintenancePage != ok || c.PausePage != ok {
		t.Errorf("adapted app: %+v, want both pages %s", c, ok)
	}
}

// A JSON config whose page cannot be read fails the load with the app and
// the file.
func TestPageJSONError(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "gone.html")
	a := &App{Apps: map[string]*AppConfig{
		"blog": {Image: "localhost/blog:v1", PausePage: missing},
	}}
	err := a.loadPages()
	want := `app "blog": pause_page "` + missing + `": cannot read it: no such file or directory`
	if err == nil || err.Error() != want {
		t.Errorf("loadPages: %v, want %q", err, want)
	}

	t.Setenv("XDG_DATA_HOME", t.TempDir())
	raw := `{"storage": {"module": "file_system", "root": "` + t.TempDir() + `"}, "apps": {
		"podswitch": {"podman": "` + testPodman + `", "apps": {"blog": {"image": "localhost/blog:v1", "maintenance_page": "` + missing + `"}}}}}`
	var cfg caddy.Config
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		t.Fatal(err)
	}
	if err := caddy.Validate(&cfg); err == nil || !strings.Contains(err.Error(), `app "blog": maintenance_page "`+missing+`"`) {
		t.Errorf("validate: %v, want the app and the page named", err)
	}
}

// With pages, maintenance and a pause's 503 answer them as HTML, with the
// status and Retry-After of the plain answers.
func TestGatePages(t *testing.T) {
	g := newGateTest(t)
	g.gate.pages = pages{maintenance: []byte("<h1>Maintenance</h1>"), pause: []byte("<h1>Paused</h1>")}
	checkPage := func(t *testing.T, body string) {
		t.Helper()
		rec, err := g.serve(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		check503(t, rec, body)
		if rec.Body.String() != body {
			t.Errorf("body %q, want exactly the page %q", rec.Body, body)
		}
		if got := rec.Header().Get("Content-Type"); got != "text/html; charset=utf-8" {
			t.Errorf("Content-Type %q, want text/html; charset=utf-8", got)
		}
	}
	if err := g.s.Maintenance("Back at 14:00 UTC."); err != nil {
		t.Fatal(err)
	}
	checkPage(t, "<h1>Maintenance</h1>")
	if err := g.s.Pause(50 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	checkPage(t, "<h1>Paused</h1>")
	if g.hits.Load() != 0 {
		t.Error("a request reached the app")
	}

	// Without a page, the plain text stays.
	g.gate.pages = pages{}
	rec, err := g.serve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	check503(t, rec, "paused")
	if got := rec.Header().Get("Content-Type"); got != "text/plain; charset=utf-8" {
		t.Errorf("without a page: Content-Type %q, want text/plain", got)
	}
	if err := g.s.Resume(); err != nil {
		t.Fatal(err)
	}
	if rec, err := g.serve(context.Background()); err != nil || rec.Code != http.StatusOK {
		t.Errorf("after resume: %v %d, want the request passed on", err, rec.Code)
	}
}
