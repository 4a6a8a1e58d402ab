package engine

import (
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// A serving-set container (scale-up / crash replacement) that exits in the
// window between boot() returning (state booted, lock released) and
// startBootLocked's task taking the lock is never reaped.
func TestRegressionBootedCrashLeak(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var h *harness
		var once sync.Once
		armed := false
		var mu sync.Mutex
		h = newHarnessWith(t, nil, func(d *Deps) {
			d.ObserveBoot = func(app, process string, took time.Duration, ok bool) {
				mu.Lock()
				a := armed
				mu.Unlock()
				if !a || !ok {
					return
				}
				once.Do(func() {
					s := h.m.App(appName)
					s.lock()
					var id string
					for c := range s.fleet.all() {
						if c.state == StateBooted && c.owner == 0 {
							id = c.ID
						}
					}
					s.unlock()
					if id == "" {
						t.Errorf("no booted serving container in ObserveBoot")
						return
					}
					h.rt.Exit(id, 1) // event -> s.exited -> crashedLocked from booted
				})
			}
		})
		s, _ := h.deployFirst(appSpec(t, "localhost/blog:v1", 1))
		mu.Lock()
		armed = true
		mu.Unlock()
		if err := s.Scale(map[string]int{WebProcess: 2}); err != nil {
			t.Fatal(err)
		}
		settle(time.Minute)
		counts := s.ContainerCounts()
		t.Logf("container counts after a minute: %v", counts)
		if n := counts[[2]string{WebProcess, string(StateCrashed)}]; n > 0 {
			t.Errorf("%d crashed web container(s) still held a minute later: never reaped", n)
		}
		// Remove the app: its owner never finishes.
		h.m.Apply(nil)
		done := make(chan struct{})
		go func() { h.m.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Minute):
			t.Errorf("Manager.Wait did not return 10 minutes after the app was removed")
		}
		h.m.Close()
	})
}

// boot_timeout bounds a container's own boot, from the moment its create
// call is admitted: the wait for a create slot is podswitch's queue (a cold
// start of many apps), not the app's. A create that takes longer than
// boot_timeout once admitted still fails the boot.
func TestBootTimeoutCountsFromAdmission(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := newFakeRuntime()
		h := newHarness(t, rt)
		h.m = NewManager(Deps{Runtime: rt, Prober: &fakeProber{rt: rt}, Logger: h.m.deps.Logger, InFlight: h.inFlight, Limits: Limits{Run: 1}})
		defer h.shutdown()
		spec := appSpec(t, "localhost/blog:v1", 4)
		spec.BootTimeout = 30 * time.Second
		rt.mu.Lock()
		rt.runDelay = 20 * time.Second // one at a time: the fourth waits 60 s for its slot
		rt.mu.Unlock()
		s, _ := h.deployFirst(spec)
		if n := len(h.m.Pool(appName).Load().Addrs); n != 4 {
			t.Fatalf("%d containers serve, want 4: %+v", n, s.Status().Containers)
		}

		rt.mu.Lock()
		rt.runDelay = 31 * time.Second // longer than boot_timeout once admitted
		rt.mu.Unlock()
		v2 := appSpec(t, "localhost/blog:v2", 1)
		v2.BootTimeout = 30 * time.Second
		d := h.waitDone(s, s.Update(v2).ID)
		if d.Status != StatusTimeoutError || !strings.Contains(d.Error, "not created and started within 30s") {
			t.Errorf("deployment of a create slower than boot_timeout: %s %q, want timeout-error", d.Status, d.Error)
		}
	})
}
