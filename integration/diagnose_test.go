package integration

import (
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/podswitch/podswitch/internal/engine"
)

// Diagnosing and watching deployments, HTTP readiness, retries and secrets
// (issue 10).

// A release that crashes at boot leaves its last output lines in its
// deployment record, `history <app> <id>` prints them, and
// `caddy podswitch logs` shows a running container's output.
func TestFailedDeployKeepsOutput(t *testing.T) {
	app := uniqueName("out")
	cfg := appCfg{Name: app, Image: imageV1, Web: 1}
	c := startCaddy(t, cfg)
	c.mustDeploy(app, imageV1, 60*time.Second)

	code, out := c.podswitchCLI("logs", app, "--tail", "5")
	if code != 0 || !strings.Contains(out, "listening on 0.0.0.0:5000") || !strings.Contains(out, "web.") {
		t.Errorf("logs of a running container: exit %d: %s", code, out)
	}

	bad := cfg
	bad.Lines = []string{"env MODE crash"}
	c.reload(bad)
	d := c.waitDeployment(app, imageV1, 60*time.Second)
	if d.Status != engine.StatusCrashedError {
		t.Fatalf("deploy of a crashing release: %s %s", d.Status, d.Error)
	}
	found := false
	for _, ct := range d.Containers {
		for _, l := range ct.Output {
			if strings.Contains(l, "MODE=crash, exiting with code 3") {
				found = true
			}
		}
	}
	if !found {
		t.Errorf("the deployment record has no output of the crashed container: %+v", d.Containers)
	}
	code, out = c.podswitchCLI("history", app, itoa(d.ID))
	if code != 0 || !strings.Contains(out, "MODE=crash, exiting with code 3") || !strings.Contains(out, "crashed") {
		t.Errorf("history %s %d: exit %d: %s", app, d.ID, code, out)
	}
	if code, body := get(t, c.url("/")); code != http.StatusOK {
		t.Errorf("the serving release after the crash: %d %s", code, body)
	}
}

// `deploy --wait` prints each step as it happens, in order.
func TestDeployWaitPrintsSteps(t *testing.T) {
	app := uniqueName("steps")
	cfg := appCfg{Name: app, Image: imageV1, Web: 2, Lines: []string{"postdeploy /app hook", "drain_timeout 1s", "stop_timeout 5s"}}
	c := startCaddy(t, cfg)
	c.mustDeploy(app, imageV1, 60*time.Second)
	code, out := c.podswitchCLI("deploy", app, imageV2, "--wait")
	if code != 0 {
		t.Fatalf("deploy --wait: exit %d: %s", code, out)
	}
	want := []string{"web container", "created, started after", "ready,", "postdeploy hook started", "postdeploy hook ended with exit code 0",
		"switched: release", "old web container", "draining", "stopped", "success"}
	at := 0
	for _, w := range want {
		i := strings.Index(out[at:], w)
		if i < 0 {
			t.Fatalf("deploy --wait output lacks %q after position %d (steps out of order?):\n%s", w, at, out)
		}
		at += i + len(w)
	}
	if code, out := c.podswitchCLI("deploy", app, imageV1, "--wait", "--json"); code != 0 || strings.Contains(out, "created, started after") {
		t.Errorf("deploy --wait --json prints steps or fails: exit %d: %s", code, out)
	}
}

// ready_path keeps a release whose app answers 500 from going live
// (timeout-error, the old release serves every request); once it answers
// 200, the same image deploys again (a retry), and the env file is read
// again at that deploy.
func TestReadyPathAndRetry(t *testing.T) {
	app := uniqueName("ready")
	envFile := filepath.Join(t.TempDir(), "app.env")
	if err := os.WriteFile(envFile, []byte("UP_STATUS=200\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := appCfg{Name: app, Image: imageV1, Web: 2, Lines: []string{"ready_path /up", "boot_timeout 4s", "env_file " + envFile, "drain_timeout 1s"}}
	c := startCaddy(t, cfg)
	c.mustDeploy(app, imageV1, 60*time.Second)
	c.waitSettled(app, 2, 30*time.Second)

	if err := os.WriteFile(envFile, []byte("# the app is not healthy\nUP_STATUS=500\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	l := startLoad(t, c.url("/"), loadRate)
	code, out := c.podswitchCLI("deploy", app, imageV2, "--wait")
	if code != 2 || !strings.Contains(out, "timeout-error") || !strings.Contains(out, "answered 500") {
		t.Errorf("deploy of a release answering 500 on ready_path: exit %d: %s", code, out)
	}
	if err := os.WriteFile(envFile, []byte("export UP_STATUS='200'\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out = c.podswitchCLI("deploy", app, imageV2, "--wait")
	if code != 0 || !strings.Contains(out, "success") {
		t.Errorf("retry of the same image once ready_path answers 200: exit %d: %s", code, out)
	}
	time.Sleep(time.Second)
	l.check(t, loadRate/2)
	if code, body := get(t, c.url("/")); code != http.StatusOK || !strings.HasPrefix(body, "version=v2") {
		t.Errorf("after the retry: %d %q", code, body)
	}
}

// A secret given as an {env.X} placeholder or in an env file reaches the
// containers and appears in no log, API answer, GET /config/ or the
// autosave file.
func TestSecretsFromPlaceholderAndEnvFile(t *testing.T) {
	const fromEnv, fromFile = "placeholder-s3cr3t-9f8e7d", "file-s3cr3t-1a2b3c"
	app := uniqueName("secret")
	envFile := filepath.Join(t.TempDir(), "secret.env")
	if err := os.WriteFile(envFile, []byte("FILE_TOKEN="+fromFile+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := appCfg{Name: app, Image: imageV1, Web: 1, Lines: []string{"env DB_PASSWORD {env.PODSWITCH_TEST_SECRET}", "env_file " + envFile}}
	c := startCaddyOpts(t, caddyOpts{env: []string{"PODSWITCH_TEST_SECRET=" + fromEnv}}, cfg)
	c.mustDeploy(app, imageV1, 60*time.Second)
	c.waitSettled(app, 1, 30*time.Second)
	if _, body := get(t, c.url("/env?k=DB_PASSWORD")); body != fromEnv {
		t.Errorf("the container's DB_PASSWORD is %q, want the placeholder's value", body)
	}
	if _, body := get(t, c.url("/env?k=FILE_TOKEN")); body != fromFile {
		t.Errorf("the container's FILE_TOKEN is %q, want the env file's value", body)
	}
	// An operation, so that the state file is written too.
	if code, out := c.podswitchCLI("deploy", app, imageV2, "--wait"); code != 0 {
		t.Fatalf("deploy: exit %d %s", code, out)
	}
	places := map[string]string{}
	for _, path := range []string{"/config/", "/podswitch/apps", "/podswitch/apps/" + app, "/podswitch/apps/" + app + "/deployments"} {
		_, body := c.api(http.MethodGet, path, "")
		places["GET "+path] = body
	}
	_, out := c.podswitchCLI("status", app, "--json")
	places["caddy podswitch status --json"] = out
	places["caddy log"] = c.rawLogs()
	for _, f := range []string{filepath.Join(c.dir, "caddy", "autosave.json"), filepath.Join(c.dir, "caddy", "podswitch", "state", app+".json"),
		filepath.Join(c.dir, "caddy", "podswitch", "history", app+".json")} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Errorf("reading %s: %v", f, err)
		}
		places[f] = string(b)
	}
	for where, text := range places {
		for _, secret := range []string{fromEnv, fromFile} {
			if strings.Contains(text, secret) {
				t.Errorf("%s shows a secret", where)
			}
		}
	}
	if !strings.Contains(places[filepath.Join(c.dir, "caddy", "podswitch", "state", app+".json")], "{env.PODSWITCH_TEST_SECRET}") {
		t.Errorf("the state file does not keep the placeholder")
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
