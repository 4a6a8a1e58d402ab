package engine

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"
)

// adoptProbeTime is how long adoption waits for a running web container to
// accept a connection before it counts it as broken.
var adoptProbeTime = time.Second

// adopt takes over the containers of this app that a previous run of
// podswitch left. It trusts the app's record: the release recorded as
// serving is adopted (its running workers, and its web containers that
// accept connections); a deployment recorded as on its way is never
// adopted, its containers are stopped and it starts over, new-first;
// everything else is stopped. Without a record (a first run, or a lost
// one), the release with the most web containers that accept connections
// serves, the desired one on a tie. It reports false when the runtime
// could not be reached, so that the caller tries again.
func (s *Supervisor) adopt() bool {
	ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
	defer cancel()
	s.lock()
	rec := s.rec
	s.unlock()
	// The record says what runs on each host (or that nothing serves yet).
	list, missing, ok := s.listOwn(ctx, rec.Hosted != nil || rec.Serving == nil)
	if !ok {
		return false
	}
	// The containers of hosts that did not answer are as the record says.
	list = append(list, remembered(rec, missing)...)
	s.lock()
	rec, desired := s.rec, s.desired
	s.unlock()
	found := classify(list, rec)
	probes, err := s.probeCandidates(ctx, found.candidates, desired)
	if err != nil {
		// Podman did not answer an inspect: try the whole adoption again
		// rather than take a serving container for a broken one.
		s.setRuntimeErr(err)
		return false
	}
	found.weigh(probes, servingRelease(rec))
	canaries := found.takeCanary(rec.Canary)
	keep := found.pick(servingRelease(rec), desired.ReleaseID(), rec.Idle != nil)
	spec := s.specOf(keep, rec, desired)

	s.lock()
	defer s.unlock()
	if s.ctx.Err() != nil {
		return true
	}
	s.adoptContainersLocked(found, keep, desired.ReadyPath)
	s.takeServingLocked(keep, spec, rec, found.byRelease[keep])
	s.adoptCanaryLocked(found, canaries, keep, rec)
	if rec.Deploying != nil {
		s.resumed = true
		s.log.Info("a deployment was interrupted; it starts over", zap.Int64("deployment", rec.Deploying.Deployment),
			zap.String("release", rec.Deploying.Release))
	}
	s.rec.Retiring = s.stopLeftoversLocked(found, desired.StopTimeout)
	s.saveRecordLocked()
	s.adopted = true
	s.touch()
	return true
}

// listOwn lists the containers of the app that this supervisor may take
// over. It reports false when the runtime could not be reached.
// With several hosts, it also returns the hosts that did not answer: their
// containers are those the record has (known says it has them), else they
// are waited for up to host_down_after.
func (s *Supervisor) listOwn(ctx context.Context, known bool) ([]ContainerInfo, []string, bool) {
	list, err := s.rt.List(ctx, s.name)
	var partial *PartialListError
	var missing []string
	switch {
	case errors.As(err, &partial) && !s.onHosts(partial.Hosts):
		err = nil // none of them is the app's
	case errors.As(err, &partial) && known:
		s.log.Warn("adopting the containers of hosts that do not answer as the app record has them", zap.Strings("hosts", partial.Hosts), zap.Error(partial.Err))
		missing, err = partial.Hosts, nil
	case errors.As(err, &partial):
		// Some of the app's hosts do not answer, and the record does not
		// say what runs there (a record of an older podswitch). Their
		// containers are waited for up to host_down_after; then the app
		// is adopted without them (it boots what it lacks elsewhere, and
		// a host that comes back has its containers, unknown by then,
		// stopped).
		if s.partialSince.IsZero() {
			s.partialSince = time.Now()
		}
		if time.Since(s.partialSince) < s.deps.Hosts.DownAfter() {
			s.setRuntimeErr(err)
			return nil, nil, false
		}
		s.log.Warn("adopting the app without the containers of hosts that do not answer", zap.Strings("hosts", partial.Hosts), zap.Error(partial.Err))
		err = nil
	case err == nil:
		s.partialSince = time.Time{}
	}
	s.setRuntimeErr(err)
	if err != nil {
		return nil, nil, false
	}
	return s.ownContainers(list), missing, true
}

// remembered returns the containers rec has on hosts that did not answer,
// as a list would show them (running, with their recorded address).
func remembered(rec AppRecord, missing []string) []ContainerInfo {
	if len(missing) == 0 || rec.Serving == nil {
		return nil
	}
	var out []ContainerInfo
	for _, h := range rec.Hosted {
		if h.Canary || !slices.Contains(missing, HostOf(h.ID)) {
			continue // a canary does not outlive its leader
		}
		labels := map[string]string{LabelRelease: rec.Serving.ID, LabelProcess: h.Process}
		if h.Port != "" {
			labels[LabelPort] = h.Port
		}
		out = append(out, ContainerInfo{ID: h.ID, Name: h.Name, Labels: labels, Running: true, Addr: h.Addr, recorded: true})
	}
	return out
}

// onHosts reports whether any of hosts is one of the app's.
func (s *Supervisor) onHosts(hosts []string) bool {
	s.lock()
	mine := s.desired.Hosts
	s.unlock()
	if len(mine) == 0 {
		return len(hosts) > 0
	}
	for _, h := range hosts {
		if slices.Contains(mine, h) {
			return true
		}
	}
	return false
}

// servingRelease returns the release rec records as serving, or "".
func servingRelease(rec AppRecord) string {
	if rec.Serving != nil {
		return rec.Serving.ID
	}
	return ""
}

// adoptScan is what adoption found of the containers a previous run left,
// sorted by what becomes of them.
type adoptScan struct {
	// exited are not running: they are removed. hooks are postdeploy
	// hooks still running: they are stopped before any hook runs again.
	// leftovers are stopped.
	exited, hooks, leftovers []ContainerInfo
	// candidates are the other running containers, those that may serve;
	// byRelease are those of them that are kept once probed, by release.
	candidates []ContainerInfo
	byRelease  map[string][]ContainerInfo
	// probes are what was found of the web candidates; webs counts the
	// ready ones by release; unreachable are those of the recorded
	// serving release that are kept though they are not ready.
	probes      map[string]adoptProbe
	webs        map[string]int
	unreachable map[string]bool
}

// classify sorts list by what the app record says of each container: one
// that is not running, a hook, one recorded as retiring or of the
// deployment recorded as on its way (a leftover), or a candidate.
func classify(list []ContainerInfo, rec AppRecord) *adoptScan {
	servingID := servingRelease(rec)
	deploying := ""
	if rec.Deploying != nil && rec.Deploying.Release != servingID {
		deploying = rec.Deploying.Release
	}
	a := &adoptScan{}
	for _, info := range list {
		switch {
		case !info.Running:
			a.exited = append(a.exited, info)
		case info.Labels[LabelProcess] == HookProcess:
			a.hooks = append(a.hooks, info)
		case slices.Contains(rec.Retiring, info.ID),
			deploying != "" && info.Labels[LabelRelease] == deploying:
			a.leftovers = append(a.leftovers, info)
		default:
			a.candidates = append(a.candidates, info)
		}
	}
	return a
}

// weigh sorts the candidates by what their probes found: a web container
// that is ready counts for its release, one of the recorded serving
// release (servingID) that has an address is kept, any other web one is a
// leftover; every other candidate is kept.
func (a *adoptScan) weigh(probes map[string]adoptProbe, servingID string) {
	a.probes = probes
	a.byRelease = map[string][]ContainerInfo{}
	a.webs = map[string]int{}
	a.unreachable = map[string]bool{}
	for _, info := range a.candidates {
		rel := info.Labels[LabelRelease]
		if info.Labels[LabelProcess] == WebProcess {
			p := probes[info.ID]
			switch {
			case p.ready:
				a.webs[rel]++
			case rel == servingID && p.addr != "":
				// A container of the recorded serving release that does
				// not answer yet (a host under load, an app paused for a
				// moment) or answers TCP but not ready_path (its database
				// is down): kept, never stopped for its readiness, out of
				// the pool until the health check sees it answer. It is
				// replaced, new-first, only after unhealthy_timeout.
				a.unreachable[info.ID] = true
			default:
				// It answers TCP but not ready_path and its release is
				// not recorded as serving, or it has no address, or it is
				// of a release nothing says serves and it does not
				// answer.
				a.leftovers = append(a.leftovers, info)
				continue
			}
		}
		a.byRelease[rel] = append(a.byRelease[rel], info)
	}
}

// pick returns the release that serves: the recorded serving one
// (servingID) if any of its containers is kept or the app sleeps (asleep:
// a web-only app asleep has no container, and still serves), else the one
// pickRelease chooses.
func (a *adoptScan) pick(servingID, desired string, asleep bool) string {
	if servingID != "" && (len(a.byRelease[servingID]) > 0 || asleep) {
		return servingID
	}
	return pickRelease(a.byRelease, a.webs, desired)
}

// adoptContainersLocked records the kept containers of release keep as
// ready (an unreachable web one out of the pool); those of the other
// releases become leftovers.
func (s *Supervisor) adoptContainersLocked(a *adoptScan, keep, readyPath string) {
	for rel, infos := range a.byRelease {
		if rel != keep {
			a.leftovers = append(a.leftovers, infos...)
		}
	}
	for _, info := range a.byRelease[keep] {
		c := &Container{ID: info.ID, Name: info.Name, Process: info.Labels[LabelProcess], Release: keep, Addr: a.probes[info.ID].addr,
			grace: true}
		if a.unreachable[info.ID] {
			c.unhealthy, c.unhealthySince, c.healthErr = true, time.Now(), "did not answer at adoption"
			if p := a.probes[info.ID]; p.accepted && readyPath != "" {
				c.healthErr = fmt.Sprintf("GET %s did not answer ready at adoption", readyPath)
			}
		}
		s.fleet.add(c, StateReady, "adopted")
	}
}

// takeServingLocked makes release keep, whose containers (infos) were
// adopted, the serving release, and records it as serving when the record
// did not say so and what it runs is known. An empty keep serves nothing.
func (s *Supervisor) takeServingLocked(keep string, spec *AppSpec, rec AppRecord, infos []ContainerInfo) {
	if keep == "" {
		return
	}
	info := ReleaseInfo{ID: keep, Status: StatusSuccess, DeployedAt: time.Now()}
	if r := rec.Serving; r != nil && r.ID == keep {
		info.DeployedAt, info.Deployment = r.DeployedAt, r.Deployment
	}
	if spec != nil {
		info.Image, info.ImageID = spec.Image, spec.ImageID
	} else if len(infos) > 0 {
		info.Image = infos[0].Image
	}
	s.serving = &serving{ReleaseInfo: info, spec: spec}
	if spec != nil && (rec.Serving == nil || rec.Serving.ID != keep) {
		s.rec.Serving = &ReleaseRecord{ID: keep, Spec: spec.record(), DeployedAt: info.DeployedAt}
	}
	s.fleet.markPoolDirty()
	s.log.Info("adopted running containers", zap.String("release", keep), zap.Int("containers", len(infos)),
		zap.Bool("recorded", keep == servingRelease(rec)), zap.Bool("spec_known", spec != nil))
}

// stopLeftoversLocked stops and removes the leftovers, removes the exited
// containers and stops the hooks still running. It returns the IDs of the
// leftovers: the containers now retiring.
func (s *Supervisor) stopLeftoversLocked(a *adoptScan, stopTimeout time.Duration) []string {
	var ids []string
	for _, info := range a.leftovers {
		c := &Container{ID: info.ID, Name: info.Name, Process: info.Labels[LabelProcess], Release: info.Labels[LabelRelease], grace: true}
		s.fleet.add(c, StateStopping, "left by a previous run")
		s.reapLocked(c)
		ids = append(ids, c.ID)
	}
	for _, info := range a.exited {
		s.spawn(func() { s.removeQuietly(info.ID) })
	}
	s.stopLeftoverHooksLocked(a.hooks, stopTimeout)
	return ids
}

// adoptProbe is what adoption found of a running web container.
type adoptProbe struct {
	// addr is its dial address; accepted says it accepted a TCP
	// connection within adoptProbeTime, ready that it is ready (it also
	// answered ready_path, when the app has one).
	addr     string
	accepted bool
	ready    bool
}

// probeCandidates inspects every running web container of infos for its
// address and checks it is ready, in parallel. An inspect that Podman
// does not answer is an error: adoption is tried again.
func (s *Supervisor) probeCandidates(ctx context.Context, infos []ContainerInfo, spec AppSpec) (map[string]adoptProbe, error) {
	out := map[string]adoptProbe{}
	var mu sync.Mutex
	var failed error
	var webs []ContainerInfo
	for _, info := range infos {
		if info.Labels[LabelProcess] == WebProcess {
			webs = append(webs, info)
		}
	}
	each(ctx, make(chan struct{}, maxBoots), webs, func(_ int, info ContainerInfo) {
		cur, err := info, error(nil)
		if !info.recorded { // one the record has, of a host that did not answer, is only probed
			cur, err = s.rt.Inspect(ctx, info.ID)
		}
		if errors.Is(err, ErrUnavailable) || (err != nil && ctx.Err() != nil) {
			mu.Lock()
			failed = cmp.Or(failed, err)
			mu.Unlock()
			return
		}
		p := info.Labels[LabelPort]
		if p == "" {
			p = strconv.Itoa(spec.Port)
		}
		if err != nil || !cur.Running || dialAddr(cur, p) == "" {
			return
		}
		res := adoptProbe{addr: dialAddr(cur, p)}
		pctx, cancel := context.WithTimeout(ctx, adoptProbeTime)
		defer cancel()
		for !res.ready && pctx.Err() == nil {
			if s.deps.Prober.Probe(pctx, res.addr) == nil {
				res.accepted = true
				if spec.ReadyPath == "" {
					res.ready = true
					break
				}
				if code, err := s.probeHTTP(pctx, res.addr, spec.ReadyPath); err == nil && code >= spec.ReadyStatus[0] && code <= spec.ReadyStatus[1] {
					res.ready = true
					break
				}
			}
			select {
			case <-pctx.Done():
			case <-time.After(5 * probeInterval):
			}
		}
		mu.Lock()
		out[info.ID] = res
		mu.Unlock()
	})
	if failed == nil && ctx.Err() != nil {
		// Not every container was looked at: try again rather than take
		// one not looked at for a broken one.
		failed = ctx.Err()
	}
	return out, failed
}

// pickRelease chooses the release that serves when no record says: the one
// with the most web containers that accept connections (the one with the
// most containers for an app without web ones), the desired one on a tie,
// then the lowest id.
func pickRelease(byRelease map[string][]ContainerInfo, webs map[string]int, desired string) string {
	keep, best := "", [2]int{-1, -1}
	for rel, infos := range byRelease {
		score := [2]int{webs[rel], len(infos)}
		better := score[0] > best[0] || (score[0] == best[0] && score[1] > best[1]) ||
			(score == best && (rel == desired || (keep != desired && rel < keep)))
		if better {
			keep, best = rel, score
		}
	}
	return keep
}

// specOf returns what release rel runs, from the desired spec or a kept
// record of it; nil when it is not known (or its env does not resolve to
// the same release any more).
func (s *Supervisor) specOf(rel string, rec AppRecord, desired AppSpec) *AppSpec {
	if rel == "" {
		return nil
	}
	if desired.ReleaseID() == rel {
		return &desired
	}
	var records []ReleaseRecord
	if rec.Serving != nil {
		records = append(records, *rec.Serving)
	}
	records = append(records, rec.Releases...)
	for _, r := range records {
		if r.ID != rel {
			continue
		}
		spec, err := desired.withRelease(r.Spec, s.resolve)
		if err == nil && spec.ReleaseID() == rel {
			return &spec
		}
		s.log.Warn("the serving release cannot be run again as it was: its crashed containers are not replaced until a deployment succeeds",
			zap.String("release", rel), zap.Error(err))
		return nil
	}
	return nil
}

// resync compares the app's containers with what the runtime listed at
// listedAt: a container that is gone or exited is handled as a crash
// (the event stream may have missed it), one the app does not know (a
// create whose answer was lost) is stopped and removed.
func (s *Supervisor) resync(list []ContainerInfo, listedAt time.Time, partial *PartialListError) {
	s.lock()
	defer s.unlock()
	if !s.adopted || s.removed && s.stopped {
		return
	}
	byID := make(map[string]ContainerInfo, len(list))
	for _, info := range list {
		byID[info.ID] = info
	}
	for c := range s.fleet.all() {
		// A list taken when c was recorded, or before, may not show it yet;
		// one of a host that did not answer does not say.
		if !c.state.live() || len(c.timeline) == 0 || !c.timeline[0].At.Before(listedAt) ||
			partial != nil && slices.Contains(partial.Hosts, HostOf(c.ID)) {
			continue
		}
		info, ok := byID[c.ID]
		switch {
		case !ok:
			s.crashedLocked(c, -1, false)
		case !info.Running:
			s.crashedLocked(c, info.ExitCode, info.OOMKilled)
		}
	}
	s.fleet.expireGone(listedAt)
	for _, info := range list {
		if s.fleet.wasGone(info.ID) || s.fleet.get(info.ID) != nil || s.fleet.isCreating(info.Name) {
			continue
		}
		c := &Container{ID: info.ID, Name: info.Name, Process: info.Labels[LabelProcess], Release: info.Labels[LabelRelease], grace: info.Running}
		s.log.Warn("removing a container the app does not know", zap.String("container", shortID(c.ID)), zap.String("name", c.Name))
		s.fleet.add(c, StateStopping, "unknown to podswitch")
		s.reapLocked(c)
	}
}
