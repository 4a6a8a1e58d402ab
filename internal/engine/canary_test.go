package engine

import (
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// canaryUp deploys v1 (2 web, 1 worker) and puts a canary of v2 in
// service at percent; it returns the supervisor, the canary deployment
// and v2's release.
func canaryUp(t *testing.T, h *harness, percent int) (*Supervisor, Deployment, string) {
	t.Helper()
	s, _ := h.deployFirst(appSpecKept(t, "localhost/blog:v1", 2, worker(1)))
	res, err := s.Canary("localhost/blog:v2", "", CanaryRules{Percent: percent, Header: "X-Beta"})
	if err != nil || res.Deployment == nil {
		t.Fatalf("canary: %+v %v", res, err)
	}
	d := h.waitDone(s, res.Deployment.ID)
	if d.Status != StatusSuccess || d.Kind != KindCanary || d.Percent == nil || *d.Percent != percent {
		t.Fatalf("canary deployment: %+v", d)
	}
	synctest.Wait()
	return s, d, d.Release
}

// A canary boots the web containers of the new release beside the serving
// ones, and gets exactly its share of new clients; the serving release
// keeps its pool and its workers; no worker of the canary runs.
func TestCanaryShare(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newMemStore()
		h := newHarnessWith(t, nil, withStore(store))
		defer h.shutdown()
		s, d, rel := canaryUp(t, h, 20)
		ref := h.m.Pool(appName)
		p := ref.Load()
		v1 := s.Status().Release.ID
		if p.Release != v1 || len(p.Addrs) != 2 {
			t.Fatalf("pool %+v, want v1's 2 containers", p)
		}
		c := p.Canary
		if c == nil || c.Release != rel || len(c.Addrs) != 2 || c.Percent != 20 || c.Header != "X-Beta" {
			t.Fatalf("canary in the pool: %+v", c)
		}
		if slices.ContainsFunc(c.Addrs, func(a string) bool { return slices.Contains(p.Addrs, a) }) {
			t.Errorf("canary %v and pool %v share a container", c.Addrs, p.Addrs)
		}
		if w := h.containers(rel, "worker"); len(w) != 0 {
			t.Errorf("the canary runs workers %v", w)
		}
		if w := h.containers(v1, "worker"); len(w) != 1 {
			t.Errorf("workers of v1 %v, want 1", w)
		}
		n := 0
		for range 1000 {
			if c.NewClient() {
				n++
			}
		}
		if n != 200 {
			t.Errorf("%d of 1000 new clients got the canary at 20%%, want 200", n)
		}
		st := s.Status()
		if st.Canary == nil || !st.Canary.InService || st.Canary.Ready != 2 || st.Canary.Release != rel || st.Canary.Deployment != d.ID {
			t.Errorf("status canary %+v", st.Canary)
		}
		if r := store.get(appName); r.Canary == nil || r.Canary.Release != rel || r.Canary.Rules.Percent != 20 {
			t.Errorf("record canary %+v", r.Canary)
		}

		// The same image again changes the share only.
		runs := len(h.rt.Runs())
		res, err := s.Canary("localhost/blog:v2", "", CanaryRules{Percent: 50})
		if err != nil || res.Deployment != nil || !strings.Contains(res.Message, "50%") {
			t.Fatalf("a new share: %+v %v", res, err)
		}
		synctest.Wait()
		if c := ref.Load().Canary; c == nil || c.Percent != 50 || c.Header != "" || len(c.Addrs) != 2 {
			t.Errorf("canary after a new share: %+v", c)
		}
		if len(h.rt.Runs()) != runs {
			t.Error("a new share booted containers")
		}
	})
}

// Promote deploys the canary's release new-first; its switch retires the
// canary's containers with v1's and ends the canary, which says so.
func TestCanaryPromote(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newMemStore()
		h := newHarnessWith(t, nil, withStore(store))
		defer h.shutdown()
		s, d, rel := canaryUp(t, h, 20)
		ref := h.m.Pool(appName)
		canaryAddrs := ref.Load().Canary.Addrs
		res, err := s.Promote()
		if err != nil || res.Deployment == nil {
			t.Fatalf("promote: %+v %v", res, err)
		}
		// The canary serves its share while the promotion boots.
		if c := ref.Load().Canary; c == nil || len(c.Addrs) != 2 {
			t.Errorf("canary while the promotion boots: %+v", c)
		}
		pd := h.waitDone(s, res.Deployment.ID)
		if pd.Status != StatusSuccess || pd.Trigger != "promote" || pd.Release != rel || pd.Kind != KindDeploy {
			t.Fatalf("promotion: %+v", pd)
		}
		settle(time.Minute)
		p := ref.Load()
		if p.Release != rel || len(p.Addrs) != 2 || p.Canary != nil {
			t.Fatalf("pool after promote: %+v", p)
		}
		if w := h.runningOf("worker"); len(w) != 1 || !slices.Contains(h.containers(rel, "worker"), w[0]) {
			t.Errorf("workers after promote: %v, want one of the new release", w)
		}
		for _, a := range canaryAddrs {
			if slices.Contains(p.Addrs, a) {
				t.Errorf("a canary container %s still serves after promote", a)
			}
		}
		st := s.Status()
		if st.Canary != nil || st.Release.ID != rel {
			t.Errorf("status after promote: canary %+v release %+v", st.Canary, st.Release)
		}
		cd, _, _ := s.Deployment(d.ID)
		if cd.CanaryEnded != "promoted by deployment "+strconv.FormatInt(pd.ID, 10) {
			t.Errorf("canary deployment ended %q", cd.CanaryEnded)
		}
		if r := store.get(appName); r.Canary != nil {
			t.Errorf("record canary after promote: %+v", r.Canary)
		}
		if _, err := s.Promote(); !errors.Is(err, ErrNoCanary) {
			t.Errorf("a second promote: %v", err)
		}
	})
}

// Abort sends every request back to the serving release at once and
// drains and stops the canary's containers; the serving release is not
// touched.
func TestCanaryAbort(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := newMemStore()
		h := newHarnessWith(t, nil, withStore(store))
		defer h.shutdown()
		s, d, rel := canaryUp(t, h, 20)
		ref := h.m.Pool(appName)
		before := ref.Load().Addrs
		if err := s.Abort(); err != nil {
			t.Fatal(err)
		}
		if p := ref.Load(); p.Canary != nil || !slices.Equal(p.Addrs, before) {
			t.Fatalf("pool at abort: %+v", p)
		}
		settle(time.Minute)
		if ids := h.runningOfRelease(rel); len(ids) > 0 {
			t.Errorf("canary containers still run after abort: %v", ids)
		}
		cd, _, _ := s.Deployment(d.ID)
		if cd.CanaryEnded != "aborted by the api" {
			t.Errorf("canary deployment ended %q", cd.CanaryEnded)
		}
		if r := store.get(appName); r.Canary != nil {
			t.Errorf("record canary after abort: %+v", r.Canary)
		}
		if err := s.Abort(); !errors.Is(err, ErrNoCanary) {
			t.Errorf("a second abort: %v", err)
		}
	})
}

// A canary container that crashes ends the canary, with a notification;
// the other canary container is stopped and the serving release serves
// everything.
func TestCanaryCrashEndsIt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarnessWith(t, nil, withStore(newMemStore()))
		defer h.shutdown()
		s, d, rel := canaryUp(t, h, 20)
		ids := h.containers(rel, WebProcess)
		h.rt.Exit(ids[0], 137)
		settle(time.Minute)
		if c := h.m.Pool(appName).Load().Canary; c != nil {
			t.Fatalf("canary after a crash: %+v", c)
		}
		if running := h.runningOf(WebProcess); len(running) != 2 || slices.Contains(running, ids[1]) {
			t.Errorf("web running after the canary crashed: %v (canary %v)", running, ids)
		}
		cd, _, _ := s.Deployment(d.ID)
		if !strings.HasPrefix(cd.CanaryEnded, "a canary container crashed: ") {
			t.Errorf("canary deployment ended %q", cd.CanaryEnded)
		}
		if evs := h.eventsNamed(EventCrashed); len(evs) != 1 || evs[0].Container != ids[0] || !strings.Contains(evs[0].Message, "the canary of release "+rel+" ended") {
			t.Errorf("crash notifications %+v, want one of %s saying the canary ended", evs, ids[0])
		}
		if st := s.Status(); st.Canary != nil || len(st.GaveUp) != 0 {
			t.Errorf("status: canary %+v gave up %v", st.Canary, st.GaveUp)
		}
	})
}

// A restart of podswitch keeps a canary in service: its containers are
// adopted as the canary's, with its share, and it can be promoted; when
// its containers died meanwhile, the canary ends and its deployment says
// why.
func TestCanarySurvivesRestart(t *testing.T) {
	for _, died := range []bool{false, true} {
		name := "alive"
		if died {
			name = "died"
		}
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				store := newMemStore()
				hist := newMemHistory()
				h := newHarnessWith(t, nil, func(d *Deps) { d.Store, d.History = store, hist })
				spec := appSpecKept(t, "localhost/blog:v1", 2, worker(1))
				s, _ := h.deployFirst(spec)
				res, err := s.Canary("localhost/blog:v2", "", CanaryRules{Percent: 20, Header: "X-Beta"})
				if err != nil {
					t.Fatal(err)
				}
				cd := h.waitDone(s, res.Deployment.ID)
				synctest.Wait()
				before := h.m.Pool(appName).Load()
				v1 := s.Status().Release.ID
				h.m.Close()
				h.m.Wait()
				canaryIDs := h.containers(cd.Release, WebProcess)
				if died {
					for _, id := range canaryIDs {
						h.rt.ExitQuietly(id, 137)
					}
				}

				h2 := newHarnessWith(t, h.rt, func(d *Deps) { d.Store, d.History = store, hist })
				defer h2.shutdown()
				h2.m.Apply([]AppSpec{spec})
				settle(time.Minute)
				s2 := h2.sup()
				p := h2.m.Pool(appName).Load()
				if p == nil || p.Release != v1 || !slices.Equal(sorted(p.Addrs), sorted(before.Addrs)) {
					t.Fatalf("pool after a restart: %+v, want v1's %v", p, before.Addrs)
				}
				got, _, _ := s2.Deployment(cd.ID)
				if died {
					if p.Canary != nil || s2.Status().Canary != nil {
						t.Errorf("a canary whose containers died is back: %+v", p.Canary)
					}
					if !strings.Contains(got.CanaryEnded, "none of its containers answered") {
						t.Errorf("canary deployment ended %q", got.CanaryEnded)
					}
					if r := store.get(appName); r.Canary != nil {
						t.Errorf("record canary %+v", r.Canary)
					}
					return
				}
				if p.Canary == nil || p.Canary.Release != cd.Release || p.Canary.Percent != 20 || p.Canary.Header != "X-Beta" ||
					!slices.Equal(sorted(p.Canary.Addrs), sorted(before.Canary.Addrs)) {
					t.Fatalf("canary after a restart: %+v, want %+v", p.Canary, before.Canary)
				}
				if st := s2.Status(); st.Canary == nil || !st.Canary.InService || st.Canary.Ready != 2 || got.CanaryEnded != "" {
					t.Errorf("status canary %+v, ended %q", st.Canary, got.CanaryEnded)
				}
				pr, err := s2.Promote()
				if err != nil {
					t.Fatal(err)
				}
				if d := h2.waitDone(s2, pr.Deployment.ID); d.Status != StatusSuccess || d.Release != cd.Release {
					t.Fatalf("promote after a restart: %+v", d)
				}
				settle(time.Minute)
				for _, id := range canaryIDs {
					if c, ok := h2.rt.Get(id); ok && c.Running {
						t.Errorf("canary container %s still runs after the promotion", id)
					}
				}
			})
		})
	}
}

// A deployment of another release ends the canary at its switch; the
// canary's refusals say what to do.
func TestCanaryReplacedAndRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarnessWith(t, nil, withStore(newMemStore()))
		defer h.shutdown()
		var ie *InputError
		s, _ := h.deployFirst(appSpecKept(t, "localhost/blog:v1", 2))
		for _, tc := range []struct {
			image string
			rules CanaryRules
			want  string
		}{
			{"localhost/blog:v1", CanaryRules{Percent: 10}, "already serves"},
			{"localhost/blog:v2", CanaryRules{Percent: 101}, "percent 101"},
			{"localhost/blog:v2", CanaryRules{Percent: 10, Header: "X Beta"}, "not a valid header name"},
			{"localhost/blog:v2", CanaryRules{Percent: 10, Cookie: "beta"}, "want a name and a value"},
		} {
			if _, err := s.Canary(tc.image, "", tc.rules); !errors.As(err, &ie) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("canary %s %+v: %v, want an input error saying %q", tc.image, tc.rules, err, tc.want)
			}
		}
		res, err := s.Canary("localhost/blog:v2", "", CanaryRules{Percent: 10})
		if err != nil {
			t.Fatal(err)
		}
		cd := h.waitDone(s, res.Deployment.ID)
		var ce *ConflictError
		if _, err := s.Canary("localhost/blog:v3", "", CanaryRules{Percent: 10}); !errors.As(err, &ce) || !strings.Contains(err.Error(), "promote or abort it first") {
			t.Errorf("a second canary: %v", err)
		}
		d := s.Update(appSpecKept(t, "localhost/blog:v3", 2))
		if d == nil {
			t.Fatal("a new image started nothing")
		}
		nd := h.waitDone(s, d.ID)
		settle(time.Minute)
		if p := h.m.Pool(appName).Load(); p.Canary != nil || p.Release != nd.Release {
			t.Errorf("pool after a deploy of v3: %+v", p)
		}
		got, _, _ := s.Deployment(cd.ID)
		if !strings.HasPrefix(got.CanaryEnded, "replaced by deployment") {
			t.Errorf("canary ended %q", got.CanaryEnded)
		}
		if ids := h.runningOfRelease(cd.Release); len(ids) > 0 {
			t.Errorf("canary containers run after the deploy: %v", ids)
		}
	})
}

// An abort while the canary's promotion boots aborts the promotion too, and
// takes its override back: the release the user turned down never takes
// all the traffic.
func TestCanaryAbortStopsPromote(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarnessWith(t, nil, withStore(newMemStore()))
		defer h.shutdown()
		s, _, rel := canaryUp(t, h, 20)
		v1 := s.Status().Release.ID
		h.rt.OnImage("localhost/blog:v2", behavior{Hold: true})
		res, err := s.Promote()
		if err != nil {
			t.Fatal(err)
		}
		settle(time.Second)
		if err := s.Abort(); err != nil {
			t.Fatal(err)
		}
		pd := h.waitDone(s, res.Deployment.ID)
		if pd.Status != StatusAborted || !strings.Contains(pd.Error, "the canary was ended before its promotion switched") {
			t.Errorf("the promotion after an abort: %s (%s)", pd.Status, pd.Error)
		}
		settle(time.Minute)
		st := s.Status()
		if st.Release.ID != v1 || st.Desired != v1 || len(st.Overrides) != 0 || st.Canary != nil {
			t.Errorf("after abort: release %s desired %s (v1 %s, canary %s), overrides %+v, canary %+v", st.Release.ID, st.Desired, v1, rel, st.Overrides, st.Canary)
		}
		if p := h.m.Pool(appName).Load(); p.Release != v1 || len(p.Addrs) != 2 || p.Canary != nil {
			t.Errorf("pool after abort: %+v", p)
		}
	})
}
