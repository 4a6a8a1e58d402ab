package engine

import (
	"testing"
	"testing/synctest"
	"time"
)

// A web scale-up gives up (the host could not start more); later one of
// the web containers that served crashes: it is never replaced.
func TestRegressionGaveUpBlocksCrashReplacement(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.m.Close()
		spec := appSpec(t, "localhost/blog:v1", 2)
		spec.RestartAttempts = 1
		s, _ := h.deployFirst(spec)
		h.rt.OnImage(spec.Image, behavior{Crash: true})
		if err := s.Scale(map[string]int{WebProcess: 3}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "gave up", 10*time.Minute, func() bool { return len(s.Status().GaveUp) > 0 })
		h.rt.OnImage(spec.Image, behavior{}) // the host recovers
		ids := h.containers(spec.ReleaseID(), WebProcess)
		var running []string
		for _, id := range ids {
			if c, _ := h.rt.Get(id); c.Running {
				running = append(running, id)
			}
		}
		h.rt.Exit(running[0], 137)
		settle(5 * time.Minute)
		if p := h.m.Pool(appName).Load(); len(p.Addrs) < 2 {
			t.Errorf("5 minutes after a web crash, pool has %d container(s) (gave_up=%v): the crash was not replaced", len(p.Addrs), s.Status().GaveUp)
		}
	})
}
