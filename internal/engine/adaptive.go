package engine

import (
	"context"
	"sync"
	"time"
)

// adaptiveLimit bounds the calls in flight of one class to the container
// runtime with a bound that follows the runtime's answer times, as TCP Vegas
// follows a path's round trips: the fastest answer to a call that had the
// service to itself (no other call in flight when it was admitted) is the
// base; while calls answer within slowFactor times the base, and the bound
// is in use, it grows by one per bound's worth of calls; when answers take
// longer (calls queue inside the service: Podman serialises much of a
// create and a start, so past a few calls in flight each only gets slower)
// it shrinks by one per bound's worth of calls, and when the runtime does
// not answer it halves. Only calls admitted alone move the base up (by 1%
// of the difference), so that calls slowed by their own crowd never teach
// it that slow is normal. It stays within [min, max], so the service never
// sees more than max calls of the class, however many apps boot at once.
//
// Measured on this project's machines (see BenchmarkPodmanRunConcurrency):
// 3 creates in flight start containers faster than 1 with each call taking
// about 2.3 times as long, and 8 or 16 slower than 3, each call then
// waiting seconds inside the service.
type adaptiveLimit struct {
	min, max int

	mu       sync.Mutex
	limit    float64
	inflight int
	// waiters are the callers waiting for a slot, oldest first.
	waiters []chan admission
	// busy is set once the calls in flight reached the bound, until none
	// is in flight: only then do fast answers prove that more would do.
	busy bool
	// base is the fastest answer to a call admitted alone: it follows a
	// slower service up by 1% of the difference per such answer, and a
	// faster one at once.
	base time.Duration
}

// slowFactor is how much slower than the fastest answer seen lately an
// answer may be before the bound shrinks.
const slowFactor = 3

func newAdaptiveLimit(initial, lo, hi int) *adaptiveLimit {
	return &adaptiveLimit{min: lo, max: hi, limit: float64(max(lo, min(initial, hi)))}
}

// Limit returns the current bound.
func (a *adaptiveLimit) Limit() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return int(a.limit)
}

// admission is a slot taken by acquire, to give back to release.
type admission struct {
	// alone is set when no other call of the class was in flight when
	// this one was admitted.
	alone bool
}

// acquire waits for a slot, or for ctx to end.
func (a *adaptiveLimit) acquire(ctx context.Context) (admission, error) {
	a.mu.Lock()
	if a.inflight < int(a.limit) && len(a.waiters) == 0 {
		a.inflight++
		a.busy = a.busy || a.inflight >= int(a.limit)
		adm := admission{alone: a.inflight == 1}
		a.mu.Unlock()
		return adm, nil
	}
	a.busy = true
	ch := make(chan admission, 1)
	a.waiters = append(a.waiters, ch)
	a.mu.Unlock()
	select {
	case adm := <-ch:
		return adm, nil
	case <-ctx.Done():
		a.mu.Lock()
		defer a.mu.Unlock()
		for i, w := range a.waiters {
			if w == ch {
				a.waiters = append(a.waiters[:i], a.waiters[i+1:]...)
				return admission{}, ctx.Err()
			}
		}
		// The slot was handed over as ctx ended: give it back.
		a.inflight--
		a.handOverLocked()
		return admission{}, ctx.Err()
	}
}

// callResult is how a call admitted by an adaptiveLimit ended.
type callResult int

const (
	// answered: the runtime did what was asked; its time counts.
	answered callResult = iota
	// refused: the runtime answered with an error of the caller's (a
	// missing image, a bad command): its time says nothing of the load.
	refused
	// unanswered: the runtime could not be reached or did not answer
	// within the call's deadline.
	unanswered
)

// release gives back the slot adm taken by acquire; took is how long the
// call took.
func (a *adaptiveLimit) release(adm admission, took time.Duration, res callResult) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.inflight--
	switch {
	case res == refused:
	case res == unanswered:
		a.limit = max(float64(a.min), a.limit/2)
	case a.base == 0 || took < a.base:
		a.base = took
		a.grow()
	default:
		if adm.alone {
			a.base += (took - a.base) / 100
		}
		if took > slowFactor*a.base {
			a.limit = max(float64(a.min), a.limit-1/a.limit)
		} else {
			a.grow()
		}
	}
	a.handOverLocked()
	if a.inflight == 0 {
		a.busy = false
	}
}

// grow raises the bound by one per bound's worth of answers, only while
// the bound was in use: an idle class keeps the bound it proved.
func (a *adaptiveLimit) grow() {
	if a.busy {
		a.limit = min(float64(a.max), a.limit+1/a.limit)
	}
}

// handOverLocked gives free slots to waiters, oldest first.
func (a *adaptiveLimit) handOverLocked() {
	for len(a.waiters) > 0 && a.inflight < int(a.limit) {
		ch := a.waiters[0]
		a.waiters = a.waiters[1:]
		a.inflight++
		ch <- admission{alone: a.inflight == 1}
	}
}
