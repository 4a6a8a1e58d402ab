package engine

import (
	"context"
	"testing"
	"testing/synctest"
	"time"
)

// slowStart creates the container at once, then takes startDelay to start
// it, as Podman's create + start do; a ctx that ends during the start
// returns the created container with the error (what podman.Run does).
type slowStart struct {
	*fakeRuntime
	startDelay time.Duration
}

func (r *slowStart) Run(ctx context.Context, spec ContainerSpec) (ContainerInfo, error) {
	info, err := r.fakeRuntime.Run(ctx, spec)
	if err != nil {
		return info, err
	}
	r.mu.Lock()
	d := r.startDelay
	r.mu.Unlock()
	select {
	case <-ctx.Done():
		return info, ctx.Err()
	case <-time.After(d):
	}
	return info, nil
}

// An app is removed from the config while the replacement of its crashed
// container is being created: the owner declares the app stopped and ends,
// and the container it was creating stays behind, running, with nobody to
// remove it.
func TestRegressionRemoveDuringReplacementLeaks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rt := newFakeRuntime()
		sr := &slowStart{fakeRuntime: rt}
		h := newHarnessWith(t, rt, func(d *Deps) { d.Runtime = sr })
		defer h.m.Close()
		s, _ := h.deployFirst(appSpec(t, "localhost/blog:v1", 1))
		_ = s
		ids := h.containers("", WebProcess)
		sr.mu.Lock()
		sr.startDelay = 2 * time.Second
		sr.mu.Unlock()
		rt.Exit(ids[0], 1)
		settle(500 * time.Millisecond) // crashed one reaped; replacement created, starting
		h.m.Apply(nil)
		done := make(chan struct{})
		go func() { h.m.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Minute):
			t.Fatal("removal did not end")
		}
		settle(time.Minute)
		left := h.containers("", "")
		for _, id := range left {
			c, _ := rt.Get(id)
			t.Errorf("container %s (running=%v) of the removed app left behind, no owner", id, c.Running)
		}
	})
}
