package engine

import (
	"context"
	"sync"
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
	// Canary, when set, is a release beside Release that gets a share of
	// the requests (see canary.go).
	Canary *Canary
}

// MaxHeld is how many requests a pause holds at once for one app. The
// next ones are answered 503 with Retry-After at once: a pause must not
// turn a burst of traffic into an unbounded heap of goroutines and open
// connections.
const MaxHeld = 1000

// PoolRef is the stable handle of an app's traffic pool and of its gate
// (pause, maintenance). It outlives config reloads; readers load it on
// every request. It must not be copied.
type PoolRef struct {
	p    atomic.Pointer[Pool]
	gate atomic.Pointer[Gate]
	// held counts the requests a pause holds now; maxHeld bounds it
	// (MaxHeld when zero).
	held    atomic.Int64
	maxHeld int64
	// closed is closed when the manager that owns the pool closes:
	// every request held then is released.
	closed    chan struct{}
	closeOnce sync.Once
	// used is set by every request (Pass) and taken back by the idle
	// check: whether the app got traffic since the last look. traffic
	// gets a signal when used is set, so that the health checks of an app
	// at rest take up their fast pace at the first request.
	used    atomic.Bool
	traffic chan struct{}
}

func newPoolRef() *PoolRef {
	return &PoolRef{closed: make(chan struct{}), traffic: make(chan struct{}, 1)}
}

// Load returns the current pool, or nil before the app's first release is
// ready.
func (r *PoolRef) Load() *Pool { return r.p.Load() }

// Gate returns the app's gate, or nil when requests pass (the usual case).
func (r *PoolRef) Gate() *Gate { return r.gate.Load() }

// Held returns how many requests a pause holds now.
func (r *PoolRef) Held() int64 { return r.held.Load() }

func (r *PoolRef) store(release string, addrs []string, canary *Canary) *Pool {
	return r.p.Swap(&Pool{Release: release, Addrs: addrs, Canary: canary})
}

// limit returns how many requests a pause may hold at once.
func (r *PoolRef) limit() int64 {
	if r.maxHeld > 0 {
		return r.maxHeld
	}
	return MaxHeld
}

// release answers every request held now or later with PassReleased: the
// manager that owns the pool is closing.
func (r *PoolRef) release() {
	if r.closed != nil {
		r.closeOnce.Do(func() { close(r.closed) })
	}
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
	// Waking is set on the gate of an app asleep (idle_timeout) or
	// waking up: requests are held while a web container boots.
	Waking bool

	resumed chan struct{}
	// wake, set on the gate of an app asleep, asks its supervisor to wake
	// it up; the first request the gate sees calls it (woken).
	wake  func()
	woken atomic.Bool
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

// Verdict is what the gate decided for one request.
type Verdict uint8

const (
	// Through: no gate, or the pause was lifted; the request goes on.
	Through Verdict = iota
	// InMaintenance: the app is in maintenance; answer 503 and its message.
	InMaintenance
	// TimedOut: the pause outlasted the request's wait; answer 503.
	TimedOut
	// Full: the pause already holds its maximum of requests; answer 503.
	Full
	// Released: the server shuts down or the engine closes; answer 503.
	Released
	// ClientGone: the client left while it was held; answer nothing.
	ClientGone
)

// Pass decides for one request: it returns Through at once when the app is
// neither paused nor in maintenance (one atomic load), and otherwise the
// gate and why the request must not go on. A paused request is held, off
// any lock, until the pause is lifted, its timeout passes, ctx ends, or
// release (the caller's: its server shuts down) or the pool's close
// releases it; a pause lifted for another gate (maintenance, a new pause,
// whose timeout counts afresh) is looked at again. At most maxHeld
// requests are held at once (an atomic counter); the next are Full.
func (r *PoolRef) Pass(ctx context.Context, release <-chan struct{}) (*Gate, Verdict) {
	if !r.used.Load() {
		r.used.Store(true)
		select {
		case r.traffic <- struct{}{}:
		default:
		}
	}
	g := r.Gate()
	if g == nil {
		return nil, Through
	}
	if g.Maintenance {
		return g, InMaintenance
	}
	g.wakeUp()
	if r.held.Add(1) > r.limit() {
		r.held.Add(-1)
		return g, Full
	}
	defer r.held.Add(-1)
	for {
		if v := r.hold(ctx, g, release); v != Through {
			return g, v
		}
		if g = r.Gate(); g == nil {
			return nil, Through
		}
		if g.Maintenance {
			return g, InMaintenance
		}
		g.wakeUp()
	}
}

// wakeUp asks, once per gate, the supervisor of an app asleep to wake it.
func (g *Gate) wakeUp() {
	if g.wake != nil && !g.woken.Load() && g.woken.CompareAndSwap(false, true) {
		g.wake()
	}
}

// hold waits behind one pause gate: Through once it is lifted.
func (r *PoolRef) hold(ctx context.Context, g *Gate, release <-chan struct{}) Verdict {
	t := time.NewTimer(g.Timeout)
	defer t.Stop()
	select {
	case <-g.resumed:
		return Through
	case <-t.C:
		return TimedOut
	case <-ctx.Done():
		return ClientGone
	case <-release:
		return Released
	case <-r.closed:
		return Released
	}
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
