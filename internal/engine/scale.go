package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"go.uber.org/zap"
)

// scale brings the number of containers of each process type of the current
// release to the counts of spec: surplus containers leave the pool, drain and
// stop (the newest first); missing ones boot, each retried up to
// restart_attempts times. A process type whose boot gave up is left alone
// until the next Update, Restart or scale request. It reports whether
// another pass is needed.
func (s *Supervisor) scale() bool {
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	s.mu.Lock()
	// Read under the lock that publishes scaleCancel, so that an Update
	// after this point cancels this pass.
	spec := s.currentSpec
	rel := spec.ReleaseID()
	if s.current == nil || s.current.ID != rel {
		s.mu.Unlock()
		return false
	}
	s.scaleCancel = cancel
	have := map[string][]*Container{}
	for _, c := range s.containers {
		if c.Release == rel && (c.State == StateReady || c.State == StateStarting) {
			have[c.Process] = append(have[c.Process], c)
		}
	}
	var surplus []*Container
	var missing []ProcessSpec
	for _, p := range spec.Processes {
		cs := have[p.Name]
		slices.SortFunc(cs, func(a, b *Container) int { return b.StartedAt.Compare(a.StartedAt) })
		for i := 0; i < len(cs)-p.Count; i++ {
			cs[i].State = StateDraining
			surplus = append(surplus, cs[i])
		}
		if !s.gaveUp[p.Name] {
			for i := len(cs); i < p.Count; i++ {
				missing = append(missing, p)
			}
		}
	}
	// Containers of process types the release no longer has.
	for name, cs := range have {
		if _, ok := spec.Process(name); !ok {
			for _, c := range cs {
				c.State = StateDraining
				surplus = append(surplus, c)
			}
		}
	}
	var oldPool *Pool
	if len(surplus) > 0 {
		oldPool = s.publishLocked()
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.scaleCancel = nil
		s.mu.Unlock()
	}()
	if len(surplus) > 0 {
		s.log.Info("scaling down", zap.Int("containers", len(surplus)))
		s.retire(oldPool, surplus, spec)
	}
	if len(missing) == 0 {
		return false
	}
	s.log.Info("scaling up", zap.Int("containers", len(missing)))
	var wg sync.WaitGroup
	for _, p := range missing {
		wg.Go(func() {
			c, err := s.bootRetry(ctx, spec, p, rel, spec.RestartAttempts+1)
			if err != nil {
				if c != nil {
					s.discard([]*Container{c}, spec.StopTimeout)
				}
				var be *bootError
				if !errors.As(err, &be) {
					return // cancelled: the loop looks again
				}
				s.mu.Lock()
				first := !s.gaveUp[p.Name]
				s.gaveUp[p.Name] = true
				s.mu.Unlock()
				if first {
					msg := fmt.Sprintf("%s container could not be started after %d attempts: %s", p.Name, spec.RestartAttempts+1, be.msg)
					s.log.Error("gave up starting a container", zap.String("process", p.Name), zap.String("error", msg))
					s.emit(Event{Name: EventGaveUp, Process: p.Name, Message: msg})
				}
				return
			}
			s.mu.Lock()
			if c.State == StateStarting {
				c.State = StateReady
			}
			if s.current != nil && s.current.ID == c.Release {
				s.publishLocked()
			}
			s.mu.Unlock()
		})
	}
	wg.Wait()
	return ctx.Err() == nil && s.ctx.Err() == nil && s.needsScale(spec)
}

// needsScale reports whether a process type not given up on is still short
// of containers (one crashed while others booted).
func (s *Supervisor) needsScale(spec AppSpec) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := map[string]int{}
	for _, c := range s.containers {
		if c.Release == spec.ReleaseID() && (c.State == StateReady || c.State == StateStarting) {
			n[c.Process]++
		}
	}
	for _, p := range spec.Processes {
		if !s.gaveUp[p.Name] && n[p.Name] < p.Count {
			return true
		}
	}
	return false
}
