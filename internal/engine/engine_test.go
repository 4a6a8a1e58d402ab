package engine

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/zap/zaptest"
)

const appName = "blog"

// harness is a Manager over a fake runtime, inside a synctest bubble.
type harness struct {
	t  *testing.T
	rt *fakeRuntime
	m  *Manager

	mu       sync.Mutex
	events   []Event
	inflight map[string]int
}

// hold counts one more request in flight to each of addrs, as the proxy
// would; release ends one.
func (h *harness) hold(addrs ...string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, a := range addrs {
		h.inflight[a]++
	}
}

func (h *harness) release(addrs ...string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, a := range addrs {
		h.inflight[a]--
	}
}

func (h *harness) inFlight(addr string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.inflight[addr]
}

func newHarness(t *testing.T, rt *fakeRuntime) *harness {
	t.Helper()
	if rt == nil {
		rt = newFakeRuntime()
	}
	h := &harness{t: t, rt: rt, inflight: map[string]int{}}
	h.m = NewManager(Deps{
		Runtime:  rt,
		Prober:   &fakeProber{rt: rt},
		InFlight: h.inFlight,
		Logger:   zaptest.NewLogger(t),
		Notify: func(ev Event) {
			h.mu.Lock()
			h.events = append(h.events, ev)
			h.mu.Unlock()
		},
	})
	return h
}

// appSpec returns a valid spec of the blog app with its defaults: web web
// containers plus the given other process types.
func appSpec(t *testing.T, image string, web int, others ...ProcessSpec) AppSpec {
	t.Helper()
	s := AppSpec{
		Name:            appName,
		Image:           image,
		Env:             map[string]string{"RAILS_ENV": "production"},
		Processes:       append([]ProcessSpec{{Name: WebProcess, Count: web}}, others...),
		StopTimeout:     7 * time.Second,
		DrainTimeout:    DefaultDrainTimeout,
		RestartAttempts: DefaultRestartAttempts,
	}
	s = s.WithDefaults()
	if err := s.Validate(); err != nil {
		t.Fatalf("spec: %v", err)
	}
	return s
}

func worker(n int) ProcessSpec {
	return ProcessSpec{Name: "worker", Count: n, Command: []string{"/app/worker"}}
}

// waitFor lets the bubble run until cond holds, at most limit of virtual
// time.
func waitFor(t *testing.T, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		synctest.Wait()
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s (virtual time)", what, limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// settle lets d of virtual time pass, then waits for every goroutine of the
// bubble to block.
func settle(d time.Duration) {
	time.Sleep(d)
	synctest.Wait()
}

func (h *harness) sup() *Supervisor {
	h.t.Helper()
	s := h.m.App(appName)
	if s == nil {
		h.t.Fatalf("app %s not known to the manager", appName)
	}
	return s
}

// waitDone waits until deployment id has ended and returns it.
func (h *harness) waitDone(s *Supervisor, id int64) Deployment {
	h.t.Helper()
	_, done, ok := s.Deployment(id)
	if !ok {
		h.t.Fatalf("deployment %d unknown", id)
	}
	select {
	case <-done:
	case <-time.After(time.Hour):
		h.t.Fatalf("deployment %d did not end within an hour (virtual time)", id)
	}
	d, _, _ := s.Deployment(id)
	return d
}

// newest returns the newest deployment of the app.
func (h *harness) newest(s *Supervisor) Deployment {
	h.t.Helper()
	st := s.Status()
	if len(st.Deployments) == 0 {
		h.t.Fatal("no deployment")
	}
	return st.Deployments[0]
}

// deployFirst applies spec to an empty manager and waits for its first
// deployment to succeed and for the bubble to settle.
func (h *harness) deployFirst(spec AppSpec) (*Supervisor, Deployment) {
	h.t.Helper()
	h.m.Apply([]AppSpec{spec})
	synctest.Wait()
	s := h.sup()
	d := h.waitDone(s, h.newest(s).ID)
	if d.Status != StatusSuccess {
		h.t.Fatalf("first deployment: status %s (%s), want success", d.Status, d.Error)
	}
	synctest.Wait()
	return s, d
}

// containers returns the IDs of the app's containers the runtime has of
// release (any when empty) and process (any when empty), running or not.
func (h *harness) containers(release, process string) []string {
	h.t.Helper()
	list, err := h.rt.List(context.Background(), appName)
	if err != nil {
		h.t.Fatal(err)
	}
	var ids []string
	for _, c := range list {
		if (release == "" || c.Labels[LabelRelease] == release) && (process == "" || c.Labels[LabelProcess] == process) {
			ids = append(ids, c.ID)
		}
	}
	return ids
}

// addrs returns the dial addresses of the given web containers, sorted.
func (h *harness) addrs(ids []string, port int) []string {
	h.t.Helper()
	var out []string
	for _, id := range ids {
		c, ok := h.rt.Get(id)
		if !ok {
			h.t.Fatalf("container %s is gone", id)
		}
		out = append(out, net.JoinHostPort(c.IP, fmt.Sprint(port)))
	}
	slices.Sort(out)
	return out
}

// runIDs returns the IDs Run created for release since the start.
func (h *harness) runsOf(release string) []ContainerSpec {
	var out []ContainerSpec
	for _, r := range h.rt.Runs() {
		if r.Labels[LabelRelease] == release {
			out = append(out, r)
		}
	}
	return out
}

func stoppedIDs(calls []stopCall) []string {
	var ids []string
	for _, c := range calls {
		ids = append(ids, c.ID)
	}
	slices.Sort(ids)
	return ids
}

func removedIDs(calls []removeCall) []string {
	var ids []string
	for _, c := range calls {
		ids = append(ids, c.ID)
	}
	slices.Sort(ids)
	return ids
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// assertPool checks that the pool serves release at exactly addrs.
func assertPool(t *testing.T, ref *PoolRef, release string, addrs []string) {
	t.Helper()
	p := ref.Load()
	if p == nil {
		t.Fatalf("pool is nil, want release %s at %v", release, addrs)
	}
	if p.Release != release || !slices.Equal(sorted(p.Addrs), sorted(addrs)) {
		t.Fatalf("pool is release %q at %v, want %q at %v", p.Release, p.Addrs, release, addrs)
	}
}

// watchPool checks, every millisecond of virtual time until the returned
// func is called, that the pool only holds listening web containers of the
// release it names. The func returns the violations seen; it may be called
// more than once (deferred too, so that a failed test leaks no goroutine).
func (h *harness) watchPool(ref *PoolRef) func() []string {
	stop := make(chan struct{})
	done := make(chan struct{})
	var bad []string
	check := func() {
		p := ref.Load()
		if p == nil {
			return
		}
		list, _ := h.rt.List(context.Background(), appName)
		for _, a := range p.Addrs {
			host, _, _ := net.SplitHostPort(a)
			i := slices.IndexFunc(list, func(c ContainerInfo) bool { return c.IP == host })
			switch {
			case i < 0:
				bad = append(bad, fmt.Sprintf("pool %s: %s is no container", p.Release, a))
			case list[i].Labels[LabelRelease] != p.Release:
				bad = append(bad, fmt.Sprintf("pool %s: %s is of release %s", p.Release, a, list[i].Labels[LabelRelease]))
			case list[i].Labels[LabelProcess] != WebProcess:
				bad = append(bad, fmt.Sprintf("pool %s: %s is a %s container", p.Release, a, list[i].Labels[LabelProcess]))
			case !h.rt.Listening(a):
				bad = append(bad, fmt.Sprintf("pool %s: %s does not listen", p.Release, a))
			}
		}
	}
	go func() {
		defer close(done)
		for {
			check()
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	var once sync.Once
	return func() []string {
		once.Do(func() {
			close(stop)
			<-done
		})
		return bad
	}
}

func (h *harness) deploymentEvents() []Deployment {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []Deployment
	for _, ev := range h.events {
		if ev.Name == "deployment" && ev.Deployment != nil {
			out = append(out, *ev.Deployment)
		}
	}
	return out
}

// 1. First deploy.
func TestFirstDeploy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.m.Close()
		spec := appSpec(t, "localhost/blog:v1", 2, worker(1))
		rel := spec.ReleaseID()
		ref := h.m.Pool(appName)
		if ref.Load() != nil {
			t.Fatal("pool is set before any release ran")
		}

		s, d := h.deployFirst(spec)
		if d.Kind != KindDeploy || d.Release != rel || d.Image != spec.Image || d.Error != "" {
			t.Errorf("deployment = %+v", d)
		}
		if d.LastReadyAt.IsZero() || d.SwitchedAt.Before(d.LastReadyAt) {
			t.Errorf("LastReadyAt %v, SwitchedAt %v", d.LastReadyAt, d.SwitchedAt)
		}

		runs := h.rt.Runs()
		if len(runs) != 3 {
			t.Fatalf("%d Run calls, want 3", len(runs))
		}
		webs := 0
		for _, r := range runs {
			if r.Labels[LabelApp] != appName || r.Labels[LabelRelease] != rel {
				t.Errorf("container %s labels %v", r.Name, r.Labels)
			}
			if r.Image != spec.Image || r.StopTimeout != 7*time.Second || r.Env["RAILS_ENV"] != "production" {
				t.Errorf("container %s: image %s, stop timeout %s, env %v", r.Name, r.Image, r.StopTimeout, r.Env)
			}
			switch r.Labels[LabelProcess] {
			case WebProcess:
				webs++
				if r.Env["PORT"] != "5000" {
					t.Errorf("web container %s: PORT=%q, want 5000", r.Name, r.Env["PORT"])
				}
				if len(r.Command) != 0 {
					t.Errorf("web container %s: command %v, want the image's", r.Name, r.Command)
				}
			case "worker":
				if v, ok := r.Env["PORT"]; ok {
					t.Errorf("worker container %s has PORT=%q", r.Name, v)
				}
				if !slices.Equal(r.Command, []string{"/app/worker"}) {
					t.Errorf("worker command %v", r.Command)
				}
			default:
				t.Errorf("container %s: process label %q", r.Name, r.Labels[LabelProcess])
			}
		}
		if webs != 2 {
			t.Errorf("%d web containers, want 2", webs)
		}

		want := h.addrs(h.containers(rel, WebProcess), 5000)
		assertPool(t, ref, rel, want)
		for _, a := range want {
			if !h.rt.Listening(a) {
				t.Errorf("pool address %s does not listen", a)
			}
		}

		st := s.Status()
		if st.Release == nil || st.Release.ID != rel || st.Release.Status != StatusSuccess || st.Release.Deployment != d.ID {
			t.Errorf("status release = %+v", st.Release)
		}
		if len(st.Containers) != 3 {
			t.Fatalf("status has %d containers, want 3", len(st.Containers))
		}
		for _, c := range st.Containers {
			if c.State != StateReady || c.Release != rel {
				t.Errorf("container %+v", c)
			}
			if (c.Process == WebProcess) != (c.Addr != "") {
				t.Errorf("container %s (%s) has dial address %q", c.ID, c.Process, c.Addr)
			}
		}
		if n := len(h.rt.Stops()) + len(h.rt.Removes()); n != 0 {
			t.Errorf("%d Stop/Remove calls on a first deploy", n)
		}
		if evs := h.deploymentEvents(); len(evs) != 1 || evs[0].Status != StatusSuccess {
			t.Errorf("deployment events %+v", evs)
		}
	})
}

// 2. Deploy of a new image.
func TestDeployNewImage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.m.Close()
		v1 := appSpec(t, "localhost/blog:v1", 2, worker(1))
		rel1 := v1.ReleaseID()
		s, _ := h.deployFirst(v1)
		ref := h.m.Pool(appName)
		old := h.containers(rel1, "")
		oldAddrs := h.addrs(h.containers(rel1, WebProcess), 5000)
		stopWatch := h.watchPool(ref)
		defer stopWatch()

		h.rt.OnImage("localhost/blog:v2", behavior{Hold: true})
		v2 := appSpec(t, "localhost/blog:v2", 3, worker(1))
		rel2 := v2.ReleaseID()
		d2 := s.Update(v2)
		if d2 == nil {
			t.Fatal("a new image started no deployment")
		}
		settle(5 * time.Second) // workers are booted after 2s
		newWeb := h.containers(rel2, WebProcess)
		if len(newWeb) != 3 || len(h.containers(rel2, "worker")) != 1 {
			t.Fatalf("new release runs %d web containers, want 3 (and 1 worker)", len(newWeb))
		}

		// Ready one by one: the old pool stays until the last is ready.
		for _, id := range newWeb[:2] {
			h.rt.Listen(id)
			settle(time.Second)
			assertPool(t, ref, rel1, oldAddrs)
			if d, _, _ := s.Deployment(d2.ID); d.Status != StatusStarting {
				t.Fatalf("deployment is %s with a web container not ready", d.Status)
			}
		}
		if n := len(h.rt.Stops()); n != 0 {
			t.Fatalf("%d containers stopped before the switch", n)
		}
		h.rt.Listen(newWeb[2])
		d := h.waitDone(s, d2.ID)
		if d.Status != StatusSuccess {
			t.Fatalf("status %s (%s), want success", d.Status, d.Error)
		}
		synctest.Wait()
		// Switched at once, the old web ones still run while they drain
		// (the old worker, which gets no requests, stops at once).
		assertPool(t, ref, rel2, h.addrs(newWeb, 5000))
		h.noStopsOf(h.containers(rel1, WebProcess))
		if d.SwitchedAt.Before(d.LastReadyAt) || d.LastReadyAt.IsZero() {
			t.Errorf("LastReadyAt %v, SwitchedAt %v", d.LastReadyAt, d.SwitchedAt)
		}

		settle(time.Second)
		stops := h.rt.Stops()
		if !slices.Equal(stoppedIDs(stops), sorted(old)) {
			t.Fatalf("stopped %v, want the old containers %v", stoppedIDs(stops), sorted(old))
		}
		for _, c := range stops {
			if ks := h.rt.Signals(c.ID); len(ks) != 1 || ks[0].Signal != "SIGTERM" {
				t.Errorf("signals to %s: %+v, want one SIGTERM (it exits at once)", c.ID, ks)
			}
		}
		if !slices.Equal(removedIDs(h.rt.Removes()), sorted(old)) {
			t.Errorf("removed %v, want %v", removedIDs(h.rt.Removes()), sorted(old))
		}
		if got := h.containers(rel1, ""); len(got) != 0 {
			t.Errorf("old containers still exist: %v", got)
		}
		st := s.Status()
		if st.Release == nil || st.Release.ID != rel2 || st.Release.Image != "localhost/blog:v2" {
			t.Errorf("release %+v", st.Release)
		}
		if len(st.Containers) != 4 {
			t.Errorf("status has %d containers, want 4", len(st.Containers))
		}
		for _, c := range st.Containers {
			if c.Release != rel2 || c.State != StateReady {
				t.Errorf("container %+v", c)
			}
		}
		if bad := stopWatch(); len(bad) > 0 {
			t.Errorf("pool violations: %v", bad)
		}
	})
}

// 3. A release that never listens.
func TestDeployTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.m.Close()
		v1 := appSpec(t, "localhost/blog:v1", 2)
		rel1 := v1.ReleaseID()
		s, _ := h.deployFirst(v1)
		ref := h.m.Pool(appName)
		oldAddrs := h.addrs(h.containers(rel1, WebProcess), 5000)
		before := ref.Load()

		h.rt.OnImage("localhost/blog:v2", behavior{NoListen: true})
		v2 := appSpec(t, "localhost/blog:v2", 2)
		v2.BootTimeout = 45 * time.Second
		start := time.Now()
		d2 := s.Update(v2)
		d := h.waitDone(s, d2.ID)
		if d.Status != StatusTimeoutError {
			t.Fatalf("status %s (%s), want timeout-error", d.Status, d.Error)
		}
		if got := d.EndedAt.Sub(d.StartedAt); got != 45*time.Second {
			t.Errorf("ended after %s, want exactly the boot timeout 45s", got)
		}
		if got := time.Since(start); got != 45*time.Second {
			t.Errorf("Done closed after %s, want 45s", got)
		}
		if !strings.Contains(d.Error, "PORT 5000") || !strings.Contains(d.Error, "45s") {
			t.Errorf("error %q", d.Error)
		}
		synctest.Wait()
		runs := h.runsOf(v2.ReleaseID())
		if len(runs) != 2 {
			t.Fatalf("%d containers run for v2, want 2", len(runs))
		}
		if got := h.containers(v2.ReleaseID(), ""); len(got) != 0 {
			t.Errorf("new containers not removed: %v", got)
		}
		if n := len(h.rt.Removes()); n != 2 {
			t.Errorf("%d Remove calls, want 2", n)
		}
		if ref.Load() != before {
			t.Error("pool was swapped")
		}
		assertPool(t, ref, rel1, oldAddrs)
		// The failed release's containers get SIGTERM and the grace
		// period (never-listening apps may still run); the old ones none.
		h.noStopsOf(h.containers(rel1, ""))
		st := s.Status()
		if st.Release == nil || st.Release.ID != rel1 || len(st.Containers) != 2 {
			t.Errorf("status: release %+v, %d containers", st.Release, len(st.Containers))
		}
		evs := h.deploymentEvents()
		if len(evs) != 2 || evs[1].Status != StatusTimeoutError || evs[1].ID != d2.ID {
			t.Errorf("events %+v", evs)
		}
	})
}

// 4. A release that crashes.
func TestDeployCrash(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.m.Close()
		v1 := appSpec(t, "localhost/blog:v1", 1)
		rel1 := v1.ReleaseID()
		s, _ := h.deployFirst(v1)
		ref := h.m.Pool(appName)
		oldAddrs := h.addrs(h.containers(rel1, WebProcess), 5000)

		// Only the containers given BOOM=1 crash.
		h.rt.OnEnv("BOOM", "1", behavior{Crash: true})
		v2 := appSpec(t, "localhost/blog:v1", 2)
		v2.Env["BOOM"] = "1"
		d2 := s.Update(v2)
		d := h.waitDone(s, d2.ID)
		if d.Status != StatusCrashedError {
			t.Fatalf("status %s (%s), want crashed-error", d.Status, d.Error)
		}
		if got := d.EndedAt.Sub(d.StartedAt); got >= time.Second {
			t.Errorf("crash noticed after %s, want well before the boot timeout", got)
		}
		if !strings.Contains(d.Error, "code 3") {
			t.Errorf("error %q does not give the exit code", d.Error)
		}
		synctest.Wait()
		if got := h.containers(v2.ReleaseID(), ""); len(got) != 0 {
			t.Errorf("crashed containers not removed: %v", got)
		}
		assertPool(t, ref, rel1, oldAddrs)
		h.noStopsOf(h.containers(rel1, ""))
	})
}

// A worker that exits while booting fails the deployment too.
func TestDeployWorkerCrash(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.m.Close()
		v1 := appSpec(t, "localhost/blog:v1", 1, worker(1))
		rel1 := v1.ReleaseID()
		s, _ := h.deployFirst(v1)
		ref := h.m.Pool(appName)
		old := h.containers(rel1, "")
		oldAddrs := h.addrs(h.containers(rel1, WebProcess), 5000)

		h.rt.OnProcess("worker", behavior{Crash: true})
		v2 := appSpec(t, "localhost/blog:v2", 1, worker(1))
		v2.WorkerReadyTime = 3 * time.Second
		d := h.waitDone(s, s.Update(v2).ID)
		if d.Status != StatusCrashedError {
			t.Fatalf("status %s (%s), want crashed-error", d.Status, d.Error)
		}
		if got := d.EndedAt.Sub(d.StartedAt); got != 3*time.Second {
			t.Errorf("ended after %s, want the worker ready time 3s", got)
		}
		if !strings.Contains(d.Error, "worker") || !strings.Contains(d.Error, "code 3") {
			t.Errorf("error %q", d.Error)
		}
		synctest.Wait()
		assertPool(t, ref, rel1, oldAddrs)
		if got := h.containers(v2.ReleaseID(), ""); len(got) != 0 {
			t.Errorf("new containers not removed: %v", got)
		}
		if got := h.containers(rel1, ""); !slices.Equal(got, old) {
			t.Errorf("old containers %v, want %v untouched", got, old)
		}
		h.noStopsOf(old)
	})
}

// 5. An image that does not exist.
func TestDeployStartError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.m.Close()
		v1 := appSpec(t, "localhost/blog:v1", 2)
		rel1 := v1.ReleaseID()
		s, _ := h.deployFirst(v1)
		ref := h.m.Pool(appName)
		oldAddrs := h.addrs(h.containers(rel1, WebProcess), 5000)

		const image = "localhost/blog:missing"
		h.rt.OnImage(image, behavior{RunErr: image + ": image not known"})
		d2 := s.Update(appSpec(t, image, 2))
		d := h.waitDone(s, d2.ID)
		if d.Status != StatusStartError {
			t.Fatalf("status %s (%s), want start-error", d.Status, d.Error)
		}
		if !strings.Contains(d.Error, image) || !strings.Contains(d.Error, "image not known") {
			t.Errorf("error %q does not give the runtime's message", d.Error)
		}
		synctest.Wait()
		assertPool(t, ref, rel1, oldAddrs)
		for _, a := range oldAddrs {
			if !h.rt.Listening(a) {
				t.Errorf("old container %s no longer serves", a)
			}
		}
		old := h.containers(rel1, "")
		h.noStopsOf(old)
		for _, r := range h.rt.Removes() {
			if slices.Contains(old, r.ID) {
				t.Errorf("Remove(%s) of a serving container", r.ID)
			}
		}
		if st := s.Status(); st.Release == nil || st.Release.ID != rel1 {
			t.Errorf("release %+v", st.Release)
		}
	})
}

// 6. A newer deployment aborts an older one still running.
func TestDeployAbortedByNewer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.m.Close()
		v1 := appSpec(t, "localhost/blog:v1", 1)
		rel1 := v1.ReleaseID()
		s, d1 := h.deployFirst(v1)
		ref := h.m.Pool(appName)
		oldIDs := h.containers(rel1, "")
		stopWatch := h.watchPool(ref)
		defer stopWatch()

		h.rt.OnImage("localhost/blog:v2", behavior{Hold: true})
		v2 := appSpec(t, "localhost/blog:v2", 2)
		d2 := s.Update(v2)
		settle(5 * time.Second)
		if got := h.containers(v2.ReleaseID(), WebProcess); len(got) != 2 {
			t.Fatalf("v2 runs %d containers, want 2", len(got))
		}
		v3 := appSpec(t, "localhost/blog:v3", 2)
		d3 := s.Update(v3)
		if d3 == nil {
			t.Fatal("no deployment for v3")
		}
		got2 := h.waitDone(s, d2.ID)
		if got2.Status != StatusAborted {
			t.Errorf("older deployment: status %s, want aborted", got2.Status)
		}
		got3 := h.waitDone(s, d3.ID)
		if got3.Status != StatusSuccess {
			t.Fatalf("newer deployment: status %s (%s), want success", got3.Status, got3.Error)
		}
		if got2.EndedAt.After(got3.SwitchedAt) {
			t.Errorf("older deployment ended at %v, after the switch at %v", got2.EndedAt, got3.SwitchedAt)
		}
		settle(time.Second)
		assertPool(t, ref, v3.ReleaseID(), h.addrs(h.containers(v3.ReleaseID(), WebProcess), 5000))
		if got := h.containers(v2.ReleaseID(), ""); len(got) != 0 {
			t.Errorf("aborted release's containers still exist: %v", got)
		}
		// v1's containers are stopped (after the switch to v3); the aborted
		// v2's may be too, on their way out; v3's are not.
		for _, id := range oldIDs {
			if !slices.Contains(stoppedIDs(h.rt.Stops()), id) {
				t.Errorf("v1's %s not stopped", id)
			}
		}
		for _, id := range h.containers(v3.ReleaseID(), "") {
			if slices.Contains(stoppedIDs(h.rt.Stops()), id) {
				t.Errorf("serving v3's %s stopped", id)
			}
		}
		st := s.Status()
		var ids []int64
		for _, d := range st.Deployments {
			ids = append(ids, d.ID)
		}
		if !slices.Equal(ids, []int64{d3.ID, d2.ID, d1.ID}) {
			t.Errorf("deployments %v, want newest first", ids)
		}
		if bad := stopWatch(); len(bad) > 0 {
			t.Errorf("pool violations: %v", bad)
		}
	})
}

// 7. An identical spec touches nothing.
func TestUpdateUnchanged(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.m.Close()
		s, _ := h.deployFirst(appSpec(t, "localhost/blog:v1", 2, worker(1)))
		ref := h.m.Pool(appName)
		pool := ref.Load()
		ids := h.containers("", "")
		runs := len(h.rt.Runs())

		// A fresh copy (new env map) equal in value.
		if d := s.Update(appSpec(t, "localhost/blog:v1", 2, worker(1))); d != nil {
			t.Fatalf("deployment %d started for an unchanged spec", d.ID)
		}
		h.m.Apply([]AppSpec{appSpec(t, "localhost/blog:v1", 2, worker(1))})
		settle(time.Minute)
		if n := len(h.rt.Runs()); n != runs {
			t.Errorf("%d Run calls, want none", n-runs)
		}
		if n := len(h.rt.Stops()) + len(h.rt.Removes()); n != 0 {
			t.Errorf("%d Stop/Remove calls", n)
		}
		if got := h.containers("", ""); !slices.Equal(got, ids) {
			t.Errorf("containers %v, want %v", got, ids)
		}
		if ref.Load() != pool {
			t.Error("pool was swapped")
		}
		if n := len(s.Status().Deployments); n != 1 {
			t.Errorf("%d deployments, want 1", n)
		}
	})
}

// 8. Changing counts scales without a deployment; scale-down drains.
func TestScale(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.m.Close()
		v1 := appSpec(t, "localhost/blog:v1", 1, worker(1))
		rel := v1.ReleaseID()
		s, _ := h.deployFirst(v1)
		ref := h.m.Pool(appName)
		first := h.containers(rel, WebProcess)
		firstWorker := h.containers(rel, "worker")
		settle(time.Minute)

		// Up.
		if d := s.Update(appSpec(t, "localhost/blog:v1", 3, worker(2))); d != nil {
			t.Fatalf("scaling started deployment %d", d.ID)
		}
		waitFor(t, "3 web and 2 workers ready", time.Minute, func() bool {
			st := s.Status()
			ready := 0
			for _, c := range st.Containers {
				if c.State == StateReady {
					ready++
				}
			}
			return len(ref.Load().Addrs) == 3 && len(st.Containers) == 5 && ready == 5
		})
		synctest.Wait()
		if n := len(h.rt.Runs()); n != 2+3 {
			t.Errorf("%d Run calls, want 5", n)
		}
		webs := h.containers(rel, WebProcess)
		assertPool(t, ref, rel, h.addrs(webs, 5000))
		if n := len(h.rt.Stops()); n != 0 {
			t.Errorf("%d Stop calls scaling up", n)
		}
		if n := len(s.Status().Deployments); n != 1 {
			t.Errorf("%d deployments, want 1", n)
		}
		for _, c := range s.Status().Containers {
			if c.State != StateReady || c.Release != rel {
				t.Errorf("container %+v", c)
			}
		}

		// Down, with requests in flight to every web container: every
		// container goes but the newest web one (a surplus is cut oldest
		// first); each surplus web container waits for its own requests,
		// the workers for none, and the request to the one that stays
		// holds nobody back.
		keep := webs[len(webs)-1]
		if keep == first[0] {
			t.Fatalf("webs %v: the newest is the first", webs)
		}
		var surplus, surplusWeb []string
		for _, id := range h.containers("", "") {
			if id != keep {
				surplus = append(surplus, id)
				if slices.Contains(webs, id) {
					surplusWeb = append(surplusWeb, id)
				}
			}
		}
		if len(surplus) != 4 || !slices.Contains(surplus, firstWorker[0]) {
			t.Fatalf("surplus %v", surplus)
		}
		h.hold(h.addrs(webs, 5000)...)
		if d := s.Update(appSpec(t, "localhost/blog:v1", 1, worker(0))); d != nil {
			t.Fatalf("scaling started deployment %d", d.ID)
		}
		synctest.Wait()
		assertPool(t, ref, rel, h.addrs([]string{keep}, 5000))
		settle(10 * time.Second)
		if got, want := stoppedIDs(h.rt.Stops()), sorted(h.containers(rel, "worker")); len(got) != 2 || slices.ContainsFunc(got, func(id string) bool { return slices.Contains(surplusWeb, id) }) {
			t.Fatalf("stopped %v with requests in flight to %v (workers %v)", got, surplusWeb, want)
		}
		draining := 0
		for _, c := range s.Status().Containers {
			if c.State == StateDraining {
				draining++
			}
		}
		if draining != 2 {
			t.Errorf("%d containers draining, want the 2 surplus web ones", draining)
		}
		h.release(h.addrs(surplusWeb, 5000)...)
		settle(time.Second)
		if !slices.Equal(stoppedIDs(h.rt.Stops()), surplus) {
			t.Errorf("stopped %v, want %v", stoppedIDs(h.rt.Stops()), surplus)
		}
		if got := h.containers("", ""); !slices.Equal(got, []string{keep}) {
			t.Errorf("remaining containers %v, want the newest web %v", got, keep)
		}
		if n := len(s.Status().Deployments); n != 1 {
			t.Errorf("%d deployments, want 1", n)
		}
	})
}

// 9. Drain: old containers are stopped once their requests ended, or at
// drain_timeout.
func TestDrain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.m.Close()
		s, _ := h.deployFirst(appSpec(t, "localhost/blog:v1", 2))
		ref := h.m.Pool(appName)
		old := h.containers("", "")
		h.hold(h.addrs(old, 5000)...)

		v2 := appSpec(t, "localhost/blog:v2", 2)
		d := h.waitDone(s, s.Update(v2).ID)
		if d.Status != StatusSuccess {
			t.Fatalf("status %s", d.Status)
		}
		if ref.Load().Release != v2.ReleaseID() {
			t.Fatal("pool not switched while a request is in flight")
		}
		settle(20 * time.Second)
		if n := len(h.rt.Stops()); n != 0 {
			t.Fatalf("%d old containers stopped with a request in flight", n)
		}
		for _, c := range s.Status().Containers {
			if slices.Contains(old, c.ID) && c.State != StateDraining {
				t.Errorf("old container %s is %s, want draining", c.ID, c.State)
			}
		}
		h.release(h.addrs(old, 5000)...)
		leftAt := time.Now()
		settle(time.Second)
		stops := h.rt.Stops()
		if !slices.Equal(stoppedIDs(stops), sorted(old)) {
			t.Fatalf("stopped %v, want %v", stoppedIDs(stops), old)
		}
		for _, c := range stops {
			if c.At.Sub(leftAt) > drainPoll {
				t.Errorf("Stop(%s) %s after the last request ended", c.ID, c.At.Sub(leftAt))
			}
		}
	})
}

func TestDrainTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.m.Close()
		v1 := appSpec(t, "localhost/blog:v1", 1)
		v1.DrainTimeout = 10 * time.Second
		s, _ := h.deployFirst(v1)
		old := h.containers("", "")
		h.hold(h.addrs(old, 5000)...) // never ends

		v2 := appSpec(t, "localhost/blog:v2", 1)
		v2.DrainTimeout = 10 * time.Second
		d := h.waitDone(s, s.Update(v2).ID)
		if d.Status != StatusSuccess {
			t.Fatalf("status %s", d.Status)
		}
		waitFor(t, "old container stopped", time.Minute, func() bool { return len(h.rt.Stops()) > 0 })
		stops := h.rt.Stops()
		if !slices.Equal(stoppedIDs(stops), old) {
			t.Fatalf("stopped %v, want %v", stoppedIDs(stops), old)
		}
		if after := stops[0].At.Sub(d.SwitchedAt); after < 10*time.Second || after > 10*time.Second+100*time.Millisecond {
			t.Errorf("stopped %s after the switch, want the 10s drain timeout", after)
		}
	})
}

// 10. An app removed from the config is drained and stopped.
func TestRemoveApp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.m.Close()
		h.deployFirst(appSpec(t, "localhost/blog:v1", 2, worker(1)))
		ref := h.m.Pool(appName)
		all := h.containers("", "")
		h.hold(h.addrs(h.containers("", WebProcess), 5000)...)

		h.m.Apply(nil)
		if h.m.App(appName) != nil || len(h.m.Apps()) != 0 {
			t.Fatal("removed app still listed")
		}
		synctest.Wait()
		if p := ref.Load(); p == nil || len(p.Addrs) != 0 {
			t.Errorf("pool after removal: %+v", p)
		}
		settle(5 * time.Second)
		if n := len(h.rt.Stops()); n != 1 {
			t.Fatalf("%d containers stopped with requests in flight to the web ones, want the worker", n)
		}
		h.release(h.addrs(h.containers("", WebProcess), 5000)...)
		waitFor(t, "all containers removed", time.Minute, func() bool { return len(h.containers("", "")) == 0 })
		if !slices.Equal(stoppedIDs(h.rt.Stops()), sorted(all)) {
			t.Errorf("stopped %v, want %v", stoppedIDs(h.rt.Stops()), all)
		}
		for _, c := range h.rt.Stops() {
			if ks := h.rt.Signals(c.ID); len(ks) != 1 || ks[0].Signal != "SIGTERM" {
				t.Errorf("signals to %s: %+v, want one SIGTERM", c.ID, ks)
			}
		}
		if !slices.Equal(removedIDs(h.rt.Removes()), sorted(all)) {
			t.Errorf("removed %v, want %v", removedIDs(h.rt.Removes()), all)
		}
	})
}

func TestRemoveAppDuringDeploy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.m.Close()
		s, _ := h.deployFirst(appSpec(t, "localhost/blog:v1", 1))
		h.rt.OnImage("localhost/blog:v2", behavior{Hold: true})
		d2 := s.Update(appSpec(t, "localhost/blog:v2", 1))
		settle(time.Second)
		if n := len(h.containers("", "")); n != 2 {
			t.Fatalf("%d containers, want 2", n)
		}
		h.m.Apply(nil)
		d := h.waitDone(s, d2.ID)
		if d.Status != StatusAborted {
			t.Errorf("status %s, want aborted", d.Status)
		}
		waitFor(t, "all containers removed", time.Minute, func() bool { return len(h.containers("", "")) == 0 })
	})
}

// 11. A new manager adopts what runs.
func TestAdoptDesiredRelease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := newFakeRuntime()
		spec := appSpec(t, "localhost/blog:v1", 2, worker(1))
		rel := spec.ReleaseID()

		h1 := newHarness(t, rt)
		defer h1.m.Close() // again: Close may be called twice
		h1.deployFirst(spec)
		settle(time.Minute)
		h1.m.Close()
		running := h1.containers(rel, "")
		if len(running) != 3 {
			t.Fatalf("%d containers after Close, want 3 still running", len(running))
		}
		if n := len(rt.Stops()) + len(rt.Removes()); n != 0 {
			t.Fatalf("Close touched %d containers", n)
		}
		for _, id := range running {
			if c, _ := rt.Get(id); !c.Running {
				t.Fatalf("container %s stopped by Close", id)
			}
		}
		runs := len(rt.Runs())
		// Leftovers: another release, an exited container of this one and
		// one of this one that does not listen.
		stale := rt.Add("localhost/blog:v0", map[string]string{LabelApp: appName, LabelRelease: "0123456789ab", LabelProcess: WebProcess}, true, true, "5000")
		dead := rt.Add("localhost/blog:v1", map[string]string{LabelApp: appName, LabelRelease: rel, LabelProcess: WebProcess}, false, false, "5000")
		deaf := rt.Add("localhost/blog:v1", map[string]string{LabelApp: appName, LabelRelease: rel, LabelProcess: WebProcess}, true, false, "5000")
		other := rt.Add("localhost/other:v1", map[string]string{LabelApp: "other", LabelRelease: "0123456789ab", LabelProcess: WebProcess}, true, true, "5000")

		h2 := newHarness(t, rt)
		defer h2.m.Close()
		h2.m.Apply([]AppSpec{appSpec(t, "localhost/blog:v1", 2, worker(1))})
		settle(adoptProbeTime) // the one that does not listen is given that long
		s := h2.sup()
		if n := len(rt.Runs()); n != runs {
			t.Errorf("%d Run calls adopting, want none", n-runs)
		}
		assertPool(t, h2.m.Pool(appName), rel, h2.addrs(h2.containers(rel, WebProcess), 5000))
		if got := len(h2.containers(rel, WebProcess)); got != 2 {
			t.Errorf("%d web containers, want the 2 adopted", got)
		}
		st := s.Status()
		if st.Release == nil || st.Release.ID != rel || st.Release.Deployment != 0 || st.Release.Image != "localhost/blog:v1" {
			t.Errorf("release %+v", st.Release)
		}
		if len(st.Deployments) != 0 {
			t.Errorf("%d deployments adopting the desired release", len(st.Deployments))
		}
		settle(time.Minute)
		// The other release's container and the one that runs but does not
		// listen get SIGTERM first; the exited one is just removed.
		if want := sorted([]string{stale.ID, deaf.ID}); !slices.Equal(stoppedIDs(rt.Stops()), want) {
			t.Errorf("stopped %v, want %v", stoppedIDs(rt.Stops()), want)
		}
		if want := sorted([]string{stale.ID, dead.ID, deaf.ID}); !slices.Equal(removedIDs(rt.Removes()), want) {
			t.Errorf("removed %v, want %v", removedIDs(rt.Removes()), want)
		}
		if _, ok := rt.Get(other.ID); !ok {
			t.Error("another app's container was removed")
		}
		if got := h2.containers(rel, ""); !slices.Equal(got, running) {
			t.Errorf("containers %v, want the adopted %v", got, running)
		}
		if n := len(rt.Runs()); n != runs {
			t.Errorf("%d Run calls, want none", n-runs)
		}
		for _, c := range s.Status().Containers {
			if c.State != StateReady {
				t.Errorf("adopted %+v", c)
			}
		}
	})
}

func TestAdoptThenDeploy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := newFakeRuntime()
		v1 := appSpec(t, "localhost/blog:v1", 2)
		rel1 := v1.ReleaseID()
		h1 := newHarness(t, rt)
		defer h1.m.Close() // again: Close may be called twice
		h1.deployFirst(v1)
		h1.m.Close()
		old := h1.containers(rel1, "")
		oldAddrs := h1.addrs(old, 5000)

		rt.OnImage("localhost/blog:v2", behavior{Hold: true})
		v2 := appSpec(t, "localhost/blog:v2", 2)
		h2 := newHarness(t, rt)
		defer h2.m.Close()
		ref := h2.m.Pool(appName)
		stopWatch := h2.watchPool(ref)
		defer stopWatch()
		h2.m.Apply([]AppSpec{v2})
		settle(5 * time.Second)
		// The old release serves while the new one boots.
		assertPool(t, ref, rel1, oldAddrs)
		s := h2.sup()
		d := h2.newest(s)
		if d.Release != v2.ReleaseID() || d.Status != StatusStarting {
			t.Fatalf("deployment %+v", d)
		}
		if n := len(rt.Stops()); n != 0 {
			t.Fatalf("%d containers stopped before the new release is ready", n)
		}
		for _, id := range h2.containers(v2.ReleaseID(), WebProcess) {
			rt.Listen(id)
		}
		if got := h2.waitDone(s, d.ID); got.Status != StatusSuccess {
			t.Fatalf("status %s (%s)", got.Status, got.Error)
		}
		settle(time.Second)
		assertPool(t, ref, v2.ReleaseID(), h2.addrs(h2.containers(v2.ReleaseID(), WebProcess), 5000))
		if !slices.Equal(stoppedIDs(rt.Stops()), sorted(old)) {
			t.Errorf("stopped %v, want the adopted old %v", stoppedIDs(rt.Stops()), old)
		}
		if bad := stopWatch(); len(bad) > 0 {
			t.Errorf("pool violations: %v", bad)
		}
	})
}

// Restart replaces every container, new first.
func TestRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.m.Close()
		spec := appSpec(t, "localhost/blog:v1", 2, worker(1))
		s, _ := h.deployFirst(spec)
		ref := h.m.Pool(appName)
		old := h.containers("", "")
		d, err := restart(s, "", "")
		if err != nil {
			t.Fatal(err)
		}
		if d == nil || d.Kind != KindRestart {
			t.Fatalf("restart deployment %+v", d)
		}
		if got := h.waitDone(s, d.ID); got.Status != StatusSuccess {
			t.Fatalf("status %s (%s)", got.Status, got.Error)
		}
		settle(time.Second)
		now := h.containers("", "")
		if len(now) != 3 || slices.ContainsFunc(now, func(id string) bool { return slices.Contains(old, id) }) {
			t.Errorf("containers %v after restart, old were %v", now, old)
		}
		if !slices.Equal(stoppedIDs(h.rt.Stops()), sorted(old)) {
			t.Errorf("stopped %v, want %v", stoppedIDs(h.rt.Stops()), old)
		}
		assertPool(t, ref, spec.ReleaseID(), h.addrs(h.containers(spec.ReleaseID(), WebProcess), 5000))
		// A restart is not a change of desired state: the same spec again
		// starts nothing.
		if d := s.Update(spec); d != nil {
			t.Errorf("update after restart started deployment %d", d.ID)
		}
	})
}

// A config applied again while the runtime is still unreachable at start
// must not replace the containers adopted once it answers.
func TestAdoptAfterRuntimeDown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := newFakeRuntime()
		spec := appSpec(t, "localhost/blog:v1", 2)
		h1 := newHarness(t, rt)
		defer h1.m.Close() // again: Close may be called twice
		h1.deployFirst(spec)
		h1.m.Close()
		running := h1.containers("", "")
		runs := len(rt.Runs())

		rt.SetDown(true)
		h := newHarness(t, rt)
		defer h.m.Close()
		h.m.Apply([]AppSpec{appSpec(t, "localhost/blog:v1", 2)})
		synctest.Wait()
		s := h.sup()
		if st := s.Status(); !strings.Contains(st.RuntimeError, "connection refused") {
			t.Errorf("runtime error %q while the runtime is down", st.RuntimeError)
		}
		// A reload with the same config.
		h.m.Apply([]AppSpec{appSpec(t, "localhost/blog:v1", 2)})
		settle(5 * time.Second)
		rt.SetDown(false)
		settle(time.Minute)
		if n := len(rt.Runs()); n != runs {
			t.Errorf("%d Run calls, want none: the desired release runs", n-runs)
		}
		if got := h.containers("", ""); !slices.Equal(got, running) {
			t.Errorf("containers %v, want the adopted %v", got, running)
		}
		assertPool(t, h.m.Pool(appName), spec.ReleaseID(), h.addrs(running, 5000))
		st := s.Status()
		if st.RuntimeError != "" {
			t.Errorf("runtime error %q once it answers", st.RuntimeError)
		}
		if len(st.Deployments) != 0 {
			t.Errorf("deployments %+v, want none: the desired release was adopted", st.Deployments)
		}
		if st.Release == nil || st.Release.ID != spec.ReleaseID() {
			t.Errorf("release %+v, want the adopted %s", st.Release, spec.ReleaseID())
		}
	})
}

// Manager.Wait after Apply(nil) returns once the removed apps' containers
// are stopped (caddymodule then calls Close).
func TestManagerWaitAfterRemove(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.m.Close() // again: Close may be called twice
		h.deployFirst(appSpec(t, "localhost/blog:v1", 2, worker(1)))
		all := h.containers("", "")
		webAddrs := h.addrs(h.containers("", WebProcess), 5000)
		h.hold(webAddrs...)
		go func() {
			time.Sleep(5 * time.Second)
			h.release(webAddrs...)
		}()
		start := time.Now()
		h.m.Apply(nil)
		h.m.Wait()
		if waited := time.Since(start); waited < 5*time.Second {
			t.Errorf("Wait returned after %s, before the request in flight ended", waited)
		}
		h.m.Close()
		for _, c := range h.rt.Stops() {
			if c.At.Sub(start) < 5*time.Second && slices.Contains(webAddrs, h.addrOf(c.ID)) {
				t.Errorf("Stop(%s) %s after removal, before the request in flight ended", c.ID, c.At.Sub(start))
			}
		}
		if got := h.containers("", ""); len(got) != 0 {
			t.Errorf("containers %v still exist after Wait", got)
		}
		if !slices.Equal(stoppedIDs(h.rt.Stops()), sorted(all)) {
			t.Errorf("stopped %v, want %v", stoppedIDs(h.rt.Stops()), all)
		}
	})
}

// A count change during a deployment of the same release is applied once
// the deployment has switched, without a second deployment.
func TestScaleDuringDeploy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.m.Close()
		s, _ := h.deployFirst(appSpec(t, "localhost/blog:v1", 1))
		ref := h.m.Pool(appName)
		h.rt.OnImage("localhost/blog:v2", behavior{Hold: true})
		d2 := s.Update(appSpec(t, "localhost/blog:v2", 1))
		settle(time.Second)
		if d := s.Update(appSpec(t, "localhost/blog:v2", 3)); d != nil {
			t.Fatalf("a count change started deployment %d", d.ID)
		}
		rel2 := appSpec(t, "localhost/blog:v2", 1).ReleaseID()
		h.rt.OnImage("localhost/blog:v2", behavior{})
		for _, id := range h.containers(rel2, WebProcess) {
			h.rt.Listen(id)
		}
		if d := h.waitDone(s, d2.ID); d.Status != StatusSuccess {
			t.Fatalf("status %s (%s)", d.Status, d.Error)
		}
		waitFor(t, "3 web containers in the pool", time.Minute, func() bool { return len(ref.Load().Addrs) == 3 })
		assertPool(t, ref, rel2, h.addrs(h.containers(rel2, WebProcess), 5000))
		if n := len(s.Status().Deployments); n != 2 {
			t.Errorf("%d deployments, want 2", n)
		}
	})
}

// An app removed and added back at once starts again once its old
// containers are gone, on the same pool handle.
func TestRemoveAndAddBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.m.Close()
		spec := appSpec(t, "localhost/blog:v1", 2)
		h.deployFirst(spec)
		ref := h.m.Pool(appName)
		old := h.containers("", "")
		h.m.Apply(nil)
		h.m.Apply([]AppSpec{appSpec(t, "localhost/blog:v1", 2)})
		s := h.sup()
		waitFor(t, "new release serving", time.Minute, func() bool {
			p := ref.Load()
			return p != nil && len(p.Addrs) == 2 && len(h.containers("", "")) == 2 && !slices.Contains(h.containers("", ""), old[0])
		})
		if !slices.Equal(stoppedIDs(h.rt.Stops()), sorted(old)) {
			t.Errorf("stopped %v, want %v", stoppedIDs(h.rt.Stops()), old)
		}
		assertPool(t, ref, spec.ReleaseID(), h.addrs(h.containers("", ""), 5000))
		if d := h.newest(s); d.Status != StatusSuccess {
			t.Errorf("deployment %+v", d)
		}
		if h.m.Pool(appName) != ref {
			t.Error("pool handle changed")
		}
	})
}

// Close (Caddy exiting) during a deployment leaves the serving release
// running and sends SIGTERM to the half-booted one (the next start removes
// it).
func TestCloseDuringDeploy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.m.Close() // again: Close may be called twice
		s, _ := h.deployFirst(appSpec(t, "localhost/blog:v1", 2))
		old := h.containers("", "")
		h.rt.OnImage("localhost/blog:v2", behavior{Hold: true})
		d2 := s.Update(appSpec(t, "localhost/blog:v2", 2))
		settle(time.Second)
		h.m.Close()
		synctest.Wait()
		d, _, _ := s.Deployment(d2.ID)
		if d.Status != StatusAborted {
			t.Errorf("status %s, want aborted", d.Status)
		}
		for _, id := range old {
			if c, _ := h.rt.Get(id); !c.Running {
				t.Errorf("serving container %s stopped", id)
			}
		}
		if n := len(h.rt.Removes()); n != 0 {
			t.Errorf("%d Remove calls at exit", n)
		}
		var killed []string
		for _, k := range h.rt.Kills() {
			if k.Signal != "SIGTERM" || slices.Contains(old, k.ID) {
				t.Errorf("Kill(%s, %s)", k.ID, k.Signal)
			}
			killed = append(killed, k.ID)
		}
		if half := h.containers(appSpec(t, "localhost/blog:v2", 2).ReleaseID(), ""); !slices.Equal(sorted(killed), half) {
			t.Errorf("SIGTERM to %v, want the half-booted %v", killed, half)
		}
	})
}

// addrOf returns the dial address of web container id.
func (h *harness) addrOf(id string) string {
	c, ok := h.rt.Get(id)
	if !ok || c.Labels[LabelProcess] != WebProcess {
		return ""
	}
	return net.JoinHostPort(c.IP, "5000")
}

// restart is Supervisor.Restart returning the deployment it started.
func restart(s *Supervisor, process, container string) (*Deployment, error) {
	r, err := s.Restart(process, container)
	return r.Deployment, err
}
