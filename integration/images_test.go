package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/podswitch/podswitch/internal/engine"
)

// testAppBinary returns the test app binary: the one scripts/setup.sh
// built, else one built now.
func testAppBinary(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("PODSWITCH_BUILD_DIR")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "podswitch-testapp-build")
	}
	if bin := filepath.Join(dir, "app"); fileExists(bin) {
		return bin
	}
	bin := filepath.Join(t.TempDir(), "app")
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, "./testapp")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the test app: %v\n%s", err, out)
	}
	return bin
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// buildTestImage builds the test app as image tag with APP_VERSION
// version (a build context of its own, the version written in the
// Containerfile, as scripts/setup.sh does) and returns its image ID.
// Without layers: no intermediate image is left once the tag is removed.
func buildTestImage(t *testing.T, bin, tag, version string) string {
	t.Helper()
	dir := t.TempDir()
	app, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "app"), app, 0o755); err != nil {
		t.Fatal(err)
	}
	cf := fmt.Sprintf("FROM scratch\nENV APP_VERSION=%s\nCOPY app /app\nCMD [\"/app\"]\n", version)
	if err := os.WriteFile(filepath.Join(dir, "Containerfile"), []byte(cf), 0o644); err != nil {
		t.Fatal(err)
	}
	podmanCLI(t, "build", "-q", "--layers=false", "-t", tag, "-f", filepath.Join(dir, "Containerfile"), dir)
	return imageIDOf(t, tag)
}

// imageIDOf returns the ID of an image (or of a container's image).
func imageIDOf(t *testing.T, ref string) string {
	t.Helper()
	return strings.TrimPrefix(strings.TrimSpace(podmanCLI(t, "image", "inspect", "--format", "{{.Id}}", ref)), "sha256:")
}

// containerImageID returns the ID of the image container id was created
// from.
func containerImageID(t *testing.T, id string) string {
	t.Helper()
	return strings.TrimPrefix(strings.TrimSpace(podmanCLI(t, "container", "inspect", "--format", "{{.Image}}", id)), "sha256:")
}

// webVersions returns the APP_VERSION each ready web container of st
// answers on its own address, by container ID.
func webVersions(t *testing.T, st engine.AppStatus) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, ct := range st.Containers {
		if ct.Process != engine.WebProcess || ct.State != engine.StateReady {
			continue
		}
		code, body := get(t, "http://"+ct.Addr+"/version")
		if code != http.StatusOK {
			t.Fatalf("GET /version of %s: %d %s", ct.Name, code, body)
		}
		out[ct.ID] = strings.TrimSpace(body)
	}
	return out
}

// A tag rebuilt and deployed by tag is a new release whose every container
// runs the new image; until that deploy, the crash replacement of the
// serving release and an unchanged config reload keep the old image.
func TestImageRebuiltTag(t *testing.T) {
	bin := testAppBinary(t)
	tag := fmt.Sprintf("localhost/podswitch-testapp:images-%x", time.Now().UnixNano()&0xffffffff)
	var built []string
	// Registered before Caddy starts, so that it runs after Caddy's
	// cleanup has removed the containers: only this test's own images go.
	t.Cleanup(func() {
		for _, ref := range append([]string{tag}, built...) {
			if out, err := execPodman("rmi", ref); err != nil {
				t.Logf("removing image %s: %v %s", ref, err, out)
			}
		}
	})
	id1 := buildTestImage(t, bin, tag, "rebuild-1")
	built = append(built, id1)

	app := uniqueName("img")
	cfg := appCfg{Name: app, Image: tag, Web: 2, Lines: []string{"stop_timeout 5s", "drain_timeout 2s"}}
	c := startCaddy(t, cfg)
	d1 := c.mustDeploy(app, tag, 60*time.Second)
	st := c.waitSettled(app, 2, 30*time.Second)
	if st.Release == nil || st.Release.ImageID != id1 || st.Release.Image != tag || d1.ImageID != id1 {
		t.Fatalf("release %+v, deployment image ID %q; want %s on %s", st.Release, d1.ImageID, tag, id1)
	}
	rel1 := st.Release.ID
	for id, v := range webVersions(t, st) {
		if v != "rebuild-1" {
			t.Errorf("container %s answers version %q, want rebuild-1", id, v)
		}
	}

	// The tag is rebuilt: a new image under the same name.
	id2 := buildTestImage(t, bin, tag, "rebuild-2")
	if id2 == id1 {
		t.Fatalf("the rebuild has the same ID %s", id2)
	}

	// A crash of the serving release before any deploy: the replacement
	// runs the release's image, not what the tag names now.
	before := webIDs(st)
	podmanCLI(t, "kill", before[0])
	var replacement string
	deadline := time.Now().Add(60 * time.Second)
	for replacement == "" {
		st = c.status(app)
		for _, ct := range st.Containers {
			if ct.Process == engine.WebProcess && ct.State == engine.StateReady && !slices.Contains(before, ct.ID) {
				replacement = ct.ID
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no replacement of crashed container %s: %+v", before[0], st.Containers)
		}
		time.Sleep(100 * time.Millisecond)
	}
	st = c.waitSettled(app, 2, 30*time.Second)
	if got := containerImageID(t, replacement); got != id1 {
		t.Errorf("crash replacement %s runs image %s, want the release's %s (the tag names %s now)", replacement, got, id1, id2)
	}
	if v := webVersions(t, st)[replacement]; v != "rebuild-1" {
		t.Errorf("crash replacement answers version %q, want rebuild-1", v)
	}
	if st.Release.ID != rel1 {
		t.Errorf("release %s after the crash, want %s", st.Release.ID, rel1)
	}

	// An unchanged config reload touches nothing.
	deps := len(st.Deployments)
	// POST /load answers once the new config runs, and a config change
	// starts its deployment before that: had the reload asked for one, the
	// status would show it now.
	c.reload(cfg)
	if st = c.status(app); len(st.Deployments) != deps || st.Release.ID != rel1 || !slices.Equal(webIDs(st), webIDs(c.waitSettled(app, 2, 30*time.Second))) {
		t.Errorf("unchanged reload: %d deployments (want %d), release %s (want %s)", len(st.Deployments), deps, st.Release.ID, rel1)
	}

	// Deployed by tag: a new release, the new image in every container.
	code, body := c.post("/podswitch/apps/"+app+"/deploy?wait=1", "application/json", fmt.Sprintf(`{"image": %q}`, tag))
	if code != http.StatusOK {
		t.Fatalf("deploy of the rebuilt tag: %d %s", code, body)
	}
	var ans struct {
		Deployment engine.Deployment `json:"deployment"`
	}
	if err := json.Unmarshal([]byte(body), &ans); err != nil {
		t.Fatal(err)
	}
	if d := ans.Deployment; d.Status != engine.StatusSuccess || d.Release == rel1 || d.ImageID != id2 {
		t.Fatalf("deployment of the rebuilt tag: %s release %s image ID %s; want success, a new release, %s", d.Status, d.Release, d.ImageID, id2)
	}
	st = c.waitSettled(app, 2, 30*time.Second)
	if st.Release.ImageID != id2 || st.Release.ID != ans.Deployment.Release {
		t.Errorf("status release %+v, want %s on %s", st.Release, ans.Deployment.Release, id2)
	}
	for id, v := range webVersions(t, st) {
		if v != "rebuild-2" {
			t.Errorf("container %s answers version %q after the deploy, want rebuild-2", id, v)
		}
	}
	for _, ci := range podmanContainers(t, app) {
		if ci.Labels[engine.LabelRelease] == ans.Deployment.Release {
			if got := containerImageID(t, ci.ID); got != id2 {
				t.Errorf("container %s of the new release runs %s, want %s", ci.Name, got, id2)
			}
		}
	}
	deadline = time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && slices.ContainsFunc(podmanContainers(t, app), func(ci engine.ContainerInfo) bool {
		return ci.Labels[engine.LabelRelease] == rel1
	}) {
		time.Sleep(200 * time.Millisecond)
	}
	assertReleaseGone(t, app, rel1)

	// The same tag once more: it names the serving image, nothing starts.
	code, body = c.post("/podswitch/apps/"+app+"/deploy", "application/json", fmt.Sprintf(`{"image": %q}`, tag))
	if code != http.StatusOK || !strings.Contains(body, "already serves") {
		t.Errorf("deploy of the serving image: %d %s, want 200 and nothing started", code, body)
	}
}

// A crash whose output prints a secret: the kept output has it redacted
// in the API's answers, the history file and the webhook.
func TestImageCrashOutputRedacted(t *testing.T) {
	const secret = "postgres://u:hunter2secret@db/x"
	hooks := make(chan []byte, 16)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		hooks <- b
	}))
	t.Cleanup(receiver.Close)

	app := uniqueName("red")
	lines := []string{
		"env DATABASE_URL " + secret,
		"env PRINT_ENV DATABASE_URL",
		"boot_timeout 20s", "stop_timeout 5s",
		"notify {", "\twebhook " + receiver.URL, "}",
	}
	cfg := appCfg{Name: app, Image: imageV1, Web: 1, Lines: lines}
	c := startCaddy(t, cfg)
	first := c.mustDeploy(app, imageV1, 60*time.Second)

	// A new release whose web container prints the secret and crashes.
	crashing := cfg
	crashing.Lines = append(slices.Clone(lines), "env MODE crash")
	c.reload(crashing)
	var d engine.Deployment
	deadline := time.Now().Add(60 * time.Second)
	for d.ID == 0 {
		for _, x := range c.status(app).Deployments {
			if x.ID > first.ID && x.Status.Ended() {
				d = x
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the deployment of the crashing release did not end")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if d.Status != engine.StatusCrashedError {
		t.Fatalf("deployment %d ended %s (%s), want crashed-error", d.ID, d.Status, d.Error)
	}

	check := func(where, text string) {
		t.Helper()
		if strings.Contains(text, "hunter2") {
			t.Errorf("%s holds the secret: %s", where, text)
		}
		if !strings.Contains(text, "[redacted DATABASE_URL]") {
			t.Errorf("%s lacks [redacted DATABASE_URL]: %s", where, text)
		}
	}
	_, status := c.adminDo(http.MethodGet, "/podswitch/apps/"+app, "", "")
	check("the status", status)
	_, history := c.adminDo(http.MethodGet, "/podswitch/apps/"+app+"/deployments", "", "")
	check("the history answer", history)

	// The history file in Caddy's data dir (written in the background).
	path := filepath.Join(c.dir, "caddy", "podswitch", "history", app+".json")
	deadline = time.Now().Add(30 * time.Second)
	for {
		b, err := os.ReadFile(path)
		var f struct {
			Deployments []engine.Deployment `json:"deployments"`
		}
		if err == nil {
			err = json.Unmarshal(b, &f)
		}
		if slices.ContainsFunc(f.Deployments, func(x engine.Deployment) bool { return x.ID == d.ID && x.Status.Ended() }) {
			check("the history file", string(b))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("history file %s has no deployment %d: %v", path, d.ID, err)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// The webhook of the deployment's end.
	deadline = time.Now().Add(30 * time.Second)
	for {
		select {
		case b := <-hooks:
			var m map[string]any
			_ = json.Unmarshal(b, &m)
			if m["event"] != engine.EventDeployment || m["status"] != string(engine.StatusCrashedError) {
				continue
			}
			check("the webhook", string(b))
			return
		case <-time.After(time.Until(deadline)):
			t.Fatal("no webhook of the crashed deployment")
		}
	}
}
