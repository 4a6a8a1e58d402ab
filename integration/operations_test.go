package integration

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/podswitch/podswitch/internal/engine"
)

// Operations act on the engine, without a Caddy reload: no other app or site
// sees anything.

// Two apps on two sites. An upgraded connection to app B stays open and
// keeps echoing across an API deploy, scale, restart and rollback of app A,
// and across a scale-up and a restart of B that do not touch its
// container; no request fails on either site.
func TestOperationsKeepOtherAppsStreams(t *testing.T) {
	a := appCfg{Name: uniqueName("opsa"), Image: imageV1, Web: 2, Lines: []string{"drain_timeout 5s", "stop_timeout 5s"}}
	b := appCfg{Name: uniqueName("opsb"), Image: imageV1, Web: 2, Lines: []string{"drain_timeout 5s", "stop_timeout 5s"}}
	c := startCaddyOpts(t, caddyOpts{siteApps: []string{b.Name}}, a, b)
	c.mustDeploy(a.Name, imageV1, 60*time.Second)
	c.mustDeploy(b.Name, imageV1, 60*time.Second)
	c.waitSettled(a.Name, 2, 30*time.Second)
	stB := c.waitSettled(b.Name, 2, 30*time.Second)

	e := dialEcho(t, c.sites[b.Name])
	host := e.host(t)
	var other string
	for _, ct := range stB.Containers {
		if ct.Process == engine.WebProcess && !strings.HasPrefix(ct.ID, host) {
			other = ct.ID
		}
	}
	la := startLoad(t, c.appURL(a.Name, "/"), 300)
	lb := startLoad(t, c.appURL(b.Name, "/"), 300)
	var mu sync.Mutex
	var streamErrs []string
	stop := make(chan struct{})
	echoed := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
			msg := fmt.Sprintf("ping %d", i)
			s, err := e.echo(msg)
			mu.Lock()
			if err != nil || !strings.HasSuffix(s, msg) || !strings.HasPrefix(s, host) {
				streamErrs = append(streamErrs, fmt.Sprintf("%q %v", s, err))
			} else {
				echoed++
			}
			mu.Unlock()
		}
	}()

	reloads := func() int {
		logs := c.rawLogs()
		return strings.Count(logs, `"msg":"load complete"`) + strings.Count(logs, `"msg":"autosaved config`)
	}
	reloadsBefore := reloads()
	appA := "/podswitch/apps/" + a.Name
	for _, op := range []struct{ path, body string }{
		{appA + "/deploy?wait=1", `{"image": "` + imageV2 + `"}`},
		{appA + "/scale?wait=1", `{"web": 3}`},
		{appA + "/restart?wait=1", ""},
		{appA + "/rollback?wait=1", ""},
		{"/podswitch/apps/" + b.Name + "/scale?wait=1", `{"web": 3}`},
		{"/podswitch/apps/" + b.Name + "/restart?wait=1", fmt.Sprintf(`{"container": %q}`, other)},
	} {
		code, body := c.api(http.MethodPost, op.path, op.body)
		if code != http.StatusOK {
			t.Fatalf("POST %s: %d %s", op.path, code, body)
		}
		if strings.Contains(body, `"deployment"`) && !strings.Contains(body, `"status": "success"`) {
			t.Fatalf("POST %s did not succeed: %s", op.path, body)
		}
	}
	time.Sleep(time.Second)
	close(stop)
	<-done
	la.check(t, 225)
	lb.check(t, 225)
	mu.Lock()
	defer mu.Unlock()
	if len(streamErrs) > 0 {
		t.Errorf("the upgraded connection to %s broke: %v", b.Name, streamErrs)
	}
	if echoed < 10 {
		t.Errorf("only %d echoes over the stream", echoed)
	}
	t.Logf("the stream to %s echoed %d times across 6 operations", b.Name, echoed)
	if n := reloads() - reloadsBefore; n > 0 {
		t.Errorf("caddy reloaded its config %d times during the operations", n)
	}
}

// A deploy by API stands across a reload of the unchanged Caddyfile and a
// kill -9 and restart of Caddy (no container replaced); a Caddyfile that
// changes the image wins.
func TestAPIDeploySurvivesReloadAndRestart(t *testing.T) {
	app := uniqueName("ovr")
	cfg := appCfg{Name: app, Image: imageV1, Web: 2, Lines: []string{"drain_timeout 2s", "stop_timeout 5s"}}
	c := startCaddy(t, cfg)
	c.mustDeploy(app, imageV1, 60*time.Second)
	if code, out := c.podswitchCLI("deploy", app, imageV2, "--wait"); code != 0 {
		t.Fatalf("deploy: exit %d %s", code, out)
	}
	running := webIDs(c.waitSettled(app, 2, 30*time.Second))

	c.reload(cfg)
	time.Sleep(2 * time.Second)
	if got := webIDs(c.waitSettled(app, 2, 30*time.Second)); !slices.Equal(got, running) {
		t.Errorf("containers %v after reloading the unchanged Caddyfile, want %v", got, running)
	}
	c.kill()
	c.launch()
	time.Sleep(2 * time.Second)
	st := c.waitSettled(app, 2, 30*time.Second)
	if got := webIDs(st); !slices.Equal(got, running) {
		t.Errorf("containers %v after kill -9 and restart, want %v", got, running)
	}
	if code, body := get(t, c.url("/")); code != http.StatusOK || !strings.HasPrefix(body, "version=v2") {
		t.Errorf("after the restart: %d %q, want the API-deployed v2", code, body)
	}
	if len(st.Overrides) != 1 || st.Overrides[0].Value != imageV2 {
		t.Errorf("overrides after the restart: %+v", st.Overrides)
	}

	// The Caddyfile brings another image: it wins.
	next := cfg
	next.Image = imageV1 + "x"
	podmanCLI(t, "tag", imageV1, next.Image)
	t.Cleanup(func() { _, _ = podmanCLIQuiet("untag", next.Image, next.Image) })
	c.reload(next)
	if d := c.mustDeploy(app, next.Image, 60*time.Second); d.Trigger != "config" {
		t.Errorf("deployment trigger %q, want config", d.Trigger)
	}
	if st := c.status(app); len(st.Overrides) != 0 {
		t.Errorf("overrides after the config changed the image: %+v", st.Overrides)
	}
}

// Pause holds requests until resume (they then complete); a pause that
// times out answers 503 with Retry-After; maintenance answers 503 with the
// message; both survive a restart of Caddy.
func TestPauseAndMaintenance(t *testing.T) {
	app := uniqueName("pause")
	cfg := appCfg{Name: app, Image: imageV1, Web: 1}
	c := startCaddy(t, cfg)
	c.mustDeploy(app, imageV1, 60*time.Second)
	c.waitSettled(app, 1, 30*time.Second)
	base := "/podswitch/apps/" + app

	if code, body := c.api(http.MethodPost, base+"/pause", `{"timeout": "20s"}`); code != http.StatusOK {
		t.Fatalf("pause: %d %s", code, body)
	}
	const held = 20
	var wg sync.WaitGroup
	codes := make([]int, held)
	start := time.Now()
	for i := range held {
		wg.Go(func() {
			resp, err := http.Get(c.url("/"))
			if err != nil {
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			codes[i] = resp.StatusCode
		})
	}
	time.Sleep(2 * time.Second)
	if code, body := c.api(http.MethodPost, base+"/resume", ""); code != http.StatusOK {
		t.Fatalf("resume: %d %s", code, body)
	}
	wg.Wait()
	waited := time.Since(start)
	for i, code := range codes {
		if code != http.StatusOK {
			t.Errorf("held request %d: %d, want 200 after resume", i, code)
		}
	}
	if waited < 2*time.Second {
		t.Errorf("held requests answered after %s, before the resume", waited)
	}

	if code, body := c.api(http.MethodPost, base+"/pause", `{"timeout": "1s"}`); code != http.StatusOK {
		t.Fatalf("pause: %d %s", code, body)
	}
	t0 := time.Now()
	resp, err := http.Get(c.url("/"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || time.Since(t0) < time.Second {
		t.Errorf("request during a 1s pause: %d, Retry-After %q, after %s; want 503 with Retry-After after 1s", resp.StatusCode, resp.Header.Get("Retry-After"), time.Since(t0))
	}
	c.kill()
	c.launch()
	t0 = time.Now()
	resp, err = http.Get(c.url("/"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || time.Since(t0) < time.Second {
		t.Errorf("request after a restart of a paused app: %d after %s, want 503 after the pause's 1s", resp.StatusCode, time.Since(t0))
	}

	const msg = "Back at 14:00 UTC."
	if code, body := c.api(http.MethodPost, base+"/maintenance", `{"message": "`+msg+`"}`); code != http.StatusOK {
		t.Fatalf("maintenance: %d %s", code, body)
	}
	c.stop()
	c.launch()
	code, body := get(t, c.url("/"))
	if code != http.StatusServiceUnavailable || !strings.Contains(body, msg) {
		t.Errorf("request in maintenance after a restart: %d %q, want 503 and the message", code, body)
	}
	if code, body := c.api(http.MethodPost, base+"/resume", ""); code != http.StatusOK {
		t.Fatalf("resume: %d %s", code, body)
	}
	if code, body := get(t, c.url("/")); code != http.StatusOK || !strings.HasPrefix(body, "version=v1") {
		t.Errorf("after resume: %d %q", code, body)
	}
}

// Rollback after a successful deploy switches back with no failed request;
// with no earlier release it answers 409.
func TestRollback(t *testing.T) {
	app := uniqueName("rb")
	cfg := appCfg{Name: app, Image: imageV1, Web: 2, Lines: []string{"drain_timeout 2s", "stop_timeout 5s", "env COLOR blue"}}
	c := startCaddy(t, cfg)
	c.mustDeploy(app, imageV1, 60*time.Second)
	if code, body := c.api(http.MethodPost, "/podswitch/apps/"+app+"/rollback", ""); code != http.StatusConflict {
		t.Errorf("rollback with no earlier release: %d %s, want 409", code, body)
	}
	relV1 := c.status(app).Release.ID
	if code, out := c.podswitchCLI("deploy", app, imageV2, "--wait"); code != 0 {
		t.Fatalf("deploy: exit %d %s", code, out)
	}
	c.waitSettled(app, 2, 30*time.Second)
	w := startWatcher(c.url("/"))
	l := startLoad(t, c.url("/"), loadRate)
	time.Sleep(300 * time.Millisecond)
	code, out := c.podswitchCLI("rollback", app, "--wait")
	if code != 0 || !strings.Contains(out, "success") {
		t.Fatalf("rollback: exit %d %s", code, out)
	}
	time.Sleep(time.Second)
	l.check(t, loadRate/2)
	if got := w.finish(); !slices.Equal(got, []string{"v2", "v1"}) {
		t.Errorf("versions %v, want v2 then v1", got)
	}
	st := c.status(app)
	if st.Release == nil || st.Release.ID != relV1 {
		t.Errorf("release after the rollback %+v, want %s", st.Release, relV1)
	}
	if d := st.Deployments[0]; d.Kind != engine.KindRollback {
		t.Errorf("last deployment %+v, want a rollback", d)
	}
}

// The podswitch directive, with no subdirective written by the user: a
// web container killed under load fails no request.
func TestDirectiveKillUnderLoad(t *testing.T) {
	app := uniqueName("dirkill")
	cfg := appCfg{Name: app, Image: imageV1, Web: 2}
	c := startCaddy(t, cfg)
	c.mustDeploy(app, imageV1, 60*time.Second)
	webs := webIDs(c.waitSettled(app, 2, 30*time.Second))
	if cf := c.caddyfile(cfg); !strings.Contains(cf, "podswitch "+app+" {\n\t}") {
		t.Fatalf("the site block has subdirectives:\n%s", cf)
	}
	l := startLoad(t, c.url("/"), loadRate)
	time.Sleep(time.Second)
	podmanCLI(t, "kill", "--signal", "KILL", webs[1])
	c.waitSettled(app, 2, 30*time.Second)
	time.Sleep(time.Second)
	l.check(t, loadRate/2)
}

// podmanCLIQuiet runs the podman command line and returns its output and
// error, without failing the test.
func podmanCLIQuiet(args ...string) (string, error) {
	out, err := execPodman(args...)
	return string(out), err
}
