package engine

import (
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

func hookAppSpec(t *testing.T, image string) AppSpec {
	s := appSpecKept(t, image, 1)
	s.Postdeploy = []string{"/app/migrate"}
	return s
}

// hookIDs returns the postdeploy containers the runtime has (running or
// not).
func (h *harness) hookIDs() []string { return h.containers("", HookProcess) }

// runningHooks returns how many postdeploy containers run.
func (h *harness) runningHooks() int {
	n := 0
	for _, id := range h.hookIDs() {
		if c, ok := h.rt.Get(id); ok && c.Running {
			n++
		}
	}
	return n
}

// A deployment that arrives while a hook runs waits for the hook's end:
// the hook is never cut, the hooked deployment is then aborted (replaced),
// and the queued one goes on and succeeds.
func TestDeployDuringHookWaits(t *testing.T) {
	for _, via := range []string{"deploy", "reload"} {
		t.Run(via, func(t *testing.T) { testDeployDuringHook(t, via) })
	}
}

func testDeployDuringHook(t *testing.T, via string) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.shutdown()
		v1 := hookAppSpec(t, "localhost/blog:v1")
		s, _ := h.deployFirst(v1)
		h.rt.OnImage("localhost/blog:v2", behavior{HookHold: true})
		d2 := s.Update(hookAppSpec(t, "localhost/blog:v2"))
		waitFor(t, "the v2 hook runs", time.Minute, func() bool { return h.runningHooks() == 1 })
		hook := h.hookIDs()[0]
		v3 := hookAppSpec(t, "localhost/blog:v3")
		var d3 *Deployment
		if via == "deploy" {
			res, err := s.Deploy(v3.Image, "")
			if err != nil {
				t.Fatal(err)
			}
			d3 = res.Deployment
		} else {
			d3 = s.Update(v3)
		}
		settle(time.Minute)
		got3, _, _ := s.Deployment(d3.ID)
		if got3.Status != StatusStarting || !strings.Contains(got3.Note, "waiting for the postdeploy hook of deployment") {
			t.Errorf("queued deployment: status %s note %q", got3.Status, got3.Note)
		}
		if n := len(h.runsOf(v3.ReleaseID())); n != 0 {
			t.Errorf("%d containers of the queued deployment started while the hook ran", n)
		}
		if c, ok := h.rt.Get(hook); !ok || !c.Running {
			t.Fatal("the hook was cut by the newer deployment")
		}
		h.rt.Exit(hook, 0)
		got2 := h.waitDone(s, d2.ID)
		if got2.Status != StatusAborted || got2.Hook == nil || got2.Hook.ExitCode == nil || *got2.Hook.ExitCode != 0 {
			t.Errorf("hooked deployment: %s (%s), hook %+v", got2.Status, got2.Error, got2.Hook)
		}
		got3 = h.waitDone(s, d3.ID)
		if got3.Status != StatusSuccess || !strings.Contains(got3.Note, "waited") {
			t.Errorf("queued deployment: %s (%s), note %q", got3.Status, got3.Error, got3.Note)
		}
		for _, rm := range h.rt.Removes() {
			if rm.ID == hook && rm.Running {
				t.Error("the hook was removed while it ran")
			}
		}
		if st := s.Status(); st.Release == nil || st.Release.ID != v3.ReleaseID() {
			t.Errorf("serving %+v, want v3", st.Release)
		}
	})
}

// At postdeploy_timeout the hook gets SIGTERM and stop_timeout (a Stop),
// never an immediate kill; the deployment fails with hook-error.
func TestHookTimeoutStopsGracefully(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.shutdown()
		v1 := hookAppSpec(t, "localhost/blog:v1")
		s, _ := h.deployFirst(v1)
		h.rt.OnImage("localhost/blog:v2", behavior{HookHold: true})
		v2 := hookAppSpec(t, "localhost/blog:v2")
		v2.HookTimeout = time.Minute
		d2 := s.Update(v2)
		waitFor(t, "the v2 hook runs", time.Minute, func() bool { return h.runningHooks() == 1 })
		hook := h.hookIDs()[0]
		got := h.waitDone(s, d2.ID)
		if got.Status != StatusHookError || !strings.Contains(got.Error, "did not end within") {
			t.Errorf("deployment: %s (%s)", got.Status, got.Error)
		}
		var stops []stopCall
		for _, st := range h.rt.Stops() {
			if st.ID == hook {
				stops = append(stops, st)
			}
		}
		if len(stops) != 1 {
			t.Errorf("stops of the hook %+v, want one SIGTERM", stops)
		}
		for _, rm := range h.rt.Removes() {
			if rm.ID == hook && rm.Running {
				t.Error("the hook was removed (killed) while it ran")
			}
		}
		if got.Hook == nil || got.Hook.ExitCode == nil || *got.Hook.ExitCode != 143 {
			t.Errorf("hook record %+v, want exit code 143 (SIGTERM)", got.Hook)
		}
	})
}

// When the process exits during a hook, the hook is left running; the
// next start stops it (SIGTERM, stop_timeout) before the interrupted
// deployment, started over, runs its own hook: never two hooks at once.
func TestHookLeftAtExitStoppedBeforeNextHook(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newMemStore()
		rt := newFakeRuntime()
		h := newHarnessWith(t, rt, withStore(store))
		v1 := hookAppSpec(t, "localhost/blog:v1")
		s, _ := h.deployFirst(v1)
		rt.OnImage("localhost/blog:v2", behavior{HookHold: true})
		v2 := hookAppSpec(t, "localhost/blog:v2")
		s.Update(v2)
		waitFor(t, "the v2 hook runs", time.Minute, func() bool { return h.runningHooks() == 1 })
		hook := h.hookIDs()[0]
		h.shutdown()
		if c, ok := rt.Get(hook); !ok || !c.Running {
			t.Fatal("the hook did not survive the exit")
		}
		for _, k := range rt.Kills() {
			if k.ID == hook {
				t.Errorf("hook sent %s at exit", k.Signal)
			}
		}
		for _, st := range rt.Stops() {
			if st.ID == hook {
				t.Error("hook stopped at exit")
			}
		}

		// The next start: the leftover hook is stopped before the new one
		// runs; at most one hook runs at any moment.
		rt.OnImage("localhost/blog:v2", behavior{})
		rt.mu.Lock()
		rt.stopDelay = 5 * time.Second // the leftover hook takes its time to end
		rt.mu.Unlock()
		h2 := newHarnessWith(t, rt, withStore(store))
		defer h2.shutdown()
		stop := make(chan struct{})
		most := make(chan int, 1)
		go func() {
			m := 0
			for {
				select {
				case <-stop:
					most <- m
					return
				case <-time.After(time.Millisecond):
				}
				m = max(m, h2.runningHooks())
			}
		}()
		h2.m.Apply([]AppSpec{v2})
		s2 := h2.sup()
		waitFor(t, "v2 serves", 10*time.Minute, func() bool {
			st := s2.Status()
			return st.Release != nil && st.Release.ID == v2.ReleaseID()
		})
		close(stop)
		if m := <-most; m > 1 {
			t.Errorf("%d hooks ran at once", m)
		}
		var stops []stopCall
		for _, st := range rt.Stops() {
			if st.ID == hook {
				stops = append(stops, st)
			}
		}
		if len(stops) != 1 {
			t.Fatalf("stops of the leftover hook %+v, want one SIGTERM", stops)
		}
		d := h2.newest(s2)
		if d.Hook == nil || d.Hook.StartedAt.Before(stops[0].At) {
			t.Errorf("the new hook started before the leftover one was stopped: %+v", d.Hook)
		}
		if n := len(h2.hookIDs()); n != 0 {
			t.Errorf("%d hook containers left", n)
		}
	})
}
