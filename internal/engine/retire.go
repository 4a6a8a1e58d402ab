package engine

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.uber.org/zap"
)

// retire drains and stops containers that have left the pool. It returns at
// once; the work goes on in the background.
func (s *Supervisor) retire(oldPool *Pool, cs []*Container, spec AppSpec) {
	if len(cs) == 0 {
		return
	}
	s.retiring.Go(func() {
		s.drain(oldPool, spec.DrainTimeout)
		s.stopContainers(cs, spec.StopTimeout)
	})
}

// drain waits until the requests routed with replaced pools (p, and any
// older one still busy) have ended, at most timeout.
func (s *Supervisor) drain(p *Pool, timeout time.Duration) {
	if p == nil || timeout <= 0 {
		return
	}
	deadline := time.Now().Add(timeout)
	for {
		// Wait one poll first: a request that loaded p just before the swap
		// may not have counted itself yet.
		select {
		case <-s.ctx.Done():
			return
		case <-time.After(drainPoll):
		}
		n := s.pool.retiredInFlight()
		if n <= 0 {
			return
		}
		if time.Now().After(deadline) {
			s.log.Warn("drain timeout reached, stopping with requests in flight", zap.Int64("in_flight", n))
			return
		}
	}
}

// stopContainers stops (SIGTERM, stop_timeout, SIGKILL) and removes cs.
func (s *Supervisor) stopContainers(cs []*Container, stopTimeout time.Duration) {
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Go(func() {
			s.mu.Lock()
			c.State = StateStopping
			s.mu.Unlock()
			t0 := time.Now()
			// A runtime that is away is waited for (as long as podswitch
			// runs): a container left running would serve nobody.
			err := s.withRuntime(s.ctx, func() error {
				ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), stopTimeout+cleanupTimeout)
				defer cancel()
				return s.deps.Runtime.Stop(ctx, c.ID, stopTimeout)
			})
			if err != nil && !errors.Is(err, ErrNotFound) {
				s.log.Warn("stopping container failed", zap.String("container", c.ID), zap.Error(err))
			}
			err = s.withRuntime(s.ctx, func() error {
				ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), cleanupTimeout)
				defer cancel()
				return s.deps.Runtime.Remove(ctx, c.ID)
			})
			if err != nil && !errors.Is(err, ErrNotFound) {
				s.log.Error("removing container failed", zap.String("container", c.ID), zap.Error(err))
			}
			s.mu.Lock()
			c.State = StateStopped
			delete(s.containers, c.ID)
			s.mu.Unlock()
			s.log.Info("container stopped", zap.String("container", c.ID), zap.String("process", c.Process),
				zap.String("release", c.Release), zap.Duration("took", time.Since(t0)))
		})
	}
	wg.Wait()
}

// stopAll drains and stops every container of a removed app.
func (s *Supervisor) stopAll() {
	s.mu.Lock()
	if t := s.target; t != nil {
		s.endLocked(t, StatusAborted, "the app was removed from the config")
	}
	var cs []*Container
	for _, c := range s.containers {
		if c.State != StateStopping && c.State != StateStopped {
			c.State = StateDraining
			cs = append(cs, c)
		}
	}
	s.current = nil
	old := s.publishLocked()
	spec := s.desired
	s.mu.Unlock()
	s.log.Info("app removed, stopping its containers", zap.Int("containers", len(cs)))
	s.drain(old, spec.DrainTimeout)
	s.stopContainers(cs, spec.StopTimeout)
	s.retiring.Wait()
}
