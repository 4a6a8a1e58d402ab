package integration

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/podswitch/podswitch/internal/engine"
)

// An app's maintenance_page is answered, as HTML with 503 and Retry-After,
// while maintenance set through the admin API stands; resume serves the
// app again.
func TestPages(t *testing.T) {
	app := uniqueName("pg")
	dir := t.TempDir()
	const page = "<!doctype html><title>Maintenance</title><h1>Back soon</h1>\n"
	maint := filepath.Join(dir, "maintenance.html")
	pause := filepath.Join(dir, "pause.html")
	if err := os.WriteFile(maint, []byte(page), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pause, []byte("<h1>Paused</h1>"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := appCfg{Name: app, Image: imageV1, Web: 1, Lines: []string{"maintenance_page " + maint, "pause_page " + pause}}
	c := startCaddy(t, cfg)
	c.mustDeploy(app, imageV1, 60*time.Second)
	c.waitSettled(app, 1, 30*time.Second)
	base := "/podswitch/apps/" + app

	if code, body := c.api(http.MethodPost, base+"/maintenance", `{"message": "not shown"}`); code != http.StatusOK {
		t.Fatalf("maintenance: %d %s", code, body)
	}
	code, h, body := httpGet(t, c.url("/"), "")
	if code != http.StatusServiceUnavailable || body != page {
		t.Errorf("in maintenance: %d %q, want 503 and the page", code, body)
	}
	if got := h.Get("Content-Type"); got != "text/html; charset=utf-8" {
		t.Errorf("Content-Type %q, want text/html; charset=utf-8", got)
	}
	if h.Get("Retry-After") == "" {
		t.Error("no Retry-After")
	}

	if code, body := c.api(http.MethodPost, base+"/pause", `{"timeout": "1s"}`); code != http.StatusOK {
		t.Fatalf("pause: %d %s", code, body)
	}
	code, h, body = httpGet(t, c.url("/"), "")
	if code != http.StatusServiceUnavailable || body != "<h1>Paused</h1>" || h.Get("Retry-After") == "" {
		t.Errorf("after a 1s pause: %d %q, Retry-After %q; want 503, the pause page and Retry-After", code, body, h.Get("Retry-After"))
	}

	if code, body := c.api(http.MethodPost, base+"/resume", ""); code != http.StatusOK {
		t.Fatalf("resume: %d %s", code, body)
	}
	if code, body := get(t, c.url("/")); code != http.StatusOK || !strings.HasPrefix(body, "version=v1") {
		t.Errorf("after resume: %d %q", code, body)
	}
}

// A reload that deploys an image Podman lacks ends start-error with what
// to do; once the image is there, a reload of the unchanged config
// deploys it.
func TestMissingImageRetriedOnReload(t *testing.T) {
	app := uniqueName("mr")
	cfg := appCfg{Name: app, Image: imageV1, Web: 1}
	c := startCaddy(t, cfg)
	c.mustDeploy(app, imageV1, 60*time.Second)
	missing := "localhost/podswitch-" + app + ":v9"
	next := cfg
	next.Image = missing
	c.reload(next)
	failed := c.waitDeployment(app, missing, 60*time.Second)
	want := "image " + missing + " is not on this host: build it or pull it (podman pull " + missing + "), then reload or deploy"
	if failed.Status != engine.StatusStartError || !strings.Contains(failed.Error, want) {
		t.Fatalf("deployment of a missing image: %s (%s), want start-error saying %q", failed.Status, failed.Error, want)
	}

	podmanCLI(t, "tag", imageV1, missing)
	t.Cleanup(func() { _, _ = execPodman("untag", missing, missing) })
	c.forceReload(next)
	deadline := time.Now().Add(90 * time.Second)
	for {
		st := c.status(app)
		if len(st.Deployments) > 0 {
			if d := st.Deployments[0]; d.ID > failed.ID && d.Image == missing && d.Status.Ended() {
				if d.Status != engine.StatusSuccess {
					t.Fatalf("the retry after the image was built: %s (%s), want success", d.Status, d.Error)
				}
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no new deployment of %s after an unchanged reload: %+v", missing, st.Deployments)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code, body := get(t, c.url("/")); code != http.StatusOK || !strings.HasPrefix(body, "version=v1") {
		t.Errorf("after the retry: %d %q", code, body)
	}
}
