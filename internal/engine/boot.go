package engine

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
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

func newBackoff() *backoff.ExponentialBackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = retryBase
	b.MaxInterval = retryMax
	b.Multiplier = 2
	b.RandomizationFactor = retryJitter
	b.Reset()
	return b
}

// bootError is a boot that failed for a reason the deployment reports.
type bootError struct {
	status Status
	msg    string
}

func (e *bootError) Error() string { return string(e.status) + ": " + e.msg }

// bootRetry boots one container of p, trying up to attempts times with
// backoff between tries. Each failed container is removed before the next
// try. It returns the ready container, or the last failure.
func (s *Supervisor) bootRetry(ctx context.Context, spec AppSpec, p ProcessSpec, release string, attempts int) (*Container, error) {
	b := newBackoff()
	for attempt := 1; ; attempt++ {
		c, err := s.boot(ctx, spec, p, release)
		if err == nil {
			return c, nil
		}
		if errors.Is(err, ErrUnavailable) && ctx.Err() == nil {
			// Not the app's fault: wait for the runtime, then try again
			// without counting an attempt.
			s.discard([]*Container{c}, spec.StopTimeout)
			s.setRuntimeErr(err)
			s.log.Warn("container runtime unreachable, waiting to boot", zap.String("process", p.Name), zap.Error(err))
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(runtimeRetry):
			}
			if werr := s.withRuntime(ctx, func() error { _, err := s.deps.Runtime.List(ctx, s.name); return err }); werr != nil {
				return nil, werr
			}
			attempt--
			continue
		}
		if c != nil && (attempt < attempts || ctx.Err() != nil) {
			s.discard([]*Container{c}, spec.StopTimeout)
			c = nil
		}
		if attempt >= attempts || ctx.Err() != nil {
			return c, err
		}
		delay := b.NextBackOff()
		s.log.Warn("container failed to boot, retrying", zap.String("process", p.Name),
			zap.Int("attempt", attempt), zap.Int("attempts", attempts), zap.Duration("delay", delay), zap.Error(err))
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

// boot starts one container of process p and waits until it is ready. The
// container is returned (and recorded) whenever it was created, even when
// the boot failed, so that the caller removes it.
func (s *Supervisor) boot(ctx context.Context, spec AppSpec, p ProcessSpec, release string) (_ *Container, err error) {
	env := make(map[string]string, len(spec.Env)+1)
	for k, v := range spec.Env {
		env[k] = v
	}
	labels := map[string]string{LabelApp: spec.Name, LabelRelease: release, LabelProcess: p.Name}
	web := p.Name == WebProcess
	if web {
		env["PORT"] = strconv.Itoa(spec.Port)
		labels[LabelPort] = strconv.Itoa(spec.Port)
	}
	name := fmt.Sprintf("podswitch-%s-%s-%s-%06x", spec.Name, p.Name, release[:8], rand.Uint32()&0xffffff)
	t0 := time.Now()
	if obs := s.deps.ObserveBoot; obs != nil {
		defer func() {
			if ctx.Err() == nil {
				obs(spec.Name, p.Name, time.Since(t0), err == nil)
			}
		}()
	}
	// Creating and starting count against boot_timeout too: a runtime
	// that hangs must not keep a deployment starting forever.
	rctx, cancelRun := context.WithTimeout(ctx, spec.BootTimeout)
	info, err := s.deps.Runtime.Run(rctx, ContainerSpec{
		Name: name, Image: spec.Image, Command: p.Command, Env: env, Labels: labels,
		StopTimeout: spec.StopTimeout,
	})
	runTimedOut := rctx.Err() != nil && ctx.Err() == nil
	cancelRun()
	if err != nil {
		var c *Container
		if info.ID != "" {
			c = &Container{ID: info.ID, Name: name, Process: p.Name, Release: release}
		}
		if ctx.Err() != nil {
			return c, ctx.Err()
		}
		if runTimedOut {
			return c, &bootError{StatusTimeoutError, fmt.Sprintf("%s container was not created and started within %s", p.Name, spec.BootTimeout)}
		}
		if errors.Is(err, ErrUnavailable) {
			return c, err
		}
		return c, &bootError{StatusStartError, fmt.Sprintf("%s container could not start: %v", p.Name, err)}
	}
	c := &Container{ID: info.ID, Name: name, Process: p.Name, Release: release, State: StateStarting, StartedAt: time.Now()}
	if web && info.IP != "" {
		c.Addr = net.JoinHostPort(info.IP, strconv.Itoa(spec.Port))
	}
	s.mu.Lock()
	s.containers[c.ID] = c
	s.mu.Unlock()

	if web {
		err = s.waitListening(ctx, spec, c)
	} else {
		err = s.waitRunning(ctx, spec, c)
	}
	if err != nil {
		var be *bootError
		if errors.As(err, &be) {
			s.log.Warn("container failed to boot", zap.String("container", c.ID), zap.String("process", p.Name),
				zap.String("status", string(be.status)), zap.String("error", be.msg))
		}
		return c, err
	}
	return c, nil
}

// waitListening probes c until it accepts a TCP connection on its port. It
// fails early when the container exits and at boot_timeout otherwise.
func (s *Supervisor) waitListening(ctx context.Context, spec AppSpec, c *Container) error {
	bctx, cancel := context.WithTimeout(ctx, spec.BootTimeout)
	defer cancel()
	var lastInspect time.Time
	for {
		if c.Addr != "" {
			if err := s.deps.Prober.Probe(bctx, c.Addr); err == nil {
				s.mu.Lock()
				c.ReadyAt = time.Now()
				s.mu.Unlock()
				return nil
			}
		}
		if time.Since(lastInspect) >= inspectInterval || c.Addr == "" {
			lastInspect = time.Now()
			cur, err := s.deps.Runtime.Inspect(bctx, c.ID)
			switch {
			case errors.Is(err, ErrNotFound):
				return s.crashed(c, "web container disappeared before it was ready")
			case err == nil:
				if c.Addr == "" && cur.IP != "" {
					s.mu.Lock()
					c.Addr = net.JoinHostPort(cur.IP, strconv.Itoa(spec.Port))
					s.mu.Unlock()
				}
				if !cur.Running {
					return s.crashed(c, fmt.Sprintf("web container exited with code %d before listening on PORT %d", cur.ExitCode, spec.Port))
				}
				if c.Addr == "" {
					return &bootError{StatusStartError, "web container has no IP address to dial (rootless Podman is not supported)"}
				}
			}
		}
		select {
		case <-bctx.Done():
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return &bootError{StatusTimeoutError, fmt.Sprintf("web container did not accept a TCP connection on PORT %d within %s", spec.Port, spec.BootTimeout)}
		case <-time.After(probeInterval):
		}
	}
}

// waitRunning waits until a non-web container has kept running for
// WorkerReadyTime.
func (s *Supervisor) waitRunning(ctx context.Context, spec AppSpec, c *Container) error {
	wait := min(spec.WorkerReadyTime, spec.BootTimeout)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(wait):
	}
	// A runtime that is away is waited for: the container's state is not
	// known, and that is not the app's fault.
	var cur ContainerInfo
	err := s.withRuntime(ctx, func() (err error) {
		cur, err = s.deps.Runtime.Inspect(ctx, c.ID)
		return err
	})
	switch {
	case errors.Is(err, ErrNotFound):
		return s.crashed(c, c.Process+" container disappeared while booting")
	case err != nil:
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &bootError{StatusStartError, fmt.Sprintf("%s container could not be inspected: %v", c.Process, err)}
	case !cur.Running:
		return s.crashed(c, fmt.Sprintf("%s container exited with code %d while booting", c.Process, cur.ExitCode))
	}
	s.mu.Lock()
	c.ReadyAt = time.Now()
	s.mu.Unlock()
	return nil
}

func (s *Supervisor) crashed(c *Container, msg string) error {
	s.mu.Lock()
	c.State = StateCrashed
	s.mu.Unlock()
	return &bootError{StatusCrashedError, msg}
}

// discard removes containers that never served (or crashed) and forgets
// them. One that may still run gets SIGTERM and stopTimeout first.
func (s *Supervisor) discard(cs []*Container, stopTimeout time.Duration) {
	var wg sync.WaitGroup
	for _, c := range cs {
		if c == nil {
			continue
		}
		wg.Go(func() {
			s.mu.Lock()
			st := c.State
			s.mu.Unlock()
			grace := stopTimeout
			if st == StateCrashed || st == "" || s.ctx.Err() != nil {
				grace = 0 // exited, never started, or podswitch is exiting
			}
			s.discardID(c.ID, grace)
			s.mu.Lock()
			delete(s.containers, c.ID)
			s.mu.Unlock()
		})
	}
	wg.Wait()
}
