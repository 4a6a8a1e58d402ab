package engine

import (
	"slices"
	"sync"
	"sync/atomic"
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
	// Done is Leave as a func value made once, so that callers can hand it
	// to context.AfterFunc without allocating a closure per request.
	Done func()

	inflight atomic.Int64
}

func newPool(release string, addrs []string) *Pool {
	p := &Pool{Release: release, Addrs: addrs}
	p.Done = p.Leave
	return p
}

// Acquire counts a request that may be sent to one of the pool's addresses;
// each call must be followed by one call to Leave (or Done) when the
// request has ended. Draining waits for this count to reach zero.
func (p *Pool) Acquire() { p.inflight.Add(1) }

// Leave ends what Acquire began.
func (p *Pool) Leave() { p.inflight.Add(-1) }

// InFlight returns the number of requests acquired and not yet released.
func (p *Pool) InFlight() int64 { return p.inflight.Load() }

// PoolRef is the stable handle of an app's traffic pool. It outlives config
// reloads; readers load it on every request.
type PoolRef struct {
	p atomic.Pointer[Pool]

	// retired are replaced pools that may still have requests in flight;
	// draining waits for all of them, since a request counted on an older
	// pool may be going to any container that pool had.
	mu      sync.Mutex
	retired []*Pool
}

// Load returns the current pool, or nil before the app's first release is
// ready.
func (r *PoolRef) Load() *Pool { return r.p.Load() }

// store installs a new pool and returns the one it replaced (nil if none).
func (r *PoolRef) store(release string, addrs []string) *Pool {
	old := r.p.Swap(newPool(release, addrs))
	if old != nil {
		r.mu.Lock()
		r.retired = slices.DeleteFunc(r.retired, func(p *Pool) bool { return p.InFlight() <= 0 })
		r.retired = append(r.retired, old)
		r.mu.Unlock()
	}
	return old
}

// retiredInFlight returns the requests still in flight on replaced pools,
// and forgets the pools that have none.
func (r *PoolRef) retiredInFlight() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var n int64
	r.retired = slices.DeleteFunc(r.retired, func(p *Pool) bool {
		in := p.InFlight()
		n += max(in, 0)
		return in <= 0
	})
	return n
}
