package engine

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

// idleSpec is the blog app with 2 web containers, a worker and an
// idle_timeout of 30s.
func idleSpec(t *testing.T, image string) AppSpec {
	s := appSpecKept(t, image, 2, worker(1))
	s.IdleTimeout = 30 * time.Second
	return s
}

// runningOf returns the running containers of the app of process.
func (h *harness) runningOf(process string) []string {
	h.t.Helper()
	return h.running(h.containers("", process))
}

// runningOfRelease returns the running containers of the app of release.
func (h *harness) runningOfRelease(release string) []string {
	h.t.Helper()
	return h.running(h.containers(release, ""))
}

// running returns those of ids that run.
func (h *harness) running(ids []string) []string {
	var out []string
	for _, id := range ids {
		if c, ok := h.rt.Get(id); ok && c.Running {
			out = append(out, id)
		}
	}
	return out
}

// request passes one request through the app's gate in the background and
// returns the channel of its verdict.
func request(ref *PoolRef) <-chan Verdict {
	out := make(chan Verdict, 1)
	go func() {
		_, v := ref.Pass(context.Background(), nil)
		out <- v
	}()
	return out
}

// An app idle for its idle_timeout stops its web containers, keeps its
// worker and says so in its record, its status and its gate; the first
// request is held, wakes it, and goes on once a web container is ready;
// traffic and requests in flight keep it awake.
func TestIdleSleepAndWake(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newMemStore()
		h := newHarnessWith(t, nil, withStore(store))
		defer h.shutdown()
		s, _ := h.deployFirst(idleSpec(t, "localhost/blog:v1"))
		ref := h.m.Pool(appName)
		workers := h.runningOf("worker")
		if len(workers) != 1 || len(h.runningOf(WebProcess)) != 2 {
			t.Fatalf("workers %v, web %v", workers, h.runningOf(WebProcess))
		}

		// Traffic every 10s keeps it awake for two minutes.
		for range 12 {
			if v := <-request(ref); v != Through {
				t.Fatalf("a request to the awake app: verdict %d", v)
			}
			settle(10 * time.Second)
		}
		if st := s.Status(); st.Idle != nil || len(h.runningOf(WebProcess)) != 2 {
			t.Fatalf("with traffic every 10s: idle %+v, web %v", st.Idle, h.runningOf(WebProcess))
		}

		// A request in flight (a WebSocket) keeps it awake too.
		addr := ref.Load().Addrs[0]
		h.hold(addr)
		settle(time.Minute)
		if st := s.Status(); st.Idle != nil {
			t.Fatalf("asleep with a request in flight: %+v", st.Idle)
		}
		h.release(addr)

		waitFor(t, "asleep", time.Minute, func() bool { return len(h.runningOf(WebProcess)) == 0 })
		st := s.Status()
		if st.Idle == nil || st.Idle.Waking || st.Release == nil {
			t.Fatalf("asleep: idle %+v, release %+v", st.Idle, st.Release)
		}
		if r := store.get(appName); r.Idle == nil {
			t.Error("the record does not say the app sleeps")
		}
		if g := ref.Gate(); g == nil || !g.Waking || g.Timeout != DefaultBootTimeout {
			t.Fatalf("gate of the app asleep: %+v", g)
		}
		if got := h.runningOf("worker"); len(got) != 1 || got[0] != workers[0] {
			t.Errorf("workers %v, want %v untouched", got, workers)
		}
		if p := ref.Load(); p != nil && len(p.Addrs) != 0 {
			t.Errorf("pool of the app asleep: %v", p.Addrs)
		}

		// The first requests are held while a web container boots, and
		// all go on once one is ready.
		h.rt.OnImage("localhost/blog:v1", behavior{Hold: true})
		start := time.Now()
		held := holdAll(context.Background(), ref, 5, nil)
		settle(3 * time.Second)
		booting := h.runningOf(WebProcess)
		if st := s.Status(); st.Idle == nil || !st.Idle.Waking || st.Idle.Held != 5 || len(booting) != 2 {
			t.Fatalf("while it wakes: idle %+v, web %v", st.Idle, booting)
		}
		if r := store.get(appName); r.Idle == nil {
			t.Error("while it wakes, the record no longer says the app sleeps: a restart now would leave no gate up")
		}
		h.rt.Listen(booting[0])
		waitFor(t, "awake", time.Minute, func() bool { return s.Status().Idle == nil })
		synctest.Wait()
		if got := verdicts(t, held, 5); got[Through] != 5 {
			t.Errorf("held requests at the wake: %v, want 5 Through", got)
		}
		st = s.Status()
		if st.LastWake == nil || st.LastWake.Trigger != "request" || st.LastWake.ColdStartMS < 3000 || st.LastWake.ColdStartMS > time.Since(start).Milliseconds() {
			t.Errorf("last wake %+v", st.LastWake)
		}
		if ref.Gate() != nil {
			t.Errorf("gate after the wake: %+v", ref.Gate())
		}
		if r := store.get(appName); r.Idle != nil {
			t.Error("the record still says the app sleeps")
		}
		if p := ref.Load(); len(p.Addrs) != 1 {
			t.Errorf("pool at the wake: %v, want the one ready container", p.Addrs)
		}
		h.rt.Listen(booting[1])
		waitFor(t, "2 web", time.Minute, func() bool { return len(ref.Load().Addrs) == 2 })
		if got := h.runningOf("worker"); len(got) != 1 || got[0] != workers[0] {
			t.Errorf("workers %v after the wake, want %v untouched", got, workers)
		}
		if st := s.Status(); len(st.Deployments) != 1 {
			t.Errorf("sleep and wake made deployments: %+v", st.Deployments)
		}
	})
}

// An app asleep stays asleep across a restart of the process (its gate is
// up before any request), and a request wakes the new process's app.
func TestIdleSurvivesRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newMemStore()
		h := newHarnessWith(t, nil, withStore(store))
		spec := idleSpec(t, "localhost/blog:v1")
		h.deployFirst(spec)
		waitFor(t, "asleep", 2*time.Minute, func() bool { return len(h.runningOf(WebProcess)) == 0 })
		h.m.Close()
		h.m.Wait()

		h2 := newHarnessWith(t, h.rt, withStore(store))
		defer h2.shutdown()
		h2.m.Apply([]AppSpec{spec})
		settle(2 * adoptProbeTime)
		s2 := h2.sup()
		ref := h2.m.Pool(appName)
		if st := s2.Status(); st.Idle == nil || len(st.Deployments) != 0 || len(h2.runningOf(WebProcess)) != 0 {
			t.Fatalf("after a restart: idle %+v, deployments %d, web %v", st.Idle, len(st.Deployments), h2.runningOf(WebProcess))
		}
		if g := ref.Gate(); g == nil || !g.Waking {
			t.Fatalf("gate after a restart: %+v", g)
		}
		if v := <-request(ref); v != Through {
			t.Fatalf("the request that woke it: verdict %d", v)
		}
		if st := s2.Status(); st.Idle != nil || st.LastWake == nil {
			t.Errorf("after the wake: idle %+v, last wake %+v", st.Idle, st.LastWake)
		}
	})
}

// A deployment of a new release wakes an app asleep: the new release boots
// at its count and serves; then it falls asleep again when idle.
func TestIdleDeployWakes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newMemStore()
		h := newHarnessWith(t, nil, withStore(store))
		defer h.shutdown()
		s, _ := h.deployFirst(idleSpec(t, "localhost/blog:v1"))
		waitFor(t, "asleep", 2*time.Minute, func() bool { return len(h.runningOf(WebProcess)) == 0 })
		v2 := idleSpec(t, "localhost/blog:v2")
		d := s.Update(v2)
		if d == nil {
			t.Fatal("a new image started nothing")
		}
		if got := h.waitDone(s, d.ID); got.Status != StatusSuccess {
			t.Fatalf("deploy to the app asleep: %s (%s)", got.Status, got.Error)
		}
		synctest.Wait()
		ref := h.m.Pool(appName)
		if p := ref.Load(); p == nil || len(p.Addrs) != 2 || p.Release != v2.ReleaseID() || ref.Gate() != nil {
			t.Fatalf("after the deploy: pool %+v gate %+v", p, ref.Gate())
		}
		if st := s.Status(); st.Idle != nil || st.LastWake == nil || st.LastWake.Trigger != KindDeploy {
			t.Errorf("after the deploy: idle %+v, last wake %+v", st.Idle, st.LastWake)
		}
		// Idle again, counted from the end of the deployment.
		settle(20 * time.Second)
		if len(h.runningOf(WebProcess)) != 2 {
			t.Fatal("asleep again 20s after the deployment")
		}
		waitFor(t, "asleep again", time.Minute, func() bool { return len(h.runningOf(WebProcess)) == 0 })
	})
}

// Removing idle_timeout from the config wakes an app asleep; a restart of
// its web containers is refused while it sleeps, and pause and
// maintenance take the gate over and give it back.
func TestIdleConfigAndOperations(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarnessWith(t, nil, withStore(newMemStore()))
		defer h.shutdown()
		spec := idleSpec(t, "localhost/blog:v1")
		s, _ := h.deployFirst(spec)
		ref := h.m.Pool(appName)
		waitFor(t, "asleep", 2*time.Minute, func() bool { return len(h.runningOf(WebProcess)) == 0 })

		var ie *InputError
		if _, err := s.Restart(WebProcess, ""); !errors.As(err, &ie) {
			t.Errorf("restart of web while asleep: %v, want an input error", err)
		}
		if err := s.Maintenance("back soon"); err != nil {
			t.Fatal(err)
		}
		if g := ref.Gate(); g == nil || !g.Maintenance {
			t.Fatalf("gate in maintenance: %+v", g)
		}
		if err := s.Resume(); err != nil {
			t.Fatal(err)
		}
		if g := ref.Gate(); g == nil || !g.Waking {
			t.Fatalf("gate after resume of the app asleep: %+v", g)
		}
		if len(h.runningOf(WebProcess)) != 0 {
			t.Error("maintenance woke the app")
		}

		spec.IdleTimeout = 0
		if d := s.Update(spec); d != nil {
			t.Errorf("removing idle_timeout started deployment %+v", d)
		}
		waitFor(t, "awake", time.Minute, func() bool { return ref.Gate() == nil && len(ref.Load().Addrs) == 2 })
		if st := s.Status(); st.LastWake == nil || st.LastWake.Trigger != "config" {
			t.Errorf("last wake %+v", st.LastWake)
		}
		settle(5 * time.Minute)
		if len(h.runningOf(WebProcess)) != 2 {
			t.Error("asleep without idle_timeout")
		}
	})
}

// A wake whose web container does not boot within boot_timeout answers
// the held requests TimedOut at boot_timeout; the old release is not
// touched and the app stays asleep-or-waking, never serving a half state.
func TestIdleWakeBootTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarnessWith(t, nil, withStore(newMemStore()))
		defer h.shutdown()
		spec := idleSpec(t, "localhost/blog:v1")
		spec.BootTimeout = 10 * time.Second
		s, _ := h.deployFirst(spec)
		ref := h.m.Pool(appName)
		waitFor(t, "asleep", 2*time.Minute, func() bool { return len(h.runningOf(WebProcess)) == 0 })
		h.rt.OnImage(spec.Image, behavior{NoListen: true})
		start := time.Now()
		if v := <-request(ref); v != TimedOut || time.Since(start) != spec.BootTimeout {
			t.Errorf("a request held by a wake that does not boot: verdict %d after %s, want TimedOut after %s", v, time.Since(start), spec.BootTimeout)
		}
		if st := s.Status(); st.Idle == nil || !st.Idle.Waking {
			t.Errorf("status while the wake fails: %+v", st.Idle)
		}
	})
}

// A web-only app asleep has no container at all: a restart of the process
// keeps it asleep and serving its release, with no deployment.
func TestIdleWebOnlySurvivesRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newMemStore()
		h := newHarnessWith(t, nil, withStore(store))
		spec := appSpecKept(t, "localhost/blog:v1", 2)
		spec.IdleTimeout = 30 * time.Second
		h.deployFirst(spec)
		waitFor(t, "asleep", 2*time.Minute, func() bool { return len(h.containers("", "")) == 0 })
		h.m.Close()
		h.m.Wait()

		h2 := newHarnessWith(t, h.rt, withStore(store))
		defer h2.shutdown()
		h2.m.Apply([]AppSpec{spec})
		settle(time.Minute)
		s2 := h2.sup()
		st := s2.Status()
		if st.Idle == nil || st.Release == nil || st.Release.ID != spec.ReleaseID() || len(st.Deployments) != 0 || len(h2.runningOf(WebProcess)) != 0 {
			t.Fatalf("after a restart: idle %+v, release %+v, deployments %+v, web %v", st.Idle, st.Release, st.Deployments, h2.runningOf(WebProcess))
		}
		if v := <-request(h2.m.Pool(appName)); v != Through {
			t.Fatalf("the request that woke it: verdict %d", v)
		}
		if st := s2.Status(); len(st.Deployments) != 0 || st.LastWake == nil {
			t.Errorf("after the wake: deployments %+v, last wake %+v", st.Deployments, st.LastWake)
		}
	})
}

// A wake that gives up (web cannot boot within restart_attempts) puts the
// app back to sleep: once the cause is gone, the next request wakes it.
func TestIdleWakeGivesUpSleepsAgain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarnessWith(t, nil, withStore(newMemStore()))
		defer h.shutdown()
		spec := idleSpec(t, "localhost/blog:v1")
		spec.BootTimeout, spec.RestartAttempts = 10*time.Second, 1
		s, _ := h.deployFirst(spec)
		ref := h.m.Pool(appName)
		waitFor(t, "asleep", 2*time.Minute, func() bool { return len(h.runningOf(WebProcess)) == 0 })
		h.rt.OnImage(spec.Image, behavior{NoListen: true})
		if v := <-request(ref); v != TimedOut {
			t.Fatalf("a request while the wake fails: verdict %d", v)
		}
		waitFor(t, "asleep again", 5*time.Minute, func() bool {
			st := s.Status()
			return st.Idle != nil && !st.Idle.Waking && len(h.runningOf(WebProcess)) == 0
		})
		if evs := h.eventsNamed(EventGaveUp); len(evs) == 0 {
			t.Error("no give-up notification")
		}
		h.rt.OnImage(spec.Image, behavior{})
		if v := <-request(ref); v != Through {
			t.Fatalf("a request once web boots again: verdict %d", v)
		}
		if st := s.Status(); st.Idle != nil || len(st.GaveUp) != 0 {
			t.Errorf("after the second wake: idle %+v, gave up %v", st.Idle, st.GaveUp)
		}
	})
}

// A restart in the middle of a wake finds the app asleep: its gate is up
// before any request, and the next request wakes it.
func TestIdleRestartWhileWaking(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newMemStore()
		h := newHarnessWith(t, nil, withStore(store))
		spec := idleSpec(t, "localhost/blog:v1")
		s, _ := h.deployFirst(spec)
		waitFor(t, "asleep", 2*time.Minute, func() bool { return len(h.runningOf(WebProcess)) == 0 })
		h.rt.OnImage(spec.Image, behavior{Hold: true})
		held := request(h.m.Pool(appName))
		waitFor(t, "waking", time.Minute, func() bool { st := s.Status(); return st.Idle != nil && st.Idle.Waking })
		h.m.Close()
		h.m.Wait()
		if v := <-held; v != Released {
			t.Errorf("a request held when the process exits: verdict %d, want Released", v)
		}

		h.rt.OnImage(spec.Image, behavior{})
		h2 := newHarnessWith(t, h.rt, withStore(store))
		defer h2.shutdown()
		runs := len(h.rt.Runs())
		h2.m.Apply([]AppSpec{spec})
		settle(2 * adoptProbeTime)
		s2 := h2.sup()
		ref := h2.m.Pool(appName)
		if g := ref.Gate(); g == nil || !g.Waking {
			t.Fatalf("gate after a restart in the middle of a wake: %+v", g)
		}
		if n := len(h2.rt.Runs()) - runs; n != 0 {
			t.Errorf("the restart booted %d containers, want none until a request", n)
		}
		if st := s2.Status(); st.Idle == nil || st.Idle.Waking || len(st.Deployments) != 0 {
			t.Fatalf("after the restart: idle %+v, deployments %+v", st.Idle, st.Deployments)
		}
		if v := <-request(ref); v != Through {
			t.Fatalf("the request that woke it: verdict %d", v)
		}
	})
}

// A wake carried by a deployment whose old release's web gives up does not
// put the app back to sleep: the new release's switch ends the wake, and
// its containers serve.
func TestIdleWakeByDeployOldWebFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarnessWith(t, nil, withStore(newMemStore()))
		defer h.shutdown()
		spec := idleSpec(t, "localhost/blog:v1")
		spec.BootTimeout, spec.RestartAttempts = 5*time.Second, 1
		s, _ := h.deployFirst(spec)
		waitFor(t, "asleep", 2*time.Minute, func() bool { return len(h.runningOf(WebProcess)) == 0 })
		h.rt.OnImage("localhost/blog:v1", behavior{Crash: true})
		h.rt.OnImage("localhost/blog:v2", behavior{Hold: true})
		v2 := idleSpec(t, "localhost/blog:v2")
		v2.BootTimeout, v2.RestartAttempts = 5*time.Minute, 1
		d := s.Update(v2)
		if d == nil {
			t.Fatal("no deployment")
		}
		waitFor(t, "v1's web gives up", 5*time.Minute, func() bool { return len(s.Status().GaveUp) == 1 })
		for _, id := range h.containers(v2.ReleaseID(), WebProcess) {
			h.rt.Listen(id)
		}
		if got := h.waitDone(s, d.ID); got.Status != StatusSuccess {
			t.Fatalf("deploy: %s (%s)", got.Status, got.Error)
		}
		settle(5 * time.Second)
		ref := h.m.Pool(appName)
		if p := ref.Load(); len(p.Addrs) != 2 || p.Release != v2.ReleaseID() || ref.Gate() != nil || s.Status().Idle != nil {
			t.Errorf("after the deploy: pool %+v, gate %+v, idle %+v", p, ref.Gate(), s.Status().Idle)
		}
	})
}
