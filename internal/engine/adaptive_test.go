package engine

import (
	"context"
	"testing"
	"time"
)

// The bound grows while answers stay near the fastest seen and the bound is
// in use, shrinks when answers queue, halves when the runtime does not
// answer, and stays within its range.
func TestAdaptiveLimitFollowsAnswerTimes(t *testing.T) {
	a := newAdaptiveLimit(3, 1, 16)
	ctx := context.Background()
	round := func(took time.Duration, res callResult) {
		n := a.Limit()
		adms := make([]admission, n)
		for i := range n {
			adm, err := a.acquire(ctx)
			if err != nil {
				t.Fatal(err)
			}
			adms[i] = adm
		}
		for _, adm := range adms {
			a.release(adm, took, res)
		}
	}
	for range 5 {
		round(200*time.Millisecond, answered)
	}
	if got := a.Limit(); got < 5 {
		t.Fatalf("after fast saturated rounds the limit is %d, want it grown past 5", got)
	}
	grown := a.Limit()
	for range 3 {
		round(time.Second, answered) // 5x the fastest: calls queue in the service
	}
	if got := a.Limit(); got >= grown {
		t.Fatalf("after slow rounds the limit is %d, want below %d", got, grown)
	}
	slow := a.Limit()
	round(0, unanswered)
	if got := a.Limit(); got > max(1, slow/2) {
		t.Fatalf("after unanswered calls the limit is %d, want at most %d", got, max(1, slow/2))
	}
	for range 40 {
		round(time.Second, unanswered)
	}
	if got := a.Limit(); got != 1 {
		t.Fatalf("limit fell to %d, want the floor 1", got)
	}
	for range 400 {
		round(100*time.Millisecond, answered)
	}
	if got := a.Limit(); got != 16 {
		t.Fatalf("limit rose to %d, want the ceiling 16", got)
	}
	// Calls the runtime refused (a missing image answers at once) move
	// neither the bound nor the fastest answer.
	for range 10 {
		round(time.Millisecond, refused)
	}
	round(100*time.Millisecond, answered)
	if got := a.Limit(); got != 16 {
		t.Fatalf("limit %d after refused calls, want 16", got)
	}
}

// An idle class keeps its bound: answers that never filled the bound say
// nothing of what more calls would do.
func TestAdaptiveLimitGrowsOnlyWhenInUse(t *testing.T) {
	a := newAdaptiveLimit(3, 1, 16)
	for range 100 {
		adm, err := a.acquire(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		a.release(adm, 10*time.Millisecond, answered)
	}
	if got := a.Limit(); got != 3 {
		t.Fatalf("limit %d after calls one at a time, want 3", got)
	}
}

// Callers past the bound wait, are served oldest first, and one whose ctx
// ends leaves the queue without taking or losing a slot.
func TestAdaptiveLimitQueue(t *testing.T) {
	a := newAdaptiveLimit(1, 1, 1)
	if _, err := a.acquire(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	gaveUp := make(chan error)
	go func() { _, err := a.acquire(ctx); gaveUp <- err }()
	order := make(chan int, 2)
	waitQueued := func(n int) {
		for {
			a.mu.Lock()
			q := len(a.waiters)
			a.mu.Unlock()
			if q == n {
				return
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitQueued(1)
	for i := range 2 {
		go func() {
			if _, err := a.acquire(context.Background()); err != nil {
				t.Error(err)
			}
			order <- i
		}()
		waitQueued(i + 2)
	}
	cancel()
	if err := <-gaveUp; err == nil {
		t.Fatal("a cancelled acquire took a slot")
	}
	a.release(admission{}, time.Millisecond, answered)
	if first := <-order; first != 0 {
		t.Fatalf("waiter %d served first, want 0", first)
	}
	a.release(admission{}, time.Millisecond, answered)
	if second := <-order; second != 1 {
		t.Fatalf("waiter %d served second, want 1", second)
	}
	a.release(admission{}, time.Millisecond, answered)
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.inflight != 0 || len(a.waiters) != 0 {
		t.Fatalf("inflight %d waiters %d after all released", a.inflight, len(a.waiters))
	}
}
