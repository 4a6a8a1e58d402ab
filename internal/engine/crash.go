package engine

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"
)

// containerExited handles a container that exited outside podswitch. A
// ready container leaves the pool at once, is removed, and the loop starts
// a replacement (with the retry policy of a scale). Containers that are
// booting, draining or stopping are someone else's business.
func (s *Supervisor) containerExited(id string, code int) {
	s.mu.Lock()
	c := s.containers[id]
	if c != nil && c.State == StateStarting && !c.ReadyAt.IsZero() {
		// Booted, not yet switched in (its release waits for its siblings
		// or the postdeploy hook): the switch must not take it.
		c.State = StateCrashed
		s.mu.Unlock()
		return
	}
	if c == nil || c.State != StateReady {
		s.mu.Unlock()
		return
	}
	c.State = StateCrashed
	if c.Process == WebProcess {
		s.publishLocked()
	}
	s.mu.Unlock()
	msg := fmt.Sprintf("%s container %s exited with code %d", c.Process, c.Name, code)
	if code < 0 {
		msg = fmt.Sprintf("%s container %s is gone", c.Process, c.Name)
	}
	s.log.Error("container crashed", zap.String("container", c.ID), zap.String("process", c.Process), zap.Int("exit_code", code))
	s.emit(Event{Name: EventCrashed, Process: c.Process, Container: c.ID, Message: msg})
	s.poke()
	go s.discard([]*Container{c}, 0)
}

// resync compares the ready containers with what the runtime has, so that
// an exit the event stream missed is handled within resyncInterval.
func (s *Supervisor) resync() {
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	list, err := s.deps.Runtime.List(ctx, s.name)
	s.setRuntimeErr(err)
	if err != nil {
		return
	}
	running := make(map[string]ContainerInfo, len(list))
	for _, info := range list {
		running[info.ID] = info
	}
	s.mu.Lock()
	var dead []string
	codes := map[string]int{}
	for id, c := range s.containers {
		if c.State != StateReady {
			continue
		}
		info, ok := running[id]
		switch {
		case !ok:
			dead = append(dead, id)
			codes[id] = -1
		case !info.Running:
			dead = append(dead, id)
			codes[id] = info.ExitCode
		}
	}
	s.mu.Unlock()
	for _, id := range dead {
		s.containerExited(id, codes[id])
	}
	s.poke()
}
