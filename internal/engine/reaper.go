package engine

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"
)

// The reaper takes containers out of service and away, one task per
// container, for deploys, scale-downs, restarts, removals and discards
// alike: a ready container drains (the requests in flight to it end,
// within drain_timeout), then gets SIGTERM, stop_timeout and SIGKILL, then
// is removed. A container that never served skips the drain; one that
// exited skips the stop.

// retireLocked takes c out of service: a ready container drains first,
// one still booting is discarded. e, when set, is the deployment that
// switched it out.
func (s *Supervisor) retireLocked(c *Container, e *logEntry, note string) {
	switch c.state {
	case StateReady:
		c.retiredBy = e
		s.setState(c, StateDraining, note)
		s.reapLocked(c)
	case StateStarting, StateBooted, StateCrashed:
		s.discardLocked(c)
	}
}

// discardLocked stops and removes c, which never served or crashed.
func (s *Supervisor) discardLocked(c *Container) {
	switch c.state {
	case StateStarting, StateBooted:
		s.setState(c, StateStopping, "discarded")
	case StateCrashed, StateStopping:
	default:
		return
	}
	s.reapLocked(c)
}

// reapLocked starts the task that drains, stops and removes c, once.
func (s *Supervisor) reapLocked(c *Container) {
	if c.reaping {
		return
	}
	c.reaping = true
	s.spawn(func() { s.reap(c) })
}

func (s *Supervisor) reap(c *Container) {
	s.lock()
	st, addr := c.state, c.Addr
	drainTimeout, stopTimeout := s.desired.DrainTimeout, s.desired.StopTimeout
	s.unlock()
	if st == StateDraining {
		s.drain(addr, drainTimeout)
		if s.ctx.Err() != nil {
			return // exiting: the next start finishes the job
		}
		s.lock()
		s.setState(c, StateStopping, "")
		s.unlock()
	}
	s.lock()
	crashed, grace := c.state == StateCrashed, c.grace
	s.unlock()
	if crashed {
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
		s.unlock()
		if serving {
			s.emit(ev)
		}
	}
	if !crashed && grace {
		err := s.withRuntime(s.ctx, func() error {
			ctx, cancel := context.WithTimeout(s.ctx, stopTimeout+cleanupTimeout)
			defer cancel()
			return s.rt.Stop(ctx, c.ID, stopTimeout)
		})
		if err != nil && !errors.Is(err, ErrNotFound) {
			if s.ctx.Err() != nil {
				return
			}
			s.log.Warn("stopping container failed", zap.String("container", shortID(c.ID)), zap.Error(err))
		}
	}
	err := s.withRuntime(s.ctx, func() error {
		ctx, cancel := context.WithTimeout(s.ctx, cleanupTimeout)
		defer cancel()
		return s.rt.Remove(ctx, c.ID)
	})
	if err != nil && !errors.Is(err, ErrNotFound) {
		if s.ctx.Err() != nil {
			return
		}
		s.log.Error("removing container failed", zap.String("container", shortID(c.ID)), zap.Error(err))
	}
	s.lock()
	s.setState(c, StateStopped, "")
	delete(s.containers, c.ID)
	s.gone[c.ID] = time.Now()
	if e := c.retiredBy; e != nil {
		s.retiredLocked(e)
	}
	if r := c.abandoned; r != nil {
		s.discardedLocked(r)
	}
	s.unlock()
	s.poke()
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
