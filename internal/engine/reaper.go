package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.uber.org/zap"
)

// The reaper takes containers out of service and away, one task per
// container, for deploys, scale-downs, restarts, removals and discards
// alike: a ready container drains (the requests in flight to it end,
// within drain_timeout), then is stopped by the platform's rule (SIGTERM,
// exactly stop_timeout, SIGKILL), then is removed. A container that never
// served skips the drain; one that exited skips the stop. Every container
// is recorded as retiring in the app record before its task starts, so
// that after a kill -9 the next start stops it rather than adopt it.

// Timing of a stop.
var (
	// signalTimeout bounds one kill call: Podman answers it at once.
	signalTimeout = 10 * time.Second
	// killedWait bounds the wait for the exit code of a container that
	// got SIGKILL.
	killedWait = 5 * time.Second
)

// exitSIGKILL is the exit code of a process ended by SIGKILL.
const exitSIGKILL = 137

// stopSignal is what a container gets first when it is stopped. Podman
// creates every container with it as its stop signal, so that a `podman
// stop` by hand agrees.
const stopSignal = "SIGTERM"

// retireLocked takes c out of service: a ready container drains first,
// one still booting is discarded. e, when set, is the deployment that
// switched it out.
func (s *Supervisor) retireLocked(c *Container, e *logEntry, note string) {
	switch c.state {
	case StateReady:
		c.retiredBy = e
		s.fleet.setState(c, StateDraining, note)
		s.reapLocked(c)
	case StateStarting, StateBooted, StateCrashed:
		s.discardLocked(c)
	}
}

// discardLocked stops and removes c, which never served or crashed.
func (s *Supervisor) discardLocked(c *Container) {
	switch c.state {
	case StateStarting, StateBooted:
		s.fleet.setState(c, StateStopping, "discarded")
	case StateCrashed, StateStopping:
	default:
		return
	}
	s.reapLocked(c)
}

// reapLocked records c as retiring, then starts the task that drains,
// stops and removes it, once.
func (s *Supervisor) reapLocked(c *Container) {
	if c.reaping {
		return
	}
	c.reaping = true
	s.recordRetiringLocked([]*Container{c})
	s.spawn(func() { s.reap(c) })
}

// recordRetiringLocked writes the containers of cs that the app record
// does not have yet as retiring, in one write, before anything stops
// them: after a kill -9 the next start stops them, never adopts them.
// Callers that retire several at once record them first.
func (s *Supervisor) recordRetiringLocked(cs []*Container) {
	var ids []string
	for _, c := range cs {
		if !slices.Contains(s.rec.Retiring, c.ID) {
			ids = append(ids, c.ID)
		}
	}
	if len(ids) == 0 {
		return
	}
	s.rec.Retiring = mergeIDs(s.pruneRetiringLocked(), ids)
	s.saveRecordLocked()
}

// reap is the task of one retiring container: drain, stop, remove.
func (s *Supervisor) reap(c *Container) {
	s.lock()
	st, addr := c.state, c.Addr
	drainTimeout, stopTimeout := s.desired.DrainTimeout, s.desired.StopTimeout
	s.unlock()
	if st == StateDraining && !s.drainOut(c, addr, drainTimeout) {
		return // exiting: the next start finishes the job
	}
	note, ok := s.halt(c, stopTimeout)
	if !ok {
		return // exiting: still recorded as retiring
	}
	if !s.removeContainer(c.ID) {
		return
	}
	s.reaped(c, note)
}

// drainOut waits for the requests in flight to draining container c (at
// addr) to end, then moves it to stopping. It reports false when the
// supervisor ends first.
func (s *Supervisor) drainOut(c *Container, addr string, timeout time.Duration) bool {
	s.drain(addr, timeout)
	if s.ctx.Err() != nil {
		return false
	}
	s.lock()
	s.fleet.setState(c, StateStopping, "")
	s.unlock()
	return true
}

// halt ends the process of retiring container c and returns what its
// stop says of it. A crashed container's crash is reported first; one
// whose exit was seen needs no stop, nor one that never ran the app; one
// taken for crashed while it may still run (no exit code) gets the rule
// (see stop). It reports false when the supervisor ends first.
func (s *Supervisor) halt(c *Container, timeout time.Duration) (note string, ok bool) {
	s.lock()
	crashed, grace := c.state == StateCrashed, c.grace
	exited := crashed && c.exitCode != nil
	s.unlock()
	if crashed {
		s.reportCrash(c)
	}
	if !grace || exited {
		return "", true
	}
	res, err := s.stop(c.ID, timeout)
	if err != nil && !errors.Is(err, ErrNotFound) {
		if s.ctx.Err() != nil {
			return "", false
		}
		s.log.Warn("stopping container failed", zap.String("container", shortID(c.ID)), zap.Error(err))
	}
	s.log.Info("container stopped", append(res.fields(), zap.String("container", shortID(c.ID)),
		zap.String("process", c.Process), zap.Duration("stop_timeout", timeout))...)
	return res.note(), true
}

// reaped forgets c, which the runtime removed, and tells the deployment
// that switched it out, or the abandoned rollout that booted it, that it
// is gone.
func (s *Supervisor) reaped(c *Container, note string) {
	s.lock()
	s.fleet.remove(c, note)
	if e := c.retiredBy; e != nil {
		s.retiredLocked(e)
	}
	if r := c.abandoned; r != nil {
		s.discardedLocked(r)
	}
	s.unlock()
	s.poke()
}

// reportCrash keeps the output of crashed container c and tells users of
// the crash of a serving one.
func (s *Supervisor) reportCrash(c *Container) {
	s.lock()
	captured := c.output != nil
	s.unlock()
	if !captured {
		s.captureOutput(c)
	}
	s.lock()
	serving := c.crashedServing
	ev := Event{Name: EventCrashed, Process: c.Process, Container: c.ID, Output: c.output}
	if c.exitCode != nil {
		ev.Message = c.timeline[len(c.timeline)-1].Note
	}
	if c.canary {
		ev.Message += fmt.Sprintf("; the canary of release %s ended: every request goes to the serving release", c.Release)
	}
	s.unlock()
	if serving {
		s.emit(ev)
	}
}

// removeContainer deletes container id, waiting for a runtime that is away. It
// reports false when the supervisor ends first (the next start finishes).
func (s *Supervisor) removeContainer(id string) bool {
	err := s.withRuntime(s.ctx, func() error {
		ctx, cancel := context.WithTimeout(s.ctx, cleanupTimeout)
		defer cancel()
		return s.rt.Remove(ctx, id)
	})
	if err != nil && !errors.Is(err, ErrNotFound) {
		if s.ctx.Err() != nil {
			return false
		}
		s.log.Error("removing container failed", zap.String("container", shortID(id)), zap.Error(err))
	}
	return true
}

// stopResult is how a stop ended.
type stopResult struct {
	// code is the exit code, -1 when not known (gone, or not answered).
	code int
	// killed says SIGKILL was sent and ended the container (or its end
	// is not known), killAfter how long after the accepted SIGTERM it was
	// sent (zero when it was not); gone that the container was gone before its
	// SIGTERM; took is from the accepted SIGTERM to the exit seen.
	killed, gone    bool
	killAfter, took time.Duration
}

func (r stopResult) note() string {
	switch {
	case r.gone:
		return "gone before its SIGTERM"
	case r.killed && r.code >= 0:
		return fmt.Sprintf("SIGKILL after stop_timeout, exited with code %d", r.code)
	case r.killed:
		return "SIGKILL after stop_timeout"
	case r.code >= 0:
		return fmt.Sprintf("exited with code %d after %s", r.code, stopSignal)
	}
	return ""
}

func (r stopResult) fields() []zap.Field {
	f := []zap.Field{zap.Int("exit_code", r.code), zap.Bool("sigkill", r.killed), zap.Duration("took", r.took)}
	if r.killAfter > 0 {
		f = append(f, zap.Duration("sigkill_after", r.killAfter))
	}
	return f
}

// stop applies the platform's rule to container id: its stop signal,
// then a wait for its exit that holds no call slot, then SIGKILL exactly
// timeout after the signal was accepted, sent by podswitch itself (Podman
// counts whole seconds). A kill that Podman does not answer is tried again
// with backoff; the clock starts when one is accepted. A container that
// exited already is not an error: its exit code is returned. It returns
// early, with the supervisor's error, when the supervisor ends.
func (s *Supervisor) stop(id string, timeout time.Duration) (stopResult, error) {
	res := stopResult{code: -1}
	if err := s.signal(id, stopSignal); err != nil {
		res.gone = errors.Is(err, ErrNotFound)
		return res, err
	}
	sent := time.Now()
	code, err := s.waitExit(id, sent.Add(timeout))
	switch {
	case err == nil:
		res.code, res.took = code, time.Since(sent)
		return res, nil
	case errors.Is(err, ErrNotFound):
		res.took = time.Since(sent)
		return res, nil
	case s.ctx.Err() != nil:
		return res, s.ctx.Err()
	}
	// stop_timeout passed (or the exit could not be told): SIGKILL.
	res.killed, res.killAfter = true, time.Since(sent)
	if err := s.signal(id, "SIGKILL"); err != nil {
		if errors.Is(err, ErrNotFound) {
			return res, nil
		}
		return res, err
	}
	if code, err := s.waitExit(id, time.Now().Add(killedWait)); err == nil {
		res.code = code
		// Podman can be late to report an exit (seconds, with many
		// containers exiting at once on a busy host): a code other than
		// SIGKILL's says the container had exited by itself before it.
		res.killed = code == exitSIGKILL
	}
	res.took = time.Since(sent)
	return res, nil
}

// signal sends sig to container id, trying again while the runtime is
// away, each try bounded by signalTimeout.
func (s *Supervisor) signal(id, sig string) error {
	return s.withRuntime(s.ctx, func() error {
		ctx, cancel := context.WithTimeout(s.ctx, signalTimeout)
		defer cancel()
		err := s.rt.Kill(ctx, id, sig)
		if err != nil && ctx.Err() != nil && s.ctx.Err() == nil {
			// Podman did not answer in time: as unreachable, try again.
			return fmt.Errorf("%w: %s not answered: %v", ErrUnavailable, sig, err)
		}
		return err
	})
}

// waitExit waits for container id to exit until deadline, without a call
// slot, and returns its exit code; an error once the deadline passed (or
// the supervisor ended) before the exit was seen. A wait that fails early
// (the runtime away) is tried again.
func (s *Supervisor) waitExit(id string, deadline time.Time) (int, error) {
	ctx, cancel := context.WithDeadline(s.ctx, deadline)
	defer cancel()
	b := newBackoff(100*time.Millisecond, time.Second)
	for {
		code, err := s.rt.Wait(ctx, id)
		if err == nil || errors.Is(err, ErrNotFound) || ctx.Err() != nil {
			if err == nil {
				return code, nil
			}
			if errors.Is(err, ErrNotFound) {
				return -1, err
			}
			return -1, ctx.Err()
		}
		t := time.NewTimer(b.NextBackOff())
		select {
		case <-ctx.Done():
			t.Stop()
			return -1, ctx.Err()
		case <-t.C:
		}
	}
}

// drain waits until the requests in flight to addr have ended, at most
// timeout. A timeout of zero does not wait.
func (s *Supervisor) drain(addr string, timeout time.Duration) {
	if timeout <= 0 || addr == "" {
		return
	}
	deadline := time.Now().Add(timeout)
	// A request that loaded the pool just before the swap is counted by
	// the proxy a moment later.
	if !s.sleep(min(drainSettle, timeout)) {
		return
	}
	if l := s.deps.Leadership; l != nil {
		// The other proxies route to it until they read the switch.
		ctx, cancel := context.WithDeadline(s.ctx, deadline)
		l.Unused(ctx, s.name, addr)
		cancel()
	}
	if s.deps.InFlight == nil {
		return
	}
	for {
		n := s.deps.InFlight(addr)
		if n <= 0 {
			return
		}
		if time.Now().After(deadline) {
			s.log.Warn("drain timeout reached, stopping with requests in flight", zap.String("dial", addr), zap.Int("in_flight", n))
			return
		}
		if !s.sleep(drainPoll) {
			return
		}
	}
}

// sleep waits d, or less if the supervisor ends; it reports whether it
// waited all of d.
func (s *Supervisor) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-s.ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
