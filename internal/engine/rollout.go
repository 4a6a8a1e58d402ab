package engine

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"go.uber.org/zap"
)

// deploy runs deployment d: it boots the containers it replaces in
// parallel, runs the postdeploy hook, switches the pool when all are ready
// and retires the containers they replace. A deploy boots every container
// of the release once; a restart retries each failed boot up to
// restart_attempts times.
func (s *Supervisor) deploy(d *Deployment) {
	ctx := d.ctx
	spec := d.spec
	s.log.Info("deployment started", zap.Int64("deployment", d.ID), zap.String("kind", d.Kind), zap.String("release", d.Release))

	var jobs []ProcessSpec
	for _, p := range spec.Processes {
		switch {
		case d.Container != "" || d.Process != "":
			if p.Name == d.Process {
				n := p.Count
				if d.Container != "" {
					n = 1
				}
				for range n {
					jobs = append(jobs, p)
				}
			}
		default:
			for range p.Count {
				jobs = append(jobs, p)
			}
		}
	}
	attempts := 1
	if d.Kind == KindRestart {
		attempts = spec.RestartAttempts + 1 // the first try, then the retries
	}

	bootCtx, cancelBoot := context.WithCancel(ctx)
	defer cancelBoot()
	fresh := make([]*Container, len(jobs))
	var (
		wg       sync.WaitGroup
		failOnce sync.Once
		failure  *bootError
	)
	for i, p := range jobs {
		wg.Go(func() {
			c, err := s.bootRetry(bootCtx, spec, p, d.Release, attempts)
			fresh[i] = c
			var be *bootError
			if errors.As(err, &be) {
				failOnce.Do(func() { failure = be; cancelBoot() })
			}
		})
	}
	wg.Wait()
	var started []*Container
	var lastReady time.Time
	for _, c := range fresh {
		if c != nil {
			started = append(started, c)
			if c.ReadyAt.After(lastReady) {
				lastReady = c.ReadyAt
			}
		}
	}
	if failure == nil && ctx.Err() == nil && len(spec.Postdeploy) > 0 && d.Kind == KindDeploy {
		if err := s.runHook(ctx, spec, d.Release); err != nil {
			var be *bootError
			if errors.As(err, &be) {
				failure = be
			}
		}
	}
	if failure == nil && ctx.Err() == nil {
		// One may have died after it booted, while waiting for the others.
		s.mu.Lock()
		for _, c := range started {
			if c.State == StateCrashed {
				failure = &bootError{StatusCrashedError, fmt.Sprintf("%s container %s exited after it booted, before the switch", c.Process, c.Name)}
				break
			}
		}
		s.mu.Unlock()
	}
	if ctx.Err() != nil || failure != nil {
		s.discard(started, spec.StopTimeout)
		s.mu.Lock()
		switch {
		case failure != nil:
			s.endLocked(d, failure.status, failure.msg)
		case s.ctx.Err() != nil:
			s.endLocked(d, StatusAborted, "podswitch is shutting down")
		case s.removed:
			s.endLocked(d, StatusAborted, "the app was removed from the config")
		default:
			s.endLocked(d, StatusAborted, "replaced by a newer deployment")
		}
		s.mu.Unlock()
		if failure != nil && d.Kind == KindRestart {
			s.emit(Event{Name: EventGaveUp, Process: d.Process, Container: d.Container,
				Message: fmt.Sprintf("restart gave up after %d attempts: %s", attempts, failure.msg)})
		}
		return
	}

	// Switch: what the new containers replace leaves the pool at once.
	s.mu.Lock()
	isFresh := make(map[string]bool, len(started))
	for _, c := range started {
		isFresh[c.ID] = true
		c.State = StateReady
	}
	var old []*Container
	for _, c := range s.containers {
		if isFresh[c.ID] || (c.State != StateReady && c.State != StateStarting) {
			continue
		}
		switch {
		case d.Container != "" && c.ID != d.Container:
			continue
		case d.Process != "" && c.Process != d.Process:
			continue
		case d.Kind == KindRestart && c.Release != d.Release:
			continue
		}
		c.State = StateDraining
		old = append(old, c)
	}
	if d.Kind == KindDeploy || s.current == nil {
		s.current = &ReleaseInfo{ID: d.Release, Image: spec.Image, Status: StatusSuccess, DeployedAt: time.Now(), Deployment: d.ID}
		s.currentSpec = spec
		if s.desired.ReleaseID() == d.Release {
			// Counts may have changed while it booted: the loop scales.
			s.currentSpec = s.desired
		}
	}
	oldPool := s.publishLocked()
	d.LastReadyAt = lastReady
	d.SwitchedAt = time.Now()
	s.endLocked(d, StatusSuccess, "")
	s.mu.Unlock()
	s.log.Info("traffic switched", zap.Int64("deployment", d.ID), zap.String("release", d.Release),
		zap.Duration("switch_latency", d.SwitchedAt.Sub(lastReady)), zap.Int("retiring", len(old)))
	s.retire(oldPool, old, spec)
}

// runHook runs the postdeploy command once in a one-off container of the
// release and waits for it to exit.
func (s *Supervisor) runHook(ctx context.Context, spec AppSpec, release string) error {
	hctx, cancel := context.WithTimeout(ctx, spec.HookTimeout)
	defer cancel()
	name := fmt.Sprintf("podswitch-%s-%s-%s-%06x", spec.Name, HookProcess, release[:8], rand.Uint32()&0xffffff)
	s.log.Info("postdeploy hook started", zap.String("release", release), zap.Strings("command", spec.Postdeploy))
	// A runtime that is away is waited for (within the hook's timeout), as
	// for the release's own containers.
	var info ContainerInfo
	err := s.withRuntime(hctx, func() (err error) {
		info, err = s.deps.Runtime.Run(hctx, ContainerSpec{
			Name: name, Image: spec.Image, Command: spec.Postdeploy, Env: spec.Env,
			Labels:      map[string]string{LabelApp: spec.Name, LabelRelease: release, LabelProcess: HookProcess},
			StopTimeout: spec.StopTimeout,
		})
		if errors.Is(err, ErrUnavailable) && info.ID != "" {
			s.discardID(info.ID, 0) // created but not started: the next try reuses the name
			info = ContainerInfo{}
		}
		return err
	})
	defer func() {
		if info.ID != "" {
			s.discardID(info.ID, 0)
		}
	}()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &bootError{StatusHookError, fmt.Sprintf("postdeploy hook could not start: %v", err)}
	}
	var code int
	err = s.withRuntime(hctx, func() (err error) {
		code, err = s.deps.Runtime.Wait(hctx, info.ID)
		return err
	})
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case hctx.Err() != nil:
		return &bootError{StatusHookError, fmt.Sprintf("postdeploy hook did not end within %s", spec.HookTimeout)}
	case err != nil:
		return &bootError{StatusHookError, fmt.Sprintf("postdeploy hook: %v", err)}
	case code != 0:
		return &bootError{StatusHookError, fmt.Sprintf("postdeploy hook exited with code %d", code)}
	}
	s.log.Info("postdeploy hook succeeded", zap.String("release", release))
	return nil
}

// discardID removes one container that never served.
// A runtime that is away is waited for as long as the supervisor runs;
// after that the next start's adoption removes what is left.
func (s *Supervisor) discardID(id string, stopTimeout time.Duration) {
	if stopTimeout > 0 {
		// It may have run (and taken work): SIGTERM and the grace period
		// first, as for any container.
		err := s.withRuntime(s.ctx, func() error {
			ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), stopTimeout+cleanupTimeout)
			defer cancel()
			return s.deps.Runtime.Stop(ctx, id, stopTimeout)
		})
		if err != nil && !errors.Is(err, ErrNotFound) {
			s.log.Warn("stopping container failed", zap.String("container", id), zap.Error(err))
		}
	}
	err := s.withRuntime(s.ctx, func() error {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), cleanupTimeout)
		defer cancel()
		return s.deps.Runtime.Remove(ctx, id)
	})
	if err != nil && !errors.Is(err, ErrNotFound) {
		s.log.Error("removing container failed", zap.String("container", id), zap.Error(err))
	}
}
