package engine

import (
	"context"
	"net"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"
)

// adopt takes over the containers of this app that a previous run of
// podswitch left running. It reports false when the runtime could not be
// reached, so that the caller tries again.
// adoptProbeTime is how long adoption waits for a running web container to
// accept a connection before it counts it as broken.
var adoptProbeTime = time.Second

func (s *Supervisor) adopt() bool {
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	list, err := s.deps.Runtime.List(ctx, s.name)
	s.setRuntimeErr(err)
	if err != nil {
		return false
	}
	s.mu.Lock()
	spec := s.desired
	s.mu.Unlock()
	want := spec.ReleaseID()

	byRelease := map[string][]*Container{}
	var gone, probe []*Container
	for _, info := range list {
		c := &Container{
			ID: info.ID, Name: info.Name, Process: info.Labels[LabelProcess],
			Release: info.Labels[LabelRelease], State: StateReady, StartedAt: time.Now(),
		}
		if !info.Running {
			c.State = StateCrashed // exited: nothing to stop
			gone = append(gone, c)
			continue
		}
		if _, known := spec.Process(c.Process); c.Process == HookProcess || (!known && c.Release == want) {
			// A one-off (postdeploy) or a process type the release does
			// not have: nothing to keep.
			gone = append(gone, c)
			continue
		}
		if c.Process == WebProcess {
			port := info.Labels[LabelPort]
			if port == "" {
				port = strconv.Itoa(spec.Port)
			}
			if info.IP == "" {
				gone = append(gone, c)
				continue
			}
			c.Addr = net.JoinHostPort(info.IP, port)
			probe = append(probe, c)
			continue
		}
		byRelease[c.Release] = append(byRelease[c.Release], c)
	}
	// Probe the web containers in parallel, each for a short while: one
	// slow accept after a host restart must not cost a serving container.
	listening := make([]bool, len(probe))
	var wg sync.WaitGroup
	for i, c := range probe {
		wg.Go(func() {
			pctx, cancel := context.WithTimeout(ctx, adoptProbeTime)
			defer cancel()
			for {
				if s.deps.Prober.Probe(pctx, c.Addr) == nil {
					listening[i] = true
					return
				}
				select {
				case <-pctx.Done():
					return
				case <-time.After(probeInterval * 5):
				}
			}
		})
	}
	wg.Wait()
	for i, c := range probe {
		if listening[i] {
			byRelease[c.Release] = append(byRelease[c.Release], c)
		} else {
			gone = append(gone, c)
		}
	}
	// The release that keeps serving: the desired one if it runs, else the
	// one with the most web containers.
	keep := ""
	if len(byRelease[want]) > 0 {
		keep = want
	} else {
		best := -1
		for rel, cs := range byRelease {
			n := 0
			for _, c := range cs {
				if c.Process == WebProcess {
					n++
				}
			}
			if n > best || (n == best && rel < keep) {
				keep, best = rel, n
			}
		}
	}
	var others []*Container
	s.mu.Lock()
	for rel, cs := range byRelease {
		for _, c := range cs {
			s.containers[c.ID] = c
			if rel != keep {
				c.State = StateDraining
				others = append(others, c)
			}
		}
	}
	if keep != "" {
		image := ""
		for _, info := range list {
			if info.Labels[LabelRelease] == keep {
				image = info.Image
				break
			}
		}
		s.current = &ReleaseInfo{ID: keep, Image: image, Status: StatusSuccess, DeployedAt: time.Now()}
		if keep == want {
			s.currentSpec = spec
		}
		s.publishLocked()
		s.log.Info("adopted running containers", zap.String("release", keep), zap.Int("containers", len(byRelease[keep])))
	}
	if keep != want {
		s.deployLocked(spec, KindDeploy, "", "")
	} else if t := s.target; t != nil && t.Kind == KindDeploy && t.Release == want {
		// Queued by an Update while the runtime could not be reached: the
		// release it wants already runs and now serves.
		s.current.Deployment = t.ID
		t.SwitchedAt = time.Now()
		s.endLocked(t, StatusSuccess, "")
	}
	s.mu.Unlock()
	s.discard(gone, spec.StopTimeout)
	s.retire(nil, others, spec)
	return true
}
