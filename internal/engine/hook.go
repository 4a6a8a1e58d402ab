package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"
)

// runHook runs the release's postdeploy command once, in a one-off
// container of the release, and waits for it to exit: a non-zero exit, a
// hook that cannot start or one that runs past postdeploy_timeout fails
// the deployment (hook-error) and what serves keeps serving. Its output is
// kept in the deployment's record.
func (s *Supervisor) runHook(r *rollout) error {
	spec := r.spec
	hctx, cancel := context.WithTimeout(r.ctx, spec.HookTimeout)
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
	err := s.withRuntime(hctx, func() (err error) {
		name = containerName(spec.Name, HookProcess, r.release)
		s.lock()
		s.creating[name] = true
		s.unlock()
		info, err = s.rt.Run(hctx, ContainerSpec{
			Name: name, Image: spec.RunImage(), Command: spec.Postdeploy, Env: spec.Env,
			Labels:      s.labels(spec.Name, r.release, HookProcess),
			StopTimeout: spec.StopTimeout,
		})
		if err != nil {
			s.lock()
			delete(s.creating, name)
			s.unlock()
			if info.ID != "" {
				s.spawn(func() { s.removeQuietly(info.ID) })
			}
			info = ContainerInfo{}
		}
		return err
	})
	if info.ID != "" {
		defer func() {
			s.spawn(func() {
				s.removeQuietly(info.ID)
				s.lock()
				delete(s.creating, name)
				s.unlock()
			})
		}()
	}
	if err != nil {
		if r.ctx.Err() != nil {
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
	s.captureHookOutput(r, info.ID)
	switch {
	case r.ctx.Err() != nil:
		return errAborted
	case hctx.Err() != nil:
		return s.hookEnded(r, nil, &bootError{StatusHookError, fmt.Sprintf("postdeploy hook did not end within %s", spec.HookTimeout)})
	case err != nil:
		return s.hookEnded(r, nil, &bootError{StatusHookError, fmt.Sprintf("postdeploy hook: %v", err)})
	case code != 0:
		return s.hookEnded(r, &code, &bootError{StatusHookError, fmt.Sprintf("postdeploy hook exited with code %d", code)})
	}
	s.log.Info("postdeploy hook succeeded", zap.Int64("deployment", r.id), zap.String("release", r.release))
	return s.hookEnded(r, &code, nil)
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
