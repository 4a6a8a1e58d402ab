package engine

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"
)

// maxProbes bounds the health checks in flight across all apps.
const maxProbes = 32

// Manager holds the supervisors of all apps, one per app at a time. It
// outlives config reloads: Apply hands it each new config. It owns what
// its supervisors share: the runtime (its calls bounded by Deps.Limits),
// the stream of exit events and the periodic resync.
type Manager struct {
	deps   Deps
	rt     Runtime
	probes chan struct{}

	ctx    context.Context
	cancel context.CancelFunc

	startOnce sync.Once
	bg        sync.WaitGroup
	resyncNow chan struct{}
	// orphansNow asks for a look for orphans (after a config load).
	orphansNow chan struct{}
	// applyMu makes configs apply one at a time, in order; mu is not held
	// while an app takes one (its lock may wait for a disk write), so that
	// exit events of the other apps are handed on meanwhile.
	applyMu sync.Mutex
	// swept is set once the records of apps that are neither in the
	// config nor have containers were moved aside (at the first resync).
	swept bool

	mu sync.Mutex
	// after, when set, is closed once a previous owner of the apps is
	// done with them: supervisors wait for it before they adopt.
	after <-chan struct{}
	sups  map[string]*Supervisor
	// leaving are removed apps still stopping their containers; an app
	// added back waits for its old owner to finish.
	leaving map[string]*Supervisor
	pools   map[string]*PoolRef
	// slots are the apps of a manager with a Leadership (see appSlot), and
	// leavingSlots those that left the config and are not done yet;
	// sups then holds only the apps this proxy leads.
	slots        map[string]*appSlot
	leavingSlots map[string]*appSlot
}

// NewManager returns a manager that runs apps with deps.
func NewManager(deps Deps) *Manager {
	if deps.Logger == nil {
		deps.Logger = zap.NewNop()
	}
	if deps.Prober == nil {
		deps.Prober = TCPProber{}
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Manager{
		deps: deps, rt: limit(deps.Runtime, deps.Limits), probes: make(chan struct{}, maxProbes),
		ctx: ctx, cancel: cancel, resyncNow: make(chan struct{}, 1), orphansNow: make(chan struct{}, 1),
		sups: map[string]*Supervisor{}, leaving: map[string]*Supervisor{}, pools: map[string]*PoolRef{},
		slots: map[string]*appSlot{}, leavingSlots: map[string]*appSlot{},
	}
	if hs := deps.Hosts; hs != nil {
		hs.SetGap(m.askResync)
		hs.OnState(func(HostStatus, HostState) {
			// Placement and replacement depend on it.
			for _, s := range m.supervisors() {
				s.poke()
			}
		})
	}
	return m
}

// askResync asks for a resync soon.
func (m *Manager) askResync() {
	select {
	case m.resyncNow <- struct{}{}:
	default:
	}
}

// Pool returns the stable pool handle of app name, creating it if needed,
// so that a proxy can be set up before the app runs.
func (m *Manager) Pool(name string) *PoolRef {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.poolLocked(name)
}

func (m *Manager) poolLocked(name string) *PoolRef {
	p := m.pools[name]
	if p == nil {
		p = newPoolRef()
		m.pools[name] = p
	}
	return p
}

// After makes the apps wait, before they take over their containers, until
// ch is closed: a previous manager (of the same process) is done with them.
func (m *Manager) After(ch <-chan struct{}) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.after = ch
}

// Apply makes specs the config: apps it names are created or updated, apps
// it does not name are drained, stopped and forgotten (their records are
// moved aside). Specs must be valid and carry their defaults. It returns
// at once; rollouts go on in the background, and a resync follows that
// removes the containers this instance left of apps in no config
// (orphans).
func (m *Manager) Apply(specs []AppSpec) {
	m.startOnce.Do(func() {
		m.bg.Go(m.watch)
		m.bg.Go(m.resyncLoop)
		m.bg.Go(m.idleLoop)
	})
	m.applyMu.Lock()
	defer m.applyMu.Unlock()
	if m.deps.Leadership != nil {
		m.applySlots(specs)
		return
	}
	var steps []func()
	m.mu.Lock()
	keep := make(map[string]bool, len(specs))
	for _, spec := range specs {
		keep[spec.Name] = true
		if s := m.sups[spec.Name]; s != nil {
			steps = append(steps, func() { s.Update(spec) })
			continue
		}
		s := newSupervisor(m.ctx, spec, m.poolLocked(spec.Name), m.deps, m.rt, m.probes)
		m.sups[spec.Name] = s
		var prev <-chan struct{}
		if l := m.leaving[spec.Name]; l != nil {
			prev = l.done
		}
		go s.run(prev, m.after)
	}
	for name, s := range m.sups {
		if keep[name] {
			continue
		}
		delete(m.sups, name)
		m.leaveLocked(name, s)
		steps = append(steps, s.remove)
	}
	m.mu.Unlock()
	for _, step := range steps {
		step()
	}
	select {
	case m.orphansNow <- struct{}{}:
	default:
	}
}

// applySlots is Apply under a Leadership: each app is a slot, which leads
// or follows it.
func (m *Manager) applySlots(specs []AppSpec) {
	var steps []func()
	m.mu.Lock()
	keep := make(map[string]bool, len(specs))
	for _, spec := range specs {
		keep[spec.Name] = true
		if sl := m.slots[spec.Name]; sl != nil {
			steps = append(steps, func() { sl.setSpec(spec) })
			continue
		}
		sl := &appSlot{name: spec.Name, pool: m.poolLocked(spec.Name), ctx: m.ctx, spec: spec, done: make(chan struct{})}
		m.slots[spec.Name] = sl
		var prev <-chan struct{}
		if l := m.leavingSlots[spec.Name]; l != nil {
			prev = l.done
		}
		m.bg.Go(func() { m.runSlot(sl, prev) })
	}
	for name, sl := range m.slots {
		if keep[name] {
			continue
		}
		delete(m.slots, name)
		m.leavingSlots[name] = sl
		go func() {
			<-sl.done
			m.mu.Lock()
			if m.leavingSlots[name] == sl {
				delete(m.leavingSlots, name)
			}
			m.mu.Unlock()
		}()
		steps = append(steps, func() { sl.remove(m.deps.Leadership.ConfiguredElsewhere(name)) })
	}
	m.mu.Unlock()
	for _, step := range steps {
		step()
	}
}

// leaveLocked makes s, whose app left the config, a leaving supervisor
// until it is done.
func (m *Manager) leaveLocked(name string, s *Supervisor) {
	m.leaving[name] = s
	go func() {
		<-s.done
		m.mu.Lock()
		if m.leaving[name] == s {
			delete(m.leaving, name)
		}
		m.mu.Unlock()
	}()
}

// App returns the supervisor of app name, or nil.
func (m *Manager) App(name string) *Supervisor {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.sups[name]
}

// Apps returns the names of the configured apps, sorted.
func (m *Manager) Apps() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	names := make([]string, 0, len(m.sups)+len(m.slots))
	for n := range m.sups {
		names = append(names, n)
	}
	for n := range m.slots {
		if m.sups[n] == nil {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names
}

// supervisors returns the supervisors of the configured apps.
func (m *Manager) supervisors() []*Supervisor {
	m.mu.Lock()
	defer m.mu.Unlock()
	sups := make([]*Supervisor, 0, len(m.sups))
	for _, s := range m.sups {
		sups = append(sups, s)
	}
	return sups
}

// Runtime returns the runtime the manager uses, its calls bounded.
func (m *Manager) Runtime() Runtime { return m.rt }

// Hosts returns what users see of each Podman host of several, with the
// containers the apps have on it; none when podswitch runs on one.
func (m *Manager) Hosts() []HostStatus {
	hs := m.deps.Hosts
	if hs == nil || hs.Len() == 0 {
		return []HostStatus{}
	}
	out := hs.Statuses()
	count := map[string]int{}
	for _, s := range m.supervisors() {
		s.lock()
		for c := range s.fleet.all() {
			if c.state.live() || c.state == StateDraining || c.state == StateStopping {
				count[HostOf(c.ID)]++
			}
		}
		s.unlock()
	}
	for i := range out {
		out[i].Containers = count[out[i].Name]
	}
	return out
}

// Close ends every supervisor without stopping any container that serves:
// the process is exiting, and the next start adopts what runs. Every
// request a pause holds is released (Pass answers Released).
func (m *Manager) Close() {
	m.mu.Lock()
	for _, p := range m.pools {
		p.release()
	}
	sups := make([]*Supervisor, 0, len(m.sups)+len(m.leaving))
	for _, s := range m.sups {
		sups = append(sups, s)
	}
	for _, s := range m.leaving {
		sups = append(sups, s)
	}
	var slots []*appSlot
	for _, sl := range m.slots {
		slots = append(slots, sl)
	}
	for _, sl := range m.leavingSlots {
		slots = append(slots, sl)
	}
	m.mu.Unlock()
	m.cancel()
	for _, s := range sups {
		s.close()
	}
	for _, sl := range slots {
		<-sl.done
	}
	m.bg.Wait()
}

// Wait blocks until every removed app has stopped its containers and
// every other app has nothing left to drain or stop.
func (m *Manager) Wait() {
	for {
		m.mu.Lock()
		var leaving []*Supervisor
		for _, s := range m.leaving {
			leaving = append(leaving, s)
		}
		var leavingSlots []*appSlot
		for _, sl := range m.leavingSlots {
			leavingSlots = append(leavingSlots, sl)
		}
		m.mu.Unlock()
		for _, sl := range leavingSlots {
			<-sl.done
		}
		busy := false
		for _, s := range m.supervisors() {
			s.lock()
			for c := range s.fleet.all() {
				if c.state == StateDraining || c.state == StateStopping || c.state == StateCrashed {
					busy = true
				}
			}
			s.unlock()
		}
		for _, s := range leaving {
			<-s.done
		}
		if !busy || m.ctx.Err() != nil {
			return
		}
		time.Sleep(drainPoll)
	}
}

// watch follows the runtime's container exits and hands each to its app,
// reconnecting with backoff when the stream breaks; a reconnect asks for a
// resync, since exits may have been missed meanwhile.
func (m *Manager) watch() {
	b := newBackoff(time.Second, 30*time.Second)
	for m.ctx.Err() == nil {
		t0 := time.Now()
		err := m.deps.Runtime.Events(m.ctx, m.dispatch)
		if m.ctx.Err() != nil {
			return
		}
		if time.Since(t0) > time.Minute {
			b.Reset()
		}
		delay := b.NextBackOff()
		if c := m.deps.Logger.Check(zap.WarnLevel, "container event stream ended, reconnecting"); c != nil {
			c.Write(zap.Error(err), zap.Duration("delay", delay))
		}
		select {
		case <-m.ctx.Done():
			return
		case <-time.After(delay):
		}
		select {
		case m.resyncNow <- struct{}{}:
		default:
		}
	}
}

// dispatch hands ev to its app's queue: it never waits for an app's lock,
// so that an app busy with a slow disk write delays no other app's exits.
func (m *Manager) dispatch(ev ContainerEvent) {
	m.mu.Lock()
	s := m.sups[ev.App]
	m.mu.Unlock()
	if s != nil {
		s.queue(func() { s.exited(ev.ID, ev.ExitCode, ev.OOMKilled) })
	}
}

// resyncLoop lists every podswitch container once per resyncInterval (one
// call for all apps) and hands each app its own; after a config load it
// lists them to remove orphans only.
func (m *Manager) resyncLoop() {
	t := time.NewTicker(resyncInterval)
	defer t.Stop()
	for {
		apps := true
		select {
		case <-m.ctx.Done():
			return
		case <-t.C:
		case <-m.resyncNow:
		case <-m.orphansNow:
			apps = false
		}
		m.resync(apps)
	}
}

// resync lists the containers, removes orphans and, when apps is set,
// compares each app's containers with what runs.
func (m *Manager) resync(apps bool) {
	ctx, cancel := context.WithTimeout(m.ctx, 30*time.Second)
	defer cancel()
	at := time.Now()
	list, err := m.rt.List(ctx, "")
	var partial *PartialListError
	if errors.As(err, &partial) {
		// Some hosts did not answer: their containers are neither there
		// nor gone; the others are compared.
		if c := m.deps.Logger.Check(zap.WarnLevel, "some podman hosts did not answer the resync"); c != nil {
			c.Write(zap.Strings("hosts", partial.Hosts), zap.Error(partial.Err))
		}
		err = nil
	}
	if err != nil {
		if c := m.deps.Logger.Check(zap.WarnLevel, "listing containers for the resync failed"); c != nil {
			c.Write(zap.Error(err))
		}
		if errors.Is(err, ErrUnavailable) {
			for _, s := range m.supervisors() {
				s.setRuntimeErr(err)
			}
		}
		return
	}
	byApp := map[string][]ContainerInfo{}
	others := map[string]int{}
	mine := map[string]bool{}
	for _, info := range list {
		app := info.Labels[LabelApp]
		switch ownerOf(m.deps.Instance, info) {
		case ownerOther:
			others[app]++
			continue
		case ownerThis:
			mine[app] = m.deps.Instance != ""
		}
		byApp[app] = append(byApp[app], info)
	}
	if m.deps.Leadership == nil {
		// With several proxies, an app this one does not know may be
		// another's (its config differs): orphans are left alone.
		m.removeOrphans(mine, byApp)
	}
	if !apps {
		return
	}
	for _, s := range m.supervisors() {
		s.setOthers(others[s.name])
		s.resync(byApp[s.name], at, partial)
		s.setRuntimeErr(nil)
		s.poke()
	}
}
