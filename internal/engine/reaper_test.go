package engine

import (
	"context"
	"slices"
	"testing"
	"testing/synctest"
	"time"
)

// Tests of how containers are stopped: the platform's rule (SIGTERM,
// exactly stop_timeout, SIGKILL) for every container however many stop
// together, and retirements recorded before they start.

// scaleTo returns spec with process type name at n.
func scaleTo(spec AppSpec, name string, n int) AppSpec {
	spec.Processes = slices.Clone(spec.Processes)
	for i := range spec.Processes {
		if spec.Processes[i].Name == name {
			spec.Processes[i].Count = n
		}
	}
	return spec
}

// A scale-down of 20 sends SIGTERM to all 20 at the same instant: none
// waits for a slot behind the others. The ones that exit within
// stop_timeout (code 0) never get SIGKILL; the ones that ignore SIGTERM
// get it exactly stop_timeout after their SIGTERM.
func TestStopManyAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.shutdown()
		h.rt.OnProcess("worker", behavior{TermDelay: 25 * time.Second})
		h.rt.OnProcess("deaf", behavior{IgnoreTerm: true})
		spec := appSpec(t, "localhost/blog:v1", 1, worker(10), ProcessSpec{Name: "deaf", Count: 10, Command: []string{"/app/deaf"}})
		spec.StopTimeout = 30 * time.Second
		s, _ := h.deployFirst(spec)
		workers, deaf := h.containers("", "worker"), h.containers("", "deaf")
		if len(workers) != 10 || len(deaf) != 10 {
			t.Fatalf("workers %v, deaf %v", workers, deaf)
		}
		settle(time.Minute)
		t0 := time.Now()
		s.Update(scaleTo(scaleTo(spec, "worker", 0), "deaf", 0))
		waitFor(t, "all 20 removed", 2*time.Minute, func() bool {
			return len(h.containers("", "worker"))+len(h.containers("", "deaf")) == 0
		})
		took := time.Since(t0)
		for _, id := range append(slices.Clone(workers), deaf...) {
			ks := h.rt.Signals(id)
			if len(ks) == 0 || ks[0].Signal != "SIGTERM" || !ks[0].At.Equal(t0) {
				t.Errorf("%s: signals %+v, want SIGTERM first, at the scale (%v)", id, ks, t0)
				continue
			}
			code, _ := h.rt.ExitCode(id)
			if slices.Contains(workers, id) {
				if len(ks) != 1 || code != 0 {
					t.Errorf("worker %s: signals %+v, exit code %d; want SIGTERM alone and code 0", id, ks, code)
				}
				continue
			}
			if len(ks) != 2 || ks[1].Signal != "SIGKILL" || ks[1].At.Sub(ks[0].At) != spec.StopTimeout || code != 137 {
				t.Errorf("deaf %s: signals %+v, exit code %d; want SIGKILL exactly %s after SIGTERM, code 137", id, ks, code, spec.StopTimeout)
			}
		}
		if took != spec.StopTimeout {
			t.Errorf("the scale-down of 20 took %s, want stop_timeout (%s)", took, spec.StopTimeout)
		}
		if n := len(h.containers("", WebProcess)); n != 1 {
			t.Errorf("%d web containers, want 1 untouched", n)
		}
	})
}

// A stop_timeout under a second is honoured to the millisecond, not
// rounded to zero (an immediate SIGKILL) nor up to a second.
func TestStopTimeoutUnderASecond(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.shutdown()
		h.rt.OnProcess("worker", behavior{IgnoreTerm: true})
		spec := appSpec(t, "localhost/blog:v1", 1, worker(1))
		spec.StopTimeout = 400 * time.Millisecond
		s, _ := h.deployFirst(spec)
		id := h.containers("", "worker")[0]
		settle(time.Minute)
		s.Update(scaleTo(spec, "worker", 0))
		waitFor(t, "worker removed", time.Minute, func() bool { return len(h.containers("", "worker")) == 0 })
		ks := h.rt.Signals(id)
		if len(ks) != 2 || ks[0].Signal != "SIGTERM" || ks[1].Signal != "SIGKILL" || ks[1].At.Sub(ks[0].At) != 400*time.Millisecond {
			t.Fatalf("signals %+v, want SIGTERM then SIGKILL 400ms later", ks)
		}
		// Podman is given the timeout for `podman stop` by hand; the
		// engine's own rule does not depend on it.
		if runs := h.rt.Runs(); runs[len(runs)-1].StopTimeout != 400*time.Millisecond {
			t.Errorf("spec StopTimeout %s", runs[len(runs)-1].StopTimeout)
		}
	})
}

// A container that exited before its SIGTERM, or that is gone, is
// removed without SIGKILL and without waiting stop_timeout.
func TestStopExitedOrGone(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.shutdown()
		h.rt.OnProcess("worker", behavior{IgnoreTerm: true})
		spec := appSpec(t, "localhost/blog:v1", 1, worker(2))
		s, _ := h.deployFirst(spec)
		ws := h.containers("", "worker")
		settle(time.Minute)
		h.rt.ExitQuietly(ws[0], 0) // exited; no event seen yet
		if err := h.rt.Remove(context.Background(), ws[1]); err != nil {
			t.Fatal(err) // gone behind podswitch's back
		}
		t0 := time.Now()
		s.Update(scaleTo(spec, "worker", 0))
		synctest.Wait()
		if time.Since(t0) != 0 {
			t.Fatalf("time passed")
		}
		for _, c := range s.Status().Containers {
			if c.Process == "worker" {
				t.Errorf("worker %s still known (%s)", c.ID, c.State)
			}
		}
		for _, id := range ws {
			for _, k := range h.rt.Signals(id) {
				if k.Signal == "SIGKILL" {
					t.Errorf("SIGKILL to %s", id)
				}
			}
		}
	})
}

// A Podman that does not answer the SIGTERM is asked again, with backoff;
// stop_timeout starts at the SIGTERM that was accepted.
func TestStopKillNotAnswered(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.shutdown()
		h.rt.OnProcess("worker", behavior{IgnoreTerm: true})
		spec := appSpec(t, "localhost/blog:v1", 1, worker(1))
		s, _ := h.deployFirst(spec)
		id := h.containers("", "worker")[0]
		settle(time.Minute)
		h.rt.SetDown(true)
		s.Update(scaleTo(spec, "worker", 0))
		settle(5 * time.Second)
		if ks := h.rt.Signals(id); len(ks) != 0 {
			t.Fatalf("signals %+v while Podman is down", ks)
		}
		h.rt.SetDown(false)
		waitFor(t, "worker removed", 5*time.Minute, func() bool { return len(h.containers("", "worker")) == 0 })
		ks := h.rt.Signals(id)
		if len(ks) != 2 || ks[0].Signal != "SIGTERM" || ks[1].Signal != "SIGKILL" || ks[1].At.Sub(ks[0].At) != spec.StopTimeout {
			t.Fatalf("signals %+v, want SIGTERM then SIGKILL exactly %s later", ks, spec.StopTimeout)
		}
	})
}

// kill -9 during the drain of a restart: the switched-out containers were
// recorded as retiring before they drained, so the next start stops them
// (SIGTERM, then SIGKILL: they ignore SIGTERM) and serves the new ones;
// before, it adopted all four and cut the surplus newest first, stopping
// the restart's new containers.
func TestKillDuringRestartDrain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := newFakeRuntime()
		store1 := newMemStore()
		h1 := newHarnessWith(t, rt, withStore(store1))
		defer h1.shutdown()
		spec := appSpecKept(t, "localhost/blog:v1", 2)
		// They survive the SIGTERM that exit() sends, as after a kill -9
		// nothing is sent at all.
		rt.OnImage(spec.Image, behavior{IgnoreTerm: true})
		s, _ := h1.deployFirst(spec)
		old := h1.containers("", "")
		h1.hold(h1.addrs(old, 5000)...) // a long drain
		d, err := restart(s, "", "")
		if err != nil {
			t.Fatal(err)
		}
		if got := h1.waitDone(s, d.ID); got.Status != StatusSuccess {
			t.Fatalf("restart: %s (%s)", got.Status, got.Error)
		}
		synctest.Wait()
		fresh := slices.DeleteFunc(h1.containers("", ""), func(id string) bool { return slices.Contains(old, id) })
		snap := store1.get(appName) // what is on disk when kill -9 strikes
		if !slices.Equal(sorted(snap.Retiring), old) {
			t.Errorf("retiring recorded during the drain: %v, want %v", snap.Retiring, old)
		}
		h1.m.Close()

		store2 := newMemStore()
		store2.recs[appName] = snap
		h2 := newHarnessWith(t, rt, withStore(store2))
		defer h2.shutdown()
		h2.m.Apply([]AppSpec{spec})
		waitFor(t, "old containers gone", time.Minute, func() bool { return len(h2.containers("", "")) == 2 })
		if got := h2.containers("", ""); !slices.Equal(got, fresh) {
			t.Errorf("containers after the start %v, want the restart's %v", got, fresh)
		}
		assertPool(t, h2.m.Pool(appName), spec.ReleaseID(), h2.addrs(fresh, 5000))
	})
}

// kill -9 during the drain of a scale-down: the surplus was recorded
// before it drained, and was cut oldest first; the next start stops the
// recorded ones and keeps the newest.
func TestKillDuringScaleDownDrain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := newFakeRuntime()
		store1 := newMemStore()
		h1 := newHarnessWith(t, rt, withStore(store1))
		defer h1.shutdown()
		spec := appSpecKept(t, "localhost/blog:v1", 1)
		rt.OnImage(spec.Image, behavior{IgnoreTerm: true})
		s, _ := h1.deployFirst(spec)
		settle(time.Minute)
		s.Update(scaleTo(spec, WebProcess, 3))
		waitFor(t, "3 web", time.Minute, func() bool { return len(h1.m.Pool(appName).Load().Addrs) == 3 })
		all := h1.containers("", "")
		h1.hold(h1.addrs(all, 5000)...)
		s.Update(spec)
		synctest.Wait()
		snap := store1.get(appName)
		surplus, keep := all[:2], all[2:] // the oldest two go
		if !slices.Equal(sorted(snap.Retiring), surplus) {
			t.Errorf("retiring recorded %v, want the oldest %v", snap.Retiring, surplus)
		}
		h1.m.Close()

		store2 := newMemStore()
		store2.recs[appName] = snap
		h2 := newHarnessWith(t, rt, withStore(store2))
		defer h2.shutdown()
		h2.m.Apply([]AppSpec{spec})
		waitFor(t, "surplus gone", time.Minute, func() bool { return len(h2.containers("", "")) == 1 })
		if got := h2.containers("", ""); !slices.Equal(got, keep) {
			t.Errorf("containers after the start %v, want %v", got, keep)
		}
	})
}

// stopByTest stops container id as the reaper does (it is stopping, and
// its exit is no crash to replace), then removes it and forgets it.
func stopByTest(s *Supervisor, id string, timeout time.Duration) (stopResult, error) {
	s.lock()
	c := s.fleet.get(id)
	c.reaping = true
	s.fleet.setState(c, StateStopping, "stopped by the test")
	s.unlock()
	res, err := s.stop(id, timeout)
	s.removeContainer(id)
	s.lock()
	s.fleet.remove(c, "")
	s.unlock()
	s.poke()
	return res, err
}

// lateWait is the fake runtime whose Wait reports an exit lag late, as a
// busy Podman does with many containers exiting at once.
type lateWait struct {
	*fakeRuntime
	lag time.Duration
}

func (r lateWait) Wait(ctx context.Context, id string) (int, error) {
	code, err := r.fakeRuntime.Wait(ctx, id)
	if err != nil {
		return code, err
	}
	select {
	case <-ctx.Done():
		return -1, ctx.Err()
	case <-time.After(r.lag):
		return code, nil
	}
}

// A container that exited by itself just before stop_timeout, which
// Podman reports late: SIGKILL goes out at stop_timeout (harmless to an
// exited container), and the stop says it exited by itself with its code.
func TestStopExitReportedLate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := newFakeRuntime()
		h := newHarnessWith(t, rt, func(d *Deps) { d.Runtime = lateWait{rt, 3 * time.Second} })
		defer h.shutdown()
		rt.OnProcess("worker", behavior{TermDelay: 28 * time.Second})
		spec := appSpec(t, "localhost/blog:v1", 1, worker(1))
		spec.StopTimeout = 30 * time.Second
		s, _ := h.deployFirst(spec)
		id := h.containers("", "worker")[0]
		res, err := stopByTest(s, id, spec.StopTimeout)
		if err != nil {
			t.Fatal(err)
		}
		if res.killed || res.code != 0 || res.killAfter != spec.StopTimeout {
			t.Errorf("stop %+v, want exit code 0, SIGKILL sent at %s but not counted", res, spec.StopTimeout)
		}
		// And one that SIGKILL did end says so.
		rt.OnProcess("worker", behavior{IgnoreTerm: true})
		s.Update(scaleTo(spec, "worker", 2))
		waitFor(t, "second worker", time.Minute, func() bool { return len(h.containers("", "worker")) == 2 })
		var deaf string
		for _, w := range h.containers("", "worker") {
			if w != id {
				deaf = w
			}
		}
		if res, err = stopByTest(s, deaf, time.Second); err != nil || !res.killed || res.code != exitSIGKILL {
			t.Errorf("stop of a deaf container: %+v %v, want killed with 137", res, err)
		}
	})
}
