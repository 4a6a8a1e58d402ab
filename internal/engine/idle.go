package engine

import (
	"time"

	"go.uber.org/zap"
)

// Scale to zero. An app with an idle_timeout that gets no request for that
// long falls asleep: its record says so first (AppRecord.Idle, so that a
// restart of the process keeps it asleep), a gate that holds requests goes
// up, and its web containers are drained and stopped like a scale-down
// (its workers keep running; the release stays). The first request the
// gate holds wakes the app: the record is cleared, web containers boot at
// their count like a scale-up, and the gate lifts as soon as one of them
// is ready, so that the held requests go on to it. A request held longer
// than boot_timeout, or over the gate's bound (MaxHeld), gets 503 with
// Retry-After. A deployment of a new release wakes the app too.
//
// Traffic is seen without a lock: every request sets PoolRef.used (one
// atomic load when it is already set), and the manager's idle loop takes
// it back once every idleTick for every app.

// MinIdleTimeout is the shortest idle_timeout: below it an app would fall
// asleep between two requests of one page load.
const MinIdleTimeout = 5 * time.Second

var (
	// idleTick is how often the manager looks at which apps are idle.
	idleTick = time.Second
	// wakeRetryAfter is what a 503 of an app waking up tells clients.
	wakeRetryAfter = 5 * time.Second
)

// IdleStatus is an app asleep, or waking up.
type IdleStatus struct {
	// Since is when it fell asleep.
	Since time.Time `json:"since"`
	// Waking is set once a request (or a deployment) woke it, until a web
	// container is ready.
	Waking bool `json:"waking,omitempty"`
	// Held counts the requests held until it is awake.
	Held int64 `json:"held"`
}

// WakeStatus is the last wake of an app: how long its cold start took, from
// the request that woke it to its first ready web container.
type WakeStatus struct {
	At          time.Time `json:"at"`
	Trigger     string    `json:"trigger"`
	ColdStart   string    `json:"cold_start"`
	ColdStartMS int64     `json:"cold_start_ms"`
}

// waking is a wake on its way.
type waking struct {
	since   time.Time
	trigger string
}

// idleLoop looks at every app once an idleTick until the manager closes.
func (m *Manager) idleLoop() {
	t := time.NewTicker(idleTick)
	defer t.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case now := <-t.C:
			for _, s := range m.supervisors() {
				s.idleCheck(now)
			}
		}
	}
}

// idleCheck notes whether the app got traffic since the last look and,
// when it got none for its idle_timeout, queues its sleep. It takes no
// lock.
func (s *Supervisor) idleCheck(now time.Time) {
	if s.pool.used.Load() && s.pool.used.Swap(false) {
		s.lastUsed.Store(now.UnixNano())
	}
	idle := time.Duration(s.idleAfter.Load())
	if idle <= 0 || s.asleep.Load() || now.Sub(time.Unix(0, s.lastUsed.Load())) < idle {
		return
	}
	if s.sleepQueued.CompareAndSwap(false, true) {
		s.queue(func() {
			s.sleepQueued.Store(false)
			s.fallAsleep()
		})
	}
}

// noteUsed counts now as the app's last use: an idle time counts from the
// end of a wake or of a deployment, not from before it.
func (s *Supervisor) noteUsed() { s.lastUsed.Store(time.Now().UnixNano()) }

// fallAsleep puts the app to sleep if it is still idle and at rest: serving,
// no deployment, hook, pause or maintenance, and no request in flight to
// its web containers (a long poll or a WebSocket counts as use).
func (s *Supervisor) fallAsleep() {
	s.lock()
	defer s.unlock()
	idle := s.desired.IdleTimeout
	if idle <= 0 || s.rec.Idle != nil || s.pool.used.Load() ||
		time.Since(time.Unix(0, s.lastUsed.Load())) < idle {
		return
	}
	if !s.adopted || s.removed || s.orphan || s.rollout != nil || s.rec.Canary != nil || s.hook != nil || s.coldRetry != nil ||
		s.rec.Pause != nil || s.rec.Maintenance != nil || s.serving == nil || s.serving.spec == nil {
		return
	}
	if p, ok := s.serving.spec.Process(WebProcess); !ok || p.Count == 0 {
		return
	}
	for _, c := range s.fleet.readyWeb() {
		if s.deps.InFlight != nil && s.deps.InFlight(c.Addr) > 0 {
			return
		}
	}
	prev := s.rec.clone()
	s.rec.Idle = &IdleRecord{Since: time.Now()}
	if err := s.keepLocked(prev); err != nil {
		return // logged; the next tick tries again
	}
	s.asleep.Store(true)
	s.applyGateLocked()
	s.log.Info("app idle: its web containers stop until the next request", zap.Duration("idle_timeout", idle))
	s.reconcileLocked()
	s.poke()
}

// wakeOnRequest wakes the app on a request its gate holds.
func (s *Supervisor) wakeOnRequest() {
	s.lock()
	defer s.poke()
	defer s.unlock()
	s.wakeLocked("request")
	s.reconcileLocked()
}

// sleepingLocked reports whether the app sleeps and no wake is on its way.
// Its record says it sleeps until a wake has ended: a restart in the middle
// of a wake finds it asleep, gate up, and the next request wakes it again.
func (s *Supervisor) sleepingLocked() bool { return s.rec.Idle != nil && s.waking == nil }

// wakeLocked wakes the app if it sleeps: its web containers boot at the
// next reconcile; the gate stays up, and the record says it sleeps, until
// one of them is ready (see wokenLocked).
func (s *Supervisor) wakeLocked(trigger string) {
	if !s.sleepingLocked() {
		return
	}
	s.waking = &waking{since: time.Now(), trigger: trigger}
	s.asleep.Store(false)
	s.resetProcsLocked([]string{WebProcess})
	s.applyGateLocked()
	s.log.Info("app waking up", zap.String("trigger", trigger))
}

// wokenLocked ends a wake once the pool has a web container: the gate
// lifts, and the requests it held go on. It runs at every unlock, after
// the pool was published.
func (s *Supervisor) wokenLocked() {
	w := s.waking
	if w == nil {
		return
	}
	if p := s.pool.Load(); (p == nil || len(p.Addrs) == 0) && s.wantsWebLocked() {
		return
	}
	s.waking = nil
	s.rec.Idle = nil
	_ = s.saveRecordLocked() // logged; a restart finds it asleep, and wakes it again at a request
	took := time.Since(w.since)
	s.lastWake = &WakeStatus{At: time.Now(), Trigger: w.trigger, ColdStart: took.Round(time.Millisecond).String(), ColdStartMS: took.Milliseconds()}
	s.noteUsed()
	s.applyGateLocked()
	if obs := s.deps.ObserveWake; obs != nil {
		obs(s.name, w.trigger, took)
	}
	s.log.Info("app awake", zap.String("trigger", w.trigger), zap.Duration("cold_start", took))
}

// wantsWebLocked reports whether the serving release runs web containers
// (or it is not known yet): a wake waits for one, unless web was scaled to
// zero.
func (s *Supervisor) wantsWebLocked() bool {
	if s.serving == nil || s.serving.spec == nil {
		return true
	}
	p, ok := s.serving.spec.Process(WebProcess)
	return ok && p.Count > 0
}

// wakeFailedLocked puts an app back to sleep when its wake gave up (its
// web containers could not boot within restart_attempts): the requests it
// holds, and the next ones, wake it again, and a wake starts its retries
// over. Without this the app would hold every request for boot_timeout
// and answer 503 until an operator stepped in.
func (s *Supervisor) wakeFailedLocked() {
	w := s.waking
	if w == nil {
		return
	}
	if r := s.rollout; r != nil && r.kind != KindRestart && r.kind != KindCanary {
		return // a new release on its way ends the wake at its switch
	}
	s.waking = nil
	s.asleep.Store(true)
	s.applyGateLocked()
	s.log.Warn("the wake gave up: the app sleeps again, and the next request wakes it again")
}

// wakeGate is the gate of an app asleep or waking: requests wait up to
// boot_timeout; the first one wakes the app.
func (s *Supervisor) wakeGate() *Gate {
	g := &Gate{Waking: true, Timeout: s.desired.BootTimeout, RetryAfter: wakeRetryAfter}
	if s.sleepingLocked() {
		g.Since = s.rec.Idle.Since
		g.wake = func() { s.queue(s.wakeOnRequest) }
	} else if s.waking != nil {
		g.Since = s.waking.since
	}
	return g
}

// idleStatusLocked returns the app's idle status, or nil while it is
// awake.
func (s *Supervisor) idleStatusLocked() *IdleStatus {
	if s.rec.Idle == nil {
		return nil
	}
	return &IdleStatus{Since: s.rec.Idle.Since, Waking: s.waking != nil, Held: s.pool.Held()}
}
