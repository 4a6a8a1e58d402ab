package integration

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/podswitch/podswitch/internal/engine"
)

// control posts a control request (/control/...) to a web container's own
// address.
func control(t *testing.T, addr, path string) {
	t.Helper()
	resp, err := http.Post("http://"+addr+path, "", nil)
	if err != nil {
		t.Fatalf("control %s %s: %v", addr, path, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("control %s %s: status %d", addr, path, resp.StatusCode)
	}
}

// containerOf returns the container id of st, if it is there.
func containerOf(st engine.AppStatus, id string) (engine.ContainerStatus, bool) {
	for _, c := range st.Containers {
		if c.ID == id {
			return c, true
		}
	}
	return engine.ContainerStatus{}, false
}

// waitStatus polls app's status until cond holds and returns it.
func (c *caddyProc) waitStatus(app, what string, timeout time.Duration, cond func(engine.AppStatus) bool) engine.AppStatus {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st := c.status(app)
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%s: not within %s: %+v", what, timeout, st.Containers)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// replacedBy reports whether old is gone from st and want other web
// containers serve.
func replaced(st engine.AppStatus, old string, want int) bool {
	if _, ok := containerOf(st, old); ok {
		return false
	}
	n := 0
	for _, c := range st.Containers {
		if c.Process == engine.WebProcess {
			if c.State != engine.StateReady {
				return false
			}
			n++
		}
	}
	return n == want
}

// A web container that closes its listener while its process lives leaves
// the pool and is replaced within unhealthy_timeout plus a boot; no request
// fails at 100 req/s (web 2).
func TestLivenessClosedListener(t *testing.T) {
	app := uniqueName("closed")
	cfg := appCfg{Name: app, Image: imageV1, Web: 2, Lines: []string{"unhealthy_timeout 3s", "drain_timeout 2s", "stop_timeout 5s"}}
	c := startCaddy(t, cfg)
	st := c.waitSettled(app, 2, 2*time.Minute)
	victim := st.Containers[0]
	l := startLoad(t, c.url("/"), 100)
	time.Sleep(2 * time.Second)

	t0 := time.Now()
	control(t, victim.Addr, "/control/close")
	st = c.waitStatus(app, "the closed container unhealthy", 30*time.Second, func(st engine.AppStatus) bool {
		cs, ok := containerOf(st, victim.ID)
		return !ok || cs.State == engine.StateUnhealthy
	})
	out := time.Since(t0)
	if cs, ok := containerOf(st, victim.ID); ok {
		t.Logf("closed listener: unhealthy after %s, note %q", out.Round(time.Millisecond), cs.Note)
	}
	st = c.waitStatus(app, "the closed container replaced", 2*time.Minute, func(st engine.AppStatus) bool { return replaced(st, victim.ID, 2) })
	took := time.Since(t0)
	var boot time.Duration
	for _, ct := range st.Containers {
		if ct.ID != victim.ID && ct.StartedAt.After(t0) {
			boot = ct.Since.Sub(ct.StartedAt)
		}
	}
	time.Sleep(2 * time.Second)
	l.check(t, 90)
	t.Logf("closed listener: replaced (new container ready, old one gone) %s after the close; unhealthy_timeout 3s, the replacement booted in %s",
		took.Round(time.Millisecond), boot.Round(time.Millisecond))
	// Out of the pool in about a second, then 3s, then a boot, then the
	// old one's drain (2s) and stop: generous for a loaded machine.
	if took > 3*time.Second+boot+30*time.Second {
		t.Errorf("replaced after %s", took)
	}
	for _, ci := range podmanContainers(t, app) {
		if ci.ID == victim.ID {
			t.Errorf("the closed container is still in Podman")
		}
	}
}

// A web container frozen with podman pause (ready_path set) leaves the
// pool within about a second and is replaced; no request fails once the
// replacement serves.
func TestLivenessFrozen(t *testing.T) {
	app := uniqueName("frozen")
	cfg := appCfg{Name: app, Image: imageV1, Web: 2, Lines: []string{"ready_path /up", "unhealthy_timeout 3s", "drain_timeout 1s", "stop_timeout 3s"}}
	c := startCaddy(t, cfg)
	st := c.waitSettled(app, 2, 2*time.Minute)
	victim := st.Containers[0]
	t.Cleanup(func() { _, _ = execPodman("unpause", victim.ID) })

	podmanCLI(t, "pause", victim.ID)
	t0 := time.Now() // the pause command has returned: it is frozen
	st = c.waitStatus(app, "the frozen container out of the pool", 30*time.Second, func(st engine.AppStatus) bool {
		cs, ok := containerOf(st, victim.ID)
		return !ok || cs.State != engine.StateReady
	})
	out := time.Since(t0)
	cs, _ := containerOf(st, victim.ID)
	t.Logf("frozen container out of the pool %s after podman pause returned (state %s: %s)", out.Round(time.Millisecond), cs.State, cs.Note)
	if out > 10*time.Second {
		t.Errorf("out of the pool after %s, want about a second", out)
	}
	st = c.waitStatus(app, "a replacement serves", 2*time.Minute, func(st engine.AppStatus) bool {
		for _, ct := range st.Containers {
			if ct.ID != victim.ID && ct.StartedAt.After(t0) && ct.State == engine.StateReady {
				return true
			}
		}
		return false
	})
	t.Logf("frozen container: replacement ready %s after the pause", time.Since(t0).Round(time.Millisecond))
	l := startLoad(t, c.url("/"), 100)
	c.waitStatus(app, "the frozen container gone", 2*time.Minute, func(st engine.AppStatus) bool { return replaced(st, victim.ID, 2) })
	t.Logf("frozen container: gone %s after the pause", time.Since(t0).Round(time.Millisecond))
	time.Sleep(3 * time.Second)
	l.check(t, 90)
}

// A deadlocked web container (it accepts TCP, answers nothing; ready_path
// set) leaves the pool within about a second and is replaced new-first
// after unhealthy_timeout: the replacement serves before the deadlocked
// one is stopped; no request sent once it left the pool fails.
func TestLivenessDeadlock(t *testing.T) {
	app := uniqueName("hang")
	cfg := appCfg{Name: app, Image: imageV1, Web: 2, Lines: []string{"ready_path /up", "unhealthy_timeout 3s", "drain_timeout 1s", "stop_timeout 3s"}}
	c := startCaddy(t, cfg)
	st := c.waitSettled(app, 2, 2*time.Minute)
	victim := st.Containers[0]

	t0 := time.Now()
	control(t, victim.Addr, "/control/hang")
	st = c.waitStatus(app, "the deadlocked container out of the pool", 30*time.Second, func(st engine.AppStatus) bool {
		cs, ok := containerOf(st, victim.ID)
		return !ok || cs.State == engine.StateUnhealthy
	})
	out := time.Since(t0)
	cs, _ := containerOf(st, victim.ID)
	t.Logf("deadlocked container out of the pool %s after the hang (note %q)", out.Round(time.Millisecond), cs.Note)
	l := startLoad(t, c.url("/"), 100)
	var repl engine.ContainerStatus
	st = c.waitStatus(app, "a replacement serves", 2*time.Minute, func(st engine.AppStatus) bool {
		for _, ct := range st.Containers {
			if ct.ID != victim.ID && ct.StartedAt.After(t0) && ct.State == engine.StateReady {
				repl = ct
				return true
			}
		}
		return false
	})
	readyAt := time.Since(t0)
	if cs, ok := containerOf(st, victim.ID); ok && cs.State != engine.StateUnhealthy && cs.State != engine.StateDraining {
		t.Errorf("the deadlocked container was %s when its replacement got ready, want still there (unhealthy or draining)", cs.State)
	}
	if repl.StartedAt.Sub(t0) < 3*time.Second {
		t.Errorf("replacement started %s after the hang, before unhealthy_timeout", repl.StartedAt.Sub(t0))
	}
	c.waitStatus(app, "the deadlocked container gone", 2*time.Minute, func(st engine.AppStatus) bool { return replaced(st, victim.ID, 2) })
	t.Logf("deadlocked container: replacement started %s, ready %s, the old one gone %s after the hang (unhealthy_timeout 3s)",
		repl.StartedAt.Sub(t0).Round(time.Millisecond), readyAt.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))
	time.Sleep(2 * time.Second)
	l.check(t, 90)
}

// Restarting Caddy (kill -9, then a clean stop) while ready_path answers
// 503 on every container stops no container; they serve again once the
// path answers 200.
func TestRestartDuringReadinessOutage(t *testing.T) {
	app := uniqueName("outage")
	cfg := appCfg{Name: app, Image: imageV1, Web: 2, Lines: []string{"ready_path /up", "unhealthy_timeout 10m"}}
	c := startCaddy(t, cfg)
	st := c.waitSettled(app, 2, 2*time.Minute)
	ids := webIDs(st)
	addrs := map[string]string{}
	for _, ct := range st.Containers {
		addrs[ct.ID] = ct.Addr
	}
	for _, how := range []string{"kill -9", "clean stop"} {
		for _, id := range ids {
			control(t, addrs[id], "/control/up?status=503")
		}
		c.waitStatus(app, "every container unhealthy", 30*time.Second, func(st engine.AppStatus) bool {
			return st.AllUnhealthy != "" && len(st.Containers) == 2 &&
				st.Containers[0].State == engine.StateUnhealthy && st.Containers[1].State == engine.StateUnhealthy
		})
		// All unhealthy: the pool keeps them all.
		if code, _ := get(t, c.url("/")); code != http.StatusOK {
			t.Errorf("%s: GET / answered %d while every container fails ready_path", how, code)
		}
		if how == "kill -9" {
			c.kill()
		} else {
			c.stop()
		}
		t0 := time.Now()
		c.launch()
		st = c.waitStatus(app, "adopted", time.Minute, func(st engine.AppStatus) bool { return len(st.Containers) == 2 })
		time.Sleep(3 * time.Second) // a wrong adoption stops them within this
		st = c.status(app)
		for _, ct := range st.Containers {
			if !slices.Contains(ids, ct.ID) || ct.State != engine.StateUnhealthy {
				t.Errorf("%s: after the restart, container %s %s (%s), want one of %v unhealthy", how, ct.ID[:12], ct.State, ct.Note, ids)
			}
		}
		var running []string
		for _, ci := range podmanContainers(t, app) {
			if ci.Running {
				running = append(running, ci.ID)
			}
		}
		slices.Sort(running)
		if !slices.Equal(running, ids) {
			t.Fatalf("%s: Podman runs %v after the restart, want the same %v", how, running, ids)
		}
		for _, id := range ids {
			control(t, addrs[id], "/control/up?status=200")
		}
		st = c.waitSettled(app, 2, time.Minute)
		if got := webIDs(st); !slices.Equal(got, ids) {
			t.Errorf("%s: serving %v, want %v", how, got, ids)
		}
		if code, _ := get(t, c.url("/")); code != http.StatusOK {
			t.Errorf("%s: GET / answered %d once ready_path answers 200", how, code)
		}
		t.Logf("%s during a readiness outage: the same 2 containers serve again %s after the start", how, time.Since(t0).Round(time.Millisecond))
	}
}

// A deploy sent during a 12 s hook waits for it: the hook exits by itself
// with code 0 (never 137), then the queued deploy completes.
func TestDeployDuringHook(t *testing.T) {
	app := uniqueName("hookq")
	imageV3 := "localhost/podswitch-testapp:liveness-v3"
	podmanCLI(t, "tag", imageV1, imageV3)
	// Untag only this name: `podman untag <image>` alone would remove
	// every name of the image, v1's too.
	t.Cleanup(func() { _, _ = execPodman("untag", imageV3, imageV3) })
	cfg := appCfg{Name: app, Image: imageV1, Web: 1, Lines: []string{"postdeploy /app hook", "env HOOK_DELAY 12s", "stop_timeout 3s", "drain_timeout 1s"}}
	c := startCaddy(t, cfg)
	c.mustDeploy(app, imageV1, 2*time.Minute)
	if code, body := c.post("/podswitch/apps/"+app+"/deploy", "application/json", `{"image": "`+imageV2+`"}`); code != http.StatusAccepted {
		t.Fatalf("deploy v2: %d %s", code, body)
	}
	c.waitStatus(app, "the v2 hook runs", time.Minute, func(st engine.AppStatus) bool {
		d := st.Deployments[0]
		return d.Image == imageV2 && d.Hook != nil && d.Hook.Container != ""
	})
	t0 := time.Now()
	if code, body := c.post("/podswitch/apps/"+app+"/deploy", "application/json", `{"image": "`+imageV3+`"}`); code != http.StatusAccepted {
		t.Fatalf("deploy v3: %d %s", code, body)
	}
	st := c.waitStatus(app, "the v3 deployment queued", 10*time.Second, func(st engine.AppStatus) bool {
		return st.Deployments[0].Image == imageV3 && st.Deployments[0].Note != ""
	})
	if d := st.Deployments[0]; d.Status != engine.StatusStarting || !strings.Contains(d.Note, "waiting for the postdeploy hook of deployment") {
		t.Errorf("queued deployment: %s, note %q", d.Status, d.Note)
	}
	d2 := c.waitDeployment(app, imageV2, time.Minute)
	if d2.Hook == nil || d2.Hook.ExitCode == nil || *d2.Hook.ExitCode != 0 {
		t.Errorf("the v2 hook: %+v, want exit code 0", d2.Hook)
	}
	if d2.Status != engine.StatusAborted {
		t.Errorf("v2 deployment %s (%s), want aborted", d2.Status, d2.Error)
	}
	d3 := c.mustDeploy(app, imageV3, 2*time.Minute)
	t.Logf("deploy during a 12s hook: the hook ended with exit code %d after %s; the queued deploy waited (%q) and succeeded %s after it was sent",
		*d2.Hook.ExitCode, d2.Hook.EndedAt.Sub(d2.Hook.StartedAt).Round(time.Millisecond), d3.Note, time.Since(t0).Round(time.Millisecond))
	if d3.Hook == nil || d3.Hook.ExitCode == nil || *d3.Hook.ExitCode != 0 || d3.Hook.StartedAt.Before(d2.Hook.EndedAt) {
		t.Errorf("the v3 hook %+v ran before the v2 hook ended (%s)", d3.Hook, d2.Hook.EndedAt)
	}
}

// A kill -9 of Caddy during a hook: after the restart, never two hook
// containers of the app at once, and the deployment started over succeeds.
func TestKillDuringHookOneHook(t *testing.T) {
	app := uniqueName("hookk")
	cfg := appCfg{Name: app, Image: imageV1, Web: 1, Lines: []string{"postdeploy /app hook", "env HOOK_DELAY 12s", "stop_timeout 3s", "drain_timeout 1s"}}
	c := startCaddy(t, cfg)
	c.mustDeploy(app, imageV1, 2*time.Minute)
	if code, body := c.post("/podswitch/apps/"+app+"/deploy", "application/json", `{"image": "`+imageV2+`"}`); code != http.StatusAccepted {
		t.Fatalf("deploy v2: %d %s", code, body)
	}
	c.waitStatus(app, "the v2 hook runs", time.Minute, func(st engine.AppStatus) bool {
		d := st.Deployments[0]
		return d.Image == imageV2 && d.Hook != nil && d.Hook.Container != ""
	})
	time.Sleep(2 * time.Second)
	c.kill()
	hooks := func() int {
		n := 0
		for _, ci := range podmanContainers(t, app) {
			if ci.Running && ci.Labels[engine.LabelProcess] == engine.HookProcess {
				n++
			}
		}
		return n
	}
	if n := hooks(); n != 1 {
		t.Fatalf("%d hooks run after the kill, want the one left running", n)
	}
	c.launch()
	most, polls := 0, 0
	deadline := time.Now().Add(3 * time.Minute)
	for {
		most = max(most, hooks())
		polls++
		st := c.status(app)
		if st.Release != nil && st.Release.Image == imageV2 && hooks() == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("v2 did not serve after the restart: %+v", st.Deployments[:1])
		}
		time.Sleep(200 * time.Millisecond)
	}
	d := c.mustDeploy(app, imageV2, time.Minute)
	t.Logf("kill -9 during a hook: at most %d hook container(s) running at once over %d polls; the started-over deployment %d succeeded (hook exit %s, note %q)",
		most, polls, d.ID, hookExit(d.Hook), d.Note)
	if most > 1 {
		t.Errorf("%d hook containers ran at once", most)
	}
}

func hookExit(h *engine.HookRecord) string {
	if h == nil || h.ExitCode == nil {
		return "none"
	}
	return strconv.Itoa(*h.ExitCode)
}
