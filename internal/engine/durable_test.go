package engine

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// Tests of durable answers: an operation is answered only once its record
// is written; one that cannot be written changes nothing; no app waits for
// another app's disk write.

// faultyStore is a memStore whose writes fail when failIf says so, and
// whose writes of an app wait while hold has a channel for it.
type faultyStore struct {
	*memStore
	fmu    sync.Mutex
	failIf func(app string, rec AppRecord) bool
	hold   map[string]chan struct{}
}

var errDiskFull = errors.New("write state/blog.json: no space left on device")

func newFaultyStore() *faultyStore {
	return &faultyStore{memStore: newMemStore(), hold: map[string]chan struct{}{}}
}

func (f *faultyStore) Save(app string, rec AppRecord) error {
	f.fmu.Lock()
	fail, ch := f.failIf, f.hold[app]
	f.fmu.Unlock()
	if ch != nil {
		<-ch
	}
	if fail != nil && fail(app, rec) {
		return errDiskFull
	}
	return f.memStore.Save(app, rec)
}

func (f *faultyStore) setFail(fn func(app string, rec AppRecord) bool) {
	f.fmu.Lock()
	defer f.fmu.Unlock()
	f.failIf = fn
}

func always(string, AppRecord) bool { return true }

// wantRecordErr fails the test unless err is a *RecordError that says why.
func wantRecordErr(t *testing.T, op string, err error) {
	t.Helper()
	var re *RecordError
	if !errors.As(err, &re) || !strings.Contains(err.Error(), "no space left on device") || !strings.Contains(err.Error(), "nothing was changed") {
		t.Errorf("%s with a full disk: error %v, want a *RecordError with the reason", op, err)
	}
}

// Deploy, rollback, scale, pause, maintenance and resume are refused when
// their record cannot be written, and change nothing: not the status, not
// the gate, not the containers, not the record.
func TestOperationsRefusedWhenRecordFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newFaultyStore()
		h := newHarnessWith(t, nil, withStore(st))
		defer h.shutdown()
		s, _ := h.deployFirst(appSpecKept(t, "localhost/blog:v1", 1))
		res, err := s.Deploy("localhost/blog:v2", "")
		if err != nil || h.waitDone(s, res.Deployment.ID).Status != StatusSuccess {
			t.Fatalf("deploy of v2: %v", err)
		}
		synctest.Wait()
		before, runs, last := st.get(appName), len(h.rt.Runs()), h.newest(s).ID
		st.setFail(always)

		wantRecordErr(t, "maintenance", s.Maintenance("down for a minute"))
		wantRecordErr(t, "pause", s.Pause(time.Minute))
		wantRecordErr(t, "scale", s.Scale(map[string]int{WebProcess: 3}))
		_, err = s.Deploy("localhost/blog:v3", "")
		wantRecordErr(t, "deploy", err)
		_, err = s.Rollback()
		wantRecordErr(t, "rollback", err)
		settle(time.Minute)

		stat := s.Status()
		if stat.Maintenance != nil || stat.Paused != nil || h.m.Pool(appName).Gate() != nil {
			t.Errorf("maintenance %+v, pause %+v, gate %+v after refused operations", stat.Maintenance, stat.Paused, h.m.Pool(appName).Gate())
		}
		if stat.Processes[WebProcess] != 1 || len(stat.Overrides) != 1 || stat.Image != "localhost/blog:v2" {
			t.Errorf("counts %v, overrides %+v, image %s after refused operations; want 1 web, the deploy of v2", stat.Processes, stat.Overrides, stat.Image)
		}
		if n := len(h.rt.Runs()); n != runs {
			t.Errorf("%d containers started by refused operations", n-runs)
		}
		if id := h.newest(s).ID; id != last {
			t.Errorf("deployment %d started by a refused operation", id)
		}
		after := st.get(appName)
		if after.Serving.ID != before.Serving.ID || after.Overrides.Image.Image != "localhost/blog:v2" || after.Maintenance != nil {
			t.Errorf("record changed: %+v", after)
		}

		// Resume is refused too: maintenance stays, as the disk says.
		st.setFail(nil)
		if err := s.Maintenance("down"); err != nil {
			t.Fatal(err)
		}
		st.setFail(always)
		wantRecordErr(t, "resume", s.Resume())
		if s.Status().Maintenance == nil || h.m.Pool(appName).Gate() == nil || st.get(appName).Maintenance == nil {
			t.Error("maintenance ended by a refused resume")
		}
	})
}

// A deployment whose deploying record cannot be written does not start: it
// ends start-error with the reason, no container of it runs, what serves
// goes on serving, and it is not tried again by itself.
func TestDeployNotStartedWhenRecordFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newFaultyStore()
		h := newHarnessWith(t, nil, withStore(st))
		defer h.shutdown()
		v1 := appSpecKept(t, "localhost/blog:v1", 2)
		s, _ := h.deployFirst(v1)
		pool := h.m.Pool(appName).Load()
		st.setFail(always)
		v2 := appSpecKept(t, "localhost/blog:v2", 2)
		d := s.Update(v2)
		if d == nil {
			t.Fatal("no deployment recorded for the config change")
		}
		settle(time.Minute)
		got, _, _ := s.Deployment(d.ID)
		if got.Status != StatusStartError || !strings.Contains(got.Error, "no space left on device") {
			t.Errorf("deployment %s %q, want start-error with the reason", got.Status, got.Error)
		}
		if runs := h.runsOf(v2.ReleaseID()); len(runs) != 0 {
			t.Errorf("%d containers of a deployment that did not start", len(runs))
		}
		assertPool(t, h.m.Pool(appName), v1.ReleaseID(), pool.Addrs)
		if id := h.newest(s).ID; id != d.ID {
			t.Errorf("deployment %d started by itself after the failed one", id)
		}
		if rec := st.get(appName); rec.Deploying != nil {
			t.Errorf("record says %+v is deploying", rec.Deploying)
		}
		// Once the disk takes writes, sending it again deploys.
		st.setFail(nil)
		res, err := s.Deploy(v2.Image, "")
		if err != nil || res.Deployment == nil || h.waitDone(s, res.Deployment.ID).Status != StatusSuccess {
			t.Errorf("deploy once the disk takes writes: %+v, %v", res, err)
		}
	})
}

// A switch whose serving record cannot be written does not happen: the
// rollout is abandoned with the reason, the old release keeps serving and
// the new containers go.
func TestSwitchNotMadeWhenRecordFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newFaultyStore()
		h := newHarnessWith(t, nil, withStore(st))
		defer h.shutdown()
		v1 := appSpecKept(t, "localhost/blog:v1", 2)
		s, _ := h.deployFirst(v1)
		pool := h.m.Pool(appName).Load()
		v2 := appSpecKept(t, "localhost/blog:v2", 2)
		st.setFail(func(_ string, rec AppRecord) bool { return rec.Serving != nil && rec.Serving.ID == v2.ReleaseID() })
		d := h.waitDone(s, s.Update(v2).ID)
		if d.Status != StatusStartError || !strings.Contains(d.Error, "switch was not made") || !strings.Contains(d.Error, "no space left") {
			t.Errorf("deployment %s %q, want start-error: the switch was not made, with the reason", d.Status, d.Error)
		}
		if !d.SwitchedAt.IsZero() {
			t.Error("deployment says it switched")
		}
		assertPool(t, h.m.Pool(appName), v1.ReleaseID(), pool.Addrs)
		if st := s.Status(); st.Release == nil || st.Release.ID != v1.ReleaseID() {
			t.Errorf("serving %+v, want v1", st.Release)
		}
		if rec := st.get(appName); rec.Serving == nil || rec.Serving.ID != v1.ReleaseID() {
			t.Errorf("record serves %+v, want v1", rec.Serving)
		}
		waitFor(t, "v2's containers gone", time.Minute, func() bool { return len(h.containers(v2.ReleaseID(), "")) == 0 })
	})
}

// An app whose record write hangs (a slow disk) holds its own lock only:
// the exit of another app's container is handled meanwhile, even when an
// exit of the slow app came first. In real time: a goroutine waiting for a
// mutex is not durably blocked, so a synctest bubble cannot wait here.
func TestSlowRecordWriteDelaysNoOtherApp(t *testing.T) {
	st := newFaultyStore()
	h := newHarnessWith(t, nil, withStore(st))
	defer h.shutdown()
	blog := appSpecKept(t, "localhost/blog:v1", 2)
	shop := appSpecKept(t, "localhost/shop:v1", 1)
	shop.Name = "shop"
	h.m.Apply([]AppSpec{blog, shop})
	eventually(t, "both apps serve", func() bool {
		return h.m.Pool(appName).Load() != nil && len(h.m.Pool(appName).Load().Addrs) == 2 &&
			h.m.Pool("shop").Load() != nil && len(h.m.Pool("shop").Load().Addrs) == 1
	})
	hold := make(chan struct{})
	st.fmu.Lock()
	st.hold["shop"] = hold
	st.fmu.Unlock()
	done := make(chan error, 1)
	go func() { done <- h.m.App("shop").Maintenance("slow disk") }()
	eventually(t, "shop's lock held over its write", func() bool {
		if !h.m.App("shop").mu.TryLock() {
			return true
		}
		h.m.App("shop").mu.Unlock()
		return false
	})

	var shopWeb string
	for _, c := range h.rt.Runs() {
		if c.Labels[LabelProcess] == WebProcess && c.Labels[LabelApp] == "shop" {
			shopWeb = idOf(t, h.rt, c.Name)
		}
	}
	blogWeb := h.containers(blog.ReleaseID(), WebProcess)[0]
	blogAddr := h.addrs([]string{blogWeb}, 5000)[0]
	go func() {
		h.rt.Exit(shopWeb, 1)
		h.rt.Exit(blogWeb, 1)
	}()
	eventually(t, "blog's crash handled while shop writes its record", func() bool {
		for _, ev := range h.eventsNamed(EventCrashed) {
			if ev.App == appName && ev.Container == blogWeb {
				return true
			}
		}
		return false
	})
	for _, a := range h.m.Pool(appName).Load().Addrs {
		if a == blogAddr {
			t.Errorf("blog's crashed container %s still in the pool while shop writes its record", a)
		}
	}
	for _, ev := range h.eventsNamed(EventCrashed) {
		if ev.App == "shop" {
			t.Errorf("shop's crash handled while shop's lock is held: %+v", ev)
		}
	}
	close(hold)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	eventually(t, "shop's crash handled once its write ended", func() bool {
		for _, ev := range h.eventsNamed(EventCrashed) {
			if ev.App == "shop" {
				return true
			}
		}
		return false
	})
}

// eventually polls cond in real time until it holds; it fails the test
// after a generous 30 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 30s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// idOf returns the ID of the container named name.
func idOf(t *testing.T, rt *fakeRuntime, name string) string {
	t.Helper()
	rt.mu.Lock()
	defer rt.mu.Unlock()
	for id, c := range rt.containers {
		if c.info.Name == name {
			return id
		}
	}
	t.Fatalf("no container %s", name)
	return ""
}
