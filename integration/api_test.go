package integration

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/podswitch/podswitch/internal/engine"
)

// podswitchCLI runs `caddy podswitch args...` against c's admin endpoint
// and returns its exit status and combined output.
func (c *caddyProc) podswitchCLI(args ...string) (int, string) {
	c.t.Helper()
	cmd := exec.Command(caddyBin, append(append([]string{"podswitch"}, args...), "--address", c.admin)...)
	cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+c.dir, "XDG_CONFIG_HOME="+c.dir, "HOME="+c.dir)
	out, err := cmd.CombinedOutput()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			c.t.Fatalf("caddy podswitch %v: %v", args, err)
		}
		code = ee.ExitCode()
	}
	c.t.Logf("caddy podswitch %s: exit %d\n%s", strings.Join(args, " "), code, out)
	return code, string(out)
}

// restartCaddy stops Caddy the way `caddy stop` does and starts it again with
// the same data directory and the apps given; the containers keep running
// in between.
func (c *caddyProc) restartCaddy(apps ...appCfg) {
	c.t.Helper()
	c.stop()
	c.start(apps...)
}

// api sends one request to the podswitch API and returns status and body.
func (c *caddyProc) api(method, path, body string) (int, string) {
	c.t.Helper()
	ctype := ""
	if body != "" {
		ctype = "application/json"
	}
	return c.adminDo(method, path, ctype, body)
}

// configJSON returns GET /config/<path> of the running Caddy.
func (c *caddyProc) configJSON(path string) string {
	c.t.Helper()
	code, body := c.api(http.MethodGet, "/config/"+path, "")
	if code != http.StatusOK {
		c.t.Fatalf("GET /config/%s: %d %s", path, code, body)
	}
	return strings.TrimSpace(body)
}

type apiAnswer struct {
	Deployment *engine.Deployment `json:"deployment"`
	Message    string             `json:"message"`
}

func decodeAPIAnswer(t testing.TB, body string) apiAnswer {
	t.Helper()
	var a apiAnswer
	if err := json.Unmarshal([]byte(body), &a); err != nil {
		t.Fatalf("answer %q: %v", body, err)
	}
	return a
}

// `caddy podswitch deploy --wait` under constant load: it exits 0 once the
// deployment succeeded, no request fails, the running config is untouched
// (the image is an override the status shows), and loading that config
// again changes nothing. Then a restart and a scale through the API, under
// load too.
func TestAPIDeployRestartScaleUnderLoad(t *testing.T) {
	app := uniqueName("api")
	cfg := appCfg{Name: app, Image: imageV1, Web: 2, Lines: []string{"boot_timeout 30s", "drain_timeout 10s", "stop_timeout 10s", "env SECRET_TOKEN s3cr3t-value"}}
	c := startCaddy(t, cfg)
	c.mustDeploy(app, imageV1, 60*time.Second)
	c.waitSettled(app, 2, 30*time.Second)

	l := startLoad(t, c.url("/"), loadRate)
	l.allowDrops = 2 // it reloads under load (the forced /load): see reloadDrop
	time.Sleep(300 * time.Millisecond)
	code, out := c.podswitchCLI("deploy", app, imageV2, "--wait")
	if code != 0 || !strings.Contains(out, "success") {
		t.Fatalf("deploy --wait: exit %d: %s", code, out)
	}
	if got := c.configJSON("apps/podswitch/apps/" + app + "/image"); got != `"`+imageV1+`"` {
		t.Errorf("config image %s after the API deploy, want the config's own %q: operations do not change the config", got, imageV1)
	}
	c.waitSettled(app, 2, 60*time.Second)
	if code, body := get(t, c.url("/")); code != http.StatusOK || !strings.HasPrefix(body, "version=v2") {
		t.Errorf("after the deploy: %d %q", code, body)
	}
	if ov := c.status(app).Overrides; len(ov) != 1 || ov[0].Setting != "image" || ov[0].Value != imageV2 || ov[0].Operation != "deploy" {
		t.Errorf("overrides %+v, want the image set by deploy", ov)
	}

	// Loading the running config again (forced) is a no-op for the app.
	before := c.status(app)
	req, _ := http.NewRequest(http.MethodPost, "http://"+c.admin+"/load", strings.NewReader(c.configJSON("")))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Cache-Control", "must-revalidate")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("reloading the running config: %d %s", resp.StatusCode, mustRead(resp))
	}
	resp.Body.Close()
	time.Sleep(time.Second)
	after := c.status(app)
	if len(after.Deployments) != len(before.Deployments) || !slices.Equal(webIDs(after), webIDs(before)) {
		t.Errorf("reloading the same config touched the app: %d deployments (was %d), containers %v (were %v)",
			len(after.Deployments), len(before.Deployments), webIDs(after), webIDs(before))
	}
	if after.Image != imageV2 {
		t.Errorf("desired image %s after reloading the same config, want the API's %s", after.Image, imageV2)
	}

	// Restart through the API: new containers, no failed request.
	old := webIDs(c.waitSettled(app, 2, 30*time.Second))
	code, body := c.api(http.MethodPost, "/podswitch/apps/"+app+"/restart?wait=1", "")
	a := decodeAPIAnswer(t, body)
	if code != http.StatusOK || a.Deployment == nil || a.Deployment.Kind != engine.KindRestart || a.Deployment.Status != engine.StatusSuccess {
		t.Fatalf("restart: %d %s", code, body)
	}
	fresh := webIDs(c.waitSettled(app, 2, 60*time.Second))
	for _, id := range fresh {
		if slices.Contains(old, id) {
			t.Errorf("container %s survived the restart", id)
		}
	}

	// Scale through the API to 3, then 1.
	code, body = c.api(http.MethodPost, "/podswitch/apps/"+app+"/scale", `{"web": 3}`)
	if code != http.StatusAccepted {
		t.Fatalf("scale to 3: %d %s", code, body)
	}
	up := webIDs(c.waitSettled(app, 3, 60*time.Second))
	if got := c.configJSON("apps/podswitch/apps/" + app + "/web"); got != "2" {
		t.Errorf("config web %s, want the config's own 2", got)
	}
	code, out = c.podswitchCLI("scale", app, "web=1")
	if code != 0 {
		t.Fatalf("scale to 1: exit %d %s", code, out)
	}
	down := webIDs(c.waitSettled(app, 1, 60*time.Second))
	if !slices.Contains(up, down[0]) {
		t.Errorf("scale down left %s, not one of %v", down[0], up)
	}
	l.check(t, loadRate/2)

	// Nothing shows the env value.
	for _, path := range []string{"/podswitch/apps", "/podswitch/apps/" + app, "/podswitch/apps/" + app + "/deployments"} {
		if _, body := c.api(http.MethodGet, path, ""); strings.Contains(body, "s3cr3t-value") {
			t.Errorf("GET %s shows an env value", path)
		}
	}
	for _, args := range [][]string{{"status"}, {"status", app}, {"history", app}, {"status", app, "--json"}} {
		if _, out := c.podswitchCLI(args...); strings.Contains(out, "s3cr3t-value") {
			t.Errorf("caddy podswitch %v shows an env value", args)
		}
	}
}

// A release that never gets ready: `deploy --wait` exits non-zero and
// prints timeout-error, while the old release serves every request.
func TestAPIDeployNeverReadyCLI(t *testing.T) {
	app := uniqueName("apito")
	cfg := appCfg{Name: app, Image: imageV1, Web: 2, Lines: []string{"boot_timeout 3s"}}
	c := startCaddy(t, cfg)
	c.mustDeploy(app, imageV1, 60*time.Second)
	before := webIDs(c.waitSettled(app, 2, 30*time.Second))

	// From now on every release of the app never listens; the reload
	// itself fails to deploy the same way.
	bad := cfg
	bad.Lines = append(slices.Clone(cfg.Lines), "env MODE never-listen")
	c.reload(bad)
	if d := c.waitDeployment(app, imageV1, 60*time.Second); d.Status != engine.StatusTimeoutError {
		t.Fatalf("reload with MODE never-listen: %s %s", d.Status, d.Error)
	}
	l := startLoad(t, c.url("/"), loadRate)
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	code, out := c.podswitchCLI("deploy", app, imageV2, "--wait")
	if code == 0 || !strings.Contains(out, "timeout-error") {
		t.Errorf("deploy --wait of a never-ready release: exit %d, want non-zero and timeout-error: %s", code, out)
	}
	if took := time.Since(start); took < 3*time.Second {
		t.Errorf("deploy --wait returned after %s, before boot_timeout", took)
	}
	l.check(t, loadRate/2)
	if got := webIDs(c.status(app)); !slices.Equal(got, before) {
		t.Errorf("web containers %v, want the old ones %v", got, before)
	}
	if code, body := get(t, c.url("/")); code != http.StatusOK || !strings.HasPrefix(body, "version=v1") {
		t.Errorf("after the failed deploy: %d %q", code, body)
	}
	// Deploying the failed image again retries it: a new deployment,
	// which fails the same way.
	n := len(c.status(app).Deployments)
	code, out = c.podswitchCLI("deploy", app, imageV2, "--wait")
	if code != 2 || !strings.Contains(out, "timeout-error") || !strings.Contains(out, "again: its last deployment") {
		t.Errorf("deploying the failed image again: exit %d, want 2, timeout-error and a word that it is a retry: %s", code, out)
	}
	if got := len(c.status(app).Deployments); got != n+1 {
		t.Errorf("%d deployments after the retry, want %d", got, n+1)
	}
}

// deploy --wait outlasts the admin endpoint's 10s read timeout (and the
// replacement of the admin server that every config change makes).
func TestAPIDeployWaitLongerThanAdminTimeout(t *testing.T) {
	app := uniqueName("apislow")
	cfg := appCfg{Name: app, Image: imageV1, Web: 1, Lines: []string{"env LISTEN_DELAY 12s", "boot_timeout 40s"}}
	c := startCaddy(t, cfg)
	c.mustDeploy(app, imageV1, 90*time.Second)
	start := time.Now()
	code, out := c.podswitchCLI("deploy", app, imageV2, "--wait")
	if code != 0 || !strings.Contains(out, "success") {
		t.Fatalf("deploy --wait: exit %d: %s", code, out)
	}
	if took := time.Since(start); took < 12*time.Second {
		t.Errorf("deploy --wait returned after %s, before the release could listen", took)
	}
}

// The deployments of an app survive a restart of Caddy; the restarted
// Caddy adopts the containers without a new deployment.
func TestAPIHistorySurvivesRestart(t *testing.T) {
	app := uniqueName("apihist")
	cfg := appCfg{Name: app, Image: imageV1, Web: 1, Lines: []string{"boot_timeout 30s", "drain_timeout 2s", "stop_timeout 5s"}}
	c := startCaddy(t, cfg)
	c.mustDeploy(app, imageV1, 60*time.Second)
	if code, out := c.podswitchCLI("deploy", app, imageV2, "--wait"); code != 0 {
		t.Fatalf("deploy: exit %d %s", code, out)
	}
	if code, out := c.podswitchCLI("restart", app, "--wait"); code != 0 {
		t.Fatalf("restart: exit %d %s", code, out)
	}
	c.waitSettled(app, 1, 60*time.Second)
	want := c.status(app).Deployments
	if len(want) != 3 {
		t.Fatalf("%d deployments before the restart, want 3: %+v", len(want), want)
	}
	file := filepath.Join(c.dir, "caddy", "podswitch", "history", app+".json")
	if _, err := os.Stat(file); err != nil {
		t.Errorf("history file: %v", err)
	}

	// The Caddyfile now says what the API deployed.
	cfg.Image = imageV2
	c.restartCaddy(cfg)
	st := c.waitSettled(app, 1, 60*time.Second)
	got := st.Deployments
	if len(got) != len(want) {
		t.Fatalf("%d deployments after the restart, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		w, g := want[i], got[i]
		if g.ID != w.ID || g.Kind != w.Kind || g.Image != w.Image || g.Status != w.Status || !g.StartedAt.Equal(w.StartedAt) {
			t.Errorf("deployment %d after the restart: %+v, want %+v", i, g, w)
		}
	}
	code, out := c.podswitchCLI("history", app)
	if code != 0 || strings.Count(out, "success") != 3 {
		t.Errorf("history after the restart: exit %d %s", code, out)
	}
	// A new deployment goes on numbering.
	if code, out := c.podswitchCLI("deploy", app, imageV1, "--wait"); code != 0 {
		t.Fatalf("deploy after the restart: exit %d %s", code, out)
	}
	if d := c.status(app).Deployments[0]; d.ID != want[0].ID+1 {
		t.Errorf("deployment after the restart has id %d, want %d", d.ID, want[0].ID+1)
	}
}

// Bad requests against a real Caddy: a 4xx with {"error": "..."}, and
// nothing changes: not the config, not the deployments, not the app.
func TestAPIBadRequests(t *testing.T) {
	app := uniqueName("apibad")
	cfg := appCfg{Name: app, Image: imageV1, Web: 1, Lines: []string{"process worker 0"}}
	c := startCaddy(t, cfg)
	c.waitDeployment(app, imageV1, 60*time.Second)
	conf := c.configJSON("")
	base := "/podswitch/apps/" + app
	for _, tc := range []struct {
		method, path, body string
		code               int
		msg                string
	}{
		{"POST", "/podswitch/apps/nope/deploy", `{"image": "x"}`, 404, "unknown app"},
		{"GET", base + "/deploy", "", 405, "not allowed"},
		{"POST", base + "/deploy", `{"image": `, 400, "malformed JSON"},
		{"POST", base + "/deploy", `{"image": 3}`, 400, "want a string"},
		{"POST", base + "/deploy", `{"image": "x", "web": 2}`, 400, "unknown field"},
		{"POST", base + "/deploy", `{"image": ""}`, 400, "image is required"},
		{"POST", base + "/deploy", `{"image": "` + strings.Repeat("x", 70<<10) + `"}`, 413, "too large"},
		{"POST", base + "/scale", `{"web": -1}`, 400, "from 0 to 1000"},
		{"POST", base + "/scale", `{"web": 100000}`, 400, "from 0 to 1000"},
		{"POST", base + "/deploy", `{"image": "localhost/nope:v9"}`, 400, "is not on this host: build it or pull it (podman pull localhost/nope:v9)"},
		{"POST", base + "/deploy", `{"image": "Bad:Ref!"}`, 400, "not a valid image reference"},
		{"POST", base + "/rollback", "", 409, "no earlier release"},
		{"POST", base + "/resume", "", 409, "neither paused nor in maintenance"},
		{"POST", base + "/pause", `{"timeout": "soon"}`, 400, "want a duration"},
		{"POST", base + "/pause", `{"timeout": "2h"}`, 400, "from 1s to 1h"},
		{"POST", base + "/maintenance", `{"message": 3}`, 400, "want a string"},
		{"POST", "/podswitch/apps/nope/rollback", "", 404, "unknown app"},
		{"GET", base + "/logs?tail=x", "", 400, "tail"},
		{"POST", base + "/scale", `{"web": 2, "clock": 1}`, 400, "no process type"},
		{"POST", base + "/scale", `{"worker": "2"}`, 400, "whole numbers"},
		{"POST", base + "/restart", `{"container": "nope"}`, 404, "no running container"},
		{"POST", base + "/restart", `{"process": "web", "container": "x"}`, 400, "not both"},
		{"GET", base + "/deployments/x", "", 400, "deployment id"},
	} {
		code, body := c.api(tc.method, tc.path, tc.body)
		var e map[string]any
		if err := json.Unmarshal([]byte(body), &e); err != nil || code != tc.code || !strings.Contains(fmt.Sprint(e["error"]), tc.msg) {
			t.Errorf("%s %s %.60s: %d %s, want %d and an error saying %q", tc.method, tc.path, tc.body, code, body, tc.code, tc.msg)
		}
	}
	if got := c.configJSON(""); got != conf {
		t.Errorf("the config changed:\n%s\nwas\n%s", got, conf)
	}
	st := c.status(app)
	if n := len(st.Deployments); n != 1 {
		t.Errorf("%d deployments, want 1", n)
	}
	if len(st.Overrides) != 0 || st.Paused != nil || st.Maintenance != nil || st.Image != imageV1 {
		t.Errorf("status changed: overrides %+v, paused %+v, maintenance %+v, image %s", st.Overrides, st.Paused, st.Maintenance, st.Image)
	}
}
