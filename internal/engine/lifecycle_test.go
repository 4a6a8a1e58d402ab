package engine

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// Tests of the lifecycle after the first deploy: restarts and their retry
// policy, crash recovery, the postdeploy hook, an unreachable runtime and
// the deployment history. They run in synctest bubbles over the fakes.

// setForTest sets *p to v until the test ends. Call it outside the bubble:
// the engine's goroutines read these variables.
func setForTest[T any](t *testing.T, p *T, v T) {
	t.Helper()
	old := *p
	*p = v
	t.Cleanup(func() { *p = old })
}

// newHarnessWith is newHarness with Deps changed by opt.
func newHarnessWith(t *testing.T, rt *fakeRuntime, opt func(*Deps)) *harness {
	t.Helper()
	h := newHarness(t, rt)
	deps := h.m.deps
	h.m.Close() // never applied: nothing runs yet
	opt(&deps)
	h.m = NewManager(deps)
	return h
}

// shutdown closes the manager and waits for its background work (drains
// and stops already under way), so that nothing logs once the test has
// returned: Close alone does not wait for it.
func (h *harness) shutdown() {
	h.m.Close()
	h.m.Wait()
}

// eventsNamed returns the events of name emitted so far. Call it after
// synctest.Wait: Notify runs in a goroutine of its own.
func (h *harness) eventsNamed(name string) []Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []Event
	for _, ev := range h.events {
		if ev.Name == name {
			out = append(out, ev)
		}
	}
	return out
}

// hookRuns counts the postdeploy containers Run was asked for.
func (h *harness) hookRuns() int {
	n := 0
	for _, r := range h.rt.Runs() {
		if r.Labels[LabelProcess] == HookProcess {
			n++
		}
	}
	return n
}

// gaps returns the durations between consecutive times.
func gaps(ts []time.Time) []time.Duration {
	var out []time.Duration
	for i := 1; i < len(ts); i++ {
		out = append(out, ts[i].Sub(ts[i-1]))
	}
	return out
}

func seconds(ns ...int) []time.Duration {
	out := make([]time.Duration, len(ns))
	for i, n := range ns {
		out[i] = time.Duration(n) * time.Second
	}
	return out
}

// assertRunning checks that the runtime still has ids, running.
func (h *harness) assertRunning(ids []string) {
	h.t.Helper()
	for _, id := range ids {
		if c, ok := h.rt.Get(id); !ok || !c.Running {
			h.t.Errorf("container %s: exists %v, running %v; want it running", id, ok, c.Running)
		}
	}
}

// noStopsOf checks that no Stop call named any of ids.
func (h *harness) noStopsOf(ids []string) {
	h.t.Helper()
	for _, c := range h.rt.Stops() {
		if slices.Contains(ids, c.ID) {
			h.t.Errorf("Stop(%s) called at %v", c.ID, c.At)
		}
	}
}

type bootObs struct {
	process string
	took    time.Duration
	ok      bool
}

// 1. A restart whose new container always crashes retries with exact
// exponential delays (no jitter), gives up after restart_attempts, and never
// touches what serves.
func TestRestartBackoffTiming(t *testing.T) {
	setForTest(t, &retryJitter, 0)
	synctest.Test(t, func(t *testing.T) {
		var (
			obsMu sync.Mutex
			obs   []bootObs
		)
		h := newHarnessWith(t, nil, func(d *Deps) {
			d.ObserveBoot = func(app, process string, took time.Duration, ok bool) {
				obsMu.Lock()
				defer obsMu.Unlock()
				if app != appName {
					t.Errorf("ObserveBoot for app %q", app)
				}
				obs = append(obs, bootObs{process, took, ok})
			}
		})
		defer h.shutdown()
		spec := appSpec(t, "localhost/blog:v1", 1, worker(1))
		spec.RestartAttempts = 3 // 4 attempts
		s, _ := h.deployFirst(spec)
		ref := h.m.Pool(appName)
		pool := ref.Load()
		old := h.containers("", "")
		webRuns, workerRuns := len(h.rt.RunTimes(WebProcess)), len(h.rt.RunTimes("worker"))
		obsMu.Lock()
		obs = nil
		obsMu.Unlock()
		stopWatch := h.watchPool(ref)
		defer stopWatch()

		h.rt.OnProcess(WebProcess, behavior{Crash: true})
		t0 := time.Now()
		d, err := restart(s, "", "")
		if err != nil {
			t.Fatal(err)
		}
		got := h.waitDone(s, d.ID)
		synctest.Wait()

		if got.Status != StatusCrashedError || !strings.Contains(got.Error, "exited with code 3") {
			t.Errorf("restart ended %s (%q), want crashed-error with the exit code", got.Status, got.Error)
		}
		runs := h.rt.RunTimes(WebProcess)[webRuns:]
		if len(runs) != 4 {
			t.Fatalf("%d web Run calls, want 4 (restart_attempts)", len(runs))
		}
		if runs[0] != t0 {
			t.Errorf("first attempt %s after Restart, want at once", runs[0].Sub(t0))
		}
		// A crashed container fails its boot at the first inspection, at
		// once: the gaps are the backoff delays alone.
		if g := gaps(runs); !slices.Equal(g, seconds(1, 2, 4)) {
			t.Errorf("gaps between attempts %v, want [1s 2s 4s]", g)
		}
		if e := got.EndedAt.Sub(t0); e != 7*time.Second {
			t.Errorf("restart ended %s after it began, want 7s", e)
		}
		if n := len(h.rt.RunTimes("worker")) - workerRuns; n != 1 {
			t.Errorf("%d worker Run calls, want 1 (it booted)", n)
		}

		gave := h.eventsNamed(EventGaveUp)
		if len(gave) != 1 {
			t.Fatalf("%d gave_up events, want 1: %+v", len(gave), gave)
		}
		if !strings.Contains(gave[0].Message, "4 attempts") || gave[0].App != appName {
			t.Errorf("gave_up event %+v", gave[0])
		}
		var failed []Deployment
		for _, dep := range h.deploymentEvents() {
			if dep.ID == d.ID {
				failed = append(failed, dep)
			}
		}
		if len(failed) != 1 || failed[0].Status != StatusCrashedError {
			t.Errorf("deployment events of the restart: %+v", failed)
		}

		obsMu.Lock()
		var webFail, workerOK int
		for _, o := range obs {
			switch {
			case o.process == WebProcess && !o.ok && o.took == 0:
				webFail++
			case o.process == "worker" && o.ok && o.took == 2*time.Second:
				workerOK++
			default:
				t.Errorf("unexpected boot observation %+v", o)
			}
		}
		obsMu.Unlock()
		if webFail != 4 || workerOK != 1 {
			t.Errorf("ObserveBoot: %d failed web boots (want 4), %d worker boots (want 1)", webFail, workerOK)
		}

		// What served still serves, untouched.
		if ref.Load() != pool {
			t.Errorf("pool replaced by %+v", ref.Load())
		}
		h.noStopsOf(old)
		h.assertRunning(old)
		if now := h.containers("", ""); !slices.Equal(now, old) {
			t.Errorf("containers %v, want the old %v (the replacements removed)", now, old)
		}
		if bad := stopWatch(); len(bad) > 0 {
			t.Errorf("pool violations: %v", bad)
		}

		// Giving up is final: nothing retries on its own.
		n := len(h.rt.Runs())
		settle(10 * time.Minute)
		if m := len(h.rt.Runs()); m != n {
			t.Errorf("%d Run calls in the 10 minutes after giving up", m-n)
		}
		if st := s.Status(); len(st.GaveUp) != 0 || st.Release == nil || st.Release.ID != spec.ReleaseID() {
			t.Errorf("status after a failed restart: gave up %v, release %+v", st.GaveUp, st.Release)
		}
	})
}

// 2. The delays stop growing at retryMax.
func TestRestartBackoffCap(t *testing.T) {
	setForTest(t, &retryJitter, 0)
	setForTest(t, &retryMax, 8*time.Second)
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.shutdown()
		spec := appSpec(t, "localhost/blog:v1", 2)
		spec.RestartAttempts = 9 // 10 attempts
		s, _ := h.deployFirst(spec)
		pool := h.m.Pool(appName).Load()
		old := h.containers("", "")
		webs := h.containers("", WebProcess)
		before := len(h.rt.RunTimes(WebProcess))

		h.rt.OnProcess(WebProcess, behavior{Crash: true})
		t0 := time.Now()
		d, err := restart(s, "", webs[0])
		if err != nil {
			t.Fatal(err)
		}
		got := h.waitDone(s, d.ID)
		synctest.Wait()
		if got.Status != StatusCrashedError {
			t.Errorf("status %s (%s), want crashed-error", got.Status, got.Error)
		}
		runs := h.rt.RunTimes(WebProcess)[before:]
		if len(runs) != 10 {
			t.Fatalf("%d Run calls, want 10", len(runs))
		}
		if g := gaps(runs); !slices.Equal(g, seconds(1, 2, 4, 8, 8, 8, 8, 8, 8)) {
			t.Errorf("gaps %v, want [1s 2s 4s 8s 8s 8s 8s 8s 8s]", g)
		}
		if e := got.EndedAt.Sub(t0); e != 55*time.Second {
			t.Errorf("ended after %s, want 55s", e)
		}
		if gave := h.eventsNamed(EventGaveUp); len(gave) != 1 || gave[0].Container != webs[0] || gave[0].Process != WebProcess {
			t.Errorf("gave_up events %+v, want one naming %s", gave, webs[0])
		}
		if h.m.Pool(appName).Load() != pool {
			t.Error("pool replaced")
		}
		h.noStopsOf(old)
		h.assertRunning(old)
	})
}

// 3. A restart of one process type, or of one container, replaces only
// those, each stopped only once its replacement is ready.
func TestRestartPartial(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.shutdown()
		spec := appSpec(t, "localhost/blog:v1", 2, worker(1))
		rel := spec.ReleaseID()
		s, _ := h.deployFirst(spec)
		ref := h.m.Pool(appName)
		webs := h.containers(rel, WebProcess)
		workers := h.containers(rel, "worker")
		stopWatch := h.watchPool(ref)
		defer stopWatch()

		if _, err := restart(s, "clock", ""); err == nil {
			t.Error("restart of an unknown process type accepted")
		}
		if _, err := restart(s, "", "c9999"); err == nil {
			t.Error("restart of an unknown container accepted")
		}
		if n := len(s.Status().Deployments); n != 1 {
			t.Errorf("%d deployments after refused restarts, want 1", n)
		}

		// One process type.
		webRuns := len(h.rt.RunTimes(WebProcess))
		t0 := time.Now()
		d, err := restart(s, "worker", "")
		if err != nil {
			t.Fatal(err)
		}
		if d.Kind != KindRestart || d.Process != "worker" || d.Container != "" {
			t.Errorf("deployment %+v", d)
		}
		if got := h.waitDone(s, d.ID); got.Status != StatusSuccess {
			t.Fatalf("worker restart: %s (%s)", got.Status, got.Error)
		}
		settle(time.Second)
		if got := h.containers(rel, WebProcess); !slices.Equal(got, webs) {
			t.Errorf("web containers %v after a worker restart, want %v", got, webs)
		}
		if n := len(h.rt.RunTimes(WebProcess)); n != webRuns {
			t.Errorf("%d web containers run by a worker restart", n-webRuns)
		}
		newWorkers := h.containers(rel, "worker")
		if len(newWorkers) != 1 || newWorkers[0] == workers[0] {
			t.Errorf("workers %v after restart, old %v", newWorkers, workers)
		}
		stops := h.rt.Stops()
		if !slices.Equal(stoppedIDs(stops), workers) {
			t.Fatalf("stopped %v, want the old worker %v", stoppedIDs(stops), workers)
		}
		if at := stops[0].At.Sub(t0); at < spec.WorkerReadyTime {
			t.Errorf("old worker stopped %s after the restart, before its replacement was ready (%s)", at, spec.WorkerReadyTime)
		}
		assertPool(t, ref, rel, h.addrs(webs, 5000))

		// One container, named by its name; its replacement is held.
		var target ContainerStatus
		for _, c := range s.Status().Containers {
			if c.ID == webs[0] {
				target = c
			}
		}
		h.rt.OnImage(spec.Image, behavior{Hold: true})
		d, err = restart(s, "", target.Name)
		if err != nil {
			t.Fatal(err)
		}
		if d.Container != webs[0] || d.Process != WebProcess {
			t.Errorf("restart of %s: deployment %+v", target.Name, d)
		}
		settle(5 * time.Second)
		fresh := slices.DeleteFunc(h.containers(rel, WebProcess), func(id string) bool { return slices.Contains(webs, id) })
		if len(fresh) != 1 {
			t.Fatalf("new web containers %v, want 1", fresh)
		}
		if n := len(h.rt.Stops()); n != 1 {
			t.Errorf("%d Stop calls while the replacement is not ready, want only the old worker's", n)
		}
		assertPool(t, ref, rel, h.addrs(webs, 5000))
		listenAt := time.Now()
		h.rt.Listen(fresh[0])
		if got := h.waitDone(s, d.ID); got.Status != StatusSuccess {
			t.Fatalf("container restart: %s (%s)", got.Status, got.Error)
		}
		settle(time.Second)
		stops = h.rt.Stops()
		if len(stops) != 2 || stops[1].ID != webs[0] {
			t.Fatalf("stops %+v, want the worker then %s", stops, webs[0])
		}
		if stops[1].At.Before(listenAt) {
			t.Errorf("%s stopped before its replacement listened", webs[0])
		}
		assertPool(t, ref, rel, h.addrs([]string{webs[1], fresh[0]}, 5000))
		if got := h.containers(rel, "worker"); !slices.Equal(got, newWorkers) {
			t.Errorf("workers %v after a container restart, want %v", got, newWorkers)
		}
		h.assertRunning(append([]string{webs[1], fresh[0]}, newWorkers...))
		if _, err := restart(s, "", webs[0]); err == nil {
			t.Error("restart of a stopped container accepted")
		}
		if bad := stopWatch(); len(bad) > 0 {
			t.Errorf("pool violations: %v", bad)
		}
	})
}

// 4. A ready container that exits leaves the pool at once and is replaced;
// one whose replacements keep crashing is given up on after
// restart_attempts (no hot spin) until the counts change.
func TestCrashRecovery(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.shutdown()
		spec := appSpec(t, "localhost/blog:v1", 2)
		spec.RestartAttempts = 4 // 5 attempts
		rel := spec.ReleaseID()
		s, _ := h.deployFirst(spec)
		ref := h.m.Pool(appName)
		webs := h.containers(rel, WebProcess)
		victimAddr := h.addrs(webs[:1], 5000)[0]
		otherAddr := h.addrs(webs[1:], 5000)[0]

		// The event is handled as soon as the app's queue runs it.
		h.rt.Exit(webs[0], 137)
		synctest.Wait()
		if p := ref.Load(); slices.Contains(p.Addrs, victimAddr) || !slices.Contains(p.Addrs, otherAddr) {
			t.Errorf("pool %v right after %s exited", p.Addrs, victimAddr)
		}
		synctest.Wait()
		crashed := h.eventsNamed(EventCrashed)
		if len(crashed) != 1 || crashed[0].Container != webs[0] || crashed[0].Process != WebProcess ||
			!strings.Contains(crashed[0].Message, "exited with code 137") {
			t.Errorf("crashed events %+v", crashed)
		}
		waitFor(t, "replacement in the pool", time.Minute, func() bool { return len(ref.Load().Addrs) == 2 })
		now := h.containers(rel, WebProcess)
		if len(now) != 2 || slices.Contains(now, webs[0]) || !slices.Contains(now, webs[1]) {
			t.Errorf("web containers %v after the crash of %s", now, webs[0])
		}
		assertPool(t, ref, rel, h.addrs(now, 5000))
		if !slices.Contains(removedIDs(h.rt.Removes()), webs[0]) {
			t.Errorf("crashed container %s not removed", webs[0])
		}
		if n := len(s.Status().Deployments); n != 1 {
			t.Errorf("%d deployments, want 1: a replacement is no deployment", n)
		}

		// A crash loop: every replacement crashes at once.
		h.rt.OnProcess(WebProcess, behavior{Crash: true})
		survivor := now[1]
		if now[1] == webs[1] {
			survivor = now[0]
		}
		victim := webs[1]
		before := len(h.rt.RunTimes(WebProcess))
		h.rt.Exit(victim, 1)
		settle(10 * time.Minute)
		if n := len(h.rt.RunTimes(WebProcess)) - before; n != spec.RestartAttempts+1 {
			t.Errorf("%d Run calls in 10 minutes of a crash loop, want %d (1 + restart_attempts)", n, spec.RestartAttempts+1)
		}
		gave := h.eventsNamed(EventGaveUp)
		if len(gave) != 1 || gave[0].Process != WebProcess || !strings.Contains(gave[0].Message, "5 attempts") {
			t.Errorf("gave_up events %+v, want one for web", gave)
		}
		if st := s.Status(); !slices.Equal(st.GaveUp, []string{WebProcess}) {
			t.Errorf("GaveUp %v, want [web]", st.GaveUp)
		}
		assertPool(t, ref, rel, h.addrs([]string{survivor}, 5000))
		if got := h.containers(rel, WebProcess); !slices.Equal(got, []string{survivor}) {
			t.Errorf("web containers %v, want the survivor %s (crashed ones removed)", got, survivor)
		}

		// The same spec again changes nothing; new counts clear it.
		s.Update(spec)
		settle(time.Minute)
		if st := s.Status(); len(st.GaveUp) != 1 {
			t.Errorf("GaveUp %v after an unchanged update", st.GaveUp)
		}
		h.rt.OnProcess(WebProcess, behavior{})
		spec3 := appSpec(t, "localhost/blog:v1", 3)
		spec3.RestartAttempts = 5
		if d := s.Update(spec3); d != nil {
			t.Errorf("a count change started deployment %d", d.ID)
		}
		if st := s.Status(); len(st.GaveUp) != 0 {
			t.Errorf("GaveUp %v after a count change", st.GaveUp)
		}
		waitFor(t, "3 web containers in the pool", time.Minute, func() bool { return len(ref.Load().Addrs) == 3 })
		assertPool(t, ref, rel, h.addrs(h.containers(rel, WebProcess), 5000))
		if n := len(h.eventsNamed(EventGaveUp)); n != 1 {
			t.Errorf("%d gave_up events, want still 1", n)
		}
	})
}

// 5. An exit the event stream missed heals at the next resync.
func TestMissedExitResync(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.shutdown()
		spec := appSpec(t, "localhost/blog:v1", 2, worker(1))
		rel := spec.ReleaseID()
		s, _ := h.deployFirst(spec)
		ref := h.m.Pool(appName)
		webs := h.containers(rel, WebProcess)
		workers := h.containers(rel, "worker")
		victimAddr := h.addrs(webs[:1], 5000)[0]

		h.rt.ExitQuietly(webs[0], 9)
		h.rt.ExitQuietly(workers[0], 2)
		synctest.Wait()
		if !slices.Contains(ref.Load().Addrs, victimAddr) {
			t.Fatal("pool changed with no event: this test would not show the resync")
		}
		waitFor(t, "missed exit healed", resyncInterval, func() bool {
			p := ref.Load()
			return !slices.Contains(p.Addrs, victimAddr) && len(p.Addrs) == 2
		})
		waitFor(t, "worker replaced", resyncInterval+spec.WorkerReadyTime, func() bool {
			w := h.containers(rel, "worker")
			return len(w) == 1 && w[0] != workers[0]
		})
		synctest.Wait()
		assertPool(t, ref, rel, h.addrs(h.containers(rel, WebProcess), 5000))
		msgs := map[string]string{}
		for _, ev := range h.eventsNamed(EventCrashed) {
			msgs[ev.Container] = ev.Message
		}
		if !strings.Contains(msgs[webs[0]], "code 9") || !strings.Contains(msgs[workers[0]], "code 2") || len(msgs) != 2 {
			t.Errorf("crashed events %v", msgs)
		}
		if st := s.Status(); len(st.Containers) != 3 {
			t.Errorf("containers %+v, want 3", st.Containers)
		}
	})
}

// 6. The postdeploy hook runs once per deploy, before the switch, never for
// restarts and scales; a failing hook fails the deploy.
func TestPostdeployHook(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.shutdown()
		hookSpec := func(image string, web int) AppSpec {
			s := appSpec(t, image, web)
			s.Postdeploy = []string{"/app/migrate", "--yes"}
			return s
		}
		spec1 := hookSpec("localhost/blog:v1", 2)
		s, _ := h.deployFirst(spec1)
		ref := h.m.Pool(appName)
		if n := h.hookRuns(); n != 1 {
			t.Fatalf("%d hook runs for the first deploy, want 1", n)
		}
		for _, r := range h.rt.Runs() {
			if r.Labels[LabelProcess] != HookProcess {
				continue
			}
			if !slices.Equal(r.Command, spec1.Postdeploy) || r.Labels[LabelRelease] != spec1.ReleaseID() ||
				r.Labels[LabelApp] != appName || r.Image != spec1.Image || r.Env["RAILS_ENV"] != "production" {
				t.Errorf("hook container %+v", r)
			}
			if _, ok := r.Env["PORT"]; ok {
				t.Errorf("hook container has PORT")
			}
		}
		if got := h.containers("", HookProcess); len(got) != 0 {
			t.Errorf("hook containers %v left behind", got)
		}

		d, err := restart(s, "", "")
		if err != nil {
			t.Fatal(err)
		}
		if got := h.waitDone(s, d.ID); got.Status != StatusSuccess {
			t.Fatalf("restart %s (%s)", got.Status, got.Error)
		}
		s.Update(hookSpec("localhost/blog:v1", 3))
		waitFor(t, "scaled to 3", time.Minute, func() bool { return len(ref.Load().Addrs) == 3 })
		if n := h.hookRuns(); n != 1 {
			t.Errorf("%d hook runs after a restart and a scale, want 1", n)
		}

		// Second deploy: the hook runs after every web container is ready
		// and before the switch.
		spec2 := hookSpec("localhost/blog:v2", 2)
		h.rt.OnImage(spec2.Image, behavior{Hold: true})
		d2 := s.Update(spec2)
		settle(3 * time.Second)
		if n := h.hookRuns(); n != 1 {
			t.Errorf("hook ran before the web containers were ready")
		}
		listenAt := time.Now()
		for _, id := range h.containers(spec2.ReleaseID(), WebProcess) {
			h.rt.Listen(id)
		}
		got2 := h.waitDone(s, d2.ID)
		if got2.Status != StatusSuccess {
			t.Fatalf("deploy v2 %s (%s)", got2.Status, got2.Error)
		}
		hookAt := h.rt.RunTimes(HookProcess)
		if len(hookAt) != 2 {
			t.Fatalf("%d hook runs after the second deploy, want 2", len(hookAt))
		}
		if hookAt[1].Before(listenAt) || hookAt[1].After(got2.SwitchedAt) {
			t.Errorf("hook ran at %v, web ready at %v, switch at %v", hookAt[1], listenAt, got2.SwitchedAt)
		}
		settle(time.Minute)
		serving := h.containers(spec2.ReleaseID(), "")
		pool := ref.Load()

		// A hook that exits 7 fails the deploy; nothing switches.
		spec3 := hookSpec("localhost/blog:v3", 2)
		h.rt.OnImage(spec3.Image, behavior{HookExit: 7})
		stopsBefore := len(h.rt.Stops())
		d3 := s.Update(spec3)
		got3 := h.waitDone(s, d3.ID)
		synctest.Wait()
		if got3.Status != StatusHookError || !strings.Contains(got3.Error, "code 7") {
			t.Errorf("deploy v3 %s (%q), want hook-error naming code 7", got3.Status, got3.Error)
		}
		if n := h.hookRuns(); n != 3 {
			t.Errorf("%d hook runs, want 3", n)
		}
		if n := len(h.runsOf(spec3.ReleaseID())); n != 3 {
			t.Errorf("%d Run calls of v3, want 2 web and the hook", n)
		}
		if got := h.containers(spec3.ReleaseID(), ""); len(got) != 0 {
			t.Errorf("v3 containers %v left after the hook failed", got)
		}
		if ref.Load() != pool {
			t.Error("pool replaced by a deploy whose hook failed")
		}
		_ = stopsBefore
		h.noStopsOf(serving)
		h.assertRunning(serving)
		if st := s.Status(); st.Release == nil || st.Release.ID != spec2.ReleaseID() {
			t.Errorf("release %+v, want v2 still", st.Release)
		}
	})
}

// 7a. A deploy while the runtime is unreachable waits for it.
func TestDeployWhileRuntimeDown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.shutdown()
		s, _ := h.deployFirst(appSpec(t, "localhost/blog:v1", 2))
		ref := h.m.Pool(appName)
		pool := ref.Load()
		old := h.containers("", "")

		h.rt.SetDown(true)
		spec2 := appSpec(t, "localhost/blog:v2", 2)
		d := s.Update(spec2)
		settle(5 * time.Minute)
		got, _, _ := s.Deployment(d.ID)
		if got.Status != StatusStarting {
			t.Fatalf("deployment %s (%s) while the runtime is down, want starting", got.Status, got.Error)
		}
		if st := s.Status(); !strings.Contains(st.RuntimeError, "connection refused") {
			t.Errorf("RuntimeError %q while the runtime is down", st.RuntimeError)
		}
		if ref.Load() != pool {
			t.Error("pool changed while the runtime is down")
		}

		h.rt.SetDown(false)
		got = h.waitDone(s, d.ID)
		if got.Status != StatusSuccess {
			t.Fatalf("deployment %s (%s) once the runtime is back", got.Status, got.Error)
		}
		if waited := got.EndedAt.Sub(got.StartedAt); waited < 5*time.Minute || waited > 5*time.Minute+2*runtimeWaitMax {
			t.Errorf("deployment took %s, want the outage plus at most %s", waited, 2*runtimeWaitMax)
		}
		settle(time.Minute)
		if st := s.Status(); st.RuntimeError != "" {
			t.Errorf("RuntimeError %q once the runtime answers", st.RuntimeError)
		}
		assertPool(t, ref, spec2.ReleaseID(), h.addrs(h.containers(spec2.ReleaseID(), WebProcess), 5000))
		if !slices.Equal(stoppedIDs(h.rt.Stops()), old) {
			t.Errorf("stopped %v, want %v", stoppedIDs(h.rt.Stops()), old)
		}
	})
}

// 7b. Old containers due to stop while the runtime is unreachable are
// stopped once it is back.
func TestRetireWhileRuntimeDown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.shutdown()
		s, _ := h.deployFirst(appSpec(t, "localhost/blog:v1", 2))
		ref := h.m.Pool(appName)
		old := h.containers("", "")

		spec2 := appSpec(t, "localhost/blog:v2", 2)
		h.rt.OnImage(spec2.Image, behavior{Hold: true})
		d := s.Update(spec2)
		settle(time.Second)
		fresh := h.containers(spec2.ReleaseID(), WebProcess)
		h.rt.SetDown(true)
		// The new containers answer on their port: probes do not go through
		// the runtime.
		for _, id := range fresh {
			h.rt.Listen(id)
		}
		if got := h.waitDone(s, d.ID); got.Status != StatusSuccess {
			t.Fatalf("deployment %s (%s)", got.Status, got.Error)
		}
		assertPool(t, ref, spec2.ReleaseID(), h.addrs(fresh, 5000))
		settle(time.Minute)
		h.assertRunning(old)
		if n := len(h.rt.Stops()); n != 0 {
			t.Errorf("%d Stop calls succeeded while the runtime is down", n)
		}
		st := s.Status()
		if st.RuntimeError == "" {
			t.Error("no RuntimeError while old containers cannot be stopped")
		}
		for _, c := range st.Containers {
			if slices.Contains(old, c.ID) && c.State != StateStopping {
				t.Errorf("old container %s is %s, want stopping", c.ID, c.State)
			}
		}

		h.rt.SetDown(false)
		settle(2 * runtimeWaitMax)
		if got := h.containers("", ""); !slices.Equal(got, fresh) {
			t.Errorf("containers %v once the runtime is back, want only %v", got, fresh)
		}
		if !slices.Equal(stoppedIDs(h.rt.Stops()), old) {
			t.Errorf("stopped %v, want %v", stoppedIDs(h.rt.Stops()), old)
		}
		if st := s.Status(); st.RuntimeError != "" || len(st.Containers) != 2 {
			t.Errorf("RuntimeError %q, containers %+v", st.RuntimeError, st.Containers)
		}
	})
}

// 7c. A worker booting while the runtime goes away is waited for, not
// failed.
func TestWorkerBootWhileRuntimeDown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.shutdown()
		s, _ := h.deployFirst(appSpec(t, "localhost/blog:v1", 1, worker(1)))
		old := h.containers("", "")
		spec2 := appSpec(t, "localhost/blog:v2", 1, worker(1))
		d := s.Update(spec2)
		settle(500 * time.Millisecond) // the worker waits worker_ready_time
		h.rt.SetDown(true)
		settle(30 * time.Second)
		if got, _, _ := s.Deployment(d.ID); got.Status != StatusStarting {
			t.Fatalf("deployment %s (%s) while the runtime is down, want starting", got.Status, got.Error)
		}
		h.rt.SetDown(false)
		if got := h.waitDone(s, d.ID); got.Status != StatusSuccess {
			t.Fatalf("deployment %s (%s) once the runtime is back", got.Status, got.Error)
		}
		settle(time.Minute)
		if !slices.Equal(stoppedIDs(h.rt.Stops()), old) {
			t.Errorf("stopped %v, want %v", stoppedIDs(h.rt.Stops()), old)
		}
		if n := len(h.containers(spec2.ReleaseID(), "")); n != 2 {
			t.Errorf("%d containers of v2, want 2", n)
		}
	})
}

// 7d. A postdeploy hook whose runtime goes away is waited for, not failed.
func TestHookWhileRuntimeDown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.shutdown()
		s, _ := h.deployFirst(appSpec(t, "localhost/blog:v1", 1))
		spec2 := appSpec(t, "localhost/blog:v2", 1)
		spec2.Postdeploy = []string{"/app/migrate"}
		h.rt.OnImage(spec2.Image, behavior{Hold: true})
		d := s.Update(spec2)
		settle(time.Second)
		fresh := h.containers(spec2.ReleaseID(), WebProcess)
		h.rt.SetDown(true)
		for _, id := range fresh {
			h.rt.Listen(id)
		}
		settle(30 * time.Second)
		if got, _, _ := s.Deployment(d.ID); got.Status != StatusStarting {
			t.Fatalf("deployment %s (%s) while the runtime is down, want starting", got.Status, got.Error)
		}
		h.rt.SetDown(false)
		if got := h.waitDone(s, d.ID); got.Status != StatusSuccess {
			t.Fatalf("deployment %s (%s) once the runtime is back", got.Status, got.Error)
		}
		if n := h.hookRuns(); n != 1 {
			t.Errorf("%d hook runs, want 1", n)
		}
		settle(time.Minute)
		if got := h.containers("", HookProcess); len(got) != 0 {
			t.Errorf("hook containers %v left behind", got)
		}
	})
}

// memHistory is a History in memory.
type memHistory struct {
	mu    sync.Mutex
	m     map[string][]Deployment
	saves int
}

func newMemHistory() *memHistory { return &memHistory{m: map[string][]Deployment{}} }

func (h *memHistory) Load(app string) []Deployment {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.m[app])
}

func (h *memHistory) Save(app string, ds []Deployment) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.m[app] = slices.Clone(ds)
	h.saves++
}

// clone copies what h holds, as a process killed now would leave it.
func (h *memHistory) clone() *memHistory {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := newMemHistory()
	for k, v := range h.m {
		c.m[k] = slices.Clone(v)
	}
	return c
}

func (h *memHistory) snapshot(app string) ([]Deployment, int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.m[app]), h.saves
}

func statuses(ds []Deployment) []string {
	var out []string
	for _, d := range ds {
		out = append(out, fmtDeployment(d))
	}
	return out
}

func fmtDeployment(d Deployment) string { return fmt.Sprintf("%d:%s", d.ID, d.Status) }

// 8. Deployments outlive the process through Deps.History.
func TestHistory(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := newFakeRuntime()
		hist := newMemHistory()
		withHist := func(hs History) func(*Deps) { return func(d *Deps) { d.History = hs } }
		h1 := newHarnessWith(t, rt, withHist(hist))
		defer h1.shutdown()
		spec1 := appSpec(t, "localhost/blog:v1", 2)
		s1, _ := h1.deployFirst(spec1)
		saved, saves := hist.snapshot(appName)
		if got := statuses(saved); !slices.Equal(got, []string{"1:success"}) || saves < 2 {
			t.Errorf("history %v after %d saves, want [1:success] saved when queued and when ended", got, saves)
		}
		spec2 := appSpec(t, "localhost/blog:v2", 2)
		if got := h1.waitDone(s1, s1.Update(spec2).ID); got.Status != StatusSuccess {
			t.Fatalf("deploy v2 %s (%s)", got.Status, got.Error)
		}
		spec3 := appSpec(t, "localhost/blog:v3", 2)
		rt.OnImage(spec3.Image, behavior{Hold: true})
		s1.Update(spec3)
		settle(time.Second)
		saved, _ = hist.snapshot(appName)
		if got := statuses(saved); !slices.Equal(got, []string{"1:success", "2:success", "3:starting"}) {
			t.Fatalf("history %v, want [1:success 2:success 3:starting]", got)
		}
		if saved[1].Image != spec2.Image || saved[1].Release != spec2.ReleaseID() || saved[1].SwitchedAt.IsZero() {
			t.Errorf("saved deployment %+v", saved[1])
		}
		// The process dies now: what the history holds is what the next
		// one finds.
		killed := hist.clone()
		h1.m.Close()
		saved, _ = hist.snapshot(appName)
		if got := statuses(saved); !slices.Equal(got, []string{"1:success", "2:success", "3:aborted"}) {
			t.Errorf("history %v after Close, want the in-flight one aborted", got)
		}

		// The next process, with the config of the deploy that was under
		// way: the old deployments are there, the in-flight one aborted,
		// and the deploy of v3 is made again under the next ID.
		rt.OnImage(spec3.Image, behavior{})
		h2 := newHarnessWith(t, rt, withHist(killed))
		defer h2.shutdown()
		h2.m.Apply([]AppSpec{appSpec(t, "localhost/blog:v3", 2)})
		settle(2 * adoptProbeTime)
		s2 := h2.sup()
		st := s2.Status()
		if len(st.Deployments) != 4 {
			t.Fatalf("deployments %v, want 4: three loaded and the deploy of v3", statuses(st.Deployments))
		}
		if got := statuses(st.Deployments[1:]); !slices.Equal(got, []string{"3:aborted", "2:success", "1:success"}) {
			t.Errorf("loaded deployments %v, newest first", got)
		}
		if a := st.Deployments[1]; a.Error == "" || a.EndedAt.IsZero() || a.Release != spec3.ReleaseID() {
			t.Errorf("aborted deployment %+v", a)
		}
		d4 := h2.waitDone(s2, st.Deployments[0].ID)
		if d4.ID != 4 || d4.Status != StatusSuccess || d4.Release != spec3.ReleaseID() {
			t.Errorf("deployment %+v, want 4 of v3, success", d4)
		}
		settle(time.Minute)
		assertPool(t, h2.m.Pool(appName), spec3.ReleaseID(), h2.addrs(h2.containers(spec3.ReleaseID(), WebProcess), 5000))
		if got := h2.containers(spec2.ReleaseID(), ""); len(got) != 0 {
			t.Errorf("v2 containers %v still there", got)
		}
		saved, _ = killed.snapshot(appName)
		if got := statuses(saved); !slices.Equal(got, []string{"1:success", "2:success", "3:aborted", "4:success"}) {
			t.Errorf("history saved by the next process %v", got)
		}
		h2.shutdown()

		// IDs continue after the highest, whatever the order.
		crafted := newMemHistory()
		crafted.m[appName] = []Deployment{
			{ID: 9, Kind: KindDeploy, Release: "aaaaaaaaaaaa", Status: StatusTimeoutError},
			{ID: 5, Kind: KindDeploy, Release: "bbbbbbbbbbbb", Status: StatusSuccess},
		}
		h3 := newHarnessWith(t, rt, withHist(crafted))
		defer h3.shutdown()
		h3.m.Apply([]AppSpec{appSpec(t, "localhost/blog:v5", 1)})
		synctest.Wait()
		got := h3.newest(h3.sup())
		if got.ID != 10 {
			t.Errorf("new deployment has ID %d, want 10", got.ID)
		}
		h3.waitDone(h3.sup(), got.ID)
	})
}
