package integration

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/podswitch/podswitch/internal/engine"
)

// Faults that come together: Caddy killed at each point of a deploy, a crash
// while another process type retries, a give-up and the deploy that fixes
// it, a bad scale, a frozen Podman service, a refused reload, an app removed
// and added back, a reload that changes the logs, long streams and drains,
// a clean exit with containers still draining.

// releaseContainers returns the IDs of app's containers of release, as
// Podman has them.
func releaseContainers(t *testing.T, app, release string) []string {
	t.Helper()
	var ids []string
	for _, ci := range podmanContainers(t, app) {
		if ci.Labels[engine.LabelRelease] == release {
			ids = append(ids, ci.ID)
		}
	}
	slices.Sort(ids)
	return ids
}

// killRelease is the release of the kill -9 tests: two web containers and
// a worker, the next release starting from it.
func killRelease(app string) appCfg {
	return appCfg{Name: app, Image: imageV1, Web: 2, Lines: []string{
		"process worker 1 /app worker", "worker_ready_time 1s", "stop_timeout 5s", "drain_timeout 5s", "boot_timeout 30s",
	}}
}

// Caddy killed with SIGKILL at each point of a deploy, then started again
// with the same config: the release that served before serves until the
// new one is fully ready, with no failed request; the interrupted deploy
// starts over new-first (its postdeploy hook included); the containers of
// a release that was not switched in are never adopted.
func TestKillDuringDeploy(t *testing.T) {
	for _, tc := range []struct {
		name string
		// lines are what the next release adds to the first one.
		lines []string
		// point waits for the moment to kill Caddy.
		point func(t *testing.T, c *caddyProc, old string) logLine
		// switched: the new release was switched in before the kill.
		switched bool
		// fails: the new release fails to boot (its retry after the
		// restart fails the same way).
		fails bool
		// hook: the release has a postdeploy hook.
		hook bool
		// freeze: the Podman service is frozen from the reload to the
		// kill, so that no container of the new release can exist yet.
		freeze bool
	}{
		{
			name:   "before any new container runs",
			freeze: true,
			point: func(t *testing.T, c *caddyProc, old string) logLine {
				return c.waitLog("deployment started", 30*time.Second, func(l logLine) bool {
					return l.Msg == "deployment started" && l.str("image") == imageV2
				})
			},
		},
		{
			name:  "with only a worker of the new release up",
			lines: []string{"env LISTEN_DELAY 6s"},
			point: func(t *testing.T, c *caddyProc, old string) logLine {
				return c.waitLog("worker booted", 30*time.Second, func(l logLine) bool {
					return l.Msg == "container state changed" && l.str("release") != old && l.str("process") == "worker" && l.str("to") == "booted"
				})
			},
		},
		{
			name:  "during the postdeploy hook",
			lines: []string{"postdeploy /app hook", "env HOOK_DELAY 5s"},
			hook:  true,
			point: func(t *testing.T, c *caddyProc, old string) logLine {
				l := c.waitLog("postdeploy hook started", 30*time.Second, func(l logLine) bool {
					return l.Msg == "postdeploy hook started" && l.str("release") != old
				})
				time.Sleep(500 * time.Millisecond)
				return l
			},
		},
		{
			name:     "right after the switch",
			switched: true,
			point: func(t *testing.T, c *caddyProc, old string) logLine {
				return c.waitLog("traffic switched", 30*time.Second, func(l logLine) bool {
					return l.Msg == "traffic switched" && l.str("release") != old
				})
			},
		},
		{
			name:  "while a failed release is being discarded",
			lines: []string{"env MODE never-listen"},
			fails: true,
			point: func(t *testing.T, c *caddyProc, old string) logLine {
				return c.waitLog("a new web container discarded", 30*time.Second, func(l logLine) bool {
					return l.Msg == "container state changed" && l.str("release") != old && l.str("process") == "web" && l.str("to") == "stopping"
				})
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			app := uniqueName("kill9")
			a := killRelease(app)
			c := startCaddy(t, a)
			c.mustDeploy(app, imageV1, 60*time.Second)
			c.waitSettled(app, 2, 30*time.Second)
			relA := c.status(app).Release.ID
			aIDs := releaseContainers(t, app, relA)

			b := a
			b.Image = imageV2
			b.Lines = append(slices.Clone(a.Lines), tc.lines...)
			if tc.fails {
				b.Lines = slices.DeleteFunc(b.Lines, func(l string) bool { return strings.HasPrefix(l, "boot_timeout") })
				b.Lines = append(b.Lines, "boot_timeout 3s")
			}
			thaw := func() {}
			if tc.freeze {
				service := podmanServicePID(t)
				if err := syscall.Kill(service, syscall.SIGSTOP); err != nil {
					t.Fatal(err)
				}
				thaw = sync.OnceFunc(func() { _ = syscall.Kill(service, syscall.SIGCONT) })
				t.Cleanup(thaw)
			}
			c.reload(b)
			// The point's log line names the new release: its key with the
			// pinned image ID once the image is resolved (before that, with
			// Podman frozen, the key of the reference alone).
			relB := tc.point(t, c, relA).str("release")
			c.kill()
			thaw()
			atKill := releaseContainers(t, app, relB)
			t.Logf("killed caddy %s: release %s had %d containers, release %s %d", tc.name, relA, len(aIDs), relB, len(atKill))
			if got := releaseContainers(t, app, relA); !tc.switched && !slices.Equal(got, aIDs) {
				t.Fatalf("containers of the serving release changed before the switch: %v, were %v", got, aIDs)
			}

			c.launch()
			w := startWatcher(c.url("/"))
			l := startLoad(t, c.url("/"), 200)
			d := c.waitDeployment(app, imageV2, 90*time.Second)
			time.Sleep(time.Second)
			l.check(t, 150)
			changes := w.finish()

			adopted := c.waitLog("adoption", 5*time.Second, func(l logLine) bool { return l.Msg == "adopted running containers" })
			switch {
			case tc.switched:
				if adopted.str("release") != relB {
					t.Errorf("adopted release %s, want the switched-in %s", adopted.str("release"), relB)
				}
				if !slices.Equal(changes, []string{"v2"}) {
					t.Errorf("versions seen %v, want v2 only", changes)
				}
				webs := webIDs(c.waitSettled(app, 2, 30*time.Second))
				for _, id := range webs {
					if !slices.Contains(atKill, id) {
						t.Errorf("web container %s was started after the restart: the switched-in release was not adopted as it was", id)
					}
				}
			case tc.fails:
				if adopted.str("release") != relA {
					t.Errorf("adopted release %s, want the serving %s", adopted.str("release"), relA)
				}
				if d.Status != engine.StatusTimeoutError {
					t.Errorf("deployment after the restart: %s %s, want timeout-error", d.Status, d.Error)
				}
				if !slices.Equal(changes, []string{"v1"}) {
					t.Errorf("versions seen %v, want v1 only", changes)
				}
			default:
				if adopted.str("release") != relA {
					t.Errorf("adopted release %s, want the serving %s", adopted.str("release"), relA)
				}
				if d.Status != engine.StatusSuccess || d.Trigger != "start" {
					t.Errorf("deployment after the restart: %s (%s), trigger %q, want success started over (trigger start)", d.Status, d.Error, d.Trigger)
				}
				if !slices.Equal(changes, []string{"v1", "v2"}) {
					t.Errorf("versions seen %v, want v1 then v2: the old release serves until the new one is ready", changes)
				}
				if tc.hook && (d.Hook == nil || d.Hook.ExitCode == nil || *d.Hook.ExitCode != 0) {
					t.Errorf("the hook did not run again in the started-over deployment: %+v", d.Hook)
				}
			}
			if !tc.switched {
				c.waitSettled(app, 2, 30*time.Second)
				now := allIDs(podmanContainers(t, app))
				for _, id := range atKill {
					if slices.Contains(now, id) {
						t.Errorf("container %s of the interrupted release is still there: it was adopted", id)
					}
				}
			}
		})
	}
}

// One process type stuck in retries does not hold back the replacement of
// a crashed web container.
func TestWebCrashWhileWorkerRetries(t *testing.T) {
	app := uniqueName("indep")
	// The worker's command is not a mode of the test app: it exits at
	// once, every time.
	cfg := appCfg{Name: app, Image: imageV1, Web: 2, Lines: []string{"process worker 0 /app no-such-mode", "worker_ready_time 1s"}}
	c := startCaddy(t, cfg)
	c.mustDeploy(app, imageV1, 60*time.Second)
	webs := webIDs(c.waitSettled(app, 2, 30*time.Second))
	l := startLoad(t, c.url("/"), loadRate)

	if code, body := c.api(http.MethodPost, "/podswitch/apps/"+app+"/scale", `{"worker": 1}`); code != http.StatusAccepted {
		t.Fatalf("scale worker to 1: %d %s", code, body)
	}
	time.Sleep(4 * time.Second)
	victim := webs[0]
	killed := time.Now()
	podmanCLI(t, "kill", "--signal", "KILL", victim)
	var replaced time.Duration
	for {
		st := c.status(app)
		ready := 0
		for _, ct := range st.Containers {
			if ct.Process == engine.WebProcess && ct.State == engine.StateReady && ct.ID != victim {
				ready++
			}
		}
		if ready == 2 {
			replaced = time.Since(killed)
			break
		}
		if time.Since(killed) > 20*time.Second {
			t.Fatalf("the crashed web container was not replaced within 20s while the worker retries: %+v", st.Containers)
		}
		time.Sleep(20 * time.Millisecond)
	}
	l.check(t, loadRate/2)
	t.Logf("web container replaced %s after podman kill, while the worker retried", replaced.Round(time.Millisecond))
	retries := 0
	for _, ln := range c.logLines() {
		if ln.Msg == "container failed, retrying" && ln.str("process") == "worker" {
			retries++
		}
	}
	if retries == 0 {
		t.Error("the worker was not retrying: the test proves nothing")
	}
}

// A give-up does not outlive the release that fixes it: the new release's
// worker is replaced when it crashes, and the status no longer says
// gave_up.
func TestGiveUpClearedByDeploy(t *testing.T) {
	app := uniqueName("gaveup")
	cfg := appCfg{Name: app, Image: imageV1, Web: 1, Lines: []string{"process worker 0 /app no-such-mode", "worker_ready_time 1s", "restart_attempts 1"}}
	c := startCaddy(t, cfg)
	c.mustDeploy(app, imageV1, 60*time.Second)
	if code, body := c.api(http.MethodPost, "/podswitch/apps/"+app+"/scale", `{"worker": 1}`); code != http.StatusAccepted {
		t.Fatalf("scale worker to 1: %d %s", code, body)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !slices.Contains(c.status(app).GaveUp, "worker") {
		if time.Now().After(deadline) {
			t.Fatalf("worker did not give up: %+v", c.status(app))
		}
		time.Sleep(100 * time.Millisecond)
	}

	fixed := cfg
	fixed.Lines = []string{"process worker 1 /app worker", "worker_ready_time 1s", "restart_attempts 1"}
	c.reload(fixed)
	c.waitDeployment(app, imageV1, 60*time.Second)
	st := c.status(app)
	if len(st.GaveUp) != 0 {
		t.Errorf("gave_up %v after the release that fixes it", st.GaveUp)
	}
	var worker string
	for _, ct := range st.Containers {
		if ct.Process == "worker" && ct.State == engine.StateReady {
			worker = ct.ID
		}
	}
	if worker == "" {
		t.Fatalf("no ready worker: %+v", st.Containers)
	}
	podmanCLI(t, "kill", "--signal", "KILL", worker)
	deadline = time.Now().Add(20 * time.Second)
	for {
		st := c.status(app)
		ok := false
		for _, ct := range st.Containers {
			if ct.Process == "worker" && ct.State == engine.StateReady && ct.ID != worker {
				ok = true
			}
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the crashed worker of the new release was not replaced within 20s: %+v (gave up: %v)", st.Containers, st.GaveUp)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A scale over the bound is refused; a big scale queues its calls to
// Podman instead of opening one connection per container.
func TestScaleBoundsPodmanPressure(t *testing.T) {
	app := uniqueName("bigscale")
	cfg := appCfg{Name: app, Image: imageV1, Web: 1, Lines: []string{"stop_timeout 2s", "drain_timeout 0s"}}
	c := startCaddy(t, cfg)
	c.mustDeploy(app, imageV1, 60*time.Second)
	if code, body := c.api(http.MethodPost, "/podswitch/apps/"+app+"/scale", `{"web": 100000}`); code != http.StatusBadRequest {
		t.Fatalf("scale to 100000: %d %s, want 400", code, body)
	}
	const n = 30
	pid := c.pid()
	var peak atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			if v := int64(unixConns(t, pid)); v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	start := time.Now()
	if code, body := c.api(http.MethodPost, "/podswitch/apps/"+app+"/scale", fmt.Sprintf(`{"web": %d}`, n)); code != http.StatusAccepted {
		t.Fatalf("scale to %d: %d %s", n, code, body)
	}
	c.waitSettled(app, n, 3*time.Minute)
	took := time.Since(start)
	close(stop)
	<-done
	t.Logf("scale 1 -> %d took %s; at most %d connections from caddy to podman at once", n, took.Round(time.Millisecond), peak.Load())
	if p := peak.Load(); p > 24 {
		t.Errorf("caddy had %d connections to podman at once while scaling to %d, want a small bound", p, n)
	}
	if code, body := c.api(http.MethodPost, "/podswitch/apps/"+app+"/scale", `{"web": 1}`); code != http.StatusAccepted {
		t.Fatalf("scale back to 1: %d %s", code, body)
	}
	c.waitSettled(app, 1, 3*time.Minute)
}

// With the Podman service frozen, a web container that dies leaves the pool
// through podswitch's own health check, and requests fail over without
// failing.
func TestFrozenPodmanDataPlane(t *testing.T) {
	app := uniqueName("frozen")
	cfg := appCfg{Name: app, Image: imageV1, Web: 2}
	c := startCaddy(t, cfg)
	c.mustDeploy(app, imageV1, 60*time.Second)
	webs := webIDs(c.waitSettled(app, 2, 30*time.Second))
	pidOut := podmanCLI(t, "inspect", "--format", "{{.State.Pid}}", webs[0])
	var appPID int
	if _, err := fmt.Sscan(pidOut, &appPID); err != nil || appPID <= 0 {
		t.Fatalf("pid of %s: %q", webs[0], pidOut)
	}
	service := podmanServicePID(t)

	l := startLoad(t, c.url("/"), 200)
	time.Sleep(time.Second)
	if err := syscall.Kill(service, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	thawed := false
	thaw := func() {
		if !thawed {
			thawed = true
			_ = syscall.Kill(service, syscall.SIGCONT)
		}
	}
	t.Cleanup(thaw)
	if err := syscall.Kill(appPID, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 of the app in %s: %v", webs[0], err)
	}
	killed := time.Now()
	time.Sleep(10 * time.Second)
	thaw()
	l.check(t, 150)
	out, ok := c.logTime("container fails its health check, out of the pool", webs[0], "")
	if !ok {
		t.Fatalf("the dead container never left the pool through the health check")
	}
	t.Logf("dead container out of the pool %s after kill -9, with podman frozen", out.Sub(killed).Round(time.Millisecond))
	if d := out.Sub(killed); d > 3*time.Second {
		t.Errorf("the dead container left the pool %s after it died, want about a second", d)
	}
	// Once Podman answers again, the dead one is replaced.
	deadline := time.Now().Add(60 * time.Second)
	for {
		now := webIDs(c.waitSettled(app, 2, 60*time.Second))
		if !slices.Contains(now, webs[0]) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the dead container was not replaced once podman answered")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// A config that Caddy refuses changes no container, even when the podswitch
// app had started with it before another app failed to start.
func TestRefusedReloadChangesNothing(t *testing.T) {
	app := uniqueName("refused")
	other := uniqueName("refnew")
	cfg := appCfg{Name: app, Image: imageV1, Web: 2}
	c := startCaddy(t, cfg)
	c.mustDeploy(app, imageV1, 60*time.Second)
	before := allIDs(podmanContainers(t, app))

	// A port taken by someone else: the http app fails to start, Caddy
	// keeps the running config.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	c.extra = fmt.Sprintf("\nhttp://%s {\n\trespond ok\n}\n", taken.Addr())
	scaled := cfg
	scaled.Web = 1
	added := appCfg{Name: other, Image: imageV1, Web: 1}
	code, body := c.post("/load", "text/caddyfile", c.caddyfile(scaled, added))
	c.extra = ""
	if code == http.StatusOK {
		t.Fatalf("the config with a taken port was loaded: %s", body)
	}
	time.Sleep(3 * time.Second)
	if got := allIDs(podmanContainers(t, app)); !slices.Equal(got, before) {
		t.Errorf("containers of %s after a refused reload: %v, were %v", app, got, before)
	}
	if got := podmanContainers(t, other); len(got) != 0 {
		t.Errorf("the refused config's new app has %d containers", len(got))
	}
	if st := c.status(app); st.Processes["web"] != 2 {
		t.Errorf("desired web %d after the refused reload, want 2", st.Processes["web"])
	}
	if code, _ := c.api(http.MethodGet, "/podswitch/apps/"+other, ""); code != http.StatusNotFound {
		t.Errorf("the refused config's app is known: %d", code)
	}
}

// An app removed from the config and added back while its old owner still
// drains has one owner at a time: the new one starts once the old one is
// done, and what runs in the end is exactly what it tracks.
func TestRemoveAndAddBackOneOwner(t *testing.T) {
	app := uniqueName("readd")
	keep := uniqueName("keep")
	cfg := appCfg{Name: app, Image: imageV1, Web: 2, Lines: []string{"drain_timeout 20s", "stop_timeout 5s"}}
	keeper := appCfg{Name: keep, Image: imageV1, Web: 1}
	c := startCaddy(t, cfg, keeper)
	c.mustDeploy(app, imageV1, 60*time.Second)
	c.waitSettled(app, 2, 30*time.Second)

	slow := make(chan int, 1)
	go func() {
		resp, err := http.Get(c.url("/slow?d=4s"))
		if err != nil {
			slow <- 0
			return
		}
		resp.Body.Close()
		slow <- resp.StatusCode
	}()
	time.Sleep(300 * time.Millisecond)
	c.reload(keeper)
	time.Sleep(300 * time.Millisecond)
	c.reload(cfg, keeper)
	if code := <-slow; code != http.StatusOK {
		t.Errorf("the request in flight when the app was removed: %d", code)
	}
	st := c.waitSettled(app, 2, 90*time.Second)
	time.Sleep(2 * time.Second)
	tracked := []string{}
	for _, ct := range c.status(app).Containers {
		tracked = append(tracked, ct.ID)
	}
	slices.Sort(tracked)
	if got := allIDs(podmanContainers(t, app)); !slices.Equal(got, tracked) {
		t.Errorf("podman has %v, podswitch tracks %v", got, tracked)
	}
	if len(st.Deployments) == 0 {
		t.Errorf("no deployment after the app came back")
	}
}

// A reload that changes where logs go takes the engine's logs with it.
func TestLogsFollowReload(t *testing.T) {
	app := uniqueName("logs")
	dir := t.TempDir()
	first, second := filepath.Join(dir, "first.log"), filepath.Join(dir, "second.log")
	cfg := appCfg{Name: app, Image: imageV1, Web: 1}
	c := newCaddyProc(t, caddyOpts{global: []string{"log {\n\t\toutput file " + first + "\n\t}"}}, cfg)
	c.start(cfg)
	c.mustDeploy(app, imageV1, 60*time.Second)
	c.opts.global = []string{"log {\n\t\toutput file " + second + "\n\t}"}
	c.reload(cfg)
	if code, out := c.podswitchCLI("deploy", app, imageV2, "--wait"); code != 0 {
		t.Fatalf("deploy: exit %d %s", code, out)
	}
	b, err := os.ReadFile(second)
	if err != nil || !strings.Contains(string(b), `"deployment started"`) || !strings.Contains(string(b), imageV2) {
		t.Errorf("the engine's logs of the deploy after the reload are not in the new log file: %v\n%s", err, b)
	}
	a, _ := os.ReadFile(first)
	if strings.Contains(string(a), imageV2) {
		t.Errorf("the engine still logs to the old log file after the reload")
	}
}

// Draining is per container: a long upgraded connection to one container
// holds back nobody else; the stream keeps working.
func TestDrainIsPerContainer(t *testing.T) {
	app := uniqueName("perct")
	cfg := appCfg{Name: app, Image: imageV1, Web: 2, Lines: []string{"drain_timeout 60s", "stop_timeout 5s"}}
	c := startCaddy(t, cfg)
	c.mustDeploy(app, imageV1, 60*time.Second)
	st := c.waitSettled(app, 2, 30*time.Second)
	e := dialEcho(t, c.http)
	host := e.host(t)
	var other string
	for _, ct := range st.Containers {
		if ct.Process == engine.WebProcess && !strings.HasPrefix(ct.ID, host) {
			other = ct.ID
		}
	}
	if other == "" {
		t.Fatalf("the stream's container %s is not one of %+v", host, st.Containers)
	}
	start := time.Now()
	code, body := c.api(http.MethodPost, "/podswitch/apps/"+app+"/restart?wait=1", fmt.Sprintf(`{"container": %q}`, other))
	if code != http.StatusOK || !strings.Contains(body, `"success"`) {
		t.Fatalf("restart of %s: %d %s", other, code, body)
	}
	for {
		if _, err := inspect(t, other); err != nil {
			break
		}
		if time.Since(start) > 30*time.Second {
			t.Fatalf("the restarted container, which had no request, still runs after %s: it waits for the stream of another", time.Since(start))
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("restarted container without requests gone %s after the restart began (drain_timeout 60s)", time.Since(start).Round(time.Millisecond))
	if s, err := e.echo("still there"); err != nil || !strings.HasSuffix(s, "still there") {
		t.Errorf("the stream broke: %q %v", s, err)
	}
}

// Caddy stopped while a switched-out container drains exits as soon as its
// own grace period allows (podswitch adds no wait); the draining container
// gets SIGTERM and the next start removes what is left.
func TestExitWithDrainingContainers(t *testing.T) {
	app := uniqueName("exitdrain")
	cfg := appCfg{Name: app, Image: imageV1, Web: 1, Lines: []string{"drain_timeout 60s", "stop_timeout 30s"}}
	// Caddy's own shutdown waits for the request in flight up to its
	// grace period.
	c := startCaddyOpts(t, caddyOpts{global: []string{"grace_period 2s"}}, cfg)
	c.mustDeploy(app, imageV1, 60*time.Second)
	old := webIDs(c.waitSettled(app, 1, 30*time.Second))
	slow := make(chan struct{})
	go func() {
		defer close(slow)
		if resp, err := http.Get(c.url("/slow?d=20s")); err == nil {
			resp.Body.Close()
		}
	}()
	time.Sleep(300 * time.Millisecond)
	next := cfg
	next.Image = imageV2
	c.reload(next)
	c.mustDeploy(app, imageV2, 60*time.Second)
	time.Sleep(500 * time.Millisecond)
	if ci, err := inspect(t, old[0]); err != nil || !ci.Running {
		t.Fatalf("the old container should drain for its request: %+v %v", ci, err)
	}
	start := time.Now()
	c.stop()
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("caddy took %s to stop with a container draining", took)
	}
	// SIGTERM: the test app shuts down gracefully, then exits.
	deadline := time.Now().Add(40 * time.Second)
	for {
		ci, err := inspect(t, old[0])
		if err != nil || !ci.Running {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the draining container still runs 40s after caddy stopped: it got no SIGTERM")
		}
		time.Sleep(200 * time.Millisecond)
	}
	<-slow
	c.launch()
	c.waitSettled(app, 1, 30*time.Second)
	deadline = time.Now().Add(30 * time.Second)
	for {
		if _, err := inspect(t, old[0]); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the old container is still there 30s after the next start")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if code, body := get(t, c.url("/")); code != http.StatusOK || !strings.HasPrefix(body, "version=v2") {
		t.Errorf("after the restart: %d %q", code, body)
	}
}
