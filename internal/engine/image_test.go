package engine

import (
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// Image IDs of the fake runtime: v1 before and after a rebuild.
const (
	imgOld = "1111111111111111111111111111111111111111111111111111111111111111"
	imgNew = "2222222222222222222222222222222222222222222222222222222222222222"
)

// runImages returns the images Run was given for process, in order, from
// the n-th run on.
func (h *harness) runImages(process string, from int) []string {
	var out []string
	for i, r := range h.rt.Runs() {
		if i >= from && r.Labels[LabelProcess] == process {
			out = append(out, r.Image)
		}
	}
	return out
}

func allEqual(xs []string, want string) bool {
	return len(xs) > 0 && !slices.ContainsFunc(xs, func(x string) bool { return x != want })
}

// A release runs the image ID its tag named when it was deployed. After the
// tag was rebuilt: a crash replacement and a restart of the serving release
// still run the old ID, an unchanged config reload touches nothing, an
// explicit deploy of the same tag is a new release on the new ID, and a
// rollback runs the old ID again.
func TestImagePinnedAcrossRebuild(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.shutdown()
		spec := appSpecKept(t, "localhost/blog:v1", 2, worker(1))
		h.rt.Tag(spec.Image, imgOld)
		s, d1 := h.deployFirst(spec)
		if d1.ImageID != imgOld || !allEqual(append(h.runImages(WebProcess, 0), h.runImages("worker", 0)...), imgOld) {
			t.Fatalf("first deployment: image ID %q, runs %v; want every run of %s", d1.ImageID, h.runImages(WebProcess, 0), imgOld)
		}
		st := s.Status()
		if st.Release == nil || st.Release.ImageID != imgOld || st.Release.Image != spec.Image || st.ImageID != imgOld {
			t.Fatalf("status release %+v, desired image ID %q; want %s of %s", st.Release, st.ImageID, imgOld, spec.Image)
		}
		rel1 := st.Release.ID
		if rel1 == spec.ReleaseID() {
			t.Errorf("release id %s does not cover the image ID", rel1)
		}

		// The tag is rebuilt: nothing that runs changes.
		h.rt.Tag(spec.Image, imgNew)
		calls := h.rt.ImageIDCalls()

		// Crash replacement of the old release, before any deploy.
		runs := len(h.rt.Runs())
		web := h.containers(rel1, WebProcess)
		h.rt.Exit(web[0], 1)
		waitFor(t, "crash replaced", 5*time.Second, func() bool {
			return len(h.containers(rel1, WebProcess)) == 2 && !slices.Contains(h.containers(rel1, WebProcess), web[0]) &&
				len(h.m.Pool(appName).Load().Addrs) == 2
		})
		if got := h.runImages(WebProcess, runs); !slices.Equal(got, []string{imgOld}) {
			t.Errorf("crash replacement ran %v, want the release's %s", got, imgOld)
		}

		// Restart of the serving release.
		runs = len(h.rt.Runs())
		rd, err := s.Restart("", "")
		if err != nil {
			t.Fatal(err)
		}
		if got := h.waitDone(s, rd.Deployment.ID); got.Status != StatusSuccess {
			t.Fatalf("restart: %s (%s)", got.Status, got.Error)
		}
		if got := append(h.runImages(WebProcess, runs), h.runImages("worker", runs)...); len(got) != 3 || !allEqual(got, imgOld) {
			t.Errorf("restart ran %v, want 3 containers of %s", got, imgOld)
		}

		// Scale-up of the serving release.
		runs = len(h.rt.Runs())
		if err := s.Scale(map[string]int{WebProcess: 3}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "scaled up", 5*time.Second, func() bool { return len(h.m.Pool(appName).Load().Addrs) == 3 })
		if got := h.runImages(WebProcess, runs); !slices.Equal(got, []string{imgOld}) {
			t.Errorf("scale-up ran %v, want %s", got, imgOld)
		}

		// An unchanged config reload touches nothing, not even Podman.
		runs, deps := len(h.rt.Runs()), len(s.Status().Deployments)
		h.m.Apply([]AppSpec{spec})
		settle(time.Minute)
		if len(h.rt.Runs()) != runs || len(s.Status().Deployments) != deps || h.rt.ImageIDCalls() != calls {
			t.Errorf("unchanged reload: %d runs, %d deployments, %d image inspects; want %d, %d, %d",
				len(h.rt.Runs()), len(s.Status().Deployments), h.rt.ImageIDCalls(), runs, deps, calls)
		}
		if st := s.Status(); st.Release.ID != rel1 || st.Desired != rel1 {
			t.Errorf("after the reload: release %s, desired %s; want %s", st.Release.ID, st.Desired, rel1)
		}

		// Deploying the same ID again is no deployment.
		res, err := s.Deploy(spec.Image, imgOld)
		if err != nil || res.Deployment != nil || !strings.Contains(res.Message, "already serves") {
			t.Fatalf("deploy of the serving ID: %+v, %v; want nothing started", res, err)
		}

		// An explicit deploy of the rebuilt tag: a new release on the new ID.
		runs = len(h.rt.Runs())
		res, err = s.Deploy(spec.Image, imgNew)
		if err != nil || res.Deployment == nil {
			t.Fatalf("deploy of the rebuilt tag: %+v, %v; want a deployment", res, err)
		}
		d2 := h.waitDone(s, res.Deployment.ID)
		if d2.Status != StatusSuccess || d2.Release == rel1 || d2.ImageID != imgNew || d2.Image != spec.Image {
			t.Fatalf("deployment of the rebuilt tag: %+v", d2)
		}
		if got := append(h.runImages(WebProcess, runs), h.runImages("worker", runs)...); len(got) != 4 || !allEqual(got, imgNew) {
			t.Errorf("rebuilt tag ran %v, want 4 containers of %s", got, imgNew)
		}
		settle(time.Minute)
		if old := h.containers(rel1, ""); len(old) != 0 {
			t.Errorf("containers %v of the old release left", old)
		}
		if st := s.Status(); st.Release.ID != d2.Release || st.Release.ImageID != imgNew {
			t.Errorf("status release %+v, want %s on %s", st.Release, d2.Release, imgNew)
		}

		// Rollback runs the old ID, though the tag names the new one.
		runs = len(h.rt.Runs())
		rb, err := s.Rollback()
		if err != nil {
			t.Fatal(err)
		}
		d3 := h.waitDone(s, rb.Deployment.ID)
		if d3.Status != StatusSuccess || d3.Release != rel1 || d3.ImageID != imgOld {
			t.Fatalf("rollback: %+v, want release %s on %s", d3, rel1, imgOld)
		}
		if got := append(h.runImages(WebProcess, runs), h.runImages("worker", runs)...); len(got) != 4 || !allEqual(got, imgOld) {
			t.Errorf("rollback ran %v, want 4 containers of %s", got, imgOld)
		}
	})
}

// A config deploy resolves the tag once, in the deployment, and pins it:
// a config change that leaves the release-defining settings as they are
// does not resolve again; one that changes them (env) does, and runs what
// the tag names then.
func TestImageConfigDeployResolves(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.shutdown()
		spec := appSpec(t, "localhost/blog:v1", 1)
		h.rt.Tag(spec.Image, imgOld)
		s, _ := h.deployFirst(spec)
		if n := h.rt.ImageIDCalls(); n != 1 {
			t.Errorf("%d image inspects for the first deploy, want 1", n)
		}
		h.rt.Tag(spec.Image, imgNew)
		scaled := spec
		scaled.Processes = []ProcessSpec{{Name: WebProcess, Count: 2}}
		if d := s.Update(scaled); d != nil {
			t.Fatalf("a scale by config started deployment %+v", d)
		}
		waitFor(t, "scaled", 5*time.Second, func() bool { return len(h.m.Pool(appName).Load().Addrs) == 2 })
		if got := h.runImages(WebProcess, 0); !allEqual(got, imgOld) {
			t.Errorf("runs %v after a scale by config, want all %s", got, imgOld)
		}
		changed := scaled
		changed.Env = map[string]string{"RAILS_ENV": "staging"}
		d := s.Update(changed)
		if d == nil {
			t.Fatal("an env change started no deployment")
		}
		got := h.waitDone(s, d.ID)
		if got.Status != StatusSuccess || got.ImageID != imgNew {
			t.Fatalf("env change: %+v, want success on %s", got, imgNew)
		}
		if st := s.Status(); st.Release.ID != got.Release || st.Desired != got.Release || st.Release.ImageID != imgNew {
			t.Errorf("status release %+v desired %s, want %s on %s", st.Release, st.Desired, got.Release, imgNew)
		}
		settle(time.Minute)
		if n := len(s.Status().Deployments); n != 2 {
			t.Errorf("%d deployments, want 2 (the pin must not start another)", n)
		}
	})
}

// A config deploy of an image Podman lacks fails start-error with the
// runtime's words, and no container is created.
func TestImageMissingConfigDeploy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.shutdown()
		spec := appSpec(t, "localhost/blog:v1", 1)
		h.rt.Tag(spec.Image, imgOld)
		s, _ := h.deployFirst(spec)
		h.rt.OnImage("localhost/blog:nope", behavior{NoImage: true})
		next := spec
		next.Image = "localhost/blog:nope"
		d := s.Update(next)
		if d == nil {
			t.Fatal("no deployment")
		}
		got := h.waitDone(s, d.ID)
		if got.Status != StatusStartError || !strings.Contains(got.Error, "not in the service's storage") {
			t.Errorf("deployment of a missing image: %s (%s)", got.Status, got.Error)
		}
		if runs := h.runImages(WebProcess, 1); len(runs) != 0 {
			t.Errorf("runs %v for a missing image", runs)
		}
	})
}

// The pin is in the app record: after a restart of the process the
// adopted release's crash replacement still runs its ID, and an unchanged
// config deploys nothing though the tag moved.
func TestImagePinnedAcrossProcessRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt, store := newFakeRuntime(), newMemStore()
		spec := appSpecKept(t, "localhost/blog:v1", 2)
		rt.Tag(spec.Image, imgOld)
		h1 := newHarnessWith(t, rt, withStore(store))
		_, d1 := h1.deployFirst(spec)
		h1.m.Close()
		rt.Tag(spec.Image, imgNew)

		h := newHarnessWith(t, rt, withStore(store))
		defer h.shutdown()
		h.m.Apply([]AppSpec{spec})
		settle(5 * time.Second)
		s := h.sup()
		st := s.Status()
		if st.Release == nil || st.Release.ID != d1.Release || st.Release.ImageID != imgOld || len(st.Deployments) != 0 {
			t.Fatalf("after the restart: release %+v, %d deployments; want %s on %s adopted, no new deployment",
				st.Release, len(st.Deployments), d1.Release, imgOld)
		}
		runs := len(rt.Runs())
		web := h.containers(d1.Release, WebProcess)
		rt.Exit(web[0], 1)
		waitFor(t, "crash replaced", 5*time.Second, func() bool {
			return len(h.containers(d1.Release, WebProcess)) == 2 && len(h.m.Pool(appName).Load().Addrs) == 2
		})
		if got := h.runImages(WebProcess, runs); !slices.Equal(got, []string{imgOld}) {
			t.Errorf("crash replacement after the restart ran %v, want %s", got, imgOld)
		}
	})
}

// Upgrade path: the containers and record of an older podswitch (no image
// ID) are adopted and keep serving without a deployment; the release runs
// by reference until the next deployment pins one.
func TestImageLegacyReleaseAdopted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt, store := newFakeRuntime(), newMemStore()
		spec := appSpecKept(t, "localhost/blog:v1", 2)
		legacy := spec.ReleaseID() // as an older podswitch computed it
		lbl := map[string]string{LabelApp: appName, LabelRelease: legacy, LabelProcess: WebProcess, LabelPort: "5000"}
		a := rt.Add(spec.Image, lbl, true, true, "5000").ID
		b := rt.Add(spec.Image, lbl, true, true, "5000").ID
		store.recs[appName] = AppRecord{Serving: &ReleaseRecord{ID: legacy, Spec: SpecRecord{
			Image: spec.Image, EnvSource: spec.EnvSource, Port: spec.Port, Processes: spec.Processes}}}
		rt.Tag(spec.Image, imgNew)

		h := newHarnessWith(t, rt, withStore(store))
		defer h.shutdown()
		h.m.Apply([]AppSpec{spec})
		settle(5 * time.Second)
		s := h.sup()
		st := s.Status()
		if st.Release == nil || st.Release.ID != legacy || len(st.Deployments) != 0 || len(rt.Runs()) != 0 {
			t.Fatalf("legacy release: %+v, %d deployments, %d runs; want it adopted as is", st.Release, len(st.Deployments), len(rt.Runs()))
		}
		assertPool(t, h.m.Pool(appName), legacy, h.addrs([]string{a, b}, 5000))
		rt.Exit(a, 1)
		waitFor(t, "crash replaced", 5*time.Second, func() bool { return len(h.m.Pool(appName).Load().Addrs) == 2 })
		if got := h.runImages(WebProcess, 0); !slices.Equal(got, []string{spec.Image}) {
			t.Errorf("crash replacement of a legacy release ran %v, want the reference", got)
		}
	})
}

// A config deployment that failed because its image was missing says
// what to do, and the next config load tries it again even unchanged
// (the image may have been built since); one that failed for another
// cause is not tried again by an unchanged load.
func TestImageMissingRetriedOnConfigLoad(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.shutdown()
		spec := appSpec(t, "localhost/blog:v1", 1)
		h.rt.Tag(spec.Image, imgOld)
		s, _ := h.deployFirst(spec)
		const img = "localhost/blog:v2"
		h.rt.OnImage(img, behavior{NoImage: true})
		next := spec
		next.Image = img
		d := s.Update(next)
		if d == nil {
			t.Fatal("no deployment")
		}
		got := h.waitDone(s, d.ID)
		want := "image localhost/blog:v2 is not on this host: build it or pull it (podman pull localhost/blog:v2), then reload or deploy ("
		if got.Status != StatusStartError || !strings.HasPrefix(got.Error, want) || !strings.Contains(got.Error, "not in the service's storage") {
			t.Fatalf("deployment of a missing image: %s (%s), want start-error starting %q with the runtime's words", got.Status, got.Error, want)
		}
		synctest.Wait()

		// Still missing: the unchanged load tries again, and fails again.
		d = s.Update(next)
		if d == nil {
			t.Fatal("an unchanged config load did not try the missing image again")
		}
		if got := h.waitDone(s, d.ID); got.Status != StatusStartError {
			t.Fatalf("second try: %s (%s), want start-error", got.Status, got.Error)
		}
		synctest.Wait()

		// Built now: the unchanged load deploys it.
		h.rt.OnImage(img, behavior{})
		h.rt.Tag(img, imgNew)
		d = s.Update(next)
		if d == nil {
			t.Fatal("an unchanged config load did not try the image built since")
		}
		if got := h.waitDone(s, d.ID); got.Status != StatusSuccess {
			t.Fatalf("after the build: %s (%s), want success", got.Status, got.Error)
		}
		synctest.Wait()
		if d := s.Update(next); d != nil {
			t.Errorf("an unchanged load after the success started deployment %d (%s)", d.ID, d.Kind)
		}

		// Another cause (the new containers crash): not tried again.
		const crashing = "localhost/blog:v3"
		h.rt.OnImage(crashing, behavior{Crash: true})
		h.rt.Tag(crashing, strings.Repeat("3", 64))
		third := spec
		third.Image = crashing
		d = s.Update(third)
		if d == nil {
			t.Fatal("no deployment of v3")
		}
		if got := h.waitDone(s, d.ID); got.Status == StatusSuccess {
			t.Fatalf("deployment of crashing containers: success")
		}
		synctest.Wait()
		if d := s.Update(third); d != nil {
			t.Errorf("an unchanged load retried a deployment that failed for another cause than a missing image: %d", d.ID)
		}
	})
}
