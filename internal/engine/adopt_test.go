package engine

import (
	"testing"
	"testing/synctest"
	"time"
)

// The first deployment of an app fails its postdeploy hook; while its
// containers are being discarded, the process is killed (-9). The next start
// adopts the failed release as serving.
func TestRegressionAdoptsDiscardedRelease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := newFakeRuntime()
		store1 := newMemStore()
		h1 := newHarnessWith(t, rt, func(d *Deps) { d.Store = store1 })
		spec := appSpecKept(t, "localhost/blog:v1", 2)
		// Its containers ignore SIGTERM for their whole stop_timeout.
		rt.OnImage(spec.Image, behavior{IgnoreTerm: true})
		spec.Postdeploy = []string{"/app/migrate"}
		rt.OnProcess(HookProcess, behavior{HookExit: 1})
		h1.m.Apply([]AppSpec{spec})
		waitFor(t, "hook failed and discard under way", time.Minute, func() bool {
			s := h1.m.App(appName)
			s.lock()
			defer s.unlock()
			n := 0
			for c := range s.fleet.all() {
				if c.state == StateStopping && c.Process == WebProcess {
					n++
				}
			}
			return n == 2
		})
		snap := store1.get(appName) // what is on disk when kill -9 strikes
		t.Logf("record at kill: serving=%v deploying=%v retiring=%v", snap.Serving, snap.Deploying, snap.Retiring)
		h1.m.Close() // stands in for the dead process (its exit() writes to store1, not to the snapshot)
		rt.OnProcess(HookProcess, behavior{HookExit: 1})

		store2 := newMemStore()
		store2.recs[appName] = snap
		h2 := newHarnessWith(t, rt, func(d *Deps) { d.Store = store2 })
		defer h2.shutdown()
		h2.m.Apply([]AppSpec{spec})
		settle(2 * adoptProbeTime)
		st := h2.sup().Status()
		if st.Release != nil {
			t.Errorf("after restart, release %s serves (pool %v): a release whose hook failed was adopted", st.Release.ID, h2.m.Pool(appName).Load())
		}
		if h2.hookRuns() > 1 {
			t.Logf("hook ran again")
		}
	})
}
