package engine

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

// Tests of the bound on Podman calls by class.

// Log readers that stall (a client that reads nothing) hold no slot that a
// deploy, a stop or the resync needs: with more stalled readers than the
// other class has slots, a deploy still switches and its old containers
// are stopped and removed. Before, a non-following Logs held one of the 4
// other slots while its callback wrote to the client.
func TestStalledLogReadersDoNotBlockDeploys(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, nil)
		defer h.shutdown()
		h.rt.OnImage("localhost/blog:v1", behavior{Output: []string{"one", "two"}})
		s, _ := h.deployFirst(appSpec(t, "localhost/blog:v1", 2))
		old := h.containers("", "")
		ctx, cancel := context.WithCancel(context.Background())
		stalled := make(chan struct{}, 16)
		for i := range 8 {
			go func() {
				_ = h.m.Runtime().Logs(ctx, old[i%2], LogOptions{Tail: -1, Stream: true}, func(LogLine) {
					stalled <- struct{}{}
					<-ctx.Done() // the client reads nothing
				})
			}()
		}
		synctest.Wait()
		if n := len(stalled); n != 8 {
			t.Fatalf("%d readers stalled, want 8", n)
		}
		d := h.waitDone(s, s.Update(appSpec(t, "localhost/blog:v2", 2)).ID)
		if d.Status != StatusSuccess {
			t.Fatalf("deploy with stalled log readers: %s (%s)", d.Status, d.Error)
		}
		waitFor(t, "old containers removed", time.Minute, func() bool {
			for _, id := range old {
				if _, ok := h.rt.Get(id); ok {
					return false
				}
			}
			return true
		})
		cancel()
	})
}

// hangingRuntime never answers inspects: it returns when ctx ends.
type hangingRuntime struct{ *fakeRuntime }

func (r hangingRuntime) Inspect(ctx context.Context, id string) (ContainerInfo, error) {
	<-ctx.Done()
	return ContainerInfo{}, ctx.Err()
}

// Every bounded call has a deadline, even when its caller set none: a
// runtime that never answers frees the slot.
func TestBoundedCallsHaveADeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := limit(hangingRuntime{newFakeRuntime()}, Limits{Other: 1})
		t0 := time.Now()
		_, err := l.Inspect(context.Background(), "c1")
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(t0) != shortCallTimeout {
			t.Fatalf("Inspect without a deadline: %v after %s, want the deadline after %s", err, time.Since(t0), shortCallTimeout)
		}
		// The slot is free again.
		if _, err := l.List(context.Background(), ""); err != nil {
			t.Fatal(err)
		}
	})
}

// hangingKills is a runtime whose kills of one host's containers never
// answer (until their context ends).
type hangingKills struct {
	*fakeRuntime
	host string
}

func (r hangingKills) Kill(ctx context.Context, id, signal string) error {
	if HostOf(id) == r.host {
		<-ctx.Done()
		return ctx.Err()
	}
	return nil
}

// Each host of several has slots of its own: a host whose calls hang holds
// none that another host's calls need.
func TestLimitsPerHost(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := limit(hangingKills{newFakeRuntime(), "b"}, Limits{Signal: 2})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		for range 2 {
			go func() { _ = l.Kill(ctx, "b/c1", "SIGTERM") }()
		}
		synctest.Wait() // b's two slots are held
		done := make(chan error, 1)
		go func() { done <- l.Kill(context.Background(), "a/c2", "SIGTERM") }()
		synctest.Wait()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("kill on a: %v", err)
			}
		default:
			t.Fatal("a kill on host a waits for host b's slots")
		}
		// A third kill on b waits for one of b's slots.
		third := make(chan error, 1)
		go func() { third <- l.Kill(ctx, "b/c3", "SIGTERM") }()
		synctest.Wait()
		select {
		case <-third:
			t.Fatal("a third kill on b did not wait for a slot")
		default:
		}
		cancel()
		if err := <-third; !errors.Is(err, context.Canceled) {
			t.Errorf("third kill: %v", err)
		}
		synctest.Wait()
	})
}
