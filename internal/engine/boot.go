package engine

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
)

// outputLines is how many of its last lines of output are kept of a
// container that failed to boot or crashed, and of a postdeploy hook.
const outputLines = 50

// bootError is a boot that failed for a reason the deployment reports.
type bootError struct {
	status Status
	msg    string
}

func (e *bootError) Error() string { return string(e.status) + ": " + e.msg }

func containerName(app, process, release string) string {
	return fmt.Sprintf("podswitch-%s-%s-%s-%06x", app, process, release[:min(8, len(release))], rand.Uint32()&0xffffff)
}

// boot creates and starts one container of process type p of release and
// waits until it is ready: for a web container, until it accepts a TCP
// connection on PORT (and answers ready_path, if set); for another, until
// it has kept running for worker_ready_time. The container is recorded
// (state starting, then booted) as soon as it exists, as part of rollout r
// when r is set, and then onCreated is called with the lock held. It is
// returned whenever it exists, even when the boot failed, for the caller to
// discard.
func (s *Supervisor) boot(ctx context.Context, spec AppSpec, p ProcessSpec, release string, r *rollout, onCreated func()) (c *Container, err error) {
	cs := s.containerSpec(spec, p, release)
	t0 := time.Now()
	defer func() {
		if obs := s.deps.ObserveBoot; obs != nil && ctx.Err() == nil && (err == nil || isBootError(err)) {
			obs(spec.Name, p.Name, time.Since(t0), err == nil)
		}
	}()

	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	info, admitted, err := s.create(ctx, spec, p.Name, release, &cs)
	if err != nil {
		return nil, err
	}
	c = &Container{ID: info.ID, Name: cs.Name, Process: p.Name, Release: release, grace: true, created: t0}
	if p.Name == WebProcess {
		c.Addr = dialAddr(info, strconv.Itoa(spec.Port))
	}
	bctx := s.started(ctx, c, r, onCreated)
	err = s.waitReady(bctx, spec, c, admitted)
	return c, s.settleBoot(ctx, c, r, err)
}

// containerSpec returns what a container of process type p of release
// runs: the app's env, with PORT for a web one, whose labels say its port
// too, and the settings of its process type.
func (s *Supervisor) containerSpec(spec AppSpec, p ProcessSpec, release string) ContainerSpec {
	env := maps.Clone(spec.Env)
	if env == nil {
		env = map[string]string{}
	}
	labels := s.labels(spec.Name, release, p.Name)
	port := 0
	if p.Name == WebProcess {
		port = spec.Port
		env["PORT"] = strconv.Itoa(spec.Port)
		labels[LabelPort] = strconv.Itoa(spec.Port)
	}
	settings := spec.Settings.Over(p.Settings)
	if len(settings.Networks) > 0 {
		labels[LabelNetwork] = settings.Networks[0]
	}
	return ContainerSpec{
		Name: containerName(spec.Name, p.Name, release), Image: spec.RunImage(), Command: p.Command, Env: env, Labels: labels,
		StopTimeout: spec.StopTimeout, Settings: settings, Aliases: Aliases(spec.Name, p.Name), Port: port,
	}
}

// placeLocked returns the host a new container of process type process
// of release goes to: with several hosts, the one of the app's hosts that
// are up with the fewest of that type and release (ties by name); with
// one, "".
func (s *Supervisor) placeLocked(spec AppSpec, process, release string) (string, error) {
	hs := s.deps.Hosts
	if hs == nil || hs.Len() == 0 {
		return "", nil
	}
	candidates := s.desired.Hosts
	if len(candidates) == 0 {
		candidates = hs.Names()
	}
	// A host that lacked the release's image at a create is passed over
	// while another can take the container (it came back, or was added,
	// after the deploy checked the image on the hosts that were up).
	if lacking := s.fleet.noImage[release]; len(lacking) > 0 {
		var with []string
		for _, h := range candidates {
			if !lacking[h] && hs.Placeable(h) {
				with = append(with, h)
			}
		}
		if len(with) > 0 {
			candidates = with
		}
	}
	return hs.Place(candidates, func(host string) int { return s.fleet.onHost(host, process, release) })
}

// imageMissingOn reports whether err, of a create, says the host lacks
// the image.
func imageMissingOn(err error) bool {
	return errors.Is(err, ErrImageNotFound) || strings.Contains(err.Error(), "image not known")
}

// create creates and starts container cs of process type process and
// returns it with the time its call was admitted. Creating and starting
// count against boot_timeout too (a runtime that hangs must not keep a
// deployment starting forever), from the call's admission: the wait for a
// create slot is podswitch's queue, not the app's boot. The container's
// name is noted as being created until it is recorded, or, when the create
// failed, until what it may have left is removed.
func (s *Supervisor) create(ctx context.Context, spec AppSpec, process, release string, cs *ContainerSpec) (ContainerInfo, time.Time, error) {
	s.lock()
	host, err := s.placeLocked(spec, process, release)
	if err != nil {
		s.unlock()
		return ContainerInfo{}, time.Time{}, &bootError{StatusStartError, fmt.Sprintf("%s container could not start: %v", process, err)}
	}
	cs.Host = host
	s.fleet.markCreating(cs.Name, placed{host, process, release})
	s.unlock()
	budget := &runBudget{timeout: spec.BootTimeout}
	info, err := s.rt.Run(withRunBudget(ctx, budget), *cs)
	if err == nil {
		if budget.admitted.IsZero() { // a runtime not bounded by class: no queue
			budget.admitted = time.Now()
		}
		return info, budget.admitted, nil
	}
	id, runErr := info.ID, err
	if host != "" && imageMissingOn(err) {
		s.lock()
		s.fleet.lacksImage(release, host)
		s.unlock()
		s.log.Warn("a host lacks the release's image: its containers go to the other hosts", zap.String("host", host),
			zap.String("release", release), zap.String("image", cs.Image))
	}
	s.spawn(func() { s.forgetCreate(cs.Name, host, id, runErr) })
	switch {
	case ctx.Err() != nil:
		return ContainerInfo{}, time.Time{}, ctx.Err()
	case errors.Is(err, errRunBudget):
		return ContainerInfo{}, time.Time{}, &bootError{StatusTimeoutError, fmt.Sprintf("%s container was not created and started within %s", process, spec.BootTimeout)}
	case errors.Is(err, ErrUnavailable):
		return ContainerInfo{}, time.Time{}, err
	}
	return ContainerInfo{}, time.Time{}, &bootError{StatusStartError, fmt.Sprintf("%s container could not start: %v", process, err)}
}

// forgetCreate removes what a create that failed with runErr may have
// left (container id, or one named name when the call was cut), then no
// longer notes name as being created: the app is not done (removed)
// before that container is.
func (s *Supervisor) forgetCreate(name, host, id string, runErr error) {
	if id != "" {
		s.removeQuietly(id)
	} else if errors.Is(runErr, context.Canceled) || errors.Is(runErr, context.DeadlineExceeded) || errors.Is(runErr, ErrUnavailable) {
		s.removeQuietly(QualifyID(host, name)) // the call was cut: the create may have happened
	}
	s.lock()
	s.fleet.doneCreating(name)
	s.unlock()
	s.poke()
}

// started records c, just created, as starting, as part of rollout r when
// r is set, and then calls onCreated, with the lock held. It returns the
// context of c's boot, which ends when c leaves starting.
func (s *Supervisor) started(ctx context.Context, c *Container, r *rollout, onCreated func()) context.Context {
	s.lock()
	defer s.unlock()
	s.fleet.doneCreating(c.Name)
	if r != nil {
		c.owner = r.id
		r.e.fresh = append(r.e.fresh, c)
	}
	bctx, cancelBoot := context.WithCancel(ctx)
	c.cancel = cancelBoot
	s.fleet.add(c, StateStarting, "")
	if onCreated != nil {
		onCreated()
	}
	return bctx
}

// waitReady waits until c is ready: a web container until it listens (see
// waitListening), another until it kept running (see waitRunning).
func (s *Supervisor) waitReady(ctx context.Context, spec AppSpec, c *Container, t0 time.Time) error {
	if c.Process == WebProcess {
		return s.waitListening(ctx, spec, c, t0)
	}
	return s.waitRunning(ctx, spec, c)
}

// settleBoot ends the boot of c, whose wait for ready ended with err
// (ctx is the boot's): it moves c to booted, as part of r when r is set,
// and returns nil; or it returns why the boot failed, once it logged a
// failure of the app and kept c's output.
func (s *Supervisor) settleBoot(ctx context.Context, c *Container, r *rollout, err error) error {
	s.lock()
	switch {
	case c.state == StateCrashed:
		err = &bootError{StatusCrashedError, c.timeline[len(c.timeline)-1].Note}
	case err == nil && c.state == StateStarting:
		s.fleet.setState(c, StateBooted, "")
		if r != nil {
			r.booted = append(r.booted, c)
		}
	case err == nil:
		err = &bootError{StatusCrashedError, fmt.Sprintf("%s container is %s, not booted", c.Process, c.state)}
	case ctx.Err() != nil:
		err = ctx.Err()
	}
	failed := isBootError(err)
	s.unlock()
	if failed {
		var be *bootError
		errors.As(err, &be)
		s.log.Warn("container failed to boot", zap.String("container", shortID(c.ID)), zap.String("process", c.Process),
			zap.String("status", string(be.status)), zap.String("error", be.msg))
		s.captureOutput(c)
	}
	return err
}

func isBootError(err error) bool {
	var be *bootError
	return errors.As(err, &be)
}

// waitListening probes c until it accepts a TCP connection on its port
// (and answers ready_path). It fails early when the container exits (seen
// by an exit event or an inspect) and at boot_timeout otherwise.
func (s *Supervisor) waitListening(ctx context.Context, spec AppSpec, c *Container, t0 time.Time) error {
	bctx, cancel := context.WithDeadline(ctx, t0.Add(spec.BootTimeout))
	defer cancel()
	s.lock()
	addr := c.Addr
	s.unlock()
	var lastInspect time.Time
	accepted := false
	var lastHTTP string
	for {
		if addr != "" {
			err := s.deps.Prober.Probe(bctx, addr)
			if hs := s.deps.Hosts; hs != nil && bctx.Err() == nil {
				hs.NoteCheck(c.ID, err) // a container that boots tells of its host too
			}
			if err == nil {
				accepted = true
				if spec.ReadyPath == "" {
					return nil
				}
				code, err := s.probeHTTP(bctx, addr, spec.ReadyPath)
				if err == nil && code >= spec.ReadyStatus[0] && code <= spec.ReadyStatus[1] {
					return nil
				}
				if err != nil {
					lastHTTP = err.Error()
				} else {
					lastHTTP = fmt.Sprintf("GET %s answered %d", spec.ReadyPath, code)
				}
			}
		}
		if addr == "" || time.Since(lastInspect) >= inspectInterval {
			lastInspect = time.Now()
			cur, err := s.rt.Inspect(bctx, c.ID)
			switch {
			case errors.Is(err, ErrNotFound):
				s.exitedWhileBooting(c, -1, false)
				return errors.New("gone")
			case err == nil && !cur.Running:
				s.exitedWhileBooting(c, cur.ExitCode, cur.OOMKilled)
				return errors.New("exited")
			case err == nil && addr == "" && dialAddr(cur, strconv.Itoa(spec.Port)) != "":
				addr = dialAddr(cur, strconv.Itoa(spec.Port))
				s.lock()
				c.Addr = addr
				s.unlock()
			case err == nil && addr == "":
				return &bootError{StatusStartError, "web container has no IP address to dial (rootless Podman is not supported)"}
			}
		}
		select {
		case <-bctx.Done():
			if ctx.Err() != nil {
				return ctx.Err()
			}
			msg := fmt.Sprintf("web container did not accept a TCP connection on PORT %d within %s: the app must listen on 0.0.0.0 (not 127.0.0.1) and on the port in $PORT", spec.Port, spec.BootTimeout)
			if accepted {
				msg = fmt.Sprintf("web container accepted connections on PORT %d but was not ready within %s: %s (want %d-%d)",
					spec.Port, spec.BootTimeout, lastHTTP, spec.ReadyStatus[0], spec.ReadyStatus[1])
			}
			return &bootError{StatusTimeoutError, msg}
		case <-time.After(probeInterval):
		}
	}
}

// waitRunning waits until a non-web container has kept running for
// worker_ready_time.
func (s *Supervisor) waitRunning(ctx context.Context, spec AppSpec, c *Container) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(min(spec.WorkerReadyTime, spec.BootTimeout)):
	}
	// A runtime that is away is waited for: the container's state is not
	// known, and that is not the app's fault.
	var cur ContainerInfo
	err := s.withRuntime(ctx, func() (err error) {
		cur, err = s.rt.Inspect(ctx, c.ID)
		return err
	})
	switch {
	case errors.Is(err, ErrNotFound):
		s.exitedWhileBooting(c, -1, false)
		return errors.New("gone")
	case err != nil:
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &bootError{StatusStartError, fmt.Sprintf("%s container could not be inspected: %v", c.Process, err)}
	case !cur.Running:
		s.exitedWhileBooting(c, cur.ExitCode, cur.OOMKilled)
		return errors.New("exited")
	}
	return nil
}

func (s *Supervisor) exitedWhileBooting(c *Container, code int, oom bool) {
	s.lock()
	defer s.unlock()
	if c.state == StateStarting {
		s.crashedLocked(c, code, oom)
	}
}

// exited handles a container that exited outside podswitch (an event, a
// resync or a health check found it); oom says it was killed for its
// memory limit.
func (s *Supervisor) exited(id string, code int, oom bool) {
	s.lock()
	defer s.unlock()
	if c := s.fleet.get(id); c != nil && c.state.live() {
		s.crashedLocked(c, code, oom)
	}
}

// crashedLocked moves c, which exited on its own, to crashed. A booting
// container's boot reports the failure; a serving one leaves the pool at
// the unlock, is removed and replaced: at once the first time, with
// backoff when it crashed soon after a crash of its process type (a crash
// loop), until restart_attempts. oom says the runtime killed it for
// exceeding its memory limit.
func (s *Supervisor) crashedLocked(c *Container, code int, oom bool) {
	from := c.state
	c.exitCode = &code
	exit := fmt.Sprintf("exited with code %d", code)
	switch {
	case oom:
		exit = fmt.Sprintf("was killed for exceeding its memory limit: out of memory (OOMKilled, exit code %d)", code)
	case code < 0:
		exit = "is gone"
	}
	var msg string
	switch from {
	case StateStarting:
		msg = fmt.Sprintf("%s container %s while booting", c.Process, exit)
		if c.Process == WebProcess {
			msg = fmt.Sprintf("web container %s before it was ready on its PORT", exit)
		}
	case StateBooted:
		msg = fmt.Sprintf("%s container %s %s after it booted, before the switch", c.Process, c.Name, exit)
	default:
		msg = fmt.Sprintf("%s container %s %s", c.Process, c.Name, exit)
	}
	if !s.fleet.setState(c, StateCrashed, msg) || from != StateReady {
		return
	}
	c.crashedServing = true
	if c.canary {
		s.canaryCrashedLocked(msg)
	}
	if sv := s.serving; c.owner == 0 && sv != nil && sv.spec != nil && c.Release == sv.ID {
		ps := s.proc(c.Process)
		if time.Since(c.entered(StateReady)) >= stableAfter {
			ps.crashes = 0
			ps.crashBackoff.Reset()
		}
		s.crashedInLoopLocked(s.servingSpecLocked(), c, ps, msg)
	}
	s.discardLocked(c)
	s.poke()
}

// captureOutput keeps the last lines of c's output, for the deployment
// record and the notification, with the app's env values redacted (they
// are secrets, and an app prints them in a stack trace). Best effort and
// bounded in time.
func (s *Supervisor) captureOutput(c *Container) {
	ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
	defer cancel()
	var lines []string
	err := s.rt.Logs(ctx, c.ID, LogOptions{Tail: outputLines}, func(l LogLine) {
		lines = append(lines, l.Text)
	})
	if len(lines) > outputLines {
		lines = lines[len(lines)-outputLines:]
	}
	if err != nil && len(lines) == 0 {
		return
	}
	s.lock()
	c.output = redact(lines, s.secretsLocked(c)...)
	s.touch()
	s.unlock()
}

// removeQuietly removes a container that never was part of the app's state
// (its create answered with an error). The resync removes it if this fails.
func (s *Supervisor) removeQuietly(id string) {
	ctx, cancel := context.WithTimeout(s.ctx, cleanupTimeout)
	defer cancel()
	if err := s.rt.Remove(ctx, id); err != nil && !errors.Is(err, ErrNotFound) && ctx.Err() == nil {
		s.log.Warn("removing a container that failed to start", zap.String("container", shortID(id)), zap.Error(err))
	}
}
