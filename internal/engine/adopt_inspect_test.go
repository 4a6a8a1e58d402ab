package engine

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// flakyInspect fails the first Inspect of each container, as a busy Podman
// service may.
type flakyInspect struct {
	*fakeRuntime
	mu   sync.Mutex
	seen map[string]bool
}

func (r *flakyInspect) Inspect(ctx context.Context, id string) (ContainerInfo, error) {
	r.mu.Lock()
	first := !r.seen[id]
	r.seen[id] = true
	r.mu.Unlock()
	if first {
		return ContainerInfo{}, errDown
	}
	return r.fakeRuntime.Inspect(ctx, id)
}

// An inspect that Podman does not answer during adoption makes adoption try
// again; it never stops the recorded serving release's containers.
func TestRegressionAdoptStopsServingOnFlakyInspect(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := newFakeRuntime()
		store := newMemStore()
		v1 := appSpecKept(t, "localhost/blog:v1", 2)
		lbl := map[string]string{LabelApp: appName, LabelRelease: v1.ReleaseID(), LabelProcess: WebProcess, LabelPort: "5000"}
		a := []string{rt.Add(v1.Image, lbl, true, true, "5000").ID, rt.Add(v1.Image, lbl, true, true, "5000").ID}
		store.recs[appName] = AppRecord{Serving: &ReleaseRecord{ID: v1.ReleaseID(), Spec: v1.record()}}
		h := newHarnessWith(t, rt, func(d *Deps) { d.Store = store; d.Runtime = &flakyInspect{fakeRuntime: rt, seen: map[string]bool{}} })
		defer h.shutdown()
		h.m.Apply([]AppSpec{v1})
		settle(2 * adoptProbeTime)
		for _, id := range a {
			if c, ok := rt.Get(id); !ok || !c.Running {
				t.Errorf("serving container %s of the recorded release stopped at start (one Inspect failed)", id)
			}
		}
		_ = time.Second
	})
}
