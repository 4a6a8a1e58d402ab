package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"
)

// Postdeploy hooks. One hook of an app runs at a time, ever, and podswitch
// never kills one before postdeploy_timeout:
//   - a deployment (deploy, rollback, config change) that arrives while a
//     hook runs is queued: it waits for the hook's end before it boots
//     anything (its record says so); the deployment whose hook runs is
//     replaced by it, so once its hook has ended it is aborted without a
//     switch (whatever the hook's exit code), and the queued one goes on;
//   - at postdeploy_timeout the hook gets SIGTERM, stop_timeout, SIGKILL;
//   - when the process exits, a running hook is left running; the next
//     start stops it (SIGTERM, stop_timeout, SIGKILL) before any hook of
//     the app runs again.

// hookRun is the postdeploy hook of the app that runs (or the one a
// previous run left, being stopped).
type hookRun struct {
	// deployment is the deployment it belongs to; 0 for one a previous
	// run left.
	deployment int64
	// done is closed once the hook's container is gone.
	done chan struct{}
}

// endHookLocked notes that h ended.
func (s *Supervisor) endHookLocked(h *hookRun) {
	if s.hook == h {
		s.hook = nil
	}
	close(h.done)
}

// waitForHook blocks r while a hook of the app runs; with claim, it then
// claims the hook slot for r's own hook and returns it. While it waits,
// r's record says what it waits for. It returns errAborted when r was
// aborted first.
func (s *Supervisor) waitForHook(r *rollout, claim bool) (*hookRun, error) {
	s.lock()
	var waited *hookRun
	t0 := time.Now()
	for {
		if r.ctx.Err() != nil {
			s.unlock()
			return nil, errAborted
		}
		h := s.hook
		if h == nil {
			break
		}
		if h != waited {
			waited = h
			note := fmt.Sprintf("waiting for the postdeploy hook of deployment %d to end", h.deployment)
			if h.deployment == 0 {
				note = "waiting for the postdeploy hook a previous run left to stop"
			}
			r.e.d.Note, r.e.d.NoteAt = note, time.Now()
			s.touch()
			s.log.Info("deployment waits for a postdeploy hook", zap.Int64("deployment", r.id), zap.Int64("hook_of", h.deployment))
		}
		s.unlock()
		select {
		case <-h.done:
		case <-r.ctx.Done():
		}
		s.lock()
	}
	if waited != nil {
		note := fmt.Sprintf("waited %s for the postdeploy hook of deployment %d", time.Since(t0).Round(time.Millisecond), waited.deployment)
		if waited.deployment == 0 {
			note = fmt.Sprintf("waited %s for the postdeploy hook a previous run left to stop", time.Since(t0).Round(time.Millisecond))
		}
		r.e.d.Note, r.e.d.NoteAt = note, time.Now()
		s.touch()
	}
	var h *hookRun
	if claim {
		h = &hookRun{deployment: r.id, done: make(chan struct{})}
		s.hook = h
	}
	s.unlock()
	return h, nil
}

// runHook runs the release's postdeploy command once, in a one-off
// container of the release, and waits for it to exit: a non-zero exit, a
// hook that cannot start or one that runs past postdeploy_timeout fails
// the deployment (hook-error) and what serves keeps serving. Its output is
// kept in the deployment's record. Once started, the hook is not cut by an
// abort of r (a newer deployment, a removal): it runs to its end, then r
// is aborted. At postdeploy_timeout it gets SIGTERM, stop_timeout, SIGKILL.
// When the process exits it is left running.
func (s *Supervisor) runHook(r *rollout) error {
	h, err := s.waitForHook(r, true)
	if err != nil {
		return err
	}
	spec := r.spec
	// The hook's life is bounded by postdeploy_timeout and by the process
	// (s.ctx), never by r.
	hctx, cancel := context.WithTimeout(s.ctx, spec.HookTimeout)
	defer cancel()
	s.lock()
	r.e.d.Hook = &HookRecord{StartedAt: time.Now()}
	s.touch()
	s.unlock()
	s.log.Info("postdeploy hook started", zap.Int64("deployment", r.id), zap.String("release", r.release), zap.Strings("command", spec.Postdeploy))

	// A runtime that is away is waited for (within the hook's timeout), as
	// for the release's own containers. Each try has a name of its own: a
	// create whose answer was lost leaves a container the resync removes.
	var info ContainerInfo
	var name string
	// The hook's host is chosen once: a create whose answer was lost is
	// tried again on the same host, where the name of a hook that did
	// start conflicts, rather than on another, where it would run twice.
	host := ""
	err = s.withRuntime(hctx, func() (err error) {
		name = containerName(spec.Name, HookProcess, r.release)
		s.lock()
		if host == "" {
			picked, perr := s.placeLocked(spec, HookProcess, r.release)
			if perr != nil {
				s.unlock()
				return fmt.Errorf("%w: %w", ErrUnavailable, perr) // waited for, as a runtime away
			}
			host = picked
		}
		s.fleet.markCreating(name, placed{host, HookProcess, r.release})
		s.unlock()
		info, err = s.rt.Run(hctx, ContainerSpec{
			Name: name, Image: spec.RunImage(), Command: spec.Postdeploy, Env: spec.Env,
			Labels:      s.labels(spec.Name, r.release, HookProcess),
			StopTimeout: spec.StopTimeout, Settings: spec.Settings, Host: host,
		})
		if err != nil {
			s.lock()
			s.fleet.doneCreating(name)
			s.unlock()
			if info.ID != "" {
				s.spawn(func() { s.removeQuietly(info.ID) })
			}
			info = ContainerInfo{}
		}
		return err
	})
	if err != nil {
		s.lock()
		s.endHookLocked(h)
		s.unlock()
		if s.ctx.Err() != nil {
			return errAborted
		}
		return s.hookEnded(r, nil, &bootError{StatusHookError, fmt.Sprintf("postdeploy hook could not start: %v", err)})
	}
	s.lock()
	r.e.d.Hook.Container = info.ID
	s.unlock()
	var code int
	err = s.withRuntime(hctx, func() (err error) {
		code, err = s.rt.Wait(hctx, info.ID)
		return err
	})
	timedOut := false
	switch {
	case s.ctx.Err() != nil:
		// The process exits: the hook is left running, and the next start
		// stops it before any hook of the app runs again.
		s.lock()
		s.endHookLocked(h)
		s.unlock()
		s.log.Info("postdeploy hook left running: podswitch stops", zap.Int64("deployment", r.id), zap.String("container", shortID(info.ID)))
		return errAborted
	case hctx.Err() != nil:
		timedOut = true
		s.log.Warn("postdeploy hook runs past postdeploy_timeout, stopping it", zap.Int64("deployment", r.id),
			zap.Duration("postdeploy_timeout", spec.HookTimeout), zap.Duration("stop_timeout", spec.StopTimeout))
		code, err = s.stopHook(info.ID, spec.StopTimeout)
	}
	s.captureHookOutput(r, info.ID)
	oom := err == nil && !timedOut && code == 137 && s.oomKilled(info.ID)
	// The hook's container is removed before another hook may run.
	s.spawn(func() {
		s.removeQuietly(info.ID)
		s.lock()
		s.fleet.doneCreating(name)
		s.endHookLocked(h)
		s.unlock()
	})
	var codep *int
	if err == nil {
		codep = &code
	}
	switch {
	case timedOut:
		return s.hookEnded(r, codep, &bootError{StatusHookError, fmt.Sprintf("postdeploy hook did not end within %s", spec.HookTimeout)})
	case r.ctx.Err() != nil:
		s.hookEnded(r, codep, nil)
		return errAborted
	case err != nil:
		return s.hookEnded(r, nil, &bootError{StatusHookError, fmt.Sprintf("postdeploy hook: %v", err)})
	case oom:
		return s.hookEnded(r, &code, &bootError{StatusHookError, fmt.Sprintf("postdeploy hook was killed for exceeding its memory limit: out of memory (OOMKilled, exit code %d)", code)})
	case code != 0:
		return s.hookEnded(r, &code, &bootError{StatusHookError, fmt.Sprintf("postdeploy hook exited with code %d", code)})
	}
	s.log.Info("postdeploy hook succeeded", zap.Int64("deployment", r.id), zap.String("release", r.release))
	return s.hookEnded(r, &code, nil)
}

// oomKilled asks the runtime whether container id, which exited, was
// killed for its memory limit; briefly, and no when it cannot tell.
func (s *Supervisor) oomKilled(id string) bool {
	ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
	defer cancel()
	info, err := s.rt.Inspect(ctx, id)
	return err == nil && info.OOMKilled
}

// stopHook stops a hook that ran past its timeout (SIGTERM, stop_timeout,
// SIGKILL) and returns its exit code.
func (s *Supervisor) stopHook(id string, stopTimeout time.Duration) (int, error) {
	var code int
	err := s.withRuntime(s.ctx, func() error {
		ctx, cancel := context.WithTimeout(s.ctx, stopTimeout+cleanupTimeout)
		defer cancel()
		if err := s.rt.Stop(ctx, id, stopTimeout); err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		var err error
		code, err = s.rt.Wait(ctx, id)
		return err
	})
	return code, err
}

// stopLeftoverHooksLocked stops the postdeploy hooks a previous run left
// running (SIGTERM, stop_timeout, SIGKILL) and removes them; no hook of
// the app runs until they are gone. Called with the lock held, by
// adoption.
func (s *Supervisor) stopLeftoverHooksLocked(infos []ContainerInfo, stopTimeout time.Duration) {
	if len(infos) == 0 {
		return
	}
	h := &hookRun{done: make(chan struct{})}
	s.hook = h
	for _, info := range infos {
		s.fleet.markCreating(info.Name, placed{HostOf(info.ID), HookProcess, info.Labels[LabelRelease]})
		s.log.Warn("a postdeploy hook a previous run left still runs: stopping it before any hook runs again",
			zap.String("container", shortID(info.ID)), zap.String("release", info.Labels[LabelRelease]))
	}
	s.spawn(func() {
		each(s.ctx, make(chan struct{}, maxBoots), infos, func(_ int, info ContainerInfo) {
			_, err := s.stopHook(info.ID, stopTimeout)
			if s.ctx.Err() != nil {
				return // exiting: the next start stops it
			}
			if err != nil && !errors.Is(err, ErrNotFound) {
				s.log.Warn("stopping a leftover postdeploy hook", zap.String("container", shortID(info.ID)), zap.Error(err))
			}
			s.removeQuietly(info.ID)
		})
		if s.ctx.Err() != nil {
			return
		}
		s.lock()
		for _, info := range infos {
			s.fleet.doneCreating(info.Name)
		}
		s.endHookLocked(h)
		s.unlock()
		s.poke()
	})
}

// hookEnded records the end of r's hook and returns err.
func (s *Supervisor) hookEnded(r *rollout, code *int, err error) error {
	s.lock()
	defer s.unlock()
	r.e.d.Hook.EndedAt = time.Now()
	r.e.d.Hook.ExitCode = code
	s.touch()
	return err
}

func (s *Supervisor) captureHookOutput(r *rollout, id string) {
	ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
	defer cancel()
	var lines []string
	err := s.rt.Logs(ctx, id, LogOptions{Tail: outputLines}, func(l LogLine) { lines = append(lines, l.Text) })
	if err != nil && !errors.Is(err, ErrNotFound) && len(lines) == 0 {
		return
	}
	if len(lines) > outputLines {
		lines = lines[len(lines)-outputLines:]
	}
	s.lock()
	r.e.d.Hook.Output = redact(lines, r.spec.Env, s.desired.Env, s.config.Env)
	s.unlock()
}
