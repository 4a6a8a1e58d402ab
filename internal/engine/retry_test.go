package engine

import (
	"testing"
	"testing/synctest"
	"time"
)

// Boots of one round that fail together count as one failure: a scale of
// eight workers that always crash is retried restart_attempts times with
// backoff, not given up after a few rounds.
func TestRegressionParallelFailuresBurnAttempts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.m.Close()
		spec := appSpec(t, "localhost/blog:v1", 1, worker(0))
		s, _ := h.deployFirst(spec)
		h.rt.OnProcess("worker", behavior{Crash: true})
		t0 := time.Now()
		if err := s.Scale(map[string]int{"worker": 8}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "gave up", time.Hour, func() bool { return len(s.Status().GaveUp) > 0 })
		ts := h.rt.RunTimes("worker")
		took := time.Since(t0)
		t.Logf("gave up after %s and %d boots", took.Round(time.Second), len(ts))
		if want := (spec.RestartAttempts + 1) * 8; len(ts) != want {
			t.Errorf("%d boots before giving up, want %d: 8 per round, %d rounds", len(ts), want, spec.RestartAttempts+1)
		}
		if took < 10*time.Minute {
			t.Errorf("gave up after %s, want the backoff of %d retries (about 15 minutes)", took, spec.RestartAttempts)
		}
	})
}
