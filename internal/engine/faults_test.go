package engine

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// Tests of the state machine and of faults that come together, over the
// fakes, in synctest bubbles.

// memStore is an in-memory Store that remembers the order of its writes.
type memStore struct {
	mu     sync.Mutex
	recs   map[string]AppRecord
	writes []AppRecord
	fail   bool
	// archived are the records moved aside, by app.
	archived map[string][]AppRecord
}

func newMemStore() *memStore { return &memStore{recs: map[string]AppRecord{}} }

func (m *memStore) Load(app string) (AppRecord, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.recs[app], nil
}

func (m *memStore) Save(app string, rec AppRecord) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail {
		return errors.New("disk full")
	}
	m.recs[app] = rec
	m.writes = append(m.writes, rec)
	return nil
}

func (m *memStore) Archive(app string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if rec, ok := m.recs[app]; ok {
		if m.archived == nil {
			m.archived = map[string][]AppRecord{}
		}
		m.archived[app] = append(m.archived[app], rec)
	}
	delete(m.recs, app)
	return nil
}

func (m *memStore) Apps() ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Sorted(maps.Keys(m.recs)), nil
}

func (m *memStore) get(app string) AppRecord {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.recs[app]
}

// withStore is newHarnessWith a store (and identity env resolution, so
// that kept releases can run again).
func withStore(st Store) func(*Deps) {
	return func(d *Deps) { d.Store = st }
}

// appSpecKept is appSpec with EnvSource set, as caddymodule makes specs, so
// that a kept release resolves to the same release id.
func appSpecKept(t *testing.T, image string, web int, others ...ProcessSpec) AppSpec {
	s := appSpec(t, image, web, others...)
	s.EnvSource = maps.Clone(s.Env)
	return s
}

// Every transition goes through setState: one the state machine lacks is
// refused and logged, a real one is recorded in the timeline and logged
// once.
func TestStateMachine(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	s := &Supervisor{log: zap.New(core), pool: new(PoolRef)}
	s.fleet = newFleet(s.log, s.pool, s.touch)
	c := &Container{ID: "c1", Process: WebProcess, Addr: "10.0.0.1:5000"}
	for _, step := range []struct {
		to State
		ok bool
	}{
		{StateReady, true}, {StateStarting, false}, {StateReady, false}, {StateDraining, true},
		{StateReady, false}, {StateStopping, true}, {StateCrashed, false}, {StateStopped, true}, {StateStarting, false},
	} {
		before := c.state
		if got := s.fleet.setState(c, step.to, ""); got != step.ok || (step.ok && c.state != step.to) || (!step.ok && c.state != before) {
			t.Errorf("%s -> %s: changed %v, state %s", before, step.to, got, c.state)
		}
	}
	if n := len(c.timeline); n != 4 {
		t.Errorf("timeline has %d entries, want 4: %+v", n, c.timeline)
	}
	if n := logs.FilterMessage("container state changed").Len(); n != 4 {
		t.Errorf("%d state change logs, want 4", n)
	}
	if n := logs.FilterMessage("refused container state change").Len(); n != 4 {
		t.Errorf("%d refused transitions logged, want 4 (a change to the same state is no change)", n)
	}
	// The pool follows ready web containers, once per unlock.
	c2 := &Container{ID: "c2", Process: WebProcess, Addr: "10.0.0.2:5000"}
	s.lock()
	s.fleet.add(c2, StateStarting, "")
	s.fleet.setState(c2, StateBooted, "")
	if s.pool.Load() != nil {
		t.Error("pool swapped before the unlock")
	}
	s.fleet.setState(c2, StateReady, "")
	s.unlock()
	if p := s.pool.Load(); p == nil || !slices.Equal(p.Addrs, []string{"10.0.0.2:5000"}) {
		t.Errorf("pool %+v after c2 is ready", p)
	}
	for st, nexts := range next {
		for _, to := range nexts {
			if to == st {
				t.Errorf("transition %s -> %s to itself", st, to)
			}
		}
	}
}

// A web container that crashes is replaced at once while another process
// type sits in a one-minute backoff.
func TestWebCrashWhileWorkerBacksOff(t *testing.T) {
	setForTest(t, &retryBase, time.Minute)
	setForTest(t, &retryJitter, 0)
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.shutdown()
		s, _ := h.deployFirst(appSpec(t, "localhost/blog:v1", 2, worker(0)))
		h.rt.OnProcess("worker", behavior{Crash: true})
		if err := s.Scale(map[string]int{"worker": 1}); err != nil {
			t.Fatal(err)
		}
		settle(5 * time.Second)
		if n := len(h.rt.RunTimes("worker")); n != 1 {
			t.Fatalf("%d worker boots, want 1 then a minute of backoff", n)
		}
		web := h.containers("", WebProcess)
		h.rt.Exit(web[0], 137)
		crashed := time.Now()
		waitFor(t, "web replaced", 5*time.Second, func() bool {
			return len(h.m.Pool(appName).Load().Addrs) == 2 && !slices.Contains(h.containers("", WebProcess), web[0])
		})
		if took := time.Since(crashed); took > time.Second {
			t.Errorf("web container replaced after %s while the worker backs off, want at once", took)
		}
		if n := len(h.rt.RunTimes("worker")); n != 1 {
			t.Errorf("%d worker boots, want still 1: the web crash must not cut its backoff", n)
		}
		settle(2 * time.Minute)
		if n := len(h.rt.RunTimes("worker")); n < 2 {
			t.Errorf("the worker was not retried after its backoff")
		}
	})
}

// A crash loop backs off; a crash after a long quiet time is replaced at
// once.
func TestCrashLoopBacksOff(t *testing.T) {
	setForTest(t, &retryJitter, 0)
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.shutdown()
		h.deployFirst(appSpec(t, "localhost/blog:v1", 1))
		var boots []time.Time
		for range 5 {
			web := h.containers("", WebProcess)
			h.rt.Exit(web[0], 1)
			waitFor(t, "replaced", 5*time.Minute, func() bool {
				c := h.containers("", WebProcess)
				return len(c) == 1 && c[0] != web[0] && len(h.m.Pool(appName).Load().Addrs) == 1
			})
			boots = append(boots, time.Now())
		}
		g := gaps(boots)
		// Crash 1 at once, then 1s, 2s, 4s, 8s of backoff.
		want := seconds(1, 2, 4, 8)
		for i := range g {
			if g[i] < want[i] || g[i] > want[i]+time.Second {
				t.Errorf("gap %d between replacements %s, want about %s", i, g[i], want[i])
			}
		}
		settle(time.Minute)
		web := h.containers("", WebProcess)
		h.rt.Exit(web[0], 1)
		crashed := time.Now()
		waitFor(t, "replaced at once", 5*time.Second, func() bool {
			c := h.containers("", WebProcess)
			return len(c) == 1 && c[0] != web[0] && len(h.m.Pool(appName).Load().Addrs) == 1
		})
		if took := time.Since(crashed); took > time.Second {
			t.Errorf("a crash after a quiet minute was replaced after %s, want at once", took)
		}
	})
}

// restart_attempts 0 does not retry; drain_timeout 0 does not wait.
func TestZeroSettings(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.shutdown()
		spec := appSpec(t, "localhost/blog:v1", 1, worker(0))
		spec.RestartAttempts, spec.DrainTimeout = 0, 0
		s, _ := h.deployFirst(spec)
		h.rt.OnProcess("worker", behavior{Crash: true})
		if err := s.Scale(map[string]int{"worker": 1}); err != nil {
			t.Fatal(err)
		}
		settle(time.Minute)
		if n := len(h.rt.RunTimes("worker")); n != 1 {
			t.Errorf("%d worker boots with restart_attempts 0, want 1", n)
		}
		if st := s.Status(); !slices.Equal(st.GaveUp, []string{"worker"}) {
			t.Errorf("gave up %v, want [worker]", st.GaveUp)
		}
		h.rt.OnProcess("worker", behavior{})
		old := h.containers("", WebProcess)
		h.hold(h.addrs(old, 5000)...)
		next := spec
		next.Image = "localhost/blog:v2"
		d := h.waitDone(s, s.Update(next).ID)
		synctest.Wait()
		stops := h.rt.Stops()
		if !slices.Equal(stoppedIDs(stops), old) || stops[0].At.Sub(d.SwitchedAt) != 0 {
			t.Errorf("stops %+v after the switch at %v: with drain_timeout 0 the old container stops at once", stops, d.SwitchedAt)
		}
	})
}

// A new release clears a give-up; its own worker is replaced when it
// crashes.
func TestGiveUpClearedByNewRelease(t *testing.T) {
	setForTest(t, &retryJitter, 0)
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.shutdown()
		spec := appSpec(t, "localhost/blog:v1", 1, worker(0))
		spec.RestartAttempts = 1
		s, _ := h.deployFirst(spec)
		h.rt.OnProcess("worker", behavior{Crash: true})
		if err := s.Scale(map[string]int{"worker": 1}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "gave up", time.Minute, func() bool { return len(s.Status().GaveUp) == 1 })
		h.rt.OnProcess("worker", behavior{})
		fixed := spec
		fixed.Processes = []ProcessSpec{{Name: WebProcess, Count: 1}, {Name: "worker", Count: 1, Command: []string{"/app/worker", "--fixed"}}}
		d := h.waitDone(s, s.Update(fixed).ID)
		if d.Status != StatusSuccess {
			t.Fatalf("deploy of the fix: %s %s", d.Status, d.Error)
		}
		if st := s.Status(); len(st.GaveUp) != 0 {
			t.Errorf("gave up %v after the new release", st.GaveUp)
		}
		w := h.containers(fixed.ReleaseID(), "worker")
		if len(w) != 1 {
			t.Fatalf("workers %v", w)
		}
		h.rt.Exit(w[0], 1)
		waitFor(t, "worker replaced", 10*time.Second, func() bool {
			now := h.containers(fixed.ReleaseID(), "worker")
			return len(now) == 1 && now[0] != w[0]
		})
	})
}

// The record says which release serves before the old one is touched, and
// what is being deployed before any of its containers exists.
func TestRecordOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newMemStore()
		h := newHarnessWith(t, nil, withStore(store))
		defer h.shutdown()
		v1 := appSpecKept(t, "localhost/blog:v1", 2)
		s, _ := h.deployFirst(v1)
		if r := store.get(appName); r.Serving == nil || r.Serving.ID != v1.ReleaseID() || r.Deploying != nil {
			t.Fatalf("record after the first deploy: %+v", r)
		}
		h.rt.OnImage("localhost/blog:v2", behavior{Hold: true})
		v2 := appSpecKept(t, "localhost/blog:v2", 2)
		d := s.Update(v2)
		synctest.Wait()
		r := store.get(appName)
		if r.Deploying == nil || r.Deploying.Release != v2.ReleaseID() || r.Serving.ID != v1.ReleaseID() {
			t.Fatalf("record while v2 boots: %+v", r)
		}
		old := h.containers(v1.ReleaseID(), "")
		for _, id := range h.containers(v2.ReleaseID(), WebProcess) {
			h.rt.Listen(id)
		}
		h.waitDone(s, d.ID)
		synctest.Wait()
		r = store.get(appName)
		if r.Serving.ID != v2.ReleaseID() || r.Deploying != nil || len(r.Releases) != 2 {
			t.Fatalf("record after the switch: %+v", r)
		}
		for _, id := range old {
			if !slices.Contains(r.Retiring, id) {
				t.Errorf("old container %s not recorded as retiring", id)
			}
		}
		// A failed deploy clears what was being deployed.
		h.rt.OnImage("localhost/blog:v3", behavior{Crash: true})
		d3 := s.Update(appSpecKept(t, "localhost/blog:v3", 2))
		if got := h.waitDone(s, d3.ID); got.Status != StatusCrashedError {
			t.Fatalf("v3: %s", got.Status)
		}
		if r := store.get(appName); r.Deploying != nil || r.Serving.ID != v2.ReleaseID() {
			t.Errorf("record after a failed deploy: %+v", r)
		}
	})
}

// Adoption trusts the record: the release recorded as serving is adopted,
// a deployment on its way is never adopted (even if all its containers
// listen) and starts over; without a record, a release whose only
// container is a worker does not win over one that serves.
func TestAdoptTrustsRecord(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := newFakeRuntime()
		store := newMemStore()
		v1 := appSpecKept(t, "localhost/blog:v1", 2, worker(1))
		v2 := appSpecKept(t, "localhost/blog:v2", 2, worker(1))
		lbl := func(rel, proc string) map[string]string {
			return map[string]string{LabelApp: appName, LabelRelease: rel, LabelProcess: proc, LabelPort: "5000"}
		}
		var a, b []string
		for range 2 {
			a = append(a, rt.Add(v1.Image, lbl(v1.ReleaseID(), WebProcess), true, true, "5000").ID)
			b = append(b, rt.Add(v2.Image, lbl(v2.ReleaseID(), WebProcess), true, true, "5000").ID)
		}
		a = append(a, rt.Add(v1.Image, lbl(v1.ReleaseID(), "worker"), true, false, "").ID)
		b = append(b, rt.Add(v2.Image, lbl(v2.ReleaseID(), "worker"), true, false, "").ID)
		store.recs[appName] = AppRecord{
			Serving:   &ReleaseRecord{ID: v1.ReleaseID(), Spec: v1.record()},
			Deploying: &DeployingRecord{Release: v2.ReleaseID(), Deployment: 7},
		}
		h := newHarnessWith(t, rt, withStore(store))
		defer h.shutdown()
		rt.OnImage(v2.Image, behavior{Hold: true})
		h.m.Apply([]AppSpec{v2})
		settle(2 * adoptProbeTime)
		s := h.sup()
		if st := s.Status(); st.Release == nil || st.Release.ID != v1.ReleaseID() {
			t.Fatalf("serving %+v, want the recorded v1", st.Release)
		}
		assertPool(t, h.m.Pool(appName), v1.ReleaseID(), h.addrs(a[:2], 5000))
		for _, id := range b {
			if _, ok := rt.Get(id); ok {
				t.Errorf("container %s of the interrupted deploy still there: adopted", id)
			}
		}
		d := h.newest(s)
		if d.Trigger != "start" || d.Release != v2.ReleaseID() || d.Status != StatusStarting {
			t.Errorf("deployment after adoption %+v, want the interrupted one started over", d)
		}
		for _, id := range h.containers(v2.ReleaseID(), WebProcess) {
			rt.Listen(id)
		}
		if got := h.waitDone(s, d.ID); got.Status != StatusSuccess {
			t.Fatalf("started-over deploy: %s %s", got.Status, got.Error)
		}
	})
	synctest.Test(t, func(t *testing.T) {
		rt := newFakeRuntime()
		v1 := appSpec(t, "localhost/blog:v1", 2, worker(1))
		v2 := appSpec(t, "localhost/blog:v2", 2, worker(1))
		lbl := func(rel, proc string) map[string]string {
			return map[string]string{LabelApp: appName, LabelRelease: rel, LabelProcess: proc, LabelPort: "5000"}
		}
		a := []string{
			rt.Add(v1.Image, lbl(v1.ReleaseID(), WebProcess), true, true, "5000").ID,
			rt.Add(v1.Image, lbl(v1.ReleaseID(), WebProcess), true, true, "5000").ID,
		}
		bw := rt.Add(v2.Image, lbl(v2.ReleaseID(), "worker"), true, false, "").ID
		h := newHarness(t, rt)
		defer h.shutdown()
		rt.OnImage(v2.Image, behavior{Hold: true})
		h.m.Apply([]AppSpec{v2})
		settle(2 * adoptProbeTime)
		if st := h.sup().Status(); st.Release == nil || st.Release.ID != v1.ReleaseID() {
			t.Errorf("serving %+v, want v1, whose web containers serve, not the desired v2 of which only a worker runs", st.Release)
		}
		assertPool(t, h.m.Pool(appName), v1.ReleaseID(), h.addrs(a, 5000))
		if _, ok := rt.Get(bw); ok {
			t.Errorf("worker %s of v2 adopted", bw)
		}
	})
}

// However many containers boot, a few Run calls at a time reach the runtime:
// as many as keep its answers fast (a service that serialises creates gets
// few), never more than the bound's maximum.
func TestRuntimeCallsBounded(t *testing.T) {
	for _, tc := range []struct {
		name     string
		serial   bool
		min, max int
	}{
		{"serialising runtime", true, 1, 4},
		{"parallel runtime", false, runLimitInitial + 1, runLimitMax},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := newHarness(t, nil)
				defer h.shutdown()
				s, _ := h.deployFirst(appSpec(t, "localhost/blog:v1", 1))
				h.rt.mu.Lock()
				h.rt.runDelay = 200 * time.Millisecond
				h.rt.runSerial = tc.serial
				h.rt.maxInflight = 0
				h.rt.mu.Unlock()
				if err := s.Scale(map[string]int{WebProcess: 100}); err != nil {
					t.Fatal(err)
				}
				waitFor(t, "100 ready", 10*time.Minute, func() bool { return len(h.m.Pool(appName).Load().Addrs) == 100 })
				if n := h.rt.MaxInflight(); n > tc.max || n < tc.min {
					t.Errorf("%d Run calls in flight at most, want %d to %d", n, tc.min, tc.max)
				}
				if err := s.Scale(map[string]int{WebProcess: MaxCount + 1}); err == nil {
					t.Errorf("scale to %d accepted", MaxCount+1)
				}
			})
		})
	}
}

// A container whose create answer was lost (the service went away after it
// created it) is removed by the resync; it never serves.
func TestLostCreateRemoved(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := &lossyRuntime{fakeRuntime: newFakeRuntime()}
		h := newHarness(t, rt.fakeRuntime)
		h.m = NewManager(Deps{Runtime: rt, Prober: &fakeProber{rt: rt.fakeRuntime}, Logger: h.m.deps.Logger, InFlight: h.inFlight})
		defer h.shutdown()
		s, _ := h.deployFirst(appSpec(t, "localhost/blog:v1", 1))
		rt.lose.Store(1)
		if err := s.Scale(map[string]int{WebProcess: 2}); err != nil {
			t.Fatal(err)
		}
		settle(resyncInterval + 5*time.Second)
		tracked := map[string]bool{}
		for _, c := range s.Status().Containers {
			tracked[c.ID] = true
		}
		for _, id := range h.containers("", "") {
			if !tracked[id] {
				t.Errorf("container %s runs untracked after the resync", id)
			}
		}
		if len(h.m.Pool(appName).Load().Addrs) != 2 {
			t.Errorf("pool %v, want 2 containers", h.m.Pool(appName).Load().Addrs)
		}
	})
}

// lossyRuntime creates a container but answers ErrUnavailable, lose times.
type lossyRuntime struct {
	*fakeRuntime
	lose atomicInt
}

type atomicInt struct {
	mu sync.Mutex
	n  int
}

func (a *atomicInt) Store(n int) { a.mu.Lock(); a.n = n; a.mu.Unlock() }
func (a *atomicInt) take() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.n > 0 {
		a.n--
		return true
	}
	return false
}

func (r *lossyRuntime) Run(ctx context.Context, spec ContainerSpec) (ContainerInfo, error) {
	info, err := r.fakeRuntime.Run(ctx, spec)
	if err == nil && r.lose.take() {
		return ContainerInfo{}, fmt.Errorf("%w: connection reset", ErrUnavailable)
	}
	return info, err
}

// The data plane does not wait for the runtime: a web container that stops
// answering leaves the pool within about a second through the health
// check, even when the runtime neither answers nor sends events; it comes
// back if it answers again.
func TestHealthCheckWithoutRuntime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.shutdown()
		h.deployFirst(appSpec(t, "localhost/blog:v1", 2))
		ref := h.m.Pool(appName)
		webs := h.containers("", WebProcess)
		h.rt.SetDown(true)
		h.rt.ExitQuietly(webs[0], 137)
		died := time.Now()
		waitFor(t, "out of the pool", 5*time.Second, func() bool { return len(ref.Load().Addrs) == 1 })
		if took := time.Since(died); took > 1500*time.Millisecond {
			t.Errorf("dead container out of the pool after %s, want about a second", took)
		}
		assertPool(t, ref, ref.Load().Release, h.addrs(webs[1:], 5000))
		h.rt.SetDown(false)
		waitFor(t, "replaced once the runtime answers", 2*time.Minute, func() bool {
			return len(ref.Load().Addrs) == 2 && !slices.Contains(h.containers("", WebProcess), webs[0])
		})
	})
}

// An Update back to the serving release ends a deployment on its way; it
// never switches afterwards.
func TestUpdateBackCancelsSwitch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.shutdown()
		v1 := appSpec(t, "localhost/blog:v1", 2)
		s, _ := h.deployFirst(v1)
		ref := h.m.Pool(appName)
		h.rt.OnImage("localhost/blog:v2", behavior{Hold: true})
		d := s.Update(appSpec(t, "localhost/blog:v2", 2))
		settle(time.Second)
		s.Update(v1)
		for _, id := range h.containers(appSpec(t, "localhost/blog:v2", 2).ReleaseID(), WebProcess) {
			h.rt.Listen(id)
		}
		if got := h.waitDone(s, d.ID); got.Status != StatusAborted {
			t.Errorf("deployment of v2 after an update back to v1: %s", got.Status)
		}
		settle(time.Second)
		if ref.Load().Release != v1.ReleaseID() {
			t.Errorf("pool serves %s, want v1", ref.Load().Release)
		}
	})
}

// Closing (the process exits) with containers draining sends them SIGTERM
// and keeps them recorded as retiring for the next start.
func TestExitSignalsRetiring(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newMemStore()
		h := newHarnessWith(t, nil, withStore(store))
		s, _ := h.deployFirst(appSpecKept(t, "localhost/blog:v1", 1))
		old := h.containers("", "")
		h.hold(h.addrs(old, 5000)...)
		h.waitDone(s, s.Update(appSpecKept(t, "localhost/blog:v2", 1)).ID)
		settle(time.Second)
		h.m.Close()
		var killed []string
		for _, k := range h.rt.Kills() {
			if k.Signal == "SIGTERM" {
				killed = append(killed, k.ID)
			}
		}
		if !slices.Equal(killed, old) {
			t.Errorf("SIGTERM sent to %v at exit, want the draining %v", killed, old)
		}
		if r := store.get(appName); !slices.Equal(r.Retiring, old) {
			t.Errorf("retiring recorded %v, want %v", r.Retiring, old)
		}
	})
}

// Operations override the config's settings they name, for as long as the
// config keeps the value it had; they survive a new manager (a restart).
func TestOperationsOverrides(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newMemStore()
		h := newHarnessWith(t, nil, withStore(store))
		v1 := appSpecKept(t, "localhost/blog:v1", 2)
		s, _ := h.deployFirst(v1)
		res, err := s.Deploy("localhost/blog:v2", "")
		if err != nil || res.Deployment == nil {
			t.Fatalf("deploy: %+v %v", res, err)
		}
		if d := h.waitDone(s, res.Deployment.ID); d.Status != StatusSuccess || d.Trigger != "api" {
			t.Fatalf("deploy: %+v", d)
		}
		if err := s.Scale(map[string]int{WebProcess: 3}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "3 web", time.Minute, func() bool { return len(h.m.Pool(appName).Load().Addrs) == 3 })
		st := s.Status()
		if len(st.Overrides) != 2 || st.Overrides[0].Setting != "image" || st.Overrides[1].Setting != "count:web" {
			t.Fatalf("overrides %+v", st.Overrides)
		}
		// The same config again changes nothing.
		if d := s.Update(v1); d != nil {
			t.Errorf("the unchanged config started deployment %+v", d)
		}
		settle(time.Second)
		if st := s.Status(); st.Image != "localhost/blog:v2" || st.Processes[WebProcess] != 3 {
			t.Errorf("desired %s web %d after the unchanged config", st.Image, st.Processes[WebProcess])
		}
		// A restart: a new manager over the same store and runtime.
		h.m.Close()
		h2 := newHarnessWith(t, h.rt, withStore(store))
		defer h2.shutdown()
		h2.m.Apply([]AppSpec{v1})
		settle(2 * adoptProbeTime)
		s2 := h2.sup()
		if st := s2.Status(); st.Image != "localhost/blog:v2" || len(st.Deployments) != 0 || len(h2.m.Pool(appName).Load().Addrs) != 3 {
			t.Errorf("after a restart: image %s, %d deployments (want none), pool %v", st.Image, len(st.Deployments), h2.m.Pool(appName).Load().Addrs)
		}
		// Rollback goes back to v1, then the config's own image change
		// wins over everything.
		rb, err := s2.Rollback()
		if err != nil {
			t.Fatal(err)
		}
		if d := h2.waitDone(s2, rb.Deployment.ID); d.Status != StatusSuccess || d.Release != v1.ReleaseID() || d.Kind != KindRollback {
			t.Fatalf("rollback: %+v", d)
		}
		v3 := appSpecKept(t, "localhost/blog:v3", 2)
		d3 := s2.Update(v3)
		if d3 == nil {
			t.Fatal("a config with a new image started nothing")
		}
		if d := h2.waitDone(s2, d3.ID); d.Status != StatusSuccess || d.Trigger != "config" {
			t.Errorf("deploy by config: %+v", d)
		}
		if st := s2.Status(); len(st.Overrides) != 1 || st.Overrides[0].Setting != "count:web" {
			t.Errorf("overrides after the config changed the image: %+v", st.Overrides)
		}
		// A scale back to the config's count drops that override.
		if err := s2.Scale(map[string]int{WebProcess: 2}); err != nil {
			t.Fatal(err)
		}
		if st := s2.Status(); len(st.Overrides) != 0 {
			t.Errorf("overrides %+v after scaling back to the config's count", st.Overrides)
		}
	})
}

// Pause holds requests behind the gate until resume; maintenance answers;
// both are kept in the record.
func TestPauseGate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newMemStore()
		h := newHarnessWith(t, nil, withStore(store))
		defer h.shutdown()
		s, _ := h.deployFirst(appSpecKept(t, "localhost/blog:v1", 1))
		ref := h.m.Pool(appName)
		if err := s.Pause(10 * time.Second); err != nil {
			t.Fatal(err)
		}
		g := ref.Gate()
		if g == nil || g.Maintenance {
			t.Fatalf("gate %+v", g)
		}
		resumed := make(chan bool, 1)
		go func() { resumed <- g.Wait(context.Background()) }()
		time.Sleep(3 * time.Second)
		if err := s.Resume(); err != nil {
			t.Fatal(err)
		}
		if !<-resumed || ref.Gate() != nil {
			t.Error("a held request did not go on at resume")
		}
		if err := s.Resume(); !errors.Is(err, ErrNotPaused) {
			t.Errorf("resume of a running app: %v", err)
		}
		if err := s.Pause(time.Second); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if ref.Gate().Wait(context.Background()) || time.Since(start) != time.Second {
			t.Errorf("a request in a 1s pause went on after %s", time.Since(start))
		}
		if err := s.Maintenance("back soon"); err != nil {
			t.Fatal(err)
		}
		if g := ref.Gate(); g == nil || !g.Maintenance || g.Message != "back soon" {
			t.Errorf("gate in maintenance %+v", g)
		}
		if r := store.get(appName); r.Maintenance == nil || r.Pause != nil {
			t.Errorf("record %+v", r)
		}
		if err := s.Maintenance(strings.Repeat("x", 5000)); err == nil {
			t.Error("a 5000-byte maintenance message was accepted")
		}
	})
}

// An app removed from the config loses its overrides and pause, even when
// it is added back while its old owner still stops its containers.
func TestRemoveDropsOverrides(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newMemStore()
		h := newHarnessWith(t, nil, withStore(store))
		defer h.shutdown()
		v1 := appSpecKept(t, "localhost/blog:v1", 1)
		s, _ := h.deployFirst(v1)
		if err := s.Scale(map[string]int{WebProcess: 2}); err != nil {
			t.Fatal(err)
		}
		if err := s.Maintenance("away"); err != nil {
			t.Fatal(err)
		}
		h.hold(h.addrs(h.containers("", WebProcess), 5000)...) // the old owner drains
		h.m.Apply(nil)
		synctest.Wait()
		h.m.Apply([]AppSpec{v1})
		synctest.Wait()
		h.release(h.addrs(h.containers("", WebProcess), 5000)...)
		waitFor(t, "the app back with one web container", 2*time.Minute, func() bool {
			p := h.m.Pool(appName).Load()
			return p != nil && len(p.Addrs) == 1 && len(h.containers("", WebProcess)) == 1
		})
		st := h.sup().Status()
		if len(st.Overrides) != 0 || st.Maintenance != nil || st.Processes[WebProcess] != 1 {
			t.Errorf("the app added back kept what was made before its removal: overrides %+v, maintenance %+v, web %d",
				st.Overrides, st.Maintenance, st.Processes[WebProcess])
		}
		if g := h.m.Pool(appName).Gate(); g != nil {
			t.Errorf("gate %+v on the app added back", g)
		}
	})
}
