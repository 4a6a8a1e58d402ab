package engine

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"
)

// The data plane does not wait for Podman: every ready web container gets a
// TCP connect every healthInterval, off the request path. One that fails
// healthFails in a row leaves the pool at once (within about a second of
// its death, however slow or frozen Podman is, however late its events),
// and Podman is asked whether it still runs: an exit is handled as a crash.
// One that answers again comes back.
var (
	healthInterval = 500 * time.Millisecond
	healthTimeout  = 300 * time.Millisecond
	healthFails    = 2
)

// checkHealth runs health passes until the supervisor ends.
func (s *Supervisor) checkHealth() {
	t := time.NewTicker(healthInterval)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		s.healthPass()
	}
}

func (s *Supervisor) healthPass() {
	s.lock()
	var cs []*Container
	var addrs []string
	for _, c := range s.containers {
		if c.state == StateReady && c.Process == WebProcess && c.Addr != "" {
			cs = append(cs, c)
			addrs = append(addrs, c.Addr)
		}
	}
	s.unlock()
	if len(cs) == 0 {
		return
	}
	ok := make([]bool, len(cs))
	each(s.ctx, s.probes, addrs, func(i int, addr string) {
		ctx, cancel := context.WithTimeout(s.ctx, healthTimeout)
		defer cancel()
		ok[i] = s.deps.Prober.Probe(ctx, addr) == nil
	})
	if s.ctx.Err() != nil {
		return
	}
	s.lock()
	defer s.unlock()
	for i, c := range cs {
		if c.state != StateReady {
			continue
		}
		if ok[i] {
			c.probeFails = 0
			if c.unreachable {
				c.unreachable = false
				s.poolDirty = true
				s.touch()
				s.log.Info("container answers again, back in the pool", zap.String("container", shortID(c.ID)), zap.String("dial", c.Addr))
			}
			continue
		}
		c.probeFails++
		if c.probeFails < healthFails || c.unreachable {
			continue
		}
		c.unreachable = true
		s.poolDirty = true
		s.touch()
		s.log.Warn("container does not accept connections, out of the pool", zap.String("container", shortID(c.ID)),
			zap.String("process", c.Process), zap.String("dial", c.Addr))
		if !c.inspecting {
			c.inspecting = true
			s.spawn(func() { s.inspectUnreachable(c) })
		}
	}
}

// inspectUnreachable asks the runtime whether c, which stopped answering,
// still runs; an exit is a crash. A runtime that does not answer is asked
// again later, by the next resync.
func (s *Supervisor) inspectUnreachable(c *Container) {
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	info, err := s.rt.Inspect(ctx, c.ID)
	s.lock()
	c.inspecting = false
	s.unlock()
	switch {
	case errors.Is(err, ErrNotFound):
		s.exited(c.ID, -1)
	case err == nil && !info.Running:
		s.exited(c.ID, info.ExitCode)
	}
}
