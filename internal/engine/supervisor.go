package engine

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Timing of the engine. They are variables so that unit tests running in a
// synctest bubble can read them; nothing changes them at run time.
var (
	probeInterval   = 20 * time.Millisecond
	inspectInterval = time.Second
	// drainSettle is how long a container that left the pool waits before
	// its requests in flight are counted: a request that loaded the pool
	// just before the swap is counted by the proxy a moment later.
	drainSettle = 250 * time.Millisecond
	drainPoll   = 50 * time.Millisecond
	// cleanupTimeout bounds one stop or removal call beyond stop_timeout.
	cleanupTimeout = 30 * time.Second
	// resyncInterval is how often the manager compares every supervisor's
	// containers with what the runtime has, so that a missed exit event
	// heals.
	resyncInterval = 10 * time.Second
	// historySize is how many deployments an app remembers.
	historySize = 50
	// stableAfter is how long a container must have served for its crash
	// to count as a new incident rather than one more failure of a crash
	// loop: it is replaced at once and its process type's retries start
	// over.
	stableAfter = 30 * time.Second
	// maxBoots bounds the boots in flight of one process type, or of one
	// deployment: the rest wait for a free slot.
	maxBoots = 8
	// runtimeWaitMax caps the backoff between two tries of a call to a
	// runtime that did not answer.
	runtimeWaitMax = 30 * time.Second
	// exitKillTimeout bounds the SIGTERMs sent to retiring containers when
	// the process exits.
	exitKillTimeout = 2 * time.Second
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
	// Store, when set, keeps each app's record (serving release,
	// deployment in progress, overrides, pause) across restarts.
	Store Store
	// ResolveEnv turns kept env values into the values containers get;
	// nil takes them as written.
	ResolveEnv EnvResolver
	// InFlight, when set, returns the requests in flight to a dial
	// address; draining waits for it to reach zero.
	InFlight func(addr string) int
	// ObserveBoot, when set, is told how long each container took from its
	// creation to ready (ok) or to its failed boot.
	ObserveBoot func(app, process string, took time.Duration, ok bool)
	// ObserveWake, when set, is told (with the app's lock held: it must
	// not block) how long each wake of an app asleep took, from what woke
	// it to its first ready web container: its cold start.
	ObserveWake func(app, trigger string, took time.Duration)
	// Changed, when set, is called with the app's lock held (it must not
	// block nor call back) whenever something users see of the app
	// changed.
	Changed func(app string)
	// Limits bound the calls in flight to the runtime.
	Limits Limits
	// Hosts, when set, is the HostSet that Runtime runs on (several
	// Podman hosts): the supervisors place containers by it, and tell it
	// what their health checks find.
	Hosts *HostSet
	// Instance names this podswitch instance: every container it starts
	// carries it (LabelInstance), and it takes over only its own (and
	// unlabelled ones of its apps). Empty, containers get no such label
	// and no container is taken for an orphan.
	Instance string
	// Leadership, when set, makes the manager one of several proxies that
	// share the Store: it leads the apps whose lease it holds and follows
	// the others (see Leadership).
	Leadership Leadership
}

// Event names.
const (
	EventDeployment = "deployment"
	EventGaveUp     = "gave_up"
	EventCrashed    = "crashed"
	// EventHost is a change of the state of a host (of several) the app
	// runs on.
	EventHost = "host"
)

// Event is something that happened to an app.
type Event struct {
	// Name is EventDeployment, EventGaveUp or EventCrashed.
	Name       string
	App        string
	Deployment *Deployment
	Process    string
	Container  string
	// Host is the host of an EventHost.
	Host    string
	Message string
	// Output holds the last lines of output of the container concerned.
	Output []string
	Time   time.Time
}

// Supervisor owns the containers of one app. Its loop reconciles what runs
// with what is desired without ever waiting: every slow step (a boot, a
// hook, a drain, a stop) is a task of its own that reports back by changing
// state under the lock and waking the loop. All fields below mu are guarded
// by it; lock and unlock it only with lock and unlock, which swap in a new
// traffic pool when a transition asked for one.
type Supervisor struct {
	name string
	deps Deps
	rt   Runtime
	log  *zap.Logger
	pool *PoolRef
	// probes bounds the health checks in flight of the whole manager.
	probes chan struct{}

	ctx    context.Context
	cancel context.CancelFunc
	wake   chan struct{}
	done   chan struct{}
	// tasks counts every goroutine of the supervisor but its loop.
	tasks sync.WaitGroup
	// queued are the manager's calls (exit events, resyncs) waiting for
	// the supervisor's lock, in order; queueWake wakes their runner.
	queueMu   sync.Mutex
	queued    []func()
	queueWake chan struct{}

	mu sync.Mutex
	// fleet are the app's containers and the traffic pool they make.
	fleet fleet
	// config is the app's spec as the config has it; desired is config
	// with the overrides that stand.
	config  AppSpec
	desired AppSpec
	rec     AppRecord
	serving *serving
	rollout *rollout
	// abandoned are rollouts that failed and wait for their containers to
	// be gone before they end.
	abandoned map[*rollout]bool
	log_      deployLog
	// lastTried is the release of the newest deployment of a new release:
	// a desired release that was tried and failed is not tried again
	// until something changes.
	lastTried string
	// missingImage is lastTried when its deployment failed because its
	// image was missing: the next config load tries it again, even
	// unchanged (the image may have been built or pulled since).
	missingImage string
	procs        map[string]*procState
	adopted      bool
	// resumed is set when adoption found a deployment that a previous run
	// left unfinished: the next one is its start over.
	resumed bool
	removed bool
	// stopped is set once a removed app has stopped all its containers.
	stopped    bool
	runtimeErr string
	// hostedRetry, when set, is when a write of the hosted containers that
	// failed is tried again.
	hostedRetry time.Time
	// partialSince is when adoption first found hosts that did not
	// answer (adoption's goroutine only).
	partialSince time.Time
	// orphan is set on the supervisor of an app that is not in the
	// config but has containers of this instance: it only removes them.
	orphan bool
	// others counts the containers of another instance with the app's
	// name; othersWarned is set once that was logged.
	others       int
	othersWarned bool
	// hook is the postdeploy hook that runs, or the leftover one of a
	// previous run being stopped: nil when no hook of the app runs.
	hook *hookRun
	// coldRetry is the retry of a deployment that timed out while nothing
	// served, nil when there is none.
	coldRetry *coldRetry
	// waking is the wake of an app that slept, until a web container is
	// ready; lastWake is the last one that ended.
	waking   *waking
	lastWake *WakeStatus

	// Of the idle check, which takes no lock: when the app last got a
	// request (unix nanoseconds), its idle_timeout (nanoseconds, 0 for
	// none; set with desired), and whether a sleep is queued.
	lastUsed    atomic.Int64
	idleAfter   atomic.Int64
	sleepQueued atomic.Bool
	// asleep mirrors sleepingLocked, for the idle check.
	asleep atomic.Bool
	// restCheck is the desired rest_check_interval (nanoseconds), for the
	// health checks.
	restCheck atomic.Int64
	// healthSuspect is set while a ready web container fails its checks:
	// the app is checked at the fast pace, traffic or not.
	healthSuspect atomic.Bool
}

// serving is the release that serves.
type serving struct {
	ReleaseInfo
	// spec is what its containers run, with the counts it keeps; nil
	// when it is not known (a release adopted without a record), and then
	// crashed containers are not replaced until a deployment succeeds.
	// Its counts follow the desired ones on a scale (an operation, or a
	// config change that leaves the release as it is), not on a change of
	// release: those counts come with the new release.
	spec *AppSpec
}

// setCounts sets the counts of the process types the release has.
func (sv *serving) setCounts(counts map[string]int) {
	if sv == nil || sv.spec == nil {
		return
	}
	spec := *sv.spec
	spec.Processes = slices.Clone(spec.Processes)
	for i, p := range spec.Processes {
		if n, ok := counts[p.Name]; ok {
			spec.Processes[i].Count = n
		}
	}
	sv.spec = &spec
}

func newSupervisor(ctx context.Context, spec AppSpec, pool *PoolRef, deps Deps, rt Runtime, probes chan struct{}) *Supervisor {
	ctx, cancel := context.WithCancel(ctx)
	s := &Supervisor{
		name:      spec.Name,
		deps:      deps,
		rt:        rt,
		log:       deps.Logger.With(zap.String("app", spec.Name)),
		pool:      pool,
		probes:    probes,
		ctx:       ctx,
		cancel:    cancel,
		wake:      make(chan struct{}, 1),
		queueWake: make(chan struct{}, 1),
		done:      make(chan struct{}),
		config:    spec,
		abandoned: map[*rollout]bool{},
		procs:     map[string]*procState{},
	}
	s.desired = spec
	s.idleAfter.Store(int64(spec.IdleTimeout))
	s.restCheck.Store(int64(spec.RestCheckInterval))
	s.noteUsed()
	s.fleet = newFleet(s.log, pool, s.touch)
	return s
}

// load takes what the app's previous owner (a previous run, or the owner
// of the same app before it was removed and added back) kept: the
// deployment history and the app record. It runs once that owner is
// done, so that a removed app's record, moved aside by its owner, is not
// taken back.
func (s *Supervisor) load() bool {
	var rec AppRecord
	if s.deps.Store != nil {
		var err error
		rec, err = s.deps.Store.Load(s.name)
		switch {
		case err != nil && s.deps.Leadership != nil && !errors.Is(err, ErrRecordDamaged):
			// The shared storage does not answer: starting from an empty
			// record would overwrite the one the other proxies follow.
			s.log.Warn("reading the app record failed; trying again before taking the app over", zap.Error(err))
			return false
		case err != nil:
			s.log.Error("app record is damaged; starting from an empty one", zap.Error(err))
			rec = AppRecord{}
		}
	}
	var past []Deployment
	if s.deps.History != nil {
		past = s.deps.History.Load(s.name)
	}
	s.lock()
	defer s.unlock()
	s.log_.load(past)
	s.rec = rec
	s.asleep.Store(s.sleepingLocked())
	s.refreshDesiredLocked()
	s.applyGateLocked()
	return true
}

func (s *Supervisor) resolve(source map[string]string, files []string) (map[string]string, error) {
	if s.deps.ResolveEnv == nil {
		return identityEnv(source, files)
	}
	return s.deps.ResolveEnv(source, files)
}

func (s *Supervisor) lock() { s.mu.Lock() }

// unlock swaps in a new traffic pool if a transition asked for one, then
// releases the lock.
func (s *Supervisor) unlock() {
	rel := ""
	if s.serving != nil {
		rel = s.serving.ID
	}
	s.fleet.publish(rel)
	if s.fleet.readyChanged || (!s.hostedRetry.IsZero() && time.Now().After(s.hostedRetry)) {
		s.fleet.readyChanged = false
		s.noteHostedLocked(rel)
	}
	s.wokenLocked()
	s.mu.Unlock()
}

// noteHostedLocked records the ready containers of release rel, the
// serving one, on hosts of several, when they changed (see
// AppRecord.Hosted). A record that cannot be written is logged: it only
// helps a restart while a host's API does not answer.
func (s *Supervisor) noteHostedLocked(rel string) {
	several := s.deps.Hosts != nil && s.deps.Hosts.Len() > 0
	if (!several && s.deps.Leadership == nil) || !s.adopted {
		return
	}
	port := ""
	if sv := s.serving; sv != nil && sv.spec != nil {
		port = strconv.Itoa(sv.spec.Port)
	}
	hosted := []HostedRecord{}
	for c := range s.fleet.all() {
		if c.state == StateReady && c.Release == rel && rel != "" && (HostOf(c.ID) != "" || !several) && !c.canary {
			r := HostedRecord{ID: c.ID, Name: c.Name, Process: c.Process, Addr: c.Addr}
			if c.Process == WebProcess {
				r.Port = port
			}
			hosted = append(hosted, r)
		}
		if cn := s.rec.Canary; cn != nil && s.deps.Leadership != nil && c.canary && c.state == StateReady &&
			c.Release == cn.Release && c.Process == WebProcess {
			// The other proxies send the canary its share too.
			hosted = append(hosted, HostedRecord{ID: c.ID, Name: c.Name, Process: c.Process, Addr: c.Addr, Canary: true})
		}
	}
	slices.SortFunc(hosted, func(a, b HostedRecord) int { return strings.Compare(a.ID, b.ID) })
	if slices.Equal(hosted, s.rec.Hosted) {
		return
	}
	prev := s.rec.Hosted
	s.rec.Hosted = hosted
	s.hostedRetry = time.Time{}
	if s.saveRecordLocked() != nil {
		// Kept as written, and tried again soon: the other proxies route
		// by it.
		s.rec.Hosted = prev
		s.hostedRetry = time.Now().Add(hostedRetryDelay)
	}
}

// hostedRetryDelay is how long after a failed write of the hosted
// containers the write is tried again (at the next unlock past it).
const hostedRetryDelay = 2 * time.Second

// touch tells observers that something of the app changed.
func (s *Supervisor) touch() {
	if s.deps.Changed != nil {
		s.deps.Changed(s.name)
	}
}

// poke wakes the loop; wakes coalesce.
func (s *Supervisor) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// spawn runs fn as a task of the supervisor.
func (s *Supervisor) spawn(fn func()) { s.tasks.Go(fn) }

// queue runs fn after the calls queued before it, without waiting: the
// manager hands each app its events this way, so that one app's lock (held
// over a disk write) delays no other app.
func (s *Supervisor) queue(fn func()) {
	s.queueMu.Lock()
	s.queued = append(s.queued, fn)
	s.queueMu.Unlock()
	select {
	case s.queueWake <- struct{}{}:
	default:
	}
}

// runQueue runs the queued calls in order until the supervisor ends.
func (s *Supervisor) runQueue() {
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.queueWake:
		}
		for {
			s.queueMu.Lock()
			if len(s.queued) == 0 {
				s.queueMu.Unlock()
				break
			}
			fn := s.queued[0]
			s.queued = s.queued[1:]
			s.queueMu.Unlock()
			fn()
		}
	}
}

// run is the supervisor's loop: it adopts what a previous run left, then
// reconciles on every wake until the supervisor is closed or the removed
// app has stopped all its containers.
func (s *Supervisor) run(prevs ...<-chan struct{}) {
	defer func() {
		s.tasks.Wait()
		close(s.done)
	}()
	s.spawn(s.runQueue)
	for _, prev := range prevs {
		// The same app was removed a moment ago: its old owner finishes
		// with its containers before this one looks at what runs.
		if prev == nil {
			continue
		}
		select {
		case <-prev:
		case <-s.ctx.Done():
			return
		}
	}
	b := newBackoff(time.Second, runtimeWaitMax)
	for !s.load() {
		select {
		case <-s.ctx.Done():
			return
		case <-time.After(b.NextBackOff()):
		}
	}
	b.Reset()
	for !s.adopt() {
		select {
		case <-s.ctx.Done():
			return
		case <-time.After(b.NextBackOff()):
		}
	}
	s.spawn(s.checkHealth)
	for {
		s.lock()
		s.reconcileLocked()
		finished := s.stopped
		s.unlock()
		if finished {
			s.cancel()
			return
		}
		select {
		case <-s.ctx.Done():
			s.exit()
			return
		case <-s.wake:
		}
	}
}

// exit is the end of the supervisor when the process exits: the serving
// release keeps running for the next start to adopt; containers already
// switched out, and those of a deployment that did not switch, get SIGTERM
// (bounded, so that exit is not delayed) and stay recorded as retiring or
// deploying, so that the next start finishes removing them.
func (s *Supervisor) exit() {
	s.lock()
	var ids []string
	for c := range s.fleet.all() {
		if c.state == StateDraining || c.state == StateStopping || (c.owner != 0 && c.state.live()) {
			ids = append(ids, c.ID)
		}
	}
	if len(ids) > 0 {
		s.rec.Retiring = mergeIDs(s.rec.Retiring, ids)
		s.saveRecordLocked()
	}
	if r := s.rollout; r != nil {
		e := r.e
		e.d.Status, e.d.Error, e.d.EndedAt = StatusAborted, "podswitch stopped before it ended", time.Now()
		e.settle()
		s.log_.end(e.d.ID)
		s.saveHistoryLocked()
	}
	for r := range s.abandoned {
		delete(s.abandoned, r)
		s.endAbandonedLocked(r, r.err)
	}
	s.unlock()
	ctx, cancel := context.WithTimeout(context.Background(), exitKillTimeout)
	defer cancel()
	each(ctx, make(chan struct{}, maxBoots), ids, func(_ int, id string) { _ = s.rt.Kill(ctx, id, "SIGTERM") })
}

// setRuntimeErr records whether the runtime answered.
func (s *Supervisor) setRuntimeErr(err error) {
	s.lock()
	defer s.unlock()
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	if msg == s.runtimeErr {
		return
	}
	if err != nil {
		s.log.Error("container runtime unreachable", zap.Error(err))
	} else {
		s.log.Info("container runtime reachable again")
	}
	s.runtimeErr = msg
	s.touch()
}

// withRuntime runs fn until it does not fail with ErrUnavailable, waiting
// between tries with backoff, or until ctx ends.
func (s *Supervisor) withRuntime(ctx context.Context, fn func() error) error {
	b := newBackoff(time.Second, runtimeWaitMax)
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
		case <-time.After(b.NextBackOff()):
		}
	}
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

// Hosts returns the hosts of several the app's containers go to (empty:
// every host).
func (s *Supervisor) Hosts() []string {
	s.lock()
	defer s.unlock()
	return slices.Clone(s.desired.Hosts)
}

// Status returns a consistent copy of the app's state.
func (s *Supervisor) Status() AppStatus {
	s.lock()
	defer s.unlock()
	st := AppStatus{
		Name:         s.name,
		Desired:      s.desired.ReleaseID(),
		Image:        s.desired.Image,
		ImageID:      s.desired.ImageID,
		Processes:    s.desired.Counts(),
		Containers:   make([]ContainerStatus, 0, s.fleet.count()),
		Deployments:  s.log_.snapshots(),
		Overrides:    s.rec.Overrides.list(s.config),
		RuntimeError: s.runtimeErr,
		Others:       s.others,
	}
	if hs := s.deps.Hosts; hs != nil && hs.Len() > 0 {
		for _, h := range hs.Statuses() {
			if len(s.desired.Hosts) == 0 || slices.Contains(s.desired.Hosts, h.Name) {
				st.Hosts = append(st.Hosts, h)
			}
		}
	}
	if s.fleet.allUnhealthy {
		st.AllUnhealthy = AllUnhealthyMessage
	}
	for name, ps := range s.procs {
		if ps.gaveUp {
			st.GaveUp = append(st.GaveUp, name)
		}
	}
	slices.Sort(st.GaveUp)
	if s.serving != nil {
		r := s.serving.ReleaseInfo
		st.Release = &r
	}
	for c := range s.fleet.all() {
		st.Containers = append(st.Containers, c.status())
	}
	slices.SortFunc(st.Containers, func(a, b ContainerStatus) int {
		return cmp.Or(cmp.Compare(a.Process, b.Process), a.StartedAt.Compare(b.StartedAt), cmp.Compare(a.ID, b.ID))
	})
	if p := s.rec.Pause; p != nil {
		st.Paused = &PauseStatus{Since: p.Since, Timeout: p.Timeout.String(), Held: s.pool.Held(), MaxHeld: s.pool.limit()}
	}
	if m := s.rec.Maintenance; m != nil {
		st.Maintenance = &MaintenanceStatus{Since: m.Since, Message: m.Message}
	}
	st.Idle, st.LastWake = s.idleStatusLocked(), s.lastWake
	st.Canary = s.canaryStatusLocked()
	return st
}

// ContainerCounts returns how many containers the app has, by process type
// and state.
func (s *Supervisor) ContainerCounts() map[[2]string]int {
	s.lock()
	defer s.unlock()
	n := make(map[[2]string]int)
	for c := range s.fleet.all() {
		n[[2]string{c.Process, string(c.state)}]++
	}
	return n
}

// Deployment returns a copy of deployment id, a channel closed when it has
// ended, and whether it is known.
func (s *Supervisor) Deployment(id int64) (Deployment, <-chan struct{}, bool) {
	s.lock()
	defer s.unlock()
	e := s.log_.find(id)
	if e == nil {
		return Deployment{}, nil, false
	}
	return e.snapshot(), e.done, true
}

// mergeIDs returns a with the IDs of b it lacks.
func mergeIDs(a, b []string) []string {
	for _, id := range b {
		if !slices.Contains(a, id) {
			a = append(a, id)
		}
	}
	return a
}

// Name returns the app's name.
func (s *Supervisor) Name() string { return s.name }

// Config returns the app's spec as the config has it, and the spec with the
// overrides that stand.
func (s *Supervisor) Config() (config, desired AppSpec) {
	s.lock()
	defer s.unlock()
	return s.config, s.desired
}
