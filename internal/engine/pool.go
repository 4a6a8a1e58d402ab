package engine

import (
	"context"
	"sync/atomic"
	"time"
)

// Pool is an immutable snapshot of the containers that get an app's traffic.
// A new Pool is built for every change and swapped in whole, so the request
// path only ever does one atomic load.
type Pool struct {
	// Release is the release the pool serves.
	Release string
	// Addrs are the dial addresses (host:port) of the ready web containers,
	// in a stable order. Readers must not modify it.
	Addrs []string
}

// PoolRef is the stable handle of an app's traffic pool and of its gate
// (pause, maintenance). It outlives config reloads; readers load it on
// every request.
type PoolRef struct {
	p    atomic.Pointer[Pool]
	gate atomic.Pointer[Gate]
}

// Load returns the current pool, or nil before the app's first release is
// ready.
func (r *PoolRef) Load() *Pool { return r.p.Load() }

// Gate returns the app's gate, or nil when requests pass (the usual case).
func (r *PoolRef) Gate() *Gate { return r.gate.Load() }

func (r *PoolRef) store(release string, addrs []string) *Pool {
	return r.p.Swap(&Pool{Release: release, Addrs: addrs})
}

// Gate holds requests back: a pause makes them wait until resume (at most
// Timeout each), maintenance answers them at once. A Gate is immutable but
// for its resumed channel, closed when the gate is lifted.
type Gate struct {
	// Maintenance is set in maintenance mode: requests get 503 and Message.
	Maintenance bool
	Message     string
	// Timeout is how long a request waits in a pause before it gets 503.
	Timeout time.Duration
	// RetryAfter is what a 503 tells the client to wait.
	RetryAfter time.Duration
	Since      time.Time

	resumed chan struct{}
}

// Wait blocks a request while the app is paused: it returns true once the
// pause is lifted, false when the pause's timeout passed first or ctx ended.
// It takes no lock.
func (g *Gate) Wait(ctx context.Context) bool {
	t := time.NewTimer(g.Timeout)
	defer t.Stop()
	select {
	case <-g.resumed:
		return true
	case <-t.C:
		return false
	case <-ctx.Done():
		return false
	}
}

// Pass waits while the app is paused, off any lock, and returns nil when
// the request may go on, or the gate that holds it back: maintenance, or a
// pause whose timeout passed (or ctx ended). A pause lifted for another
// gate (maintenance, a new pause) is looked at again.
func (r *PoolRef) Pass(ctx context.Context) *Gate {
	g := r.Gate()
	for g != nil && !g.Maintenance && g.Wait(ctx) {
		g = r.Gate()
	}
	return g
}

// setGate installs g (nil lifts the gate) and wakes the requests waiting
// behind the gate it replaces.
func (r *PoolRef) setGate(g *Gate) {
	if g != nil && g.resumed == nil {
		g.resumed = make(chan struct{})
	}
	if old := r.gate.Swap(g); old != nil {
		close(old.resumed)
	}
}
