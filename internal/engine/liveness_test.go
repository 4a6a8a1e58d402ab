package engine

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// ProbeHTTP answers a GET the way the fake container at addr is set to:
// refused when it does not listen, never when it hangs, else its status.
func (p *fakeProber) ProbeHTTP(ctx context.Context, addr, path string) (int, error) {
	p.mu.Lock()
	p.probes++
	p.mu.Unlock()
	if !p.rt.Listening(addr) {
		return 0, fmt.Errorf("dial tcp %s: connect: connection refused", addr)
	}
	p.rt.mu.Lock()
	status, hang := 200, false
	for _, c := range p.rt.containers {
		if c.info.IP+":"+c.port == addr {
			if c.httpStatus != 0 {
				status = c.httpStatus
			}
			hang = c.hang
		}
	}
	p.rt.mu.Unlock()
	if hang {
		<-ctx.Done()
		return 0, ctx.Err()
	}
	return status, nil
}

var _ HTTPProber = (*fakeProber)(nil)

// SetHTTP makes container id answer status to every GET (0: 200).
func (r *fakeRuntime) SetHTTP(id string, status int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.containers[id].httpStatus = status
}

// Hang makes container id accept TCP but never answer a GET (a deadlock).
func (r *fakeRuntime) Hang(id string, hang bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.containers[id].hang = hang
}

// livenessSpec is a web app with ready_path and unhealthy_timeout.
func livenessSpec(t *testing.T, image string, web int, unhealthy time.Duration) AppSpec {
	s := appSpec(t, image, web)
	s.ReadyPath = "/up"
	s.UnhealthyTimeout = unhealthy
	return s
}

func (h *harness) containerStatus(s *Supervisor, id string) (ContainerStatus, bool) {
	for _, c := range s.Status().Containers {
		if c.ID == id {
			return c, true
		}
	}
	return ContainerStatus{}, false
}

func (h *harness) poolAddrs() []string {
	p := h.m.Pool(appName).Load()
	if p == nil {
		return nil
	}
	return sorted(p.Addrs)
}

// A deadlocked app (it accepts TCP, answers no GET) leaves the pool within
// about a second; the status says unhealthy and why. With
// unhealthy_timeout 0 it is never replaced, and it comes back once it
// answers.
func TestLivenessDeadlockLeavesPool(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.shutdown()
		spec := livenessSpec(t, "localhost/blog:v1", 2, 0)
		s, _ := h.deployFirst(spec)
		ids := h.containers(spec.ReleaseID(), WebProcess)
		a, b := ids[0], ids[1]
		addrB := h.addrs([]string{b}, spec.Port)
		runs := len(h.rt.Runs())

		h.rt.Hang(a, true)
		t0 := time.Now()
		waitFor(t, "the deadlocked container out of the pool", 10*time.Second, func() bool {
			return slices.Equal(h.poolAddrs(), addrB)
		})
		took := time.Since(t0)
		t.Logf("deadlocked container out of the pool after %s (virtual)", took)
		if took > 2*time.Second {
			t.Errorf("out of the pool after %s, want about a second", took)
		}
		cs, _ := h.containerStatus(s, a)
		if cs.State != StateUnhealthy || !strings.Contains(cs.Note, "GET /up: no answer within") {
			t.Errorf("status of the deadlocked container: %+v", cs)
		}
		// unhealthy_timeout 0: never replaced.
		settle(5 * time.Minute)
		if n := len(h.rt.Runs()); n != runs {
			t.Errorf("%d containers started with unhealthy_timeout 0, want none", n-runs)
		}
		if _, ok := h.rt.Get(a); !ok || len(h.rt.Stops()) != 0 {
			t.Errorf("the unhealthy container was stopped (stops %v)", h.rt.Stops())
		}
		h.rt.Hang(a, false)
		waitFor(t, "back in the pool", 5*time.Second, func() bool { return len(h.poolAddrs()) == 2 })
		if cs, _ := h.containerStatus(s, a); cs.State != StateReady || cs.Note != "" {
			t.Errorf("status once it answers: %+v", cs)
		}
	})
}

// One that stays unhealthy for unhealthy_timeout is replaced new-first:
// it stays (and is not stopped) until its replacement is ready, then it
// retires; the replacement counts like a crash's.
func TestUnhealthyReplacedNewFirst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.shutdown()
		spec := livenessSpec(t, "localhost/blog:v1", 2, 5*time.Second)
		s, _ := h.deployFirst(spec)
		ids := h.containers(spec.ReleaseID(), WebProcess)
		a, b := ids[0], ids[1]
		h.rt.OnImage(spec.Image, behavior{Hold: true})
		runs := len(h.rt.Runs())

		h.rt.SetHTTP(a, 503)
		t0 := time.Now()
		waitFor(t, "a replacement started", time.Minute, func() bool { return len(h.rt.Runs()) == runs+1 })
		t.Logf("replacement started %s after the first failed check (virtual)", time.Since(t0))
		if d := time.Since(t0); d < 5*time.Second {
			t.Errorf("replacement started after %s, before unhealthy_timeout", d)
		}
		cs, _ := h.containerStatus(s, a)
		if cs.State != StateUnhealthy || !strings.Contains(cs.Note, "answered 503") || !strings.Contains(cs.Note, "being replaced") {
			t.Errorf("status of the unhealthy container: %+v", cs)
		}
		// The replacement is not ready: the unhealthy one stays.
		settle(30 * time.Second)
		if _, ok := h.rt.Get(a); !ok || len(h.rt.Stops()) != 0 {
			t.Fatalf("the unhealthy container was stopped before its replacement was ready (stops %v)", h.rt.Stops())
		}
		if cs, _ := h.containerStatus(s, a); cs.State != StateUnhealthy {
			t.Errorf("unhealthy container while its replacement boots: %+v", cs)
		}
		var c string
		for _, id := range h.containers(spec.ReleaseID(), WebProcess) {
			if id != a && id != b {
				c = id
			}
		}
		h.rt.Listen(c)
		waitFor(t, "the unhealthy container gone", time.Minute, func() bool { _, ok := h.rt.Get(a); return !ok })
		if st := h.rt.Stops(); len(st) != 1 || st[0].ID != a {
			t.Errorf("stops %+v, want one SIGTERM to %s", st, a)
		}
		assertPool(t, h.m.Pool(appName), spec.ReleaseID(), h.addrs([]string{b, c}, spec.Port))
		if n := len(h.rt.Runs()); n != runs+1 {
			t.Errorf("%d containers started, want 1", n-runs)
		}
		if ps := s.proc(WebProcess); ps.crashes != 1 {
			t.Errorf("crashes counted %d, want 1", ps.crashes)
		}
	})
}

// A container that answers again before its replacement is ready comes
// back in the pool; the replacement is discarded; nothing else starts.
func TestUnhealthyRecoversBeforeReplacement(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.shutdown()
		spec := livenessSpec(t, "localhost/blog:v1", 2, 5*time.Second)
		s, _ := h.deployFirst(spec)
		ids := h.containers(spec.ReleaseID(), WebProcess)
		a := ids[0]
		h.rt.OnImage(spec.Image, behavior{Hold: true})
		runs := len(h.rt.Runs())
		h.rt.SetHTTP(a, 500)
		waitFor(t, "a replacement started", time.Minute, func() bool { return len(h.rt.Runs()) == runs+1 })
		h.rt.SetHTTP(a, 0)
		waitFor(t, "back in the pool, replacement gone", time.Minute, func() bool {
			return len(h.poolAddrs()) == 2 && len(h.containers("", "")) == 2
		})
		settle(2 * time.Minute)
		if got := sorted(h.containers("", "")); !slices.Equal(got, sorted(ids)) {
			t.Errorf("containers %v, want the first two %v", got, ids)
		}
		if n := len(h.rt.Runs()); n != runs+1 {
			t.Errorf("%d containers started, want 1 (the discarded replacement)", n-runs)
		}
		if cs, _ := h.containerStatus(s, a); cs.State != StateReady {
			t.Errorf("status: %+v", cs)
		}
		for _, st := range h.rt.Stops() {
			if slices.Contains(ids, st.ID) {
				t.Errorf("serving container %s stopped", st.ID)
			}
		}
	})
}

// When every container fails its check, the pool keeps them all and the
// status says so; once one answers, it alone serves.
func TestAllUnhealthyKeepsPool(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.shutdown()
		spec := livenessSpec(t, "localhost/blog:v1", 2, 0)
		s, _ := h.deployFirst(spec)
		ids := h.containers(spec.ReleaseID(), WebProcess)
		all := h.addrs(ids, spec.Port)
		for _, id := range ids {
			h.rt.SetHTTP(id, 503)
		}
		waitFor(t, "both unhealthy", 10*time.Second, func() bool {
			st := s.Status()
			return st.AllUnhealthy != "" && st.Containers[0].State == StateUnhealthy && st.Containers[1].State == StateUnhealthy
		})
		if got := h.poolAddrs(); !slices.Equal(got, all) {
			t.Errorf("pool %v while all fail, want all %v", got, all)
		}
		h.rt.SetHTTP(ids[1], 0)
		waitFor(t, "the healthy one alone", 10*time.Second, func() bool {
			return slices.Equal(h.poolAddrs(), h.addrs(ids[1:], spec.Port))
		})
		if st := s.Status(); st.AllUnhealthy != "" {
			t.Errorf("all_unhealthy still set: %q", st.AllUnhealthy)
		}
	})
}

// Replacements that never get ready are counted, backed off and given up
// on (users are told); the unhealthy container is never stopped for it.
func TestUnhealthyReplacementGivesUp(t *testing.T) {
	setForTest(t, &retryJitter, 0)
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.shutdown()
		spec := livenessSpec(t, "localhost/blog:v1", 1, 3*time.Second)
		spec.RestartAttempts = 1
		spec.BootTimeout = 5 * time.Second
		s, _ := h.deployFirst(spec)
		a := h.containers(spec.ReleaseID(), WebProcess)[0]
		h.rt.OnImage(spec.Image, behavior{NoListen: true})
		h.rt.SetHTTP(a, 503)
		waitFor(t, "gave up", 10*time.Minute, func() bool { return len(s.Status().GaveUp) == 1 })
		synctest.Wait()
		if evs := h.eventsNamed(EventGaveUp); len(evs) != 1 {
			t.Errorf("%d gave_up events, want 1", len(evs))
		}
		if _, ok := h.rt.Get(a); !ok {
			t.Error("the unhealthy container was stopped though no replacement got ready")
		}
		// All unhealthy (web 1): it keeps getting the traffic.
		if got := h.poolAddrs(); !slices.Equal(got, h.addrs([]string{a}, spec.Port)) {
			t.Errorf("pool %v", got)
		}
	})
}

// Adoption keeps a container of the recorded serving release that accepts
// TCP but fails ready_path (its database is down): not stopped, out of the
// pool (unhealthy) until it answers.
func TestAdoptKeepsServingNotReady(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newMemStore()
		rt := newFakeRuntime()
		h := newHarnessWith(t, rt, withStore(store))
		spec := appSpecKept(t, "localhost/blog:v1", 2)
		spec.ReadyPath = "/up"
		spec.UnhealthyTimeout = time.Hour
		h.deployFirst(spec)
		ids := h.containers(spec.ReleaseID(), WebProcess)
		h.shutdown()
		for _, id := range ids {
			rt.SetHTTP(id, 503)
		}
		h2 := newHarnessWith(t, rt, withStore(store))
		defer h2.shutdown()
		h2.m.Apply([]AppSpec{spec})
		s := h2.sup()
		waitFor(t, "adopted", time.Minute, func() bool { return len(s.Status().Containers) == 2 })
		settle(10 * time.Second)
		for _, c := range s.Status().Containers {
			if c.State != StateUnhealthy {
				t.Errorf("adopted container %s: %+v, want unhealthy", c.ID, c)
			}
		}
		if st := rt.Stops(); len(st) != 0 {
			t.Fatalf("stopped at adoption: %+v", st)
		}
		rt.SetHTTP(ids[0], 0)
		waitFor(t, "in the pool once it answers", time.Minute, func() bool {
			return slices.Equal(h2.poolAddrs(), h2.addrs(ids[:1], spec.Port))
		})
		if got := sorted(h2.containers("", "")); !slices.Equal(got, sorted(ids)) {
			t.Errorf("containers %v, want %v", got, ids)
		}
	})
}

// traffic passes a request through the app's gate every 100ms until the
// returned stop is called, as a proxy under light load would.
func (h *harness) traffic() (stop func()) {
	ref := h.m.Pool(appName)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			ref.Pass(ctx, nil)
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return func() { cancel(); <-done }
}

func (p *fakeProber) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.probes
}

// With rest_check_interval 30s, health checks follow traffic: an app at
// rest is checked every 30s; the first request after the rest runs a
// check at once and brings back the 0.5s pace, so that a container that
// died during the rest is out within about a second of the traffic; at
// rest a dead container is out within about 30s. Without it, an app at
// rest is checked every 0.5s.
func TestHealthChecksFollowTraffic(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.shutdown()
		spec := appSpec(t, "localhost/blog:v1", 3)
		s, _ := h.deployFirst(spec)
		prober := h.m.deps.Prober.(*fakeProber)
		settle(20 * time.Second) // at rest from here
		before := prober.count()
		settle(10 * time.Second)
		if n := prober.count() - before; n < 3*19 {
			t.Fatalf("%d checks of 3 containers in 10s at rest without rest_check_interval, want every 0.5s", n)
		}
		spec.RestCheckInterval = 30 * time.Second
		if d := s.Update(spec); d != nil {
			t.Fatalf("rest_check_interval started deployment %+v", d)
		}
		settle(time.Second)
		before = prober.count()
		settle(90 * time.Second)
		atRest := prober.count() - before
		t.Logf("at rest: %d checks of 3 containers in 90s", atRest)
		if atRest < 3*2 || atRest > 3*4 {
			t.Errorf("%d checks of 3 containers in 90s at rest, want a pass every 30s (9)", atRest)
		}

		// Traffic after the rest: the dead container is out at once.
		ids := h.containers(spec.ReleaseID(), WebProcess)
		h.rt.Unlisten(ids[0])
		t0 := time.Now()
		stop := h.traffic()
		waitFor(t, "the dead container out of the pool once traffic comes", 15*time.Second, func() bool { return len(h.poolAddrs()) == 2 })
		woke := time.Since(t0)
		before = prober.count()
		settle(10 * time.Second)
		if busy := prober.count() - before; busy < 30 {
			t.Errorf("%d checks in 10s with traffic, want a pass every 0.5s", busy)
		}
		stop()
		h.rt.Listen(ids[0])
		waitFor(t, "back in the pool", 5*time.Second, func() bool { return len(h.poolAddrs()) == 3 })

		// At rest again: a dead container is out within about 30s.
		settle(20 * time.Second)
		h.rt.Unlisten(ids[1])
		t0 = time.Now()
		waitFor(t, "the dead container of a quiet app out of the pool", 40*time.Second, func() bool { return len(h.poolAddrs()) == 2 })
		quiet := time.Since(t0)
		t.Logf("dead container out of the pool %s after traffic came, %s at rest (virtual)", woke, quiet)
		if woke > time.Second {
			t.Errorf("out of the pool %s after the first request, want at once", woke)
		}
	})
}

// Unlisten makes container id close its listener while it keeps running.
func (r *fakeRuntime) Unlisten(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.containers[id].listening = false
}

// By default passes start every 0.5s however long one takes: a hung
// container (each of its checks takes 400ms) does not slow the checks of
// the others. A reload that drops rest_check_interval brings the 0.5s pace
// back at once, not when the rest's timer fires.
func TestHealthPace(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.shutdown()
		spec := livenessSpec(t, "localhost/blog:v1", 2, 0)
		s, _ := h.deployFirst(spec)
		prober := h.m.deps.Prober.(*fakeProber)
		ids := h.containers(spec.ReleaseID(), WebProcess)
		h.rt.Hang(ids[0], true)
		settle(5 * time.Second)
		before := prober.count()
		settle(10 * time.Second)
		if n := prober.count() - before; n < 2*19 {
			t.Errorf("%d checks of 2 containers in 10s with one hung, want a pass every 0.5s (40)", n)
		}
		h.rt.Hang(ids[0], false)
		waitFor(t, "back in the pool", 5*time.Second, func() bool { return len(h.poolAddrs()) == 2 })

		spec.RestCheckInterval = MaxRestCheckInterval
		s.Update(spec)
		settle(time.Minute) // at rest: the next pass is minutes away
		spec.RestCheckInterval = 0
		s.Update(spec)
		settle(100 * time.Millisecond)
		before = prober.count()
		settle(2 * time.Second)
		if n := prober.count() - before; n < 2*3 {
			t.Errorf("%d checks in the 2s after rest_check_interval was dropped, want a pass every 0.5s", n)
		}
	})
}
