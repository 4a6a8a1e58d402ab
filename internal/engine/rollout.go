package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"
)

// rollout is a deployment in progress: a new release (deploy, rollback)
// or new containers of the serving release (restart). It reads as
//
//	boot all → run the hook → switch → retire
//
// and every step but the switch runs in the rollout's own task, never on
// the supervisor's loop.
type rollout struct {
	e    *logEntry
	kind string
	spec AppSpec
	// id and release are e.d's, kept here to be read without the lock.
	id      int64
	release string
	// process and container narrow a restart.
	process, container string

	ctx    context.Context
	cancel context.CancelFunc
	// reason says why the rollout was aborted, and booted holds the
	// containers it booted (e.fresh holds failed attempts too); both
	// guarded by the lock.
	reason string
	booted []*Container
	// err is why it was abandoned, once it was.
	err error
	// rules are a canary's (KindCanary).
	rules CanaryRules
	// promotes is the canary release a promotion deploys, and undo the
	// overrides before it: a canary that ends before the switch aborts
	// the promotion and takes its override back.
	promotes string
	undo     *Overrides
}

// errAborted is a rollout cancelled by the supervisor (a newer
// deployment, a removal, the process exiting); its reason is r.reason.
var errAborted = errors.New("aborted")

// abort cancels r, with the supervisor's lock held.
func (r *rollout) abort(reason string) {
	if r.reason == "" {
		r.reason = reason
	}
	r.cancel()
}

// liveIDs returns the IDs of the containers of cs not stopped yet.
func liveIDs(cs []*Container) []string {
	var ids []string
	for _, c := range cs {
		if c.state != StateStopped {
			ids = append(ids, c.ID)
		}
	}
	return ids
}

// startRolloutLocked starts a deployment of spec and returns its record. A
// deployment of a new release replaces any other in progress; the release
// it deploys is recorded as deploying before any of its containers exists,
// so that a crash from here on starts it over and never adopts it. When
// that record cannot be written, nothing starts (the deployment in
// progress goes on) and it returns a *RecordError.
func (s *Supervisor) startRolloutLocked(kind string, spec AppSpec, process, container, trigger string) (*logEntry, error) {
	if kind != KindRestart && kind != KindCanary {
		prev := s.rec.clone()
		if r := s.rollout; r != nil {
			// The deployment it replaces is no longer recorded as on its
			// way: its containers are recorded as retiring instead.
			s.rec.Retiring = mergeIDs(s.pruneRetiringLocked(), liveIDs(r.e.fresh))
		}
		s.rec.Deploying = &DeployingRecord{Release: spec.ReleaseID(), Deployment: s.log_.nextID + 1, StartedAt: time.Now()}
		if err := s.saveRecordLocked(); err != nil {
			s.rec = prev
			return nil, err
		}
		s.lastTried, s.missingImage = spec.ReleaseID(), ""
		s.wakeLocked(kind)
	}
	s.noteUsed()
	if r := s.rollout; r != nil {
		r.abort("replaced by a newer deployment")
	}
	e := s.log_.add(Deployment{
		Kind: kind, Release: spec.ReleaseID(), Image: spec.Image, ImageID: spec.ImageID,
		Process: process, Container: container, Trigger: trigger,
	})
	e.fresh = []*Container{}
	ctx, cancel := context.WithCancel(s.ctx)
	r := &rollout{e: e, kind: kind, spec: spec, id: e.d.ID, release: e.d.Release, process: process, container: container, ctx: ctx, cancel: cancel}
	s.rollout = r
	s.saveHistoryLocked()
	s.touch()
	s.log.Info("deployment started", deploymentFields(&e.d)...)
	s.spawn(func() { s.runRollout(r) })
	return e, nil
}

// notStartedLocked records a deployment of spec that could not start
// because its record could not be written: it ends at once with
// start-error and the reason, and is not tried again until something
// changes.
func (s *Supervisor) notStartedLocked(kind string, spec AppSpec, trigger string, err error) {
	e := s.log_.add(Deployment{Kind: kind, Release: spec.ReleaseID(), Image: spec.Image, Trigger: trigger})
	s.lastTried = e.d.Release
	s.endLocked(e, StatusStartError, "not started: "+err.Error())
}

func deploymentFields(d *Deployment) []zap.Field {
	fields := []zap.Field{zap.Int64("deployment", d.ID), zap.String("kind", d.Kind),
		zap.String("release", d.Release), zap.String("image", d.Image)}
	if d.Process != "" {
		fields = append(fields, zap.String("process", d.Process))
	}
	if d.Container != "" {
		fields = append(fields, zap.String("container", d.Container))
	}
	if d.Trigger != "" {
		fields = append(fields, zap.String("trigger", d.Trigger))
	}
	if d.Status.Ended() {
		fields = append(fields, zap.String("status", string(d.Status)), zap.Duration("duration", d.EndedAt.Sub(d.StartedAt)))
		if d.Error != "" {
			fields = append(fields, zap.String("error", d.Error))
		}
	}
	return fields
}

// runRollout is a rollout from start to end. A deployment of a new release
// that arrives while a postdeploy hook runs waits for the hook's end before
// it boots anything (see hook.go).
func (s *Supervisor) runRollout(r *rollout) {
	var err error
	if r.kind != KindRestart && r.kind != KindCanary {
		_, err = s.waitForHook(r, false)
	}
	if err == nil {
		err = s.pinImage(r)
	}
	if err == nil {
		err = s.bootAll(r)
	}
	if err == nil && r.kind != KindRestart && r.kind != KindCanary && len(r.spec.Postdeploy) > 0 {
		err = s.runHook(r)
	}
	s.lock()
	defer s.poke()
	defer s.unlock()
	switch {
	case err != nil:
	case r.kind == KindCanary:
		err = s.canaryLiveLocked(r)
	default:
		err = s.switchLocked(r)
	}
	if err != nil {
		s.abandonLocked(r, err)
	}
}

// jobs returns the process type of every container r boots.
func (r *rollout) jobs() []ProcessSpec {
	var jobs []ProcessSpec
	for _, p := range r.spec.Processes {
		n := p.Count
		switch {
		case r.container != "":
			n = 0
			if p.Name == r.process {
				n = 1
			}
		case r.process != "" && p.Name != r.process:
			n = 0
		}
		for range n {
			jobs = append(jobs, p)
		}
	}
	return jobs
}

// bootAll boots every container of r, maxBoots at a time. A deployment
// boots each once and fails at the first failure; a restart retries each
// up to restart_attempts times. It returns nil once all are booted.
func (s *Supervisor) bootAll(r *rollout) error {
	attempts := 1
	if r.kind == KindRestart {
		attempts = r.spec.RestartAttempts + 1
	}
	ctx, cancel := context.WithCancel(r.ctx)
	defer cancel()
	slots := make(chan struct{}, maxBoots)
	var (
		once    sync.Once
		failure error
	)
	each(ctx, slots, r.jobs(), func(_ int, p ProcessSpec) {
		if err := s.bootRetry(ctx, r, p, attempts); err != nil {
			once.Do(func() { failure = err; cancel() })
		}
	})
	if r.ctx.Err() != nil {
		return errAborted
	}
	return failure
}

// bootRetry boots one container of p for r, trying up to attempts times
// with backoff between tries. A runtime that is away is waited for without
// counting an attempt.
func (s *Supervisor) bootRetry(ctx context.Context, r *rollout, p ProcessSpec, attempts int) error {
	b := newBackoff(retryBase, retryMax)
	wait := newBackoff(time.Second, runtimeWaitMax)
	for attempt := 1; ; attempt++ {
		c, err := s.boot(ctx, r.spec, p, r.release, r, nil)
		if err == nil {
			return nil
		}
		if c != nil {
			s.lock()
			s.discardLocked(c)
			s.unlock()
		}
		var be *bootError
		var delay time.Duration
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, ErrUnavailable):
			s.setRuntimeErr(err)
			attempt--
			delay = wait.NextBackOff()
		case !errors.As(err, &be):
			return err
		case attempt >= attempts:
			return err
		default:
			delay = b.NextBackOff()
			s.log.Warn("container failed to boot, retrying", zap.String("process", p.Name),
				zap.Int("attempt", attempt), zap.Int("attempts", attempts), zap.Duration("delay", delay), zap.Error(err))
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// switchLocked puts r's containers in service in one step, if r was not
// aborted and every one of them is still booted: what they replace leaves
// the pool at the same unlock, and a new release is recorded as serving
// before any old container is touched.
func (s *Supervisor) switchLocked(r *rollout) error {
	if r.ctx.Err() != nil {
		return errAborted
	}
	for _, c := range r.booted {
		if c.state != StateBooted {
			return &bootError{StatusCrashedError, fmt.Sprintf("%s container %s exited after it booted, before the switch", c.Process, c.Name)}
		}
	}
	fresh := r.booted
	old := s.replacedLocked(r)
	// The canary in service, if any: recordServingLocked drops it from
	// the record, and the switch ends it below.
	ended := s.rec.Canary
	now := time.Now()
	if r.kind != KindRestart {
		if err := s.recordServingLocked(r, old, now); err != nil {
			// Nothing switched: the old release keeps serving, and the
			// record still says it serves.
			return fmt.Errorf("the switch was not made: %w", err)
		}
	}
	for _, c := range fresh {
		c.owner = 0
		s.fleet.setState(c, StateReady, "switched in")
	}
	e := r.e
	if r.kind == KindRestart {
		// A new release recorded its old containers with the serving
		// release above; a restart's are recorded here, in one write,
		// before any of them drains.
		s.recordRetiringLocked(old)
	}
	for _, c := range old {
		if c.state == StateReady {
			e.old = append(e.old, c)
			s.retireLocked(c, e, "switched out")
		} else {
			s.discardLocked(c)
		}
	}
	if c := ended; c != nil && r.kind != KindRestart {
		// Its containers were switched out with the old release's.
		why := fmt.Sprintf("replaced by deployment %d of release %s", e.d.ID, e.d.Release)
		if e.d.Release == c.Release {
			why = fmt.Sprintf("promoted by deployment %d", e.d.ID)
		}
		s.endCanaryLocked(c, why)
	}
	if r.kind != KindRestart {
		spec := r.spec
		if s.desired.ReleaseID() == e.d.Release {
			spec = s.desired // counts may have changed while it booted
		}
		s.serving = &serving{
			ReleaseInfo: ReleaseInfo{ID: e.d.Release, Image: spec.Image, ImageID: spec.ImageID, Status: StatusSuccess, DeployedAt: now, Deployment: e.d.ID},
			spec:        &spec,
		}
		s.resetProcsLocked(nil)
		s.fleet.markPoolDirty()
	} else {
		s.resetProcsLocked([]string{r.process})
	}
	for _, c := range fresh {
		e.d.LastReadyAt = later(e.d.LastReadyAt, c.entered(StateBooted))
	}
	e.d.SwitchedAt = now
	if s.rollout == r {
		s.rollout = nil
	}
	s.endLocked(e, StatusSuccess, "")
	s.log.Info("traffic switched", zap.Int64("deployment", e.d.ID), zap.String("release", e.d.Release),
		zap.Duration("switch_latency", now.Sub(e.d.LastReadyAt)), zap.Int("retiring", len(old)))
	return nil
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// replacedLocked returns the containers r's switch takes out of service:
// for a new release, every container of the serving set; for a restart,
// the ready ones it names.
func (s *Supervisor) replacedLocked(r *rollout) []*Container {
	var old []*Container
	for c := range s.fleet.all() {
		if c.owner != 0 || !c.state.live() {
			continue
		}
		if r.kind == KindRestart {
			if c.state != StateReady || c.Release != r.release ||
				(r.process != "" && c.Process != r.process) || (r.container != "" && c.ID != r.container) {
				continue
			}
		}
		old = append(old, c)
	}
	slices.SortFunc(old, byStart)
	return old
}

// recordServingLocked writes that r's release serves, before anything
// else of the switch happens. When that cannot be written, the record is
// left as it was and it returns a *RecordError.
func (s *Supervisor) recordServingLocked(r *rollout, old []*Container, now time.Time) error {
	prev := s.rec.clone()
	rel := ReleaseRecord{ID: r.release, Spec: r.spec.record(), DeployedAt: now, Deployment: r.id}
	s.rec.Serving = &rel
	s.rec.Canary = nil // a new release ends the canary
	if d := s.rec.Deploying; d != nil && d.Deployment == r.id {
		s.rec.Deploying = nil
	}
	s.rec.Releases = slices.DeleteFunc(s.rec.Releases, func(x ReleaseRecord) bool { return x.ID == rel.ID })
	s.rec.Releases = append(s.rec.Releases, rel)
	if n := len(s.rec.Releases); n > releasesKept {
		s.rec.Releases = slices.Delete(s.rec.Releases, 0, n-releasesKept)
	}
	ids := make([]string, 0, len(old))
	for _, c := range old {
		ids = append(ids, c.ID)
	}
	s.rec.Retiring = mergeIDs(s.pruneRetiringLocked(), ids)
	if err := s.saveRecordLocked(); err != nil {
		s.rec = prev
		return err
	}
	return nil
}

// pruneRetiringLocked returns the retiring IDs still known.
func (s *Supervisor) pruneRetiringLocked() []string {
	return slices.DeleteFunc(slices.Clone(s.rec.Retiring), func(id string) bool { return s.fleet.get(id) == nil })
}

// abandonLocked ends r without a switch: what served keeps serving, and
// r's containers are discarded (SIGTERM, stop_timeout, removal); the
// deployment gets its final status once they are gone, so that a status
// that says it failed means its containers are gone too. Another
// deployment may start meanwhile.
func (s *Supervisor) abandonLocked(r *rollout, err error) {
	for _, c := range r.e.fresh {
		c.abandoned = r
		s.discardLocked(c)
	}
	if s.rollout == r {
		s.rollout = nil
	}
	if s.waking != nil && s.proc(WebProcess).gaveUp {
		// The wake it carried failed meanwhile: asleep again.
		s.wakeFailedLocked()
	}
	// Its containers take up to stop_timeout to go: until they are gone
	// they are recorded as retiring, so that a crash meanwhile never
	// adopts them. At exit the record keeps the deployment as on its way:
	// the next start begins it again.
	s.rec.Retiring = mergeIDs(s.pruneRetiringLocked(), liveIDs(r.e.fresh))
	if d := s.rec.Deploying; d != nil && d.Deployment == r.id && s.ctx.Err() == nil {
		s.rec.Deploying = nil
	}
	s.saveRecordLocked()
	r.err = err
	s.abandoned[r] = true
	s.discardedLocked(r)
}

// discardedLocked ends abandoned rollout r once none of its containers is
// left.
func (s *Supervisor) discardedLocked(r *rollout) {
	if !s.abandoned[r] || slices.ContainsFunc(r.e.fresh, func(c *Container) bool { return c.state != StateStopped }) {
		return
	}
	delete(s.abandoned, r)
	s.endAbandonedLocked(r, r.err)
}

// endAbandonedLocked gives abandoned rollout r its final status.
func (s *Supervisor) endAbandonedLocked(r *rollout, err error) {
	var be *bootError
	switch {
	case errors.As(err, &be):
		s.endLocked(r.e, be.status, be.msg)
		if r.kind == KindRestart {
			s.emit(Event{Name: EventGaveUp, Process: r.process, Container: r.container,
				Message: fmt.Sprintf("restart gave up after %d attempts: %s", r.spec.RestartAttempts+1, be.msg),
				Output:  lastOutput(r.e.fresh)})
		}
	case errors.Is(err, errAborted) || errors.Is(err, context.Canceled):
		reason := r.reason
		if reason == "" {
			reason = "podswitch is shutting down"
		}
		s.endLocked(r.e, StatusAborted, reason)
	default:
		s.endLocked(r.e, StatusStartError, err.Error())
	}
}

// lastOutput returns the output kept of the last container of cs that has
// some.
func lastOutput(cs []*Container) []string {
	for i := len(cs) - 1; i >= 0; i-- {
		if len(cs[i].output) > 0 {
			return slices.Clone(cs[i].output)
		}
	}
	return nil
}
