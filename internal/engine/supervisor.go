package engine

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Timing of the boot watch. They are variables so that unit tests running in
// a synctest bubble can read them; nothing changes them at run time.
var (
	probeInterval   = 20 * time.Millisecond
	inspectInterval = 200 * time.Millisecond
	drainPoll       = 20 * time.Millisecond
	// cleanupTimeout bounds the removal of a failed release's containers
	// once the deployment's own context is gone.
	cleanupTimeout = 30 * time.Second
	// historySize is how many deployments an app remembers.
	historySize = 50
)

// Deps are what a Supervisor works with.
type Deps struct {
	Runtime Runtime
	Prober  Prober
	Logger  *zap.Logger
	// Notify, when set, is called (never with a lock held) on every event
	// users may want to hear of: a deployment's end, a give-up, a crash.
	Notify func(Event)
}

// Event is something that happened to an app.
type Event struct {
	// Name is one of "deployment", "gave_up", "crashed".
	Name       string
	App        string
	Deployment *Deployment
	Process    string
	Container  string
	Message    string
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

	mu          sync.Mutex
	desired     AppSpec
	removed     bool
	current     *ReleaseInfo
	containers  map[string]*Container
	target      *Deployment
	deployments []*Deployment // oldest first
	lastRelease string        // release of the newest deployment
	nextID      int64
	runtimeErr  string
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
	}
	return s
}

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
	s.desired = spec
	d := s.deployLocked(spec, KindDeploy, false)
	s.mu.Unlock()
	s.poke()
	return d
}

// Restart replaces every container of the current release, new first.
func (s *Supervisor) Restart() *Deployment {
	s.mu.Lock()
	d := s.deployLocked(s.desired, KindRestart, true)
	s.mu.Unlock()
	s.poke()
	return d
}

// deployLocked creates the deployment of spec unless the newest deployment
// already targets its release (or force is set).
func (s *Supervisor) deployLocked(spec AppSpec, kind string, force bool) *Deployment {
	rel := spec.ReleaseID()
	if !force {
		if s.lastRelease == rel {
			return nil
		}
		if s.lastRelease == "" && s.current != nil && s.current.ID == rel {
			return nil
		}
	}
	if t := s.target; t != nil {
		t.cancel()
		if !t.started {
			s.endLocked(t, StatusAborted, "replaced by a newer deployment")
		}
	}
	s.nextID++
	ctx, cancel := context.WithCancel(s.ctx)
	d := &Deployment{
		ID: s.nextID, Kind: kind, Release: rel, Image: spec.Image,
		Status: StatusStarting, StartedAt: time.Now(),
		spec: spec, ctx: ctx, cancel: cancel, done: make(chan struct{}),
	}
	s.target = d
	s.lastRelease = rel
	s.deployments = append(s.deployments, d)
	if len(s.deployments) > historySize {
		s.deployments = slices.Delete(s.deployments, 0, len(s.deployments)-historySize)
	}
	s.log.Info("deployment queued", zap.Int64("deployment", d.ID), zap.String("kind", kind),
		zap.String("release", rel), zap.String("image", spec.Image))
	return d
}

// endLocked finishes d with status st. The event is sent by a goroutine so
// that no lock is held while listeners run.
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
	if s.deps.Notify != nil {
		ev := Event{Name: "deployment", App: s.name, Deployment: d.copy(), Message: msg}
		go s.deps.Notify(ev)
	}
}

func (d *Deployment) copy() *Deployment {
	c := *d
	c.spec, c.ctx, c.cancel, c.done = AppSpec{}, nil, nil, nil
	return &c
}

// Done is closed when the deployment has ended.
func (d *Deployment) Done() <-chan struct{} { return d.done }

// Deployment returns a copy of deployment id, and whether it is known.
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
			return
		}
	}
	for !s.adopt() {
		select {
		case <-s.ctx.Done():
			return
		case <-time.After(2 * time.Second):
		}
	}
	for {
		if s.reconcile() {
			continue
		}
		select {
		case <-s.ctx.Done():
			s.abortTarget()
			return
		case <-s.wake:
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
	removed, spec, target, current := s.removed, s.desired, s.target, s.current
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
	case current != nil && current.ID == spec.ReleaseID():
		return s.scale(spec)
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

// deploy runs deployment d: it boots every container of the release in
// parallel, switches the pool when all are ready and retires the old ones.
func (s *Supervisor) deploy(d *Deployment) {
	ctx := d.ctx
	spec := d.spec
	s.log.Info("deployment started", zap.Int64("deployment", d.ID), zap.String("release", d.Release))

	type result struct {
		c   *Container
		err error
	}
	var jobs []ProcessSpec
	for _, p := range spec.Processes {
		for range p.Count {
			jobs = append(jobs, p)
		}
	}
	bootCtx, cancelBoot := context.WithCancel(ctx)
	defer cancelBoot()
	results := make([]result, len(jobs))
	var (
		wg       sync.WaitGroup
		failOnce sync.Once
		failure  *bootError
	)
	for i, p := range jobs {
		wg.Go(func() {
			c, err := s.boot(bootCtx, spec, p, d.Release)
			results[i] = result{c, err}
			if err != nil {
				var be *bootError
				if errors.As(err, &be) {
					failOnce.Do(func() { failure = be; cancelBoot() })
				}
			}
		})
	}
	wg.Wait()

	var fresh []*Container
	var lastReady time.Time
	for _, r := range results {
		if r.c != nil {
			fresh = append(fresh, r.c)
			if r.c.ReadyAt.After(lastReady) {
				lastReady = r.c.ReadyAt
			}
		}
	}
	if ctx.Err() != nil || failure != nil {
		s.discard(fresh)
		s.mu.Lock()
		switch {
		case failure != nil:
			s.endLocked(d, failure.status, failure.msg)
		case s.ctx.Err() != nil:
			s.endLocked(d, StatusAborted, "podswitch is shutting down")
		default:
			s.endLocked(d, StatusAborted, "replaced by a newer deployment")
		}
		s.mu.Unlock()
		return
	}

	// Switch: everything that is not of the new set leaves the pool at once.
	s.mu.Lock()
	var old []*Container
	isFresh := make(map[string]bool, len(fresh))
	for _, c := range fresh {
		isFresh[c.ID] = true
		c.State = StateReady
	}
	for _, c := range s.containers {
		if !isFresh[c.ID] && (c.State == StateReady || c.State == StateStarting) {
			c.State = StateDraining
			old = append(old, c)
		}
	}
	s.current = &ReleaseInfo{ID: d.Release, Image: spec.Image, Status: StatusSuccess, DeployedAt: time.Now(), Deployment: d.ID}
	oldPool := s.publishLocked()
	d.LastReadyAt = lastReady
	d.SwitchedAt = time.Now()
	s.endLocked(d, StatusSuccess, "")
	s.mu.Unlock()
	s.log.Info("traffic switched", zap.Int64("deployment", d.ID), zap.String("release", d.Release),
		zap.Duration("switch_latency", d.SwitchedAt.Sub(lastReady)), zap.Int("retiring", len(old)))
	s.retire(oldPool, old, spec)
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

// bootError is a boot that failed for a reason the deployment reports.
type bootError struct {
	status Status
	msg    string
}

func (e *bootError) Error() string { return string(e.status) + ": " + e.msg }

// boot starts one container of process p and waits until it is ready. The
// container is returned (and recorded) whenever it was created, even when
// the boot failed, so that the caller removes it.
func (s *Supervisor) boot(ctx context.Context, spec AppSpec, p ProcessSpec, release string) (*Container, error) {
	env := make(map[string]string, len(spec.Env)+1)
	for k, v := range spec.Env {
		env[k] = v
	}
	web := p.Name == WebProcess
	if web {
		env["PORT"] = strconv.Itoa(spec.Port)
	}
	name := fmt.Sprintf("podswitch-%s-%s-%s-%06x", spec.Name, p.Name, release[:8], rand.Uint32()&0xffffff)
	info, err := s.deps.Runtime.Run(ctx, ContainerSpec{
		Name:    name,
		Image:   spec.Image,
		Command: p.Command,
		Env:     env,
		Labels: map[string]string{
			LabelApp: spec.Name, LabelRelease: release, LabelProcess: p.Name,
		},
		StopTimeout: spec.StopTimeout,
	})
	if err != nil {
		if ctx.Err() != nil {
			if info.ID != "" {
				return &Container{ID: info.ID, Name: name, Process: p.Name, Release: release}, ctx.Err()
			}
			return nil, ctx.Err()
		}
		var c *Container
		if info.ID != "" {
			c = &Container{ID: info.ID, Name: name, Process: p.Name, Release: release}
		}
		return c, &bootError{StatusStartError, fmt.Sprintf("%s container could not start: %v", p.Name, err)}
	}
	c := &Container{ID: info.ID, Name: name, Process: p.Name, Release: release, State: StateStarting, StartedAt: time.Now()}
	if web && info.IP != "" {
		c.Addr = net.JoinHostPort(info.IP, strconv.Itoa(spec.Port))
	}
	s.mu.Lock()
	s.containers[c.ID] = c
	s.mu.Unlock()

	if web {
		err = s.waitListening(ctx, spec, c)
	} else {
		err = s.waitRunning(ctx, spec, c)
	}
	if err != nil {
		var be *bootError
		if errors.As(err, &be) {
			lvl := zap.WarnLevel
			if ce := s.log.Check(lvl, "container failed to boot"); ce != nil {
				ce.Write(zap.String("container", c.ID), zap.String("process", p.Name), zap.String("status", string(be.status)), zap.String("error", be.msg))
			}
		}
		return c, err
	}
	return c, nil
}

// waitListening probes c until it accepts a TCP connection on its port. It
// fails early when the container exits and at boot_timeout otherwise.
func (s *Supervisor) waitListening(ctx context.Context, spec AppSpec, c *Container) error {
	deadline := time.Now().Add(spec.BootTimeout)
	bctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	var lastInspect time.Time
	for {
		if c.Addr != "" {
			if err := s.deps.Prober.Probe(bctx, c.Addr); err == nil {
				s.mu.Lock()
				c.ReadyAt = time.Now()
				s.mu.Unlock()
				return nil
			}
		}
		if time.Since(lastInspect) >= inspectInterval || c.Addr == "" {
			lastInspect = time.Now()
			cur, err := s.deps.Runtime.Inspect(bctx, c.ID)
			switch {
			case errors.Is(err, ErrNotFound):
				return s.crashed(c, "web container disappeared before it was ready")
			case err == nil:
				if c.Addr == "" && cur.IP != "" {
					s.mu.Lock()
					c.Addr = net.JoinHostPort(cur.IP, strconv.Itoa(spec.Port))
					s.mu.Unlock()
				}
				if !cur.Running {
					return s.crashed(c, fmt.Sprintf("web container exited with code %d before listening on PORT %d", cur.ExitCode, spec.Port))
				}
				if c.Addr == "" {
					return &bootError{StatusStartError, "web container has no IP address to dial (rootless Podman is not supported)"}
				}
			}
		}
		select {
		case <-bctx.Done():
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return &bootError{StatusTimeoutError, fmt.Sprintf("web container did not accept a TCP connection on PORT %d within %s", spec.Port, spec.BootTimeout)}
		case <-time.After(probeInterval):
		}
	}
}

// waitRunning waits until a non-web container has kept running for
// WorkerReadyTime.
func (s *Supervisor) waitRunning(ctx context.Context, spec AppSpec, c *Container) error {
	wait := min(spec.WorkerReadyTime, spec.BootTimeout)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(wait):
	}
	cur, err := s.deps.Runtime.Inspect(ctx, c.ID)
	switch {
	case errors.Is(err, ErrNotFound):
		return s.crashed(c, c.Process+" container disappeared while booting")
	case err != nil:
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &bootError{StatusStartError, fmt.Sprintf("%s container could not be inspected: %v", c.Process, err)}
	case !cur.Running:
		return s.crashed(c, fmt.Sprintf("%s container exited with code %d while booting", c.Process, cur.ExitCode))
	}
	s.mu.Lock()
	c.ReadyAt = time.Now()
	s.mu.Unlock()
	return nil
}

func (s *Supervisor) crashed(c *Container, msg string) error {
	s.mu.Lock()
	c.State = StateCrashed
	s.mu.Unlock()
	return &bootError{StatusCrashedError, msg}
}

// discard removes containers that never served.
func (s *Supervisor) discard(cs []*Container) {
	if len(cs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), cleanupTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Go(func() {
			if err := s.deps.Runtime.Remove(ctx, c.ID); err != nil && !errors.Is(err, ErrNotFound) {
				s.log.Error("removing container failed", zap.String("container", c.ID), zap.Error(err))
				return
			}
			s.mu.Lock()
			delete(s.containers, c.ID)
			s.mu.Unlock()
		})
	}
	wg.Wait()
}

// retire drains and stops containers that have left the pool. It returns at
// once; the work goes on in the background.
func (s *Supervisor) retire(oldPool *Pool, cs []*Container, spec AppSpec) {
	if len(cs) == 0 {
		return
	}
	s.retiring.Go(func() {
		s.drain(oldPool, spec.DrainTimeout)
		s.stopContainers(cs, spec.StopTimeout)
	})
}

// drain waits until the requests routed with pool p have ended, at most
// timeout.
func (s *Supervisor) drain(p *Pool, timeout time.Duration) {
	if p == nil || timeout <= 0 {
		return
	}
	deadline := time.Now().Add(timeout)
	for {
		// Wait one poll first: a request that loaded p just before the swap
		// may not have counted itself yet.
		select {
		case <-s.ctx.Done():
			return
		case <-time.After(drainPoll):
		}
		n := p.InFlight()
		if n <= 0 {
			return
		}
		if time.Now().After(deadline) {
			s.log.Warn("drain timeout reached, stopping with requests in flight", zap.Int64("in_flight", n))
			return
		}
	}
}

// stopContainers stops (SIGTERM, stop_timeout, SIGKILL) and removes cs.
func (s *Supervisor) stopContainers(cs []*Container, stopTimeout time.Duration) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), stopTimeout+cleanupTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Go(func() {
			s.mu.Lock()
			c.State = StateStopping
			s.mu.Unlock()
			t0 := time.Now()
			if err := s.deps.Runtime.Stop(ctx, c.ID, stopTimeout); err != nil && !errors.Is(err, ErrNotFound) {
				s.log.Warn("stopping container failed", zap.String("container", c.ID), zap.Error(err))
			}
			if err := s.deps.Runtime.Remove(ctx, c.ID); err != nil && !errors.Is(err, ErrNotFound) {
				s.log.Error("removing container failed", zap.String("container", c.ID), zap.Error(err))
			}
			s.mu.Lock()
			c.State = StateStopped
			delete(s.containers, c.ID)
			s.mu.Unlock()
			s.log.Info("container stopped", zap.String("container", c.ID), zap.String("process", c.Process),
				zap.String("release", c.Release), zap.Duration("took", time.Since(t0)))
		})
	}
	wg.Wait()
}

// stopAll drains and stops every container of a removed app.
func (s *Supervisor) stopAll() {
	s.mu.Lock()
	if t := s.target; t != nil {
		s.endLocked(t, StatusAborted, "app removed from the config")
	}
	var cs []*Container
	for _, c := range s.containers {
		if c.State != StateStopping && c.State != StateStopped {
			c.State = StateDraining
			cs = append(cs, c)
		}
	}
	s.current = nil
	old := s.publishLocked()
	spec := s.desired
	s.mu.Unlock()
	s.log.Info("app removed, stopping its containers", zap.Int("containers", len(cs)))
	s.drain(old, spec.DrainTimeout)
	s.stopContainers(cs, spec.StopTimeout)
	s.retiring.Wait()
}

// scale brings the number of containers of each process type of the current
// release to the desired counts. It reports whether another pass is needed.
func (s *Supervisor) scale(spec AppSpec) bool {
	s.mu.Lock()
	have := map[string][]*Container{}
	for _, c := range s.containers {
		if c.Release == spec.ReleaseID() && (c.State == StateReady || c.State == StateStarting) {
			have[c.Process] = append(have[c.Process], c)
		}
	}
	var surplus []*Container
	var missing []ProcessSpec
	for _, p := range spec.Processes {
		cs := have[p.Name]
		// Stop the newest first: the oldest have proven themselves.
		slices.SortFunc(cs, func(a, b *Container) int { return b.StartedAt.Compare(a.StartedAt) })
		for i := 0; i < len(cs)-p.Count; i++ {
			cs[i].State = StateDraining
			surplus = append(surplus, cs[i])
		}
		for i := len(cs); i < p.Count; i++ {
			missing = append(missing, p)
		}
	}
	var oldPool *Pool
	if len(surplus) > 0 {
		oldPool = s.publishLocked()
	}
	s.mu.Unlock()
	if len(surplus) > 0 {
		s.log.Info("scaling down", zap.Int("containers", len(surplus)))
		s.retire(oldPool, surplus, spec)
	}
	if len(missing) == 0 {
		return false
	}
	s.log.Info("scaling up", zap.Int("containers", len(missing)))
	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	var wg sync.WaitGroup
	for _, p := range missing {
		wg.Go(func() {
			c, err := s.boot(ctx, spec, p, spec.ReleaseID())
			if err != nil {
				if c != nil {
					s.discard([]*Container{c})
				}
				s.log.Error("scale up failed", zap.String("process", p.Name), zap.Error(err))
				return
			}
			s.mu.Lock()
			c.State = StateReady
			if s.current != nil && s.current.ID == c.Release {
				s.publishLocked()
			}
			s.mu.Unlock()
		})
	}
	wg.Wait()
	return false
}

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
		if c.Process == WebProcess {
			if info.IP == "" {
				gone = append(gone, c)
				continue
			}
			c.Addr = net.JoinHostPort(info.IP, strconv.Itoa(spec.Port))
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
		s.publishLocked()
		s.log.Info("adopted running containers", zap.String("release", keep), zap.Int("containers", len(byRelease[keep])))
	}
	if keep != want {
		s.deployLocked(spec, KindDeploy, false)
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

// Remove drains and stops every container of the app, then ends the
// supervisor. It returns at once.
func (s *Supervisor) remove() {
	s.mu.Lock()
	s.removed = true
	if t := s.target; t != nil {
		t.cancel()
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
