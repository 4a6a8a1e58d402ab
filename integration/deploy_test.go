package integration

import (
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/podswitch/podswitch/internal/engine"
)

// loadRate is the constant load the zero-downtime tests run under.
const loadRate = 400

// Ten deploys by config reload, alternating two images, under constant
// load: every one ends success, no request fails, and a client that asks
// one request after another sees the version change exactly once per
// deploy.
func TestZeroDowntimeDeploysUnderLoad(t *testing.T) {
	app := uniqueName("zd")
	cfg := appCfg{Name: app, Image: imageV1, Web: 2, Lines: []string{"boot_timeout 30s", "drain_timeout 10s", "stop_timeout 10s"}}
	c := startCaddy(t, cfg)
	first := c.waitDeployment(app, imageV1, 60*time.Second)
	if first.Status != engine.StatusSuccess {
		t.Fatalf("first deploy: %s %s", first.Status, first.Error)
	}
	c.waitSettled(app, 2, 30*time.Second)

	l := startLoad(t, c.url("/"), loadRate)
	l.allowDrops = 10 // it reloads under load: see reloadDrop
	w := startWatcher(c.url("/"))
	time.Sleep(500 * time.Millisecond)

	images := []string{imageV2, imageV1}
	want := []string{"v1"}
	for i := range 10 {
		img := images[i%2]
		cfg.Image = img
		c.reload(cfg)
		d := c.waitDeployment(app, img, 60*time.Second)
		if d.Status != engine.StatusSuccess {
			t.Fatalf("deploy %d of %s: %s %s", i+1, img, d.Status, d.Error)
		}
		t.Logf("deploy %d: %s, boot+switch %s, last ready to switch %s", i+1, img,
			d.SwitchedAt.Sub(d.StartedAt).Round(time.Millisecond), d.SwitchedAt.Sub(d.LastReadyAt))
		want = append(want, strings.TrimPrefix(img, "localhost/podswitch-testapp:"))
		// Let the old release drain and stop under load before the next.
		c.waitSettled(app, 2, 60*time.Second)
		time.Sleep(300 * time.Millisecond)
	}
	changes := w.finish()
	l.check(t, loadRate/2)
	if !slices.Equal(changes, want) {
		t.Errorf("versions seen in order: %v, want %v (one switch per deploy)", changes, want)
	}
	if len(w.errs) > 0 {
		t.Errorf("sequential client errors: %v", w.errs)
	}
	if got := len(podmanContainers(t, app)); got != 2 {
		t.Errorf("podman has %d containers of %s, want 2", got, app)
	}
}

// A release that never listens ends timeout-error after boot_timeout; the
// old release serves throughout and nothing of the new one is left.
func TestDeployTimeoutKeepsOldRelease(t *testing.T) {
	app := uniqueName("to")
	cfg := appCfg{Name: app, Image: imageV1, Web: 2, Lines: []string{"boot_timeout 3s"}}
	c := startCaddy(t, cfg)
	c.mustDeploy(app, imageV1, 60*time.Second)
	before := webIDs(c.waitSettled(app, 2, 30*time.Second))

	l := startLoad(t, c.url("/"), loadRate)
	l.allowDrops = 2 // it reloads under load: see reloadDrop
	bad := cfg
	bad.Image = imageV2
	bad.Lines = append(bad.Lines, "env MODE never-listen")
	c.reload(bad)
	d := c.waitDeployment(app, imageV2, 60*time.Second)
	l.check(t, loadRate/2)
	if d.Status != engine.StatusTimeoutError {
		t.Fatalf("status %s (%s), want timeout-error", d.Status, d.Error)
	}
	if took := d.EndedAt.Sub(d.StartedAt); took < 3*time.Second {
		t.Errorf("timeout-error after %s, before boot_timeout 3s", took)
	}
	if !strings.Contains(d.Error, "PORT") {
		t.Errorf("error %q does not say what was waited for", d.Error)
	}
	st := c.status(app)
	if got := webIDs(st); !slices.Equal(got, before) {
		t.Errorf("web containers %v, want the old ones %v", got, before)
	}
	assertReleaseGone(t, app, d.Release)
	if code, body := get(t, c.url("/")); code != http.StatusOK || !strings.HasPrefix(body, "version=v1") {
		t.Errorf("after the failed deploy: %d %q", code, body)
	}
	// The failed spec stays desired but is not retried by an identical
	// reload.
	c.reload(bad)
	time.Sleep(500 * time.Millisecond)
	if n := len(c.status(app).Deployments); n != 2 {
		t.Errorf("%d deployments after reloading the same failed spec, want 2", n)
	}
}

// A release whose app exits at boot ends crashed-error without waiting out
// boot_timeout.
func TestDeployCrashAtBoot(t *testing.T) {
	app := uniqueName("cr")
	cfg := appCfg{Name: app, Image: imageV1, Web: 2, Lines: []string{"boot_timeout 60s"}}
	c := startCaddy(t, cfg)
	c.mustDeploy(app, imageV1, 60*time.Second)
	c.waitSettled(app, 2, 30*time.Second)
	bad := cfg
	bad.Image = imageV2
	bad.Lines = append(bad.Lines, "env MODE crash")
	c.reload(bad)
	d := c.waitDeployment(app, imageV2, 60*time.Second)
	if d.Status != engine.StatusCrashedError {
		t.Fatalf("status %s (%s), want crashed-error", d.Status, d.Error)
	}
	took := d.EndedAt.Sub(d.StartedAt)
	t.Logf("crashed-error after %s: %s", took.Round(time.Millisecond), d.Error)
	if took > 30*time.Second {
		t.Errorf("crashed-error took %s, as if it waited for boot_timeout (60s)", took)
	}
	if !strings.Contains(d.Error, "code 3") {
		t.Errorf("error %q does not give the exit code", d.Error)
	}
	if code, body := get(t, c.url("/")); code != http.StatusOK || !strings.HasPrefix(body, "version=v1") {
		t.Errorf("after the failed deploy: %d %q", code, body)
	}
	assertReleaseGone(t, app, d.Release)
}

// An image that does not exist ends start-error with Podman's reason, which
// names the image; the old release serves.
func TestDeployMissingImage(t *testing.T) {
	app := uniqueName("mi")
	cfg := appCfg{Name: app, Image: imageV1, Web: 1}
	c := startCaddy(t, cfg)
	c.mustDeploy(app, imageV1, 60*time.Second)
	missing := "localhost/podswitch-no-such-image:v9"
	bad := cfg
	bad.Image = missing
	c.reload(bad)
	d := c.waitDeployment(app, missing, 60*time.Second)
	if d.Status != engine.StatusStartError {
		t.Fatalf("status %s (%s), want start-error", d.Status, d.Error)
	}
	if !strings.Contains(d.Error, "podswitch-no-such-image") {
		t.Errorf("error %q does not name the image", d.Error)
	}
	if code, body := get(t, c.url("/")); code != http.StatusOK || !strings.HasPrefix(body, "version=v1") {
		t.Errorf("after the failed deploy: %d %q", code, body)
	}
}

// An app that ignores SIGTERM is killed after stop_timeout: it still runs
// well into the grace period, and is gone after it.
func TestStopTimeoutKillsAppIgnoringSIGTERM(t *testing.T) {
	app := uniqueName("st")
	cfg := appCfg{Name: app, Image: imageV1, Web: 1, Lines: []string{"env MODE ignore-term", "stop_timeout 4s", "drain_timeout 1s"}}
	c := startCaddy(t, cfg)
	c.mustDeploy(app, imageV1, 60*time.Second)
	old := webIDs(c.waitSettled(app, 1, 30*time.Second))
	next := cfg
	next.Image = imageV2
	c.reload(next)
	d := c.waitDeployment(app, imageV2, 60*time.Second)
	if d.Status != engine.StatusSuccess {
		t.Fatalf("deploy: %s %s", d.Status, d.Error)
	}
	// Drain ends within ~1s of the switch (nothing in flight), then
	// SIGTERM: the old container must outlive it by the grace period.
	time.Sleep(3 * time.Second)
	if _, err := inspect(t, old[0]); err != nil {
		t.Fatalf("3s after the switch the old container should still be in its grace period (stop_timeout 4s): %v", err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := inspect(t, old[0]); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the container ignoring SIGTERM was not killed after stop_timeout")
		}
		time.Sleep(100 * time.Millisecond)
	}
	gone := time.Since(d.SwitchedAt)
	t.Logf("old container gone %s after the switch (drain ≤1s + stop_timeout 4s)", gone.Round(time.Millisecond))
	if gone < 4*time.Second {
		t.Errorf("old container gone %s after the switch, before stop_timeout", gone)
	}
}

// An app that exits at once on SIGTERM does not cut a request that was in
// flight when the switch happened: draining waits for it.
func TestDrainLetsInFlightRequestFinish(t *testing.T) {
	app := uniqueName("dr")
	cfg := appCfg{Name: app, Image: imageV1, Web: 1, Lines: []string{"env MODE quick-exit", "drain_timeout 20s"}}
	c := startCaddy(t, cfg)
	c.mustDeploy(app, imageV1, 60*time.Second)
	c.waitSettled(app, 1, 30*time.Second)

	var wg sync.WaitGroup
	var code int
	var body string
	var reqErr error
	wg.Go(func() {
		resp, err := http.Get(c.url("/slow?d=4s"))
		if err != nil {
			reqErr = err
			return
		}
		defer resp.Body.Close()
		code, body = resp.StatusCode, mustRead(resp)
	})
	time.Sleep(500 * time.Millisecond)
	next := cfg
	next.Image = imageV2
	c.reload(next)
	d := c.waitDeployment(app, imageV2, 60*time.Second)
	if d.Status != engine.StatusSuccess {
		t.Fatalf("deploy: %s %s", d.Status, d.Error)
	}
	wg.Wait()
	if reqErr != nil || code != http.StatusOK || !strings.Contains(body, "slow done") {
		t.Errorf("request in flight during the switch: code %d body %q err %v", code, body, reqErr)
	}
	if !d.SwitchedAt.Before(time.Now().Add(-time.Second)) {
		t.Log("note: the switch happened late; the slow request may not have overlapped it")
	}
	if code, body := get(t, c.url("/")); code != http.StatusOK || !strings.HasPrefix(body, "version=v2") {
		t.Errorf("after the deploy: %d %q", code, body)
	}
}

// A reload that leaves the config unchanged touches no container; one that
// changes only the count scales without a deployment.
func TestReloadUnchangedAndScale(t *testing.T) {
	app := uniqueName("rl")
	cfg := appCfg{Name: app, Image: imageV1, Web: 2}
	c := startCaddy(t, cfg)
	c.mustDeploy(app, imageV1, 60*time.Second)
	before := webIDs(c.waitSettled(app, 2, 30*time.Second))
	c.reload(cfg)
	time.Sleep(time.Second)
	st := c.status(app)
	if got := webIDs(st); !slices.Equal(got, before) {
		t.Errorf("unchanged reload: containers %v, want %v", got, before)
	}
	if len(st.Deployments) != 1 {
		t.Errorf("unchanged reload made a deployment: %+v", st.Deployments)
	}

	l := startLoad(t, c.url("/"), loadRate)
	l.allowDrops = 3 // it reloads under load: see reloadDrop
	cfg.Web = 3
	c.reload(cfg)
	up := webIDs(c.waitSettled(app, 3, 60*time.Second))
	for _, id := range before {
		if !slices.Contains(up, id) {
			t.Errorf("scale up replaced container %s", id)
		}
	}
	cfg.Web = 1
	c.reload(cfg)
	down := webIDs(c.waitSettled(app, 1, 60*time.Second))
	l.check(t, loadRate/2)
	if !slices.Contains(up, down[0]) {
		t.Errorf("scale down left %s, not one of %v", down[0], up)
	}
	if n := len(c.status(app).Deployments); n != 1 {
		t.Errorf("scaling made %d deployments, want none beyond the first", n-1)
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(podmanContainers(t, app)) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("podman still has %d containers of %s", len(podmanContainers(t, app)), app)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// An app removed from the config is drained and stopped.
func TestAppRemovedIsStopped(t *testing.T) {
	keep := uniqueName("keep")
	gone := uniqueName("gone")
	a := appCfg{Name: keep, Image: imageV1, Web: 1}
	b := appCfg{Name: gone, Image: imageV1, Web: 2, Lines: []string{"drain_timeout 1s", "stop_timeout 2s"}}
	c := startCaddy(t, a, b)
	c.waitDeployment(gone, imageV1, 60*time.Second)
	c.waitSettled(gone, 2, 30*time.Second)
	c.reload(a)
	deadline := time.Now().Add(30 * time.Second)
	for len(podmanContainers(t, gone)) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("containers of the removed app still there: %d", len(podmanContainers(t, gone)))
		}
		time.Sleep(200 * time.Millisecond)
	}
	if n := len(podmanContainers(t, keep)); n != 1 {
		t.Errorf("the app that stayed has %d containers, want 1", n)
	}
}
