package engine

import (
	"maps"
	"testing"
	"testing/synctest"
	"time"
)

// Tests of instance identity and orphans: an instance takes over only its
// own containers (and unlabelled ones of the apps it runs), removes what it
// left of apps no config has any more, and never touches another
// instance's.

const thisInstance = "0123456789abcdef0123456789abcdef"

// withInstance is a harness option: a store and this instance's id.
func withInstance(st Store) func(*Deps) {
	return func(d *Deps) { d.Store = st; d.Instance = thisInstance }
}

// labelsOf returns the labels of a container of app, release and process,
// of instance (none when empty).
func labelsOf(app, release, process, instance string) map[string]string {
	l := map[string]string{LabelApp: app, LabelRelease: release, LabelProcess: process, LabelPort: "5000"}
	if instance != "" {
		l[LabelInstance] = instance
	}
	return l
}

// gone reports whether none of ids is left in rt.
func gone(rt *fakeRuntime, ids ...string) bool {
	for _, id := range ids {
		if _, ok := rt.Get(id); ok {
			return false
		}
	}
	return true
}

// untouched fails the test when a container of ids was stopped, removed or
// signalled, or does not run.
func untouched(t *testing.T, rt *fakeRuntime, what string, ids ...string) {
	t.Helper()
	for _, id := range ids {
		if c, ok := rt.Get(id); !ok || !c.Running {
			t.Errorf("%s %s: present %v, running %v; want it left alone", what, id, ok, c.Running)
		}
		for _, s := range rt.Stops() {
			if s.ID == id {
				t.Errorf("%s %s was stopped", what, id)
			}
		}
		for _, k := range rt.Kills() {
			if k.ID == id {
				t.Errorf("%s %s got %s", what, id, k.Signal)
			}
		}
	}
}

// At start: the containers this instance left of an app the config no
// longer has are stopped and its record moved aside; a record without
// containers is moved aside too; unlabelled containers of an unknown app
// and another instance's containers (even of a configured app) are left
// alone. Added back, the app starts from its config.
func TestOrphanAtStart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := newFakeRuntime()
		st := newMemStore()
		orphans := []string{
			rt.Add("localhost/shop:v1", labelsOf("shop", "r1", WebProcess, thisInstance), true, true, "5000").ID,
			rt.Add("localhost/shop:v1", labelsOf("shop", "r1", "worker", thisInstance), true, false, "").ID,
		}
		st.recs["shop"] = AppRecord{Pause: &PauseRecord{Since: time.Now(), Timeout: time.Minute},
			Overrides: Overrides{Counts: map[string]CountOverride{WebProcess: {Count: 3, ConfigCount: 1, Op: OpScale}}}}
		st.recs["forgotten"] = AppRecord{Maintenance: &MaintenanceRecord{Message: "old"}}
		legacy := rt.Add("localhost/legacy:v1", labelsOf("legacy", "r9", WebProcess, ""), true, true, "5000").ID
		foreign := rt.Add("localhost/blog:v7", labelsOf(appName, "r7", WebProcess, "ffffffffffffffffffffffffffffffff"), true, true, "5000").ID

		h := newHarnessWith(t, rt, withInstance(st))
		defer h.shutdown()
		s, _ := h.deployFirst(appSpecKept(t, "localhost/blog:v1", 1))
		waitFor(t, "orphan containers removed", time.Minute, func() bool { return gone(rt, orphans...) })
		for _, id := range orphans {
			if !stoppedGracefully(rt, id) {
				t.Errorf("orphan %s was not stopped with SIGTERM and stop_timeout before its removal", id)
			}
		}
		waitFor(t, "orphan's record moved aside", time.Minute, func() bool { return len(st.archived["shop"]) == 1 })
		if _, ok := st.recs["shop"]; ok {
			t.Error("orphan's record still in place")
		}
		if _, ok := st.recs["forgotten"]; ok || len(st.archived["forgotten"]) != 1 {
			t.Errorf("record of an app with no container and no config: in place %v, archived %d", ok, len(st.archived["forgotten"]))
		}
		settle(3 * resyncInterval) // resyncs come and go
		untouched(t, rt, "unlabelled container of an unknown app", legacy)
		untouched(t, rt, "container of another instance", foreign)
		if st := s.Status(); st.Others != 1 {
			t.Errorf("status counts %d containers of other instances, want 1", st.Others)
		}
		for _, c := range s.Status().Containers {
			if c.ID == foreign {
				t.Error("another instance's container is in the app's status")
			}
		}
		for _, r := range rt.Runs() {
			if r.Labels[LabelInstance] != thisInstance {
				t.Errorf("container %s started with instance label %q, want %q", r.Name, r.Labels[LabelInstance], thisInstance)
			}
		}

		// Added back: from the config, no pause nor scale revived.
		shop := appSpecKept(t, "localhost/shop:v2", 1)
		shop.Name = "shop"
		h.m.Apply([]AppSpec{appSpecKept(t, "localhost/blog:v1", 1), shop})
		synctest.Wait()
		s2 := h.m.App("shop")
		d := h.waitDone(s2, h.newest(s2).ID)
		st2 := s2.Status()
		if d.Status != StatusSuccess || st2.Paused != nil || len(st2.Overrides) != 0 || st2.Processes[WebProcess] != 1 {
			t.Errorf("app added back: deployment %s, paused %v, overrides %v, counts %v; want a clean start from the config",
				d.Status, st2.Paused, st2.Overrides, st2.Processes)
		}
	})
}

// stoppedGracefully reports whether id got a Stop (SIGTERM, stop_timeout,
// SIGKILL) or a SIGTERM before it was removed.
func stoppedGracefully(rt *fakeRuntime, id string) bool {
	for _, s := range rt.Stops() {
		if s.ID == id {
			return true
		}
	}
	for _, k := range rt.Kills() {
		if k.ID == id && k.Signal == "SIGTERM" {
			return true
		}
	}
	return false
}

// At a config load: containers this instance left of an app the config
// does not have are removed without waiting for the periodic resync; an
// app removed while it runs has its record moved aside, not deleted.
func TestOrphanAtReload(t *testing.T) {
	setForTest(t, &resyncInterval, time.Hour)
	synctest.Test(t, func(t *testing.T) {
		rt := newFakeRuntime()
		st := newMemStore()
		h := newHarnessWith(t, rt, withInstance(st))
		defer h.shutdown()
		blog := appSpecKept(t, "localhost/blog:v1", 1)
		shop := appSpecKept(t, "localhost/shop:v1", 1)
		shop.Name = "shop"
		h.m.Apply([]AppSpec{blog, shop})
		synctest.Wait()
		s := h.m.App("shop")
		h.waitDone(s, h.newest(s).ID)
		if err := s.Maintenance("down"); err != nil {
			t.Fatal(err)
		}
		h.m.Apply([]AppSpec{blog})
		waitFor(t, "removed app's record moved aside", time.Minute, func() bool {
			st.mu.Lock()
			defer st.mu.Unlock()
			return len(st.archived["shop"]) == 1
		})
		if rec := st.archived["shop"][0]; rec.Maintenance == nil {
			t.Errorf("record moved aside %+v, want the one with maintenance", rec)
		}

		// Containers of this instance appear for an app no config has (a
		// previous process left them): the next load removes them.
		orphan := rt.Add("localhost/shop:v1", labelsOf("shop", "r1", WebProcess, thisInstance), true, true, "5000").ID
		h.m.Apply([]AppSpec{blog})
		waitFor(t, "orphan removed at the load", time.Minute, func() bool { return gone(rt, orphan) })
	})
}

// Unlabelled containers (an older podswitch started them) of a configured
// app are adopted; they are replaced and removed as the app's own.
func TestUnlabelledAdopted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := newFakeRuntime()
		st := newMemStore()
		spec := appSpecKept(t, "localhost/blog:v1", 2)
		rel := spec.ReleaseID()
		ids := []string{
			rt.Add(spec.Image, labelsOf(appName, rel, WebProcess, ""), true, true, "5000").ID,
			rt.Add(spec.Image, labelsOf(appName, rel, WebProcess, ""), true, true, "5000").ID,
		}
		st.recs[appName] = AppRecord{Serving: &ReleaseRecord{ID: rel, Spec: spec.record()}}
		h := newHarnessWith(t, rt, withInstance(st))
		defer h.shutdown()
		h.m.Apply([]AppSpec{spec})
		settle(2 * adoptProbeTime)
		assertPool(t, h.m.Pool(appName), rel, h.addrs(ids, 5000))
		if n := len(rt.Runs()); n != 0 {
			t.Errorf("%d containers started, want the unlabelled ones adopted", n)
		}
		// A new release replaces them, its containers labelled.
		d := h.waitDone(h.sup(), h.sup().Update(appSpecKept(t, "localhost/blog:v2", 2)).ID)
		if d.Status != StatusSuccess {
			t.Fatalf("deploy: %s %s", d.Status, d.Error)
		}
		waitFor(t, "unlabelled containers replaced", time.Minute, func() bool { return gone(rt, ids...) })
		for _, id := range h.containers("", "") {
			if c, _ := rt.Get(id); c.Labels[LabelInstance] != thisInstance {
				t.Errorf("container %s has instance %q", id, c.Labels[LabelInstance])
			}
		}
	})
}

// Another instance's containers of a configured app, with the same
// release, are neither adopted nor removed: this instance starts its own.
func TestOtherInstanceNotAdopted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := newFakeRuntime()
		spec := appSpecKept(t, "localhost/blog:v1", 1)
		other := labelsOf(appName, spec.ReleaseID(), WebProcess, "ffffffffffffffffffffffffffffffff")
		foreign := rt.Add(spec.Image, other, true, true, "5000").ID
		exited := rt.Add(spec.Image, maps.Clone(other), false, false, "5000").ID
		h := newHarnessWith(t, rt, withInstance(newMemStore()))
		defer h.shutdown()
		s, _ := h.deployFirst(spec)
		settle(3 * resyncInterval)
		untouched(t, rt, "container of another instance", foreign)
		if _, ok := rt.Get(exited); !ok {
			t.Error("another instance's exited container was removed")
		}
		if n := len(rt.Runs()); n != 1 {
			t.Errorf("%d containers started, want 1 of this instance's own", n)
		}
		if st := s.Status(); st.Others != 2 || len(st.Containers) != 1 {
			t.Errorf("status: %d others, %d containers; want 2 and 1", st.Others, len(st.Containers))
		}
		// Its exit is not this app's crash.
		rt.Exit(foreign, 1)
		synctest.Wait()
		if ev := h.eventsNamed(EventCrashed); len(ev) != 0 {
			t.Errorf("crash events %+v for another instance's container", ev)
		}
	})
}
