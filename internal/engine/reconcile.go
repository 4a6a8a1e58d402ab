package engine

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cenkalti/backoff/v5"
	"go.uber.org/zap"
)

// Retry policy of restarts, scale-ups and crash replacements: exponential
// backoff from retryBase, doubling, capped at retryMax, each delay spread by
// ±retryJitter so that many apps failing together do not retry in step.
var (
	retryBase   = time.Second
	retryMax    = time.Minute
	retryJitter = 0.5
)

func newBackoff(base, maxDelay time.Duration) *backoff.ExponentialBackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = base
	b.MaxInterval = maxDelay
	b.Multiplier = 2
	b.RandomizationFactor = retryJitter
	b.Reset()
	return b
}

// procState is the reconciliation of one process type of the serving
// release: its retries, their backoff and its boots in flight. Each process
// type has its own, so that one type's retries never hold back another's:
// a web container that crashes is replaced at once whatever else retries.
// Guarded by the supervisor's lock.
type procState struct {
	// failures counts failed boots in a row, crashes the crashes of
	// containers that had served less than stableAfter (a crash loop);
	// retryAt is when the next boot may start.
	failures     int
	crashes      int
	retryAt      time.Time
	timer        *time.Timer
	timerAt      time.Time
	backoff      *backoff.ExponentialBackOff
	crashBackoff *backoff.ExponentialBackOff
	// gaveUp is set once the retries passed restart_attempts: no more
	// boots until a new release, a config change, a restart or a scale.
	gaveUp bool
	// pending counts boots whose container is not created yet; cancels
	// ends every boot in flight.
	pending int
	cancels map[*int]context.CancelFunc
}

func (s *Supervisor) proc(name string) *procState {
	ps := s.procs[name]
	if ps == nil {
		ps = &procState{
			backoff:      newBackoff(retryBase, retryMax),
			crashBackoff: newBackoff(retryBase, retryMax),
			cancels:      map[*int]context.CancelFunc{},
		}
		s.procs[name] = ps
	}
	return ps
}

// resetProcsLocked forgets the retries of the process types named (all
// when names is nil) and ends their boots in flight: a new release, a
// config change, a restart or a scale starts them over.
func (s *Supervisor) resetProcsLocked(names []string) {
	for name, ps := range s.procs {
		if names != nil && !slices.Contains(names, name) {
			continue
		}
		if names == nil {
			for _, cancel := range ps.cancels {
				cancel()
			}
		}
		if ps.timer != nil {
			ps.timer.Stop()
		}
		if names == nil {
			delete(s.procs, name)
			continue
		}
		ps.failures, ps.crashes, ps.retryAt, ps.gaveUp, ps.timer = 0, 0, time.Time{}, false, nil
		ps.backoff.Reset()
		ps.crashBackoff.Reset()
	}
}

// reconcileLocked compares what runs with what is desired and starts what
// brings them closer. It never waits.
func (s *Supervisor) reconcileLocked() {
	if s.removed {
		s.removeStepLocked()
		return
	}
	if !s.adopted || s.ctx.Err() != nil {
		return
	}
	if s.sleepingLocked() && s.desired.IdleTimeout <= 0 && !s.proc(WebProcess).gaveUp {
		s.wakeLocked("config")
	}
	want := s.desired.ReleaseID()
	if (s.serving == nil || s.serving.ID != want) && s.lastTried != want {
		trigger := s.trigger()
		if _, err := s.startRolloutLocked(KindDeploy, s.desired, "", "", trigger); err != nil {
			s.notStartedLocked(KindDeploy, s.desired, trigger, err)
		}
	}
	if r := s.rollout; r != nil && r.kind != KindRestart && r.kind != KindCanary && r.release != want && s.serving != nil && s.serving.ID == want {
		// Back to what serves: the deployment on its way is not wanted.
		r.abort("replaced by a newer deployment: the desired release is the serving one again")
		s.lastTried = want
	}
	if s.serving == nil || s.serving.spec == nil {
		return
	}
	spec := s.servingSpecLocked()
	for _, p := range spec.Processes {
		s.reconcileProcessLocked(spec, p)
	}
	// Containers of process types the serving release does not have.
	for c := range s.fleet.all() {
		if c.owner == 0 && c.state.live() {
			if _, ok := spec.Process(c.Process); !ok {
				s.retireLocked(c, nil, "its process type was removed")
			}
		}
	}
}

// trigger says what the next deployment of a new release answers to.
func (s *Supervisor) trigger() string {
	if s.resumed {
		s.resumed = false
		return "start"
	}
	if s.rec.Overrides.Image != nil || s.rec.Overrides.Release != nil {
		return "api"
	}
	return "config"
}

// servingSpecLocked returns what the serving release runs, at its counts,
// with the settings (timeouts, retries, readiness) the app desires now.
func (s *Supervisor) servingSpecLocked() AppSpec {
	spec := *s.serving.spec
	d := s.desired
	spec.BootTimeout, spec.StopTimeout, spec.DrainTimeout = d.BootTimeout, d.StopTimeout, d.DrainTimeout
	spec.RestartAttempts, spec.WorkerReadyTime, spec.HookTimeout = d.RestartAttempts, d.WorkerReadyTime, d.HookTimeout
	spec.ReadyPath, spec.ReadyStatus, spec.UnhealthyTimeout = d.ReadyPath, d.ReadyStatus, d.UnhealthyTimeout
	spec.IdleTimeout = d.IdleTimeout
	if s.sleepingLocked() {
		// Asleep: no web container runs until the next request.
		spec.Processes = slices.Clone(spec.Processes)
		for i, p := range spec.Processes {
			if p.Name == WebProcess {
				spec.Processes[i].Count = 0
			}
		}
	}
	return spec
}

// reconcileProcessLocked brings process type p of the serving release to
// its count: surplus containers retire (see surplusOrder), missing ones
// boot (as many at a time as maxBoots allows),
// unless the type is waiting for its next retry or gave up.
func (s *Supervisor) reconcileProcessLocked(spec AppSpec, p ProcessSpec) {
	ps := s.proc(p.Name)
	var live []*Container
	ready := 0
	for c := range s.fleet.all() {
		if !c.replacing && c.owner == 0 && c.Process == p.Name && c.Release == s.serving.ID && c.state == StateReady {
			if why := s.misplacedLocked(c); why != "" {
				// Replaced new-first: it stops counting, a replacement
				// boots elsewhere, and it is retired once that serves.
				c.replacing = true
				s.log.Warn("replacing a container: "+why, zap.String("container", shortID(c.ID)), zap.String("process", c.Process), zap.String("host", HostOf(c.ID)))
			}
		}
		// An unhealthy container waiting for its replacement does not
		// count: it is retired once the type has its count ready.
		if c.owner == 0 && c.Process == p.Name && c.Release == s.serving.ID && c.state.live() && !c.replacing {
			live = append(live, c)
			if c.state == StateReady {
				ready++
			}
		}
	}
	s.retireReplacedLocked(p.Name, ready, p.Count)
	if n := len(live) - p.Count; n > 0 {
		slices.SortFunc(live, s.surplusOrder)
		cut := s.surplus(live, n)
		// Recorded as retiring in one write before any of them stops.
		s.recordRetiringLocked(cut)
		why := "scaled down"
		if p.Name == WebProcess && s.sleepingLocked() {
			why = "the app is idle"
		}
		for _, c := range cut {
			s.retireLocked(c, nil, why)
		}
		return
	}
	missing := p.Count - len(live) - ps.pending
	if missing <= 0 && ready == p.Count && ps.pending == 0 {
		s.rebalanceLocked(p.Name, live)
	}
	if missing <= 0 || ps.gaveUp {
		return
	}
	if wait := time.Until(ps.retryAt); wait > 0 {
		if ps.timer != nil && ps.timerAt.After(ps.retryAt) {
			ps.timer.Stop() // the next try moved earlier
			ps.timer = nil
		}
		if ps.timer == nil {
			ps.timerAt = ps.retryAt
			ps.timer = time.AfterFunc(wait, func() {
				s.lock()
				ps.timer = nil
				s.unlock()
				s.poke()
			})
		}
		return
	}
	for range min(missing, maxBoots-len(ps.cancels)) {
		s.startBootLocked(spec, p, ps)
	}
}

// startBootLocked boots one container of process type p of the serving
// release, as a task; it joins the serving set (and the pool) once ready.
func (s *Supervisor) startBootLocked(spec AppSpec, p ProcessSpec, ps *procState) {
	ctx, cancel := context.WithCancel(s.ctx)
	key := new(int)
	ps.cancels[key] = cancel
	ps.pending++
	release := s.serving.ID
	s.spawn(func() {
		defer cancel()
		c, err := s.boot(ctx, spec, p, release, nil, func() {
			ps.pending-- // the container is recorded: it counts as live
		})
		s.lock()
		defer s.poke()
		defer s.unlock()
		delete(ps.cancels, key)
		if c == nil {
			ps.pending--
		}
		if err != nil {
			s.bootFailedLocked(spec, p, ps, c, err)
			return
		}
		if s.serving == nil || s.serving.ID != release || c.state != StateBooted {
			s.retireLocked(c, nil, "no longer wanted")
			return
		}
		s.fleet.setState(c, StateReady, "")
		ps.failures, ps.retryAt = 0, time.Time{}
		ps.backoff.Reset()
	})
}

// bootFailedLocked handles a failed boot of a serving-set container: a
// runtime that is away is waited for without counting a failure; a
// failure of the app counts toward restart_attempts, after which the
// process type gives up and users are told.
func (s *Supervisor) bootFailedLocked(spec AppSpec, p ProcessSpec, ps *procState, c *Container, err error) {
	if c != nil {
		s.discardLocked(c)
	}
	var be *bootError
	switch {
	case errors.As(err, &be):
	case errors.Is(err, ErrUnavailable):
		ps.retryAt = time.Now().Add(ps.backoff.NextBackOff())
		return
	default:
		return // cancelled: the loop looks again
	}
	s.failedLocked(spec, p.Name, ps, be.msg, c)
}

// failedLocked counts one failed boot of process type name and sets when
// it is tried again, or gives up.
func (s *Supervisor) failedLocked(spec AppSpec, name string, ps *procState, msg string, c *Container) {
	if time.Now().Before(ps.retryAt) {
		// A sibling boot of the same round failed first and set the next
		// try: one failure per round, or parallel boots would use up
		// restart_attempts at once.
		return
	}
	ps.failures++
	s.backoffLocked(spec, name, ps, ps.failures, ps.backoff, msg, c)
}

// crashedInLoopLocked counts the crash of serving container c: the first
// crash of a process type is replaced at once; each crash that follows
// soon after is a retry, with backoff, up to restart_attempts.
func (s *Supervisor) crashedInLoopLocked(spec AppSpec, c *Container, ps *procState, msg string) {
	ps.crashes++
	if ps.crashes == 1 {
		// A new incident: replaced at once, even if the type had given up
		// (a scale-up that could not boot must not stop the replacement
		// of the containers that did).
		ps.retryAt, ps.gaveUp, ps.failures = time.Time{}, false, 0
		ps.backoff.Reset()
		return
	}
	s.backoffLocked(spec, c.Process, ps, ps.crashes-1, ps.crashBackoff, msg, c)
}

// backoffLocked sets when process type name is tried again after its
// retry n, or gives up when n passed restart_attempts.
func (s *Supervisor) backoffLocked(spec AppSpec, name string, ps *procState, n int, b *backoff.ExponentialBackOff, msg string, c *Container) {
	if n > spec.RestartAttempts {
		if !ps.gaveUp {
			ps.gaveUp = true
			if name == WebProcess {
				defer s.wakeFailedLocked()
			}
			full := fmt.Sprintf("%s container could not be started after %d attempts: %s", name, n, msg)
			s.log.Error("gave up starting a container", zap.String("process", name), zap.String("error", full))
			ev := Event{Name: EventGaveUp, Process: name, Message: full}
			if c != nil {
				ev.Container, ev.Output = c.ID, c.output
			}
			s.emit(ev)
			s.touch()
		}
		return
	}
	delay := b.NextBackOff()
	ps.retryAt = time.Now().Add(delay)
	s.log.Warn("container failed, retrying", zap.String("process", name),
		zap.Int("attempt", n), zap.Int("attempts", spec.RestartAttempts+1),
		zap.Duration("delay", delay), zap.String("error", msg))
}

// removeStepLocked drains and stops every container of a removed app and
// notes when none is left.
func (s *Supervisor) removeStepLocked() {
	if r := s.rollout; r != nil {
		r.abort("the app was removed from the config")
	}
	s.endCanaryLocked(s.rec.Canary, "the app was removed from the config")
	s.resetProcsLocked(nil) // ends the boots in flight
	var going []*Container
	for c := range s.fleet.all() {
		if c.state == StateReady || (c.owner == 0 && (c.state == StateStarting || c.state == StateBooted)) {
			going = append(going, c)
		}
	}
	s.recordRetiringLocked(going) // one write before any of them stops
	for c := range s.fleet.all() {
		switch {
		case c.state == StateReady:
			s.retireLocked(c, nil, "the app was removed from the config")
		case c.state == StateStarting || c.state == StateBooted:
			if c.owner == 0 {
				s.discardLocked(c)
			}
		}
	}
	if s.serving != nil {
		s.serving = nil
		s.fleet.markPoolDirty()
	}
	// Done once nothing is left, being created (a create in flight makes
	// a container that must be removed too) or abandoned.
	if s.fleet.empty() && len(s.abandoned) == 0 && s.rollout == nil && !s.stopped {
		s.stopped = true
		if s.deps.Store != nil {
			if err := s.deps.Store.Archive(s.name); err != nil {
				s.log.Error("moving the app record aside", zap.Error(err))
			}
		}
		s.log.Info("app removed")
	}
}

// surplus returns the n containers of live (in surplusOrder) that a scale
// down cuts: the first n, or with several hosts, each from the host that
// has the most of them then, so that the type stays spread.
func (s *Supervisor) surplus(live []*Container, n int) []*Container {
	if s.deps.Hosts == nil || s.deps.Hosts.Len() == 0 {
		return live[:n]
	}
	left := slices.Clone(live)
	count := map[string]int{}
	for _, c := range left {
		count[HostOf(c.ID)]++
	}
	var cut []*Container
	for range n {
		best := -1
		for i, c := range left {
			if best < 0 || count[HostOf(c.ID)] > count[HostOf(left[best].ID)] {
				best = i
			}
		}
		c := left[best]
		cut = append(cut, c)
		count[HostOf(c.ID)]--
		left = slices.Delete(left, best, best+1)
	}
	return cut
}

// rebalanceLocked moves one container of process type name, all of whose
// containers (live) are ready, from the host that has the most of them to
// the one that has the fewest, when they differ by more than one: after a
// host came back, or joined, the type is spread again, one container at a
// time and new-first (the one moved stops counting, a replacement boots
// where placement puts it, and it is retired once that serves).
func (s *Supervisor) rebalanceLocked(name string, live []*Container) {
	hs := s.deps.Hosts
	if hs == nil || hs.Len() == 0 || s.serving == nil || s.rollout != nil || s.sleepingLocked() {
		return
	}
	for c := range s.fleet.all() {
		if c.replacing && c.Process == name {
			return // one move at a time
		}
	}
	hosts := s.desired.Hosts
	if len(hosts) == 0 {
		hosts = hs.Names()
	}
	count := map[string]int{}
	for _, h := range hosts {
		if !hs.Placeable(h) || s.fleet.noImage[s.serving.ID][h] {
			return // a host that cannot take one now: wait
		}
		count[h] = 0
	}
	for _, c := range live {
		if _, ok := count[HostOf(c.ID)]; ok {
			count[HostOf(c.ID)]++
		}
	}
	most, fewest := "", ""
	for _, h := range hosts {
		if most == "" || count[h] > count[most] {
			most = h
		}
		if fewest == "" || count[h] < count[fewest] {
			fewest = h
		}
	}
	if count[most]-count[fewest] <= 1 {
		return
	}
	var pick *Container
	for _, c := range live {
		if HostOf(c.ID) == most && (pick == nil || byStart(c, pick) < 0) {
			pick = c
		}
	}
	pick.replacing = true
	s.log.Info("moving a container to spread its type over the hosts again", zap.String("container", shortID(pick.ID)),
		zap.String("process", name), zap.String("from", most), zap.String("to", fewest))
	s.poke()
}

// surplusOrder orders the containers of a process type in the order a
// surplus is cut: those not serving yet first, then those of the oldest
// release (the order of the app record's releases; one it does not know
// counts as the oldest), then the oldest container. The newest serving
// containers, which a restart or crash replacement just brought, stay.
func (s *Supervisor) surplusOrder(a, b *Container) int {
	ar, br := a.state == StateReady, b.state == StateReady
	if ar != br {
		if ar {
			return 1
		}
		return -1
	}
	if a.Release != b.Release {
		return cmp.Compare(s.releaseAge(a.Release), s.releaseAge(b.Release))
	}
	return byStart(a, b)
}

// releaseAge is the position of release id among the releases the app
// record keeps, oldest first; -1 when it keeps none of that id.
func (s *Supervisor) releaseAge(id string) int {
	return slices.IndexFunc(s.rec.Releases, func(r ReleaseRecord) bool { return r.ID == id })
}

// byStart orders containers by when they started, oldest first.
func byStart(a, b *Container) int {
	return cmp.Or(a.entered(StateStarting).Compare(b.entered(StateStarting)), cmp.Compare(a.ID, b.ID))
}
