package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.uber.org/zap"
)

// Liveness. The data plane does not wait for Podman: every ready web
// container is checked every healthInterval, off the request path, with a
// GET of ready_path when the app has one (its status must be within
// ready_status) and a TCP connect otherwise, each check answered within
// healthTimeout or failed. One that fails healthFails checks in a row is
// unhealthy: it leaves the pool at once (within about a second of a crash,
// a closed listener or a deadlock, however slow or frozen Podman is), and
// Podman is asked whether it still runs (an exit is a crash). One that
// answers again comes back. One that stays unhealthy for unhealthy_timeout
// is replaced new-first, like a crash: a replacement boots, and only once
// it is ready is the unhealthy one retired; the replacement is counted and
// backed off like a crash replacement. When every ready web container of
// the app is unhealthy, the pool keeps them all rather than none (panic
// routing), and the status says so.
//
// An app may ask for its checks to follow traffic (rest_check_interval):
// while it got a request within healthBusyFor, or has a container that
// failed a check, it is checked every healthInterval; at rest only every
// rest_check_interval, so that a host of many quiet apps does not spend a
// core knocking on them (nor waking up for nothing). The first request
// after a rest is signalled by the request path (PoolRef.traffic, at most
// once per idle tick): a pass runs at once, and the fast pace is back.
var (
	healthInterval = 500 * time.Millisecond
	healthBusyFor  = 10 * time.Second
	healthTimeout  = 400 * time.Millisecond
	healthFails    = 2
)

// MaxRestCheckInterval bounds rest_check_interval.
const MaxRestCheckInterval = 5 * time.Minute

// HTTPProber is a Prober that can also send the GET of a readiness path.
// A Prober that is not one gets the engine's own HTTP client.
type HTTPProber interface {
	// ProbeHTTP sends one GET of path to addr and returns the answer's
	// status.
	ProbeHTTP(ctx context.Context, addr, path string) (int, error)
}

// probeHTTP sends one GET of path to addr, through the prober when it can.
func (s *Supervisor) probeHTTP(ctx context.Context, addr, path string) (int, error) {
	if hp, ok := s.deps.Prober.(HTTPProber); ok {
		return hp.ProbeHTTP(ctx, addr, path)
	}
	return httpProbe(ctx, addr, path)
}

// checkHealth runs health passes until the supervisor ends.
func (s *Supervisor) checkHealth() {
	t := time.NewTimer(healthInterval)
	defer t.Stop()
	var last time.Time
	resting := false
	for {
		traffic := false
		select {
		case <-s.ctx.Done():
			return
		case <-s.pool.traffic:
			traffic = true
		case <-t.C:
		}
		now := time.Now()
		if traffic && !resting {
			continue // the fast pace goes on: its timer is set
		}
		rest := time.Duration(s.restCheck.Load())
		if traffic || rest <= healthInterval || s.busy(now) || now.Sub(last) >= rest-healthInterval/2 {
			last = now
			// A check that failed once is made again at once, not at
			// the next tick: a dead container is out after two checks,
			// in about a second.
			for s.healthPass() && s.ctx.Err() == nil {
			}
			now = time.Now()
		}
		// At the fast pace, passes start every healthInterval, however
		// long one took (a ticker's pace); at rest, every rest.
		next := max(0, last.Add(healthInterval).Sub(now))
		if resting = rest > healthInterval && !s.busy(now); resting {
			next = max(healthInterval, last.Add(rest).Sub(now))
		}
		t.Reset(next)
	}
}

// busy reports whether the app's containers are checked at the fast pace
// at now: it had a request since the idle loop last looked or within
// healthBusyFor, or a container fails its checks. It takes no lock.
func (s *Supervisor) busy(now time.Time) bool {
	return s.pool.used.Load() || s.healthSuspect.Load() ||
		now.Sub(time.Unix(0, s.lastUsed.Load())) < healthBusyFor
}

// liveCheck is one health check of one container: nil when it passed,
// else why it failed.
func (s *Supervisor) liveCheck(addr, path string, status [2]int) error {
	ctx, cancel := context.WithTimeout(s.ctx, healthTimeout)
	defer cancel()
	if path == "" {
		if err := s.deps.Prober.Probe(ctx, addr); err != nil {
			return &checkError{"does not accept connections", err}
		}
		return nil
	}
	code, err := s.probeHTTP(ctx, addr, path)
	switch {
	case err != nil && ctx.Err() != nil:
		return &checkError{fmt.Sprintf("GET %s: no answer within %s", path, healthTimeout), err}
	case err != nil:
		return &checkError{fmt.Sprintf("GET %s: no answer (%v)", path, err), err}
	case code < status[0] || code > status[1]:
		return fmt.Errorf("GET %s answered %d (want %d-%d)", path, code, status[0], status[1])
	}
	return nil
}

// checkError is a failed check in users' words; it wraps what the dial or
// the exchange returned, which tells a host cut off (see hostEvidence)
// from an app that does not answer.
type checkError struct {
	msg   string
	cause error
}

func (e *checkError) Error() string { return e.msg }
func (e *checkError) Unwrap() error { return e.cause }

// healthPass checks every ready web container once. It reports whether one
// failed a check but not yet healthFails in a row: it is checked again at
// once.
func (s *Supervisor) healthPass() (again bool) {
	s.lock()
	var addrs []string
	path, status := s.desired.ReadyPath, s.desired.ReadyStatus
	if status == [2]int{} {
		status = [2]int{200, 299}
	}
	cs := s.fleet.readyWeb()
	for _, c := range cs {
		addrs = append(addrs, c.Addr)
	}
	s.unlock()
	if len(cs) == 0 {
		s.healthSuspect.Store(false)
		return false
	}
	errs := make([]error, len(cs))
	each(s.ctx, s.probes, addrs, func(i int, addr string) {
		errs[i] = s.liveCheck(addr, path, status)
	})
	if s.ctx.Err() != nil {
		return false
	}
	s.lock()
	defer s.unlock()
	defer func() {
		s.healthSuspect.Store(slices.ContainsFunc(s.fleet.readyWeb(), func(c *Container) bool { return c.unhealthy || c.probeFails > 0 }))
	}()
	now := time.Now()
	for i, c := range cs {
		if hs := s.deps.Hosts; hs != nil {
			hs.NoteCheck(c.ID, errs[i])
		}
		if c.state != StateReady {
			continue
		}
		if errs[i] == nil {
			c.probeFails = 0
			if c.unhealthy {
				s.healthyAgainLocked(c)
			}
			continue
		}
		c.probeFails++
		c.healthErr = errs[i].Error()
		if c.probeFails < healthFails {
			again = true
			continue
		}
		if !c.unhealthy {
			c.unhealthy = true
			c.unhealthySince = now
			s.fleet.markPoolDirty()
			s.touch()
			s.log.Warn("container fails its health check, out of the pool", zap.String("container", shortID(c.ID)),
				zap.String("process", c.Process), zap.String("dial", c.Addr), zap.String("check", c.healthErr))
			if !c.inspecting {
				c.inspecting = true
				s.spawn(func() { s.inspectUnreachable(c) })
			}
		}
		s.replaceUnhealthyLocked(c, now)
	}
	return again
}

// healthyAgainLocked puts c, which answers its check again, back in the
// pool. A replacement asked for it and not ready yet is not needed any
// more: the reconcile finds one container too many and discards the one
// not serving, the replacement.
func (s *Supervisor) healthyAgainLocked(c *Container) {
	c.unhealthy, c.unhealthySince, c.healthErr = false, time.Time{}, ""
	s.fleet.markPoolDirty()
	s.touch()
	s.log.Info("container answers its health check again, back in the pool", zap.String("container", shortID(c.ID)), zap.String("dial", c.Addr))
	if c.replacing {
		c.replacing = false
		s.log.Info("the replacement of the container is no longer needed", zap.String("container", shortID(c.ID)))
		s.poke()
	}
}

// replaceUnhealthyLocked asks for the replacement of c once it has been
// unhealthy for unhealthy_timeout: it stops counting toward its process
// type's count, so the reconcile boots a replacement, and is retired once
// the type has its count of ready containers (see reconcileProcessLocked).
// The replacement counts as one of a crash: the first is at once, those
// that follow soon after are backed off, up to restart_attempts, then the
// type gives up and users are told.
func (s *Supervisor) replaceUnhealthyLocked(c *Container, now time.Time) {
	timeout := s.desired.UnhealthyTimeout
	sv := s.serving
	lost := s.hostLost(c)
	if c.replacing || !lost && (timeout <= 0 || now.Sub(c.unhealthySince) < timeout) ||
		c.owner != 0 || sv == nil || sv.spec == nil || c.Release != sv.ID {
		return
	}
	c.replacing = true
	msg := fmt.Sprintf("%s container %s failed its health check for %s: %s", c.Process, c.Name, timeout, c.healthErr)
	if lost {
		msg = fmt.Sprintf("%s container %s is on host %s, lost: its containers have not answered for host_down_after (%s): %s",
			c.Process, c.Name, HostOf(c.ID), s.deps.Hosts.DownAfter(), c.healthErr)
	}
	s.log.Warn("replacing an unhealthy container", zap.String("container", shortID(c.ID)), zap.String("process", c.Process),
		zap.Duration("unhealthy_for", now.Sub(c.unhealthySince)), zap.String("check", c.healthErr))
	ps := s.proc(c.Process)
	if c.unhealthySince.Sub(c.entered(StateReady)) >= stableAfter {
		// It served long enough before it failed: a new incident.
		ps.crashes = 0
		ps.crashBackoff.Reset()
	}
	s.crashedInLoopLocked(s.servingSpecLocked(), c, ps, msg)
	s.touch()
	s.poke()
}

// hostLost reports whether c runs on a host of several that is lost.
func (s *Supervisor) hostLost(c *Container) bool {
	return s.deps.Hosts != nil && s.deps.Hosts.State(HostOf(c.ID)) == HostLost
}

// misplacedLocked says why c, of the serving release, must be replaced
// on another host: its host is lost (a web container's checks say it
// first), or the app no longer runs there; "" when it may stay.
func (s *Supervisor) misplacedLocked(c *Container) string {
	host := HostOf(c.ID)
	switch {
	case host == "" || s.deps.Hosts == nil:
		return ""
	case s.hostLost(c):
		return "its host is lost"
	case len(s.desired.Hosts) > 0 && !slices.Contains(s.desired.Hosts, host):
		return "the app no longer runs on its host"
	}
	return ""
}

// retireReplacedLocked retires the containers of process type name of
// the serving release that wait for their replacement, once ready is at
// least the type's count: the replacements serve.
func (s *Supervisor) retireReplacedLocked(name string, ready, count int) {
	if ready < count {
		return
	}
	for c := range s.fleet.all() {
		if c.replacing && c.Process == name && c.state == StateReady {
			note := fmt.Sprintf("replaced: unhealthy for %s (%s)", time.Since(c.unhealthySince).Round(time.Second), c.healthErr)
			if why := s.misplacedLocked(c); why != "" {
				note = fmt.Sprintf("replaced on another host: %s (%s)", why, HostOf(c.ID))
			} else if !c.unhealthy {
				note = fmt.Sprintf("moved off host %s to spread %s containers over the hosts", HostOf(c.ID), c.Process)
			}
			s.retireLocked(c, nil, note)
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
		s.exited(c.ID, -1, false)
	case err == nil && !info.Running:
		s.exited(c.ID, info.ExitCode, info.OOMKilled)
	}
}

// AllUnhealthyMessage is what the status says while every ready web
// container of an app fails its health check.
const AllUnhealthyMessage = "every web container fails its health check: traffic goes to all of them rather than none"
