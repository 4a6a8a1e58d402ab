package engine

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Leadership decides which of several proxies that share their state leads
// each app: only the leader starts, stops, replaces or adopts the app's
// containers; the others follow its record (see follow). It is a lease per
// app with an epoch that grows at each change of holder (internal/lease,
// wired by the Caddy module).
type Leadership interface {
	// Campaign returns once this proxy leads app, with a context that
	// ends when its term does (at the latest when its renew deadline
	// passes) and the term's epoch, or with ctx's error.
	Campaign(ctx context.Context, app string) (term context.Context, epoch uint64, err error)
	// Valid reports whether this proxy's term of epoch over app still
	// runs: the test before every call that changes a container.
	Valid(app string, epoch uint64) bool
	// Resign gives the lease of epoch up, so that another proxy takes it
	// at once (the app left the config, or the process exits).
	Resign(app string, epoch uint64)
	// Unused returns once no other live proxy routes requests to addr of
	// app (or has some in flight to it), or when ctx ends.
	Unused(ctx context.Context, app, addr string)
	// ConfiguredElsewhere reports whether another live proxy has app in
	// its config: an app that leaves this proxy's config is then given
	// up to it, not stopped.
	ConfiguredElsewhere(app string) bool
}

// ErrNotLeader is returned by a call that would change a container of an
// app whose term this proxy no longer holds.
var ErrNotLeader = errors.New("this proxy no longer leads the app: its term ended")

// fencedRuntime refuses every call that changes a container once the term
// it was made for ended, so that a leader that stalled (a frozen process, a
// slow storage) never acts beside the next one.
type fencedRuntime struct {
	Runtime
	valid func() bool
}

func (f fencedRuntime) Run(ctx context.Context, spec ContainerSpec) (ContainerInfo, error) {
	if !f.valid() {
		return ContainerInfo{}, ErrNotLeader
	}
	return f.Runtime.Run(ctx, spec)
}

func (f fencedRuntime) Stop(ctx context.Context, id string, timeout time.Duration) error {
	if !f.valid() {
		return ErrNotLeader
	}
	return f.Runtime.Stop(ctx, id, timeout)
}

func (f fencedRuntime) Remove(ctx context.Context, id string) error {
	if !f.valid() {
		return ErrNotLeader
	}
	return f.Runtime.Remove(ctx, id)
}

func (f fencedRuntime) Kill(ctx context.Context, id, signal string) error {
	if !f.valid() {
		return ErrNotLeader
	}
	return f.Runtime.Kill(ctx, id, signal)
}

// followInterval is how often a follower reads the app's record.
const followInterval = 500 * time.Millisecond

// appSlot is an app of a manager with a Leadership: it follows the app until
// this proxy takes its lease, leads it (a supervisor) for the term, then
// follows again.
type appSlot struct {
	name string
	pool *PoolRef
	// ctx ends when the manager closes.
	ctx context.Context
	// done is closed once the appSlot has ended (its app left the config and,
	// when it led, its containers stopped; or the manager closed).
	done chan struct{}

	mu      sync.Mutex
	spec    AppSpec
	sup     *Supervisor
	removed bool
	// detach ends the supervisor's term without stopping anything.
	detach context.CancelCauseFunc
	// unfollow ends the campaign and the following in progress.
	unfollow context.CancelFunc
	// canaryClients counts the new clients of the canary canaryRelease
	// through this proxy (a follower's own share of them).
	canaryClients *atomic.Uint64
	canaryRelease string
	// rec is the record as the follower last read it, recErr why the
	// last read failed.
	rec    AppRecord
	recErr error
}

// setSpec records the config of the app, and hands it to its supervisor
// while it leads.
func (sl *appSlot) setSpec(spec AppSpec) {
	sl.mu.Lock()
	sl.spec = spec
	s := sl.sup
	sl.mu.Unlock()
	if s != nil {
		s.Update(spec)
	}
}

// remove ends the appSlot: a leader drains and stops the app's containers
// (then gives the lease up); a follower just stops following.
func (sl *appSlot) remove(elsewhere bool) {
	sl.mu.Lock()
	sl.removed = true
	s, unfollow, detach := sl.sup, sl.unfollow, sl.detach
	sl.mu.Unlock()
	switch {
	case s != nil && elsewhere:
		// Another proxy still runs the app: it takes it over.
		detach(errors.New("the app left this proxy's config; another proxy has it"))
	case s != nil:
		s.remove()
	case unfollow != nil:
		unfollow()
	}
}

// runSlot is the life of an app under a Leadership: follow while another
// proxy leads, lead once this one takes the lease, until the app leaves
// the config or the manager closes.
func (m *Manager) runSlot(sl *appSlot, prev <-chan struct{}) {
	defer close(sl.done)
	l := m.deps.Leadership
	log := m.deps.Logger.With(zap.String("app", sl.name))
	if prev != nil {
		select {
		case <-prev:
		case <-sl.ctx.Done():
			return
		}
	}
	for {
		fctx, unfollow := context.WithCancel(sl.ctx)
		sl.mu.Lock()
		removed := sl.removed
		sl.unfollow = unfollow
		sl.mu.Unlock()
		if removed {
			unfollow()
			return
		}
		followed := make(chan struct{})
		go func() {
			defer close(followed)
			m.follow(fctx, sl)
		}()
		term, epoch, err := l.Campaign(fctx, sl.name)
		unfollow()
		<-followed
		if err != nil {
			return // removed while following, or the manager closes
		}
		// The supervisor's context ends with the term, or when the
		// manager closes.
		sctx, cancel := context.WithCancelCause(sl.ctx)
		stopAfter := context.AfterFunc(term, func() { cancel(context.Cause(term)) })
		rt := fencedRuntime{Runtime: m.rt, valid: func() bool { return l.Valid(sl.name, epoch) }}
		deps := m.deps
		deps.Logger = deps.Logger.With(zap.Uint64("epoch", epoch))
		sl.mu.Lock()
		s := newSupervisor(sctx, sl.spec, sl.pool, deps, rt, m.probes)
		sl.sup, sl.detach = s, cancel
		removed = sl.removed
		sl.mu.Unlock()
		if removed {
			if l.ConfiguredElsewhere(sl.name) {
				cancel(errors.New("the app left this proxy's config; another proxy has it"))
			} else {
				// Removed as the lease came: the leader removes the app.
				s.remove()
			}
		}
		m.mu.Lock()
		m.sups[sl.name] = s
		m.mu.Unlock()
		log.Info("leading the app", zap.Uint64("epoch", epoch))
		s.run()
		stopAfter()
		cancel(nil)
		m.mu.Lock()
		if m.sups[sl.name] == s {
			delete(m.sups, sl.name)
		}
		m.mu.Unlock()
		s.lock()
		finished := s.stopped
		s.unlock()
		sl.mu.Lock()
		sl.sup, sl.detach = nil, nil
		removed = sl.removed
		sl.mu.Unlock()
		if finished || removed || sl.ctx.Err() != nil {
			// Removed with every container stopped (or given up to a
			// proxy that has the app), or the process exits: the next
			// leader takes over at once.
			l.Resign(sl.name, epoch)
			return
		}
		log.Warn("no longer leading the app: following it", zap.Uint64("epoch", epoch), zap.Error(context.Cause(term)))
	}
}

// follow routes the app's traffic as its leader's record says, until ctx
// ends: to the serving release's web containers that accept connections
// from here, behind the pause or maintenance the record has. The record
// is read every followInterval, at most one read at a time; a read that
// fails or hangs (the storage lost) keeps the pool as it was, and its
// containers are checked still.
func (m *Manager) follow(ctx context.Context, sl *appSlot) {
	t := time.NewTicker(followInterval)
	defer t.Stop()
	type read struct {
		rec AppRecord
		err error
	}
	reads := make(chan read, 1)
	// known is set once a record was read in this spell of following:
	// until then the pool and gate stay as the leader (this proxy, a
	// moment ago, or the config's start) left them.
	known := false
	loading := false
	load := func() {
		if loading || m.deps.Store == nil {
			return
		}
		loading = true
		go func() {
			rec, err := m.deps.Store.Load(sl.name)
			reads <- read{rec, err}
		}()
	}
	load()
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-reads:
			loading = false
			sl.mu.Lock()
			if r.err != nil {
				if sl.recErr == nil {
					m.deps.Logger.Warn("reading the app record to follow it failed; routing as before", zap.String("app", sl.name), zap.Error(r.err))
				}
				sl.recErr = r.err
			} else {
				sl.rec, sl.recErr = r.rec, nil
				known = true
			}
			sl.mu.Unlock()
			m.route(ctx, sl, known)
		case <-t.C:
			if loading {
				// The storage is slow: the containers are checked still.
				m.route(ctx, sl, known)
			}
			load()
		}
	}
}

// route sets the pool and the gate by the record last read; without one
// (known unset) it checks the pool's containers and keeps the gate.
func (m *Manager) route(ctx context.Context, sl *appSlot, known bool) {
	sl.mu.Lock()
	rec := sl.rec
	sl.mu.Unlock()
	release := ""
	var addrs, canaryAddrs []string
	var canary *Canary
	if known && rec.Serving != nil {
		release = rec.Serving.ID
		for _, h := range rec.Hosted {
			switch {
			case h.Process != WebProcess || h.Addr == "":
			case h.Canary:
				canaryAddrs = append(canaryAddrs, h.Addr)
			default:
				addrs = append(addrs, h.Addr)
			}
		}
	} else if p := sl.pool.Load(); p != nil {
		release, addrs, canary = p.Release, p.Addrs, p.Canary
	}
	ready := m.checkAll(ctx, addrs)
	var canaryReady []string
	if known && rec.Canary != nil {
		canaryReady = m.checkAll(ctx, canaryAddrs)
	}
	if ctx.Err() != nil {
		return
	}
	if len(ready) == 0 && len(addrs) > 0 {
		// None answers from here: keep them all rather than none, as the
		// leader does when every container fails its checks.
		ready = addrs
	}
	if cn := rec.Canary; known && cn != nil {
		// The canary in service gets its share through this proxy too,
		// with a count of new clients of its own.
		sl.mu.Lock()
		if sl.canaryClients == nil || sl.canaryRelease != cn.Release {
			sl.canaryClients, sl.canaryRelease = new(atomic.Uint64), cn.Release
		}
		canary = &Canary{Release: cn.Release, Addrs: canaryReady, CanaryRules: cn.Rules, clients: sl.canaryClients}
		sl.mu.Unlock()
	} else if known {
		canary = nil
	}
	if p := sl.pool.Load(); p == nil || p.Release != release || !slices.Equal(p.Addrs, ready) || !sameCanary(p.Canary, canary) {
		if release != "" || p != nil {
			sl.pool.store(release, ready, canary)
		}
	}
	switch {
	case !known:
	case rec.Maintenance != nil:
		mt := rec.Maintenance
		if g := sl.pool.Gate(); g == nil || !g.Maintenance || g.Message != mt.Message {
			sl.pool.setGate(&Gate{Maintenance: true, Message: mt.Message, RetryAfter: gateRetryAfter, Since: mt.Since})
		}
	case rec.Pause != nil:
		p := rec.Pause
		if g := sl.pool.Gate(); g == nil || g.Maintenance || !g.Since.Equal(p.Since) {
			sl.pool.setGate(&Gate{Timeout: p.Timeout, RetryAfter: gateRetryAfter, Since: p.Since})
		}
	case rec.Idle != nil:
		// Asleep (idle_timeout): requests wait, up to boot_timeout,
		// while the leader wakes it; it hears of them through this
		// proxy's heartbeat (TakeTraffic).
		since := rec.Idle.Since
		if g := sl.pool.Gate(); g == nil || !g.Waking || !g.Since.Equal(since) {
			sl.mu.Lock()
			boot := sl.spec.BootTimeout
			sl.mu.Unlock()
			sl.pool.setGate(&Gate{Waking: true, Timeout: boot, RetryAfter: wakeRetryAfter, Since: since})
		}
	default:
		if sl.pool.Gate() != nil {
			sl.pool.setGate(nil)
		}
	}
}

// TakeTraffic reports whether app, which this proxy follows, got a request
// through this proxy since the last call: the leader counts it as use
// (idle_timeout) and wakes the app for it (TrafficElsewhere). It reports
// false for an app this proxy leads, whose idle check takes its traffic.
func (m *Manager) TakeTraffic(app string) bool {
	if !m.Follows(app) {
		return false
	}
	p := m.Pool(app)
	return p.used.Load() && p.used.Swap(false)
}

// TrafficElsewhere tells the leader of app that another proxy served it
// lately: that counts as use (idle_timeout), and an app asleep wakes up,
// as for a request of its own.
func (m *Manager) TrafficElsewhere(app string) {
	s := m.App(app)
	if s == nil {
		return
	}
	s.noteUsed()
	if s.asleep.Load() {
		s.queue(s.wakeOnRequest)
	}
}

// sameCanary reports whether a and b route the same (release, rules and
// containers).
func sameCanary(a, b *Canary) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Release == b.Release && a.CanaryRules == b.CanaryRules && slices.Equal(a.Addrs, b.Addrs)
}

// checkAll probes each of addrs at once and returns those that accepted a
// connection, in the order of addrs.
func (m *Manager) checkAll(ctx context.Context, addrs []string) []string {
	if len(addrs) == 0 {
		return nil
	}
	ok := make([]bool, len(addrs))
	var wg sync.WaitGroup
	for i, a := range addrs {
		wg.Go(func() {
			select {
			case m.probes <- struct{}{}:
			case <-ctx.Done():
				return
			}
			defer func() { <-m.probes }()
			pctx, cancel := context.WithTimeout(ctx, followInterval)
			defer cancel()
			ok[i] = m.deps.Prober.Probe(pctx, a) == nil
		})
	}
	wg.Wait()
	var out []string
	for i, a := range addrs {
		if ok[i] {
			out = append(out, a)
		}
	}
	slices.Sort(out)
	return out
}

// Leads reports whether this proxy leads app name now; without a
// Leadership it leads every app it runs.
func (m *Manager) Leads(name string) bool {
	return m.App(name) != nil
}

// Follows reports whether app name is configured and followed (another
// proxy leads it).
func (m *Manager) Follows(name string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	sl := m.slots[name]
	return sl != nil && m.sups[name] == nil
}

// FollowError returns why the record of followed app name could not be
// read at the last try, or nil.
func (m *Manager) FollowError(name string) error {
	m.mu.Lock()
	sl := m.slots[name]
	m.mu.Unlock()
	if sl == nil {
		return nil
	}
	sl.mu.Lock()
	defer sl.mu.Unlock()
	return sl.recErr
}
