package engine

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Timing of the engine. They are variables so that unit tests running in a
// synctest bubble can read them; nothing changes them at run time.
var (
	probeInterval   = 20 * time.Millisecond
	inspectInterval = 200 * time.Millisecond
	drainPoll       = 20 * time.Millisecond
	// cleanupTimeout bounds the removal of a failed release's containers
	// once the deployment's own context is gone.
	cleanupTimeout = 30 * time.Second
	// resyncInterval is how often a supervisor compares its containers with
	// what the runtime has, so that a missed exit event heals.
	resyncInterval = 10 * time.Second
	// historySize is how many deployments an app remembers.
	historySize = 50
)

// Deps are what a Supervisor works with.
type Deps struct {
	Runtime Runtime
	Prober  Prober
	Logger  *zap.Logger
	// Notify, when set, is called (never with a lock held, in a goroutine
	// of its own) on every event users may want to hear of.
	Notify func(Event)
	// History, when set, keeps deployments across restarts of the process.
	History History
	// ObserveBoot, when set, is told how long each container took from its
	// creation to ready (ok) or to its failed boot.
	ObserveBoot func(app, process string, took time.Duration, ok bool)
}

// Event names.
const (
	EventDeployment = "deployment"
	EventGaveUp     = "gave_up"
	EventCrashed    = "crashed"
)

// Event is something that happened to an app.
type Event struct {
	// Name is EventDeployment, EventGaveUp or EventCrashed.
	Name       string
	App        string
	Deployment *Deployment
	Process    string
	Container  string
	Message    string
	Time       time.Time
}

// Supervisor owns the containers of one app. One goroutine (run) carries out
// operations one at a time; old containers are drained and stopped in the
// background. All fields below mu are guarded by it.
type Supervisor struct {
	name string
	deps Deps
	log  *zap.Logger
	pool *PoolRef

	ctx    context.Context
	cancel context.CancelFunc
	wake   chan struct{}
	done   chan struct{}
	// retiring counts the goroutines draining and stopping containers.
	retiring sync.WaitGroup

	mu      sync.Mutex
	desired AppSpec
	removed bool
	current *ReleaseInfo
	// currentSpec is the spec of the current release, for restarts and
	// replacements; it may differ from desired while a deploy runs or
	// after one failed.
	currentSpec AppSpec
	containers  map[string]*Container
	target      *Deployment
	deployments []*Deployment // oldest first
	lastRelease string        // release of the newest deployment
	nextID      int64
	runtimeErr  string
	// scaleCancel cancels the scale operation in progress, if any.
	scaleCancel context.CancelFunc
	// gaveUp holds the process types whose replacement gave up; they are
	// not retried until the next Update, Restart or Scale.
	gaveUp map[string]bool
}

// Container is the supervisor's record of one container.
type Container struct {
	ID        string
	Name      string
	Process   string
	Release   string
	Addr      string
	State     State
	StartedAt time.Time
	// ReadyAt is when the container booted: its first accepted TCP
	// connection (web) or the end of worker_ready_time (others).
	ReadyAt time.Time
}

func newSupervisor(ctx context.Context, spec AppSpec, pool *PoolRef, deps Deps) *Supervisor {
	ctx, cancel := context.WithCancel(ctx)
	s := &Supervisor{
		name:       spec.Name,
		deps:       deps,
		log:        deps.Logger.With(zap.String("app", spec.Name)),
		pool:       pool,
		ctx:        ctx,
		cancel:     cancel,
		wake:       make(chan struct{}, 1),
		done:       make(chan struct{}),
		desired:    spec,
		containers: map[string]*Container{},
		gaveUp:     map[string]bool{},
	}
	if deps.History != nil {
		past := deps.History.Load(spec.Name)
		for i := range past {
			d := past[i]
			if !d.Status.Ended() {
				d.Status, d.Error, d.EndedAt = StatusAborted, "podswitch stopped before it ended", d.StartedAt
			}
			d.done = closedChan
			s.deployments = append(s.deployments, &d)
			s.nextID = max(s.nextID, d.ID)
		}
		// lastRelease stays empty: it keeps a reload from deploying again
		// what this process just tried, while on start adopt must replace
		// whatever does not match the desired release, even if a previous
		// process already tried (or was killed while deploying) it.
	}
	return s
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// poke wakes the loop; wakes coalesce.
func (s *Supervisor) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Update sets the desired state. A change of release starts a deployment
// (and aborts one still running); a change of counts scales; an unchanged
// spec touches nothing. It returns the deployment it started, if any.
func (s *Supervisor) Update(spec AppSpec) *Deployment {
	s.mu.Lock()
	prev := s.desired
	s.desired = spec
	d := s.deployLocked(spec, KindDeploy, "", "")
	if d == nil && s.current != nil && s.current.ID == spec.ReleaseID() {
		s.currentSpec = spec
	}
	if !countsEqual(prev, spec) {
		clear(s.gaveUp)
		if s.scaleCancel != nil {
			s.scaleCancel()
		}
	}
	s.mu.Unlock()
	s.poke()
	return d
}

func countsEqual(a, b AppSpec) bool { return maps.Equal(a.Counts(), b.Counts()) }

// ErrNoRelease is returned by Restart when nothing runs yet.
var ErrNoRelease = errors.New("the app has no running release to restart")

// ErrBusy is returned by Restart while a deployment of a new release runs:
// the deployment replaces every container anyway.
var ErrBusy = errors.New("a deployment is in progress; restart once it has ended")

// Restart replaces containers of the current release, new first: every
// container (process and container empty), those of one process type, or
// one container. Replacements that fail to boot are retried up to
// restart_attempts times; the old containers serve throughout.
func (s *Supervisor) Restart(process, container string) (*Deployment, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.current == nil || s.currentSpec.Name == "" {
		return nil, ErrNoRelease
	}
	if t := s.target; t != nil && t.Kind == KindDeploy {
		return nil, ErrBusy
	}
	if container != "" {
		c := s.findLocked(container)
		if c == nil || c.Release != s.current.ID || (c.State != StateReady && c.State != StateStarting) {
			return nil, fmt.Errorf("no running container %q in app %s", container, s.name)
		}
		container, process = c.ID, c.Process
	} else if process != "" {
		if _, ok := s.currentSpec.Process(process); !ok {
			return nil, fmt.Errorf("app %s has no process type %q", s.name, process)
		}
	}
	clear(s.gaveUp)
	d := s.deployLocked(s.currentSpec, KindRestart, process, container)
	s.poke()
	return d, nil
}

// findLocked finds a container by full or short (12+ characters) ID, or
// name.
func (s *Supervisor) findLocked(ref string) *Container {
	if c := s.containers[ref]; c != nil {
		return c
	}
	for _, c := range s.containers {
		if c.Name == ref || (len(ref) >= 12 && len(c.ID) >= len(ref) && c.ID[:len(ref)] == ref) {
			return c
		}
	}
	return nil
}

// deployLocked creates the deployment of spec unless nothing is to change.
// A restart always makes one.
func (s *Supervisor) deployLocked(spec AppSpec, kind, process, container string) *Deployment {
	rel := spec.ReleaseID()
	if kind == KindDeploy {
		if s.current != nil && s.current.ID == rel {
			// Back to what serves: end whatever deploy was on its way.
			if t := s.target; t != nil && t.Kind == KindDeploy {
				t.cancel()
				if !t.started {
					s.endLocked(t, StatusAborted, "replaced by a newer deployment")
				}
			}
			s.lastRelease = rel
			return nil
		}
		if s.lastRelease == rel {
			return nil
		}
	}
	if t := s.target; t != nil {
		t.cancel()
		if !t.started {
			s.endLocked(t, StatusAborted, "replaced by a newer deployment")
		}
	}
	if s.scaleCancel != nil {
		s.scaleCancel()
	}
	s.nextID++
	ctx, cancel := context.WithCancel(s.ctx)
	d := &Deployment{
		ID: s.nextID, Kind: kind, Release: rel, Image: spec.Image,
		Process: process, Container: container,
		Status: StatusStarting, StartedAt: time.Now(),
		spec: spec, ctx: ctx, cancel: cancel, done: make(chan struct{}),
	}
	s.target = d
	if kind == KindDeploy {
		s.lastRelease = rel
	}
	s.deployments = append(s.deployments, d)
	if len(s.deployments) > historySize {
		s.deployments = slices.Delete(s.deployments, 0, len(s.deployments)-historySize)
	}
	s.saveHistoryLocked()
	fields := []zap.Field{zap.Int64("deployment", d.ID), zap.String("kind", kind),
		zap.String("release", rel), zap.String("image", spec.Image)}
	if process != "" {
		fields = append(fields, zap.String("process", process))
	}
	if container != "" {
		fields = append(fields, zap.String("container", container))
	}
	s.log.Info("deployment queued", fields...)
	return d
}

// endLocked finishes d with status st.
func (s *Supervisor) endLocked(d *Deployment, st Status, msg string) {
	if d.Status.Ended() {
		return
	}
	d.Status = st
	d.Error = msg
	d.EndedAt = time.Now()
	d.cancel()
	close(d.done)
	if s.target == d {
		s.target = nil
	}
	s.saveHistoryLocked()
	fields := []zap.Field{zap.Int64("deployment", d.ID), zap.String("kind", d.Kind),
		zap.String("release", d.Release), zap.String("image", d.Image), zap.String("status", string(st)),
		zap.Duration("duration", d.EndedAt.Sub(d.StartedAt))}
	if msg != "" {
		fields = append(fields, zap.String("error", msg))
	}
	if st == StatusSuccess || st == StatusAborted {
		s.log.Info("deployment ended", fields...)
	} else {
		s.log.Error("deployment ended", fields...)
	}
	s.emit(Event{Name: EventDeployment, Deployment: d.copy(), Message: msg})
}

// emit sends ev to Deps.Notify in the background.
func (s *Supervisor) emit(ev Event) {
	if s.deps.Notify == nil {
		return
	}
	ev.App = s.name
	ev.Time = time.Now()
	go s.deps.Notify(ev)
}

func (s *Supervisor) saveHistoryLocked() {
	if s.deps.History == nil {
		return
	}
	out := make([]Deployment, len(s.deployments))
	for i, d := range s.deployments {
		out[i] = *d.copy()
	}
	s.deps.History.Save(s.name, out)
}

func (d *Deployment) copy() *Deployment {
	c := *d
	c.spec, c.ctx, c.cancel, c.done = AppSpec{}, nil, nil, nil
	return &c
}

// Deployment returns a copy of deployment id, a channel closed when it has
// ended, and whether it is known.
func (s *Supervisor) Deployment(id int64) (Deployment, <-chan struct{}, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range s.deployments {
		if d.ID == id {
			return *d.copy(), d.done, true
		}
	}
	return Deployment{}, nil, false
}

// ContainerCounts returns how many containers the app has, by process type
// and state.
func (s *Supervisor) ContainerCounts() map[[2]string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := make(map[[2]string]int)
	for _, c := range s.containers {
		n[[2]string{c.Process, string(c.State)}]++
	}
	return n
}

// Status returns a consistent copy of the app's state.
func (s *Supervisor) Status() AppStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := AppStatus{
		Name:         s.name,
		Desired:      s.desired.ReleaseID(),
		Image:        s.desired.Image,
		Processes:    s.desired.Counts(),
		Containers:   []ContainerStatus{},
		Deployments:  make([]Deployment, 0, len(s.deployments)),
		RuntimeError: s.runtimeErr,
	}
	for p := range s.gaveUp {
		st.GaveUp = append(st.GaveUp, p)
	}
	slices.Sort(st.GaveUp)
	if s.current != nil {
		r := *s.current
		st.Release = &r
	}
	for _, c := range s.containers {
		st.Containers = append(st.Containers, ContainerStatus{
			ID: c.ID, Name: c.Name, Process: c.Process, Release: c.Release,
			State: c.State, Addr: c.Addr, StartedAt: c.StartedAt,
		})
	}
	slices.SortFunc(st.Containers, func(a, b ContainerStatus) int {
		return cmp.Or(cmp.Compare(a.Process, b.Process), a.StartedAt.Compare(b.StartedAt), cmp.Compare(a.ID, b.ID))
	})
	for i := len(s.deployments) - 1; i >= 0; i-- {
		st.Deployments = append(st.Deployments, *s.deployments[i].copy())
	}
	return st
}

// run is the supervisor's loop. It is level-triggered: every pass compares
// the desired state with what runs and does the one operation that brings
// them closer.
func (s *Supervisor) run(prev <-chan struct{}) {
	defer close(s.done)
	if prev != nil {
		// The same app was removed a moment ago; let it finish with its
		// containers before looking at what runs.
		select {
		case <-prev:
		case <-s.ctx.Done():
			s.abortTarget()
			return
		}
	}
	for !s.adopt() {
		select {
		case <-s.ctx.Done():
			s.abortTarget()
			return
		case <-time.After(2 * time.Second):
		}
	}
	resync := time.NewTicker(resyncInterval)
	defer resync.Stop()
	for {
		if s.reconcile() {
			continue
		}
		select {
		case <-s.ctx.Done():
			s.abortTarget()
			return
		case <-s.wake:
		case <-resync.C:
			s.resync()
		}
	}
}

func (s *Supervisor) abortTarget() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if t := s.target; t != nil && !t.started {
		s.endLocked(t, StatusAborted, "podswitch is shutting down")
	}
}

// reconcile does one operation and reports whether another pass is needed.
func (s *Supervisor) reconcile() bool {
	if s.ctx.Err() != nil {
		return false
	}
	s.mu.Lock()
	removed, target, current := s.removed, s.target, s.current
	hasSpec := s.currentSpec.Name != ""
	if target != nil {
		target.started = true
	}
	s.mu.Unlock()
	switch {
	case removed:
		s.stopAll()
		s.cancel()
		return false
	case target != nil:
		s.deploy(target)
		return true
	case current != nil && hasSpec:
		return s.scale()
	}
	return false
}

// setRuntimeErr records whether the runtime answered.
func (s *Supervisor) setRuntimeErr(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	if msg != s.runtimeErr {
		if err != nil {
			s.log.Error("container runtime unreachable", zap.Error(err))
		} else {
			s.log.Info("container runtime reachable again")
		}
	}
	s.runtimeErr = msg
}

// runtimeRetry is how often an operation waiting for the runtime tries
// again.
var runtimeRetry = 2 * time.Second

// withRuntime runs fn until it does not fail with ErrUnavailable, waiting
// runtimeRetry between tries, or until ctx ends.
func (s *Supervisor) withRuntime(ctx context.Context, fn func() error) error {
	for {
		err := fn()
		if !errors.Is(err, ErrUnavailable) {
			if err == nil {
				s.setRuntimeErr(nil)
			}
			return err
		}
		s.setRuntimeErr(err)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(runtimeRetry):
		}
	}
}

// publishLocked swaps in a pool of the ready web containers of the current
// release and returns the pool it replaced.
func (s *Supervisor) publishLocked() *Pool {
	var ready []*Container
	for _, c := range s.containers {
		if c.State == StateReady && c.Process == WebProcess && s.current != nil && c.Release == s.current.ID {
			ready = append(ready, c)
		}
	}
	slices.SortFunc(ready, func(a, b *Container) int {
		return cmp.Or(a.StartedAt.Compare(b.StartedAt), cmp.Compare(a.ID, b.ID))
	})
	addrs := make([]string, len(ready))
	for i, c := range ready {
		addrs[i] = c.Addr
	}
	rel := ""
	if s.current != nil {
		rel = s.current.ID
	}
	return s.pool.store(rel, addrs)
}

// remove drains and stops every container of the app, then ends the
// supervisor. It returns at once.
func (s *Supervisor) remove() {
	s.mu.Lock()
	s.removed = true
	if t := s.target; t != nil {
		t.cancel()
	}
	if s.scaleCancel != nil {
		s.scaleCancel()
	}
	s.mu.Unlock()
	s.poke()
}

// close ends the supervisor's goroutines without touching any container:
// they keep running for the next podswitch to adopt.
func (s *Supervisor) close() {
	s.cancel()
	<-s.done
}
