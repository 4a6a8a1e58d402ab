package engine

import (
	"context"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Manager holds the supervisors of all apps. It outlives config reloads:
// Apply hands it each new desired state.
type Manager struct {
	deps Deps

	ctx    context.Context
	cancel context.CancelFunc

	watchOnce sync.Once
	watching  sync.WaitGroup

	mu      sync.Mutex
	sups    map[string]*Supervisor
	pools   map[string]*PoolRef
	leaving map[string]*Supervisor
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
	return &Manager{
		deps: deps, ctx: ctx, cancel: cancel,
		sups: map[string]*Supervisor{}, pools: map[string]*PoolRef{}, leaving: map[string]*Supervisor{},
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
		p = new(PoolRef)
		m.pools[name] = p
	}
	return p
}

// Apply makes specs the desired state: apps it names are created or
// updated, apps it does not name are drained and stopped. Specs must be
// valid and carry their defaults. It returns at once; rollouts go on in the
// background.
func (m *Manager) Apply(specs []AppSpec) {
	m.watchOnce.Do(func() { m.watching.Go(m.watch) })
	m.mu.Lock()
	defer m.mu.Unlock()
	keep := make(map[string]bool, len(specs))
	for _, spec := range specs {
		keep[spec.Name] = true
		if s := m.sups[spec.Name]; s != nil {
			s.Update(spec)
			continue
		}
		s := newSupervisor(m.ctx, spec, m.poolLocked(spec.Name), m.deps)
		m.sups[spec.Name] = s
		var prev <-chan struct{}
		if l := m.leaving[spec.Name]; l != nil {
			prev = l.done
		}
		go s.run(prev)
	}
	for name, s := range m.sups {
		if keep[name] {
			continue
		}
		delete(m.sups, name)
		m.leaving[name] = s
		s.remove()
		go func() {
			<-s.done
			m.mu.Lock()
			if m.leaving[name] == s {
				delete(m.leaving, name)
			}
			m.mu.Unlock()
		}()
	}
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
	names := make([]string, 0, len(m.sups))
	for n := range m.sups {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Close ends every supervisor without stopping any container: Caddy is
// exiting, and the next start adopts what runs.
func (m *Manager) Close() {
	m.mu.Lock()
	sups := make([]*Supervisor, 0, len(m.sups)+len(m.leaving))
	for _, s := range m.sups {
		sups = append(sups, s)
	}
	for _, s := range m.leaving {
		sups = append(sups, s)
	}
	m.mu.Unlock()
	m.cancel()
	for _, s := range sups {
		s.close()
	}
	m.watching.Wait()
}

// watch follows the runtime's container exits and hands each to its app,
// reconnecting with backoff when the stream breaks. Supervisors also
// resync on their own, so an exit missed while disconnected still heals.
func (m *Manager) watch() {
	b := newBackoff()
	b.InitialInterval, b.MaxInterval = time.Second, 30*time.Second
	b.Reset()
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
	}
}

func (m *Manager) dispatch(ev ContainerEvent) {
	m.mu.Lock()
	s := m.sups[ev.App]
	m.mu.Unlock()
	if s != nil {
		s.containerExited(ev.ID, ev.ExitCode)
	}
}

// Wait blocks until every removed app has stopped its containers and every
// background drain has ended.
func (m *Manager) Wait() {
	m.mu.Lock()
	sups := make([]*Supervisor, 0, len(m.sups))
	for _, s := range m.sups {
		sups = append(sups, s)
	}
	leaving := make([]*Supervisor, 0, len(m.leaving))
	for _, s := range m.leaving {
		leaving = append(leaving, s)
	}
	m.mu.Unlock()
	for _, s := range leaving {
		<-s.done
	}
	for _, s := range sups {
		s.retiring.Wait()
	}
}
