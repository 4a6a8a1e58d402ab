package engine

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"
)

// Errors of operations, for callers to map to answers.
var (
	// ErrNoRelease: nothing serves yet (restart).
	ErrNoRelease = errors.New("the app has no running release to restart")
	// ErrBusy: a deployment of a new release runs (restart).
	ErrBusy = errors.New("a deployment is in progress; restart once it has ended")
	// ErrNoRollback: no earlier release to go back to.
	ErrNoRollback = errors.New("no earlier release to roll back to")
	// ErrNotPaused: nothing to resume.
	ErrNotPaused = errors.New("the app is neither paused nor in maintenance")
	// ErrRemoved: the app left the config.
	ErrRemoved = errors.New("the app was removed from the config")
	// ErrStarting: the app is still taking over what a previous run left
	// (or waits for the runtime to do so).
	ErrStarting = errors.New("the app is starting: it is taking over the containers a previous run left; try again in a moment")
)

// opErrLocked returns why an operation that changes containers cannot run
// now, or nil.
func (s *Supervisor) opErrLocked() error {
	switch {
	case s.removed:
		return ErrRemoved
	case !s.adopted:
		return ErrStarting
	}
	return nil
}

// InputError is an operation refused for its input.
type InputError struct{ Msg string }

func (e *InputError) Error() string { return e.Msg }

func inputErr(format string, args ...any) error {
	return &InputError{Msg: fmt.Sprintf(format, args...)}
}

// Update sets the app's spec as the config has it. The overrides of
// operations stand unless the config brings a new value for their setting.
// A change of release deploys (and aborts a deployment of another release
// on its way); a change of counts scales; an unchanged spec touches
// nothing, except that a deployment that failed because its image was
// missing is tried again. It returns the deployment it started, if any.
func (s *Supervisor) Update(config AppSpec) *Deployment {
	s.lock()
	defer s.poke()
	defer s.unlock()
	before := s.log_.nextID
	prev := s.desired
	s.config = config
	if s.missingImage != "" && s.lastTried == s.missingImage {
		// Its image was missing: it may be there now.
		s.lastTried = ""
	}
	s.missingImage = ""
	s.refreshDesiredLocked()
	var changed []string
	counts := prev.Counts()
	for name, n := range s.desired.Counts() {
		if counts[name] != n {
			changed = append(changed, name)
		}
	}
	if len(changed) > 0 {
		s.resetProcsLocked(changed)
		if prev.ReleaseID() == s.desired.ReleaseID() {
			s.serving.setCounts(s.desired.Counts())
		}
	}
	s.reconcileLocked()
	if s.log_.nextID != before {
		if e := s.log_.find(s.log_.nextID); e != nil {
			d := e.snapshot()
			return &d
		}
	}
	return nil
}

// refreshDesiredLocked computes the desired spec from the config and the
// overrides that stand, and records overrides the config dropped.
func (s *Supervisor) refreshDesiredLocked() {
	desired, dropped := s.rec.Overrides.apply(s.config, s.resolve)
	s.desired = s.pinnedLocked(desired)
	s.idleAfter.Store(int64(s.desired.IdleTimeout))
	if v := int64(s.desired.RestCheckInterval); s.restCheck.Swap(v) != v {
		// A resting health loop waits on a timer of the old interval:
		// it looks again now.
		select {
		case s.pool.traffic <- struct{}{}:
		default:
		}
	}
	if dropped {
		s.log.Info("the config changed a setting an operation had set: the config's value applies")
		s.saveRecordLocked()
	}
	s.touch()
}

// DeployResult is what a deploy, rollback or restart started.
type DeployResult struct {
	// Deployment is the deployment it started, or nil.
	Deployment *Deployment
	// Message says why nothing was started, when that is the case.
	Message string
}

// Deploy deploys image: it becomes the app's image (an override of the
// config's, see Overrides) and a deployment of it starts, new-first. The
// image of a deployment that failed is deployed again (a retry); one that
// already serves is left alone. imageID is what image names now, resolved
// by the caller without the lock: the release runs that ID, and a tag that
// names another image than the serving release's is a new release. An
// empty imageID leaves the deployment to resolve it.
func (s *Supervisor) Deploy(image, imageID string) (DeployResult, error) {
	return s.deploy(image, imageID, "api")
}

// deploy is Deploy, its deployment answering to trigger.
func (s *Supervisor) deploy(image, imageID, trigger string) (DeployResult, error) {
	s.lock()
	defer s.poke()
	defer s.unlock()
	return s.deployLocked(image, imageID, trigger)
}

// deployLocked is deploy with the lock held.
func (s *Supervisor) deployLocked(image, imageID, trigger string) (DeployResult, error) {
	if err := s.opErrLocked(); err != nil {
		return DeployResult{}, err
	}
	if len(s.config.EnvFiles) > 0 {
		// Env files are read again at each deploy.
		env, err := s.resolve(s.config.EnvSource, s.config.EnvFiles)
		if err != nil {
			return DeployResult{}, inputErr("app %s: %v", s.name, err)
		}
		s.config.Env = env
	}
	now := time.Now()
	prev, prevTried := s.rec.clone(), s.lastTried
	ov := &s.rec.Overrides
	switch {
	case ov.Release != nil:
		r := *ov.Release
		r.Spec.Image, r.Spec.ImageID, r.Op, r.At = image, imageID, OpDeploy, now
		ov.Release = &r
	case image == s.config.Image:
		ov.Image = nil
	default:
		ov.Image = &ImageOverride{Image: image, ConfigImage: s.config.Image, Op: OpDeploy, At: now}
	}
	if imageID != "" {
		s.rec.Image = nil // resolved again: the new pin replaces it
	}
	s.refreshDesiredLocked()
	if imageID != "" {
		s.pinLocked(s.desired.ReleaseID(), imageID)
	}
	// The override and the pin are written with the deployment they
	// start, in one write: refused, they change nothing.
	want := s.desired.ReleaseID()
	if s.serving != nil && s.serving.ID == want {
		if err := s.keepLocked(prev); err != nil {
			return DeployResult{}, err
		}
		s.reconcileLocked() // ends a deployment of another release on its way
		return DeployResult{Message: fmt.Sprintf("image %s%s already serves app %s: no deployment started", image, idNote(imageID), s.name)}, nil
	}
	if r := s.rollout; r != nil && r.kind != KindRestart && r.kind != KindCanary && r.release == want {
		if err := s.keepLocked(prev); err != nil {
			return DeployResult{}, err
		}
		d := r.e.snapshot()
		return DeployResult{Deployment: &d, Message: fmt.Sprintf("a deployment of image %s is already on its way", image)}, nil
	}
	msg := ""
	if s.lastTried == want {
		s.log.Info("deploying again the release whose deployment failed", zap.String("release", want))
		for i := len(s.log_.entries) - 1; i >= 0; i-- {
			if d := s.log_.entries[i].d; d.Release == want && d.Kind != KindRestart {
				msg = fmt.Sprintf("deploying image %s again: its last deployment (%d) ended %s", image, d.ID, d.Status)
				break
			}
		}
	}
	s.lastTried = ""
	e, err := s.startRolloutLocked(KindDeploy, s.desired, "", "", trigger)
	if err != nil {
		s.rec, s.lastTried = prev, prevTried
		s.refreshDesiredLocked()
		return DeployResult{}, err
	}
	d := e.snapshot()
	return DeployResult{Deployment: &d, Message: msg}, nil
}

// idNote returns " (ID <short id>)", or nothing without an id.
func idNote(id string) string {
	if id == "" {
		return ""
	}
	return " (ID " + ShortImageID(id) + ")"
}

// Rollback deploys the release that served before the serving one (its
// image, env and commands; counts and timeouts stay), new-first. It is an
// override of the config, like a deploy.
func (s *Supervisor) Rollback() (DeployResult, error) {
	s.lock()
	defer s.poke()
	defer s.unlock()
	if err := s.opErrLocked(); err != nil {
		return DeployResult{}, err
	}
	if s.serving == nil {
		return DeployResult{}, ErrNoRollback
	}
	var target *ReleaseRecord
	for i := len(s.rec.Releases) - 1; i >= 0; i-- {
		if r := s.rec.Releases[i]; r.ID != s.serving.ID {
			target = &r
			break
		}
	}
	if target == nil {
		return DeployResult{}, ErrNoRollback
	}
	prev, prevTried := s.rec.clone(), s.lastTried
	s.rec.Overrides.Image = nil
	s.rec.Overrides.Release = nil
	if target.ID != s.pinnedLocked(s.config).ReleaseID() {
		// Back to the config's own release needs no override.
		s.rec.Overrides.Release = &ReleaseOverride{Release: target.ID, Spec: target.Spec, ConfigRelease: s.config.ReleaseID(), Op: OpRollback, At: time.Now()}
	}
	s.refreshDesiredLocked()
	if s.desired.ReleaseID() != target.ID && s.rec.Overrides.Release == nil {
		s.rec = prev
		s.refreshDesiredLocked()
		return DeployResult{}, fmt.Errorf("release %s cannot be run again: its env does not resolve any more", target.ID)
	}
	s.lastTried = ""
	// The override is written with the deployment it starts.
	e, err := s.startRolloutLocked(KindRollback, s.desired, "", "", "api")
	if err != nil {
		s.rec, s.lastTried = prev, prevTried
		s.refreshDesiredLocked()
		return DeployResult{}, err
	}
	d := e.snapshot()
	return DeployResult{Deployment: &d}, nil
}

// Scale sets how many containers of the named process types run (an
// override of the config's counts). Counts must be 0 to MaxCount, names
// process types the app has.
func (s *Supervisor) Scale(counts map[string]int) error {
	s.lock()
	defer s.poke()
	defer s.unlock()
	if err := s.opErrLocked(); err != nil {
		return err
	}
	have := s.desired.Counts()
	config := s.config.Counts()
	for _, name := range slices.Sorted(maps.Keys(counts)) {
		n := counts[name]
		if _, ok := have[name]; !ok {
			return inputErr("app %s has no process type %q (it has: %s)", s.name, name, strings.Join(slices.Sorted(maps.Keys(have)), ", "))
		}
		if n < 0 || n > MaxCount {
			return inputErr("count of %s is %d: want a whole number from 0 to %d", name, n, MaxCount)
		}
	}
	prev := s.rec.clone()
	ov := &s.rec.Overrides
	now := time.Now()
	var touched []string
	for name, n := range counts {
		touched = append(touched, name)
		if n == config[name] {
			delete(ov.Counts, name)
			continue
		}
		if ov.Counts == nil {
			ov.Counts = map[string]CountOverride{}
		}
		ov.Counts[name] = CountOverride{Count: n, ConfigCount: config[name], Op: OpScale, At: now}
	}
	if err := s.keepLocked(prev); err != nil {
		return err
	}
	s.refreshDesiredLocked()
	s.resetProcsLocked(touched)
	s.serving.setCounts(counts)
	s.reconcileLocked()
	return nil
}

// Restart replaces containers of the serving release, new first: every
// container (process and container empty), those of one process type, or
// one container. Replacements that fail to boot are retried up to
// restart_attempts times; the old containers serve throughout.
func (s *Supervisor) Restart(process, container string) (DeployResult, error) {
	s.lock()
	defer s.poke()
	defer s.unlock()
	if err := s.opErrLocked(); err != nil {
		return DeployResult{}, err
	}
	if s.serving == nil || s.serving.spec == nil {
		return DeployResult{}, ErrNoRelease
	}
	if r := s.rollout; r != nil && r.kind != KindRestart {
		return DeployResult{}, ErrBusy
	}
	spec := s.servingSpecLocked()
	if container != "" {
		c := s.findLocked(container)
		if c == nil || c.Release != s.serving.ID || c.owner != 0 || !c.state.live() {
			return DeployResult{}, fmt.Errorf("no running container %q in app %s", container, s.name)
		}
		container, process = c.ID, c.Process
	} else if process != "" {
		if _, ok := spec.Process(process); !ok {
			return DeployResult{}, inputErr("app %s has no process type %q", s.name, process)
		}
	}
	if s.sleepingLocked() && (process == WebProcess || (container == "" && process == "" && len(spec.Processes) == 1)) {
		return DeployResult{}, inputErr("app %s is idle: its web containers are stopped until the next request", s.name)
	}
	if process == "" {
		s.resetProcsLocked(slices.Collect(maps.Keys(spec.Counts())))
	} else {
		s.resetProcsLocked([]string{process})
	}
	e, err := s.startRolloutLocked(KindRestart, spec, process, container, "api")
	if err != nil {
		return DeployResult{}, err
	}
	d := e.snapshot()
	return DeployResult{Deployment: &d}, nil
}

// findLocked finds a container by full or short (12+ characters) ID, or
// name.
func (s *Supervisor) findLocked(ref string) *Container {
	if c := s.fleet.get(ref); c != nil {
		return c
	}
	for c := range s.fleet.all() {
		if c.Name == ref || (len(ref) >= 12 && strings.HasPrefix(c.ID, ref)) {
			return c
		}
	}
	return nil
}

// DefaultPauseTimeout is how long a request waits in a pause by default.
const DefaultPauseTimeout = 30 * time.Second

// Pause holds new requests to the app until Resume; each waits at most
// timeout (DefaultPauseTimeout when zero), then gets 503. Requests in
// flight finish. It survives restarts of the process.
func (s *Supervisor) Pause(timeout time.Duration) error {
	if timeout < 0 || timeout > time.Hour {
		return inputErr("pause timeout %s: want from 1s to 1h", timeout)
	}
	if timeout == 0 {
		timeout = DefaultPauseTimeout
	}
	s.lock()
	defer s.unlock()
	prev := s.rec.clone()
	s.rec.Pause = &PauseRecord{Since: time.Now(), Timeout: timeout}
	s.rec.Maintenance = nil
	if err := s.keepLocked(prev); err != nil {
		return err
	}
	s.applyGateLocked()
	s.log.Info("app paused", zap.Duration("timeout", timeout))
	return nil
}

// DefaultMaintenanceMessage is what requests get in maintenance mode when
// no message was given.
const DefaultMaintenanceMessage = "This site is under maintenance. Please try again in a few minutes."

// Maintenance answers every request to the app with 503 and message while
// the containers keep running, until Resume. It survives restarts.
func (s *Supervisor) Maintenance(message string) error {
	if len(message) > 4096 {
		return inputErr("maintenance message is %d bytes long: at most 4096", len(message))
	}
	if message == "" {
		message = DefaultMaintenanceMessage
	}
	s.lock()
	defer s.unlock()
	prev := s.rec.clone()
	s.rec.Maintenance = &MaintenanceRecord{Since: time.Now(), Message: message}
	s.rec.Pause = nil
	if err := s.keepLocked(prev); err != nil {
		return err
	}
	s.applyGateLocked()
	s.log.Info("app in maintenance")
	return nil
}

// Resume ends a pause (the requests waiting go on) or maintenance.
func (s *Supervisor) Resume() error {
	s.lock()
	defer s.unlock()
	if s.rec.Pause == nil && s.rec.Maintenance == nil {
		return ErrNotPaused
	}
	prev := s.rec.clone()
	s.rec.Pause, s.rec.Maintenance = nil, nil
	if err := s.keepLocked(prev); err != nil {
		return err
	}
	s.applyGateLocked()
	s.log.Info("app resumed")
	return nil
}

// gateRetryAfter is what a 503 of a pause or maintenance tells clients.
var gateRetryAfter = 30 * time.Second

// applyGateLocked installs the gate the record asks for.
func (s *Supervisor) applyGateLocked() {
	switch {
	case s.rec.Maintenance != nil:
		m := s.rec.Maintenance
		s.pool.setGate(&Gate{Maintenance: true, Message: m.Message, RetryAfter: gateRetryAfter, Since: m.Since})
	case s.rec.Pause != nil:
		p := s.rec.Pause
		s.pool.setGate(&Gate{Timeout: p.Timeout, RetryAfter: gateRetryAfter, Since: p.Since})
	case s.rec.Idle != nil: // asleep, or waking up
		s.pool.setGate(s.wakeGate())
	default:
		s.pool.setGate(nil)
	}
	s.touch()
}

// remove drains and stops every container of the app, then ends the
// supervisor and deletes its record. It returns at once.
func (s *Supervisor) remove() {
	s.lock()
	s.removed = true
	s.pool.setGate(nil)
	s.unlock()
	s.poke()
}

// close ends the supervisor's goroutines without touching any container:
// they keep running for the next podswitch to adopt.
func (s *Supervisor) close() {
	s.cancel()
	<-s.done
}
