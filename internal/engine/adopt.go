package engine

import (
	"context"
	"net"
	"strconv"
	"time"

	"go.uber.org/zap"
)

// adopt takes over the containers of this app that a previous run of
// podswitch left running. It reports false when the runtime could not be
// reached, so that the caller tries again.
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
	var gone []*Container
	for _, info := range list {
		c := &Container{
			ID: info.ID, Name: info.Name, Process: info.Labels[LabelProcess],
			Release: info.Labels[LabelRelease], State: StateReady, StartedAt: time.Now(),
		}
		if !info.Running {
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
			if err := s.deps.Prober.Probe(ctx, c.Addr); err != nil {
				gone = append(gone, c)
				continue
			}
		}
		byRelease[c.Release] = append(byRelease[c.Release], c)
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
	s.discard(gone)
	s.retire(nil, others, spec)
	return true
}
