package engine

import (
	"testing"
	"testing/synctest"
	"time"
)

// A first deployment that times out (nothing of the app serves) is tried
// again with backoff until it succeeds: a host too slow for a cold start
// does not leave the app down until someone reloads. Before, the app ran
// nothing until the next change of its config.
func TestColdDeployTimeoutRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.shutdown()
		s, spec, first := coldStart(t, h, 10*time.Second, DefaultRestartAttempts)
		h.rt.OnImage(spec.Image, behavior{}) // the host has caught up
		waitFor(t, "a deployment tried again", 5*time.Minute, func() bool { return h.newest(s).ID > first.ID })
		d := h.waitDone(s, h.newest(s).ID)
		if d.Status != StatusSuccess || d.Release != first.Release {
			t.Fatalf("deployment tried again: %s %s (%s), want success of %s", d.Status, d.Release, d.Error, first.Release)
		}
		if n := len(h.m.Pool(appName).Load().Addrs); n != 1 {
			t.Errorf("%d containers serve, want 1", n)
		}
	})
}

// The retries are bounded by restart_attempts, then a give-up is notified;
// a timeout while a release serves is not retried (the serving one goes
// on, as with any failed deployment).
func TestColdDeployTimeoutGivesUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.shutdown()
		s, _, _ := coldStart(t, h, 5*time.Second, 2)
		waitFor(t, "a give-up", 30*time.Minute, func() bool { return len(h.eventsNamed(EventGaveUp)) > 0 })
		if n := len(s.Status().Deployments); n != 3 {
			t.Errorf("%d deployments, want 3 (the first and 2 tries again)", n)
		}
		settle(10 * time.Minute)
		if n := len(s.Status().Deployments); n != 3 {
			t.Errorf("%d deployments after the give-up, want still 3", n)
		}

		// A release that serves: a timed-out deployment of the next one is
		// not tried again.
		h.rt.OnImage("localhost/blog:v2", behavior{})
		v2 := appSpec(t, "localhost/blog:v2", 1)
		if d := h.waitDone(s, s.Update(v2).ID); d.Status != StatusSuccess {
			t.Fatalf("v2: %s %s", d.Status, d.Error)
		}
		v3 := appSpec(t, "localhost/blog:v3", 1)
		v3.BootTimeout = 5 * time.Second
		h.rt.OnImage(v3.Image, behavior{NoListen: true})
		d := h.waitDone(s, s.Update(v3).ID)
		if d.Status != StatusTimeoutError {
			t.Fatalf("v3: %s, want timeout-error", d.Status)
		}
		settle(10 * time.Minute)
		if got := h.newest(s).ID; got != d.ID {
			t.Errorf("a deployment %d after v3's timeout while v2 serves, want none", got)
		}
	})
}

// restart_attempts 0: a timed-out first deployment is not tried again, and
// no give-up is notified (there was no try again to give up).
func TestColdDeployTimeoutNoRetry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.shutdown()
		s, _, _ := coldStart(t, h, 5*time.Second, 0)
		settle(10 * time.Minute)
		if n := len(s.Status().Deployments); n != 1 {
			t.Errorf("%d deployments, want 1", n)
		}
		if ev := h.eventsNamed(EventGaveUp); len(ev) != 0 {
			t.Errorf("give-up notified: %+v", ev)
		}
	})
}

// coldStart applies an app of web 1 whose containers never listen, with
// boot_timeout timeout and restart_attempts attempts, to an empty manager,
// and waits for its first deployment to time out.
func coldStart(t *testing.T, h *harness, timeout time.Duration, attempts int) (*Supervisor, AppSpec, Deployment) {
	t.Helper()
	spec := appSpec(t, "localhost/blog:v1", 1)
	spec.BootTimeout = timeout
	spec.RestartAttempts = attempts
	h.rt.OnImage(spec.Image, behavior{NoListen: true})
	h.m.Apply([]AppSpec{spec})
	synctest.Wait()
	s := h.sup()
	first := h.waitDone(s, h.newest(s).ID)
	if first.Status != StatusTimeoutError {
		t.Fatalf("first deployment: %s (%s), want timeout-error", first.Status, first.Error)
	}
	return s, spec, first
}
