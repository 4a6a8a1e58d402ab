package engine

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"sync"
	"time"
)

// behavior tells the fake runtime how the containers of an image (or of an
// env value) act.
type behavior struct {
	// RunErr makes Run fail with this message (as Podman would, e.g.
	// "localhost/blog:v9: image not known").
	RunErr string
	// Crash makes the container exit at once with code 3.
	Crash bool
	// NoListen keeps the container running without ever listening.
	NoListen bool
	// Hold keeps the container from listening until the test calls
	// fakeRuntime.Listen.
	Hold bool
	// HookExit is the exit code of a postdeploy container.
	HookExit int
	// HookHold keeps a postdeploy container running until the test calls
	// fakeRuntime.Exit (or it is stopped).
	HookHold bool
	// Output is what the container prints.
	Output []string
	// NoImage makes ImageExists say the image is missing.
	NoImage bool
	// TermDelay makes the container exit with code 0 that long after its
	// SIGTERM (at once, with code 143, when zero).
	TermDelay time.Duration
	// IgnoreTerm makes the container ignore SIGTERM: only SIGKILL ends it.
	IgnoreTerm bool
	// OOM makes a Crash one of the memory limit: exit code 137 and
	// OOMKilled.
	OOM bool
}

type fakeContainer struct {
	info      ContainerInfo
	spec      ContainerSpec
	listening bool
	output    []string
	// httpStatus is what a GET answers (0: 200); hang makes every GET
	// go unanswered (a deadlocked app that still accepts TCP).
	httpStatus int
	hang       bool
	// port is what the app listens on: the PORT it was given.
	port string
	// b is how it acts; exited is closed once it runs no more (or is
	// removed); termed is set once it got SIGTERM.
	b      behavior
	exited chan struct{}
	termed bool
}

// exitLocked ends c with code, once.
func (c *fakeContainer) exitLocked(code int) {
	if c.info.Running {
		c.info.Running = false
		c.info.ExitCode = code
	}
	c.listening = false
	select {
	case <-c.exited:
	default:
		close(c.exited)
	}
}

// stopCall is a stop: a Stop call, or a SIGTERM sent by Kill.
type stopCall struct {
	ID string
	At time.Time
}

type removeCall struct {
	ID string
	At time.Time
	// Running is set when the container still ran: a removal kills it.
	Running bool
}

type killCall struct {
	ID     string
	Signal string
	At     time.Time
}

// fakeRuntime is an in-memory Runtime. It is safe for concurrent use.
type fakeRuntime struct {
	mu         sync.Mutex
	n          int
	containers map[string]*fakeContainer
	byImage    map[string]behavior
	byEnv      map[string]behavior // key "NAME=value"
	byProcess  map[string]behavior // podswitch.process label
	runs       []ContainerSpec
	runAt      []time.Time // when each of runs was made
	stops      []stopCall
	removes    []removeCall
	kills      []killCall
	// exitedOf keeps the removed containers, for ExitCode.
	exitedOf map[string]*fakeContainer
	// inflight counts Run calls in flight, and maxInflight the most seen.
	inflight, maxInflight int
	// runDelay makes every Run take that long; stopDelay every Stop (the
	// container exits at its end, as one that handles SIGTERM).
	runDelay  time.Duration
	stopDelay time.Duration
	// runSerial makes a Run take runDelay times the Run calls in flight,
	// as a service that serialises creates does.
	runSerial bool
	// down makes every call fail as if the service were unreachable.
	down bool
	// net is the first three parts of the containers' IPs ("10.0.0"
	// when empty); cut makes none of them answer (a host's link down).
	net  string
	cut  bool
	subs map[int]func(ContainerEvent)
	nsub int
	// tags maps an image reference to the ID it names (see Tag).
	tags         map[string]string
	imageIDCalls int
}

// errDown is what the Podman runtime returns when its service cannot be
// reached: it wraps ErrUnavailable, so the engine waits instead of failing.
var errDown = fmt.Errorf("%w: podman service at unix:///run/podman/podman.sock: connection refused", ErrUnavailable)

// SetCut makes the runtime's containers unreachable (or reachable again).
func (r *fakeRuntime) SetCut(cut bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cut = cut
}

// SetDown makes the runtime unreachable (or reachable again).
func (r *fakeRuntime) SetDown(down bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.down = down
}

func newFakeRuntime() *fakeRuntime {
	return &fakeRuntime{
		containers: map[string]*fakeContainer{},
		byImage:    map[string]behavior{},
		byEnv:      map[string]behavior{},
		byProcess:  map[string]behavior{},
		exitedOf:   map[string]*fakeContainer{},
	}
}

// OnImage sets how containers of image act from now on.
func (r *fakeRuntime) OnImage(image string, b behavior) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.byImage[image] = b
}

// OnEnv sets how containers given env name=value act from now on; it wins
// over OnImage.
func (r *fakeRuntime) OnEnv(name, value string, b behavior) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.byEnv[name+"="+value] = b
}

// OnProcess sets how containers of process type name act from now on; it
// wins over OnEnv and OnImage.
func (r *fakeRuntime) OnProcess(name string, b behavior) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.byProcess[name] = b
}

func (r *fakeRuntime) behaviorLocked(spec ContainerSpec) behavior {
	if b, ok := r.byProcess[spec.Labels[LabelProcess]]; ok {
		return b
	}
	for k, v := range spec.Env {
		if b, ok := r.byEnv[k+"="+v]; ok {
			return b
		}
	}
	if b, ok := r.byImage[spec.Image]; ok {
		return b
	}
	for ref, id := range r.tags {
		if id == spec.Image {
			return r.byImage[ref]
		}
	}
	return behavior{}
}

func (r *fakeRuntime) nextIPLocked() (string, string) {
	r.n++
	return fmt.Sprintf("c%04d", r.n), fmt.Sprintf("%s.%d", cmp.Or(r.net, "10.0.0"), r.n)
}

func (r *fakeRuntime) Run(ctx context.Context, spec ContainerSpec) (ContainerInfo, error) {
	if err := ctx.Err(); err != nil {
		return ContainerInfo{}, err
	}
	r.mu.Lock()
	r.inflight++
	r.maxInflight = max(r.maxInflight, r.inflight)
	delay := r.runDelay
	if r.runSerial {
		delay *= time.Duration(r.inflight)
	}
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.inflight--
		r.mu.Unlock()
	}()
	if delay > 0 {
		select {
		case <-ctx.Done():
			return ContainerInfo{}, ctx.Err()
		case <-time.After(delay):
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.down {
		return ContainerInfo{}, errDown
	}
	spec.Env = maps.Clone(spec.Env)
	spec.Labels = maps.Clone(spec.Labels)
	spec.Command = slices.Clone(spec.Command)
	r.runs = append(r.runs, spec)
	r.runAt = append(r.runAt, time.Now())
	b := r.behaviorLocked(spec)
	if b.RunErr != "" {
		return ContainerInfo{}, errors.New(b.RunErr)
	}
	id, ip := r.nextIPLocked()
	c := &fakeContainer{
		info: ContainerInfo{
			ID: id, Name: spec.Name, Image: spec.Image, Labels: spec.Labels,
			Running: !b.Crash, IP: ip,
		},
		spec:      spec,
		port:      spec.Env["PORT"],
		listening: !b.Crash && !b.NoListen && !b.Hold,
		output:    slices.Clone(b.Output),
		b:         b,
		exited:    make(chan struct{}),
	}
	if b.Crash {
		c.info.Running = true
		if b.OOM {
			c.info.OOMKilled = true
			c.exitLocked(137)
		} else {
			c.exitLocked(3)
		}
	}
	if spec.Labels[LabelProcess] == HookProcess {
		c.info.Running, c.listening = true, false
		if !b.HookHold {
			c.info.OOMKilled = b.OOM
			c.exitLocked(b.HookExit)
		}
	}
	r.containers[id] = c
	return c.copyInfo(), nil
}

func (r *fakeRuntime) Wait(ctx context.Context, id string) (int, error) {
	for {
		r.mu.Lock()
		if r.down {
			r.mu.Unlock()
			return -1, errDown
		}
		c := r.containers[id]
		if c == nil {
			r.mu.Unlock()
			return -1, fmt.Errorf("waiting for %s: %w", id, ErrNotFound)
		}
		if !c.info.Running {
			code := c.info.ExitCode
			r.mu.Unlock()
			return code, nil
		}
		exited := c.exited
		r.mu.Unlock()
		select {
		case <-ctx.Done():
			return -1, ctx.Err()
		case <-exited:
		}
	}
}

func (r *fakeRuntime) Events(ctx context.Context, fn func(ContainerEvent)) error {
	r.mu.Lock()
	if r.subs == nil {
		r.subs = map[int]func(ContainerEvent){}
	}
	r.nsub++
	n := r.nsub
	r.subs[n] = fn
	r.mu.Unlock()
	<-ctx.Done()
	r.mu.Lock()
	delete(r.subs, n)
	r.mu.Unlock()
	return ctx.Err()
}

func (c *fakeContainer) copyInfo() ContainerInfo {
	i := c.info
	i.Labels = maps.Clone(i.Labels)
	return i
}

func (r *fakeRuntime) Inspect(ctx context.Context, id string) (ContainerInfo, error) {
	if err := ctx.Err(); err != nil {
		return ContainerInfo{}, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.down {
		return ContainerInfo{}, errDown
	}
	c := r.containers[id]
	if c == nil {
		return ContainerInfo{}, fmt.Errorf("inspecting %s: %w", id, ErrNotFound)
	}
	return c.copyInfo(), nil
}

func (r *fakeRuntime) Stop(ctx context.Context, id string, timeout time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r.mu.Lock()
	delay := r.stopDelay
	r.mu.Unlock()
	if delay > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.down {
		return errDown
	}
	r.stops = append(r.stops, stopCall{ID: id, At: time.Now()})
	c := r.containers[id]
	if c == nil {
		return fmt.Errorf("stopping %s: %w", id, ErrNotFound)
	}
	c.exitLocked(143)
	return nil
}

func (r *fakeRuntime) Remove(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.down {
		return errDown
	}
	c := r.containers[id]
	r.removes = append(r.removes, removeCall{ID: id, At: time.Now(), Running: c != nil && c.info.Running})
	if c == nil {
		return fmt.Errorf("removing %s: %w", id, ErrNotFound)
	}
	c.exitLocked(137)
	r.exitedOf[id] = c
	delete(r.containers, id)
	return nil
}

func (r *fakeRuntime) List(ctx context.Context, app string) ([]ContainerInfo, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.down {
		return nil, errDown
	}
	var out []ContainerInfo
	for _, c := range r.containers {
		a, ok := c.info.Labels[LabelApp]
		if !ok || (app != "" && a != app) {
			continue
		}
		out = append(out, c.copyInfo())
	}
	slices.SortFunc(out, func(a, b ContainerInfo) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

func (r *fakeRuntime) Kill(ctx context.Context, id, signal string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.down {
		return errDown
	}
	r.kills = append(r.kills, killCall{ID: id, Signal: signal, At: time.Now()})
	c := r.containers[id]
	if c == nil {
		return fmt.Errorf("killing %s: %w", id, ErrNotFound)
	}
	if !c.info.Running {
		return nil
	}
	switch {
	case signal == "SIGKILL":
		c.exitLocked(137)
	case signal != "SIGTERM" || c.termed:
	case c.b.IgnoreTerm:
		c.termed = true
		r.stops = append(r.stops, stopCall{ID: id, At: time.Now()})
	case c.b.TermDelay > 0:
		c.termed = true
		r.stops = append(r.stops, stopCall{ID: id, At: time.Now()})
		time.AfterFunc(c.b.TermDelay, func() {
			r.mu.Lock()
			defer r.mu.Unlock()
			c.exitLocked(0)
		})
	default:
		r.stops = append(r.stops, stopCall{ID: id, At: time.Now()})
		c.exitLocked(143)
	}
	return nil
}

// Signals returns the signals Kill sent to container id, in order.
func (r *fakeRuntime) Signals(id string) []killCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []killCall
	for _, k := range r.kills {
		if k.ID == id {
			out = append(out, k)
		}
	}
	return out
}

// ExitCode returns the exit code of container id and whether it exited
// (false when it runs or is unknown). Removed containers are kept for it.
func (r *fakeRuntime) ExitCode(id string) (int, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.exitedOf[id]
	if c == nil {
		c = r.containers[id]
	}
	if c == nil || c.info.Running {
		return 0, false
	}
	return c.info.ExitCode, true
}

func (r *fakeRuntime) Logs(ctx context.Context, id string, opts LogOptions, fn func(LogLine)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r.mu.Lock()
	if r.down {
		r.mu.Unlock()
		return errDown
	}
	c := r.containers[id]
	if c == nil {
		r.mu.Unlock()
		return fmt.Errorf("logs of %s: %w", id, ErrNotFound)
	}
	lines := slices.Clone(c.output)
	r.mu.Unlock()
	if opts.Tail >= 0 && len(lines) > opts.Tail {
		lines = lines[len(lines)-opts.Tail:]
	}
	for _, l := range lines {
		fn(LogLine{Stream: "stdout", Text: l})
	}
	return nil
}

func (r *fakeRuntime) ImageExists(ctx context.Context, image string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.down {
		return errDown
	}
	if r.byImage[image].NoImage {
		return fmt.Errorf("%w: %s is not in the service's storage", ErrImageNotFound, image)
	}
	return nil
}

// ImageID returns the ID Tag gave image; an image never tagged has none
// (""), and its containers run by reference, as before images were pinned.
func (r *fakeRuntime) ImageID(ctx context.Context, image string) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.imageIDCalls++
	if r.down {
		return "", errDown
	}
	if r.byImage[image].NoImage {
		return "", fmt.Errorf("%w: %s is not in the service's storage", ErrImageNotFound, image)
	}
	return r.tags[image], nil
}

// Tag makes image name the image id (as a rebuild under the same tag
// does); Run of id then acts as OnImage(image) says.
func (r *fakeRuntime) Tag(image, id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.tags == nil {
		r.tags = map[string]string{}
	}
	r.tags[image] = id
}

// ImageIDCalls returns how many times ImageID was called.
func (r *fakeRuntime) ImageIDCalls() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.imageIDCalls
}

// Kills returns the Kill calls.
func (r *fakeRuntime) Kills() []killCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.kills)
}

// MaxInflight returns the most Run calls seen in flight at once.
func (r *fakeRuntime) MaxInflight() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.maxInflight
}

// Listen makes a held container accept connections on its PORT.
func (r *fakeRuntime) Listen(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c := r.containers[id]; c != nil && c.info.Running {
		c.listening = true
	}
}

// Exit makes a running container exit with code, and tells the event
// subscribers.
func (r *fakeRuntime) Exit(id string, code int) {
	r.mu.Lock()
	c := r.containers[id]
	var subs []func(ContainerEvent)
	if c != nil {
		c.info.Running = true
		c.exitLocked(code)
		for _, f := range r.subs {
			subs = append(subs, f)
		}
	}
	r.mu.Unlock()
	for _, f := range subs {
		f(ContainerEvent{ID: id, App: c.info.Labels[LabelApp], ExitCode: code})
	}
}

// ExitQuietly makes a running container exit without an event, as if the
// event stream had missed it.
func (r *fakeRuntime) ExitQuietly(id string, code int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c := r.containers[id]; c != nil {
		c.info.Running = true
		c.exitLocked(code)
	}
}

// Add puts a container in the runtime as if a previous podswitch had run
// it; it listens on port when listening is set.
func (r *fakeRuntime) Add(image string, labels map[string]string, running, listening bool, port string) ContainerInfo {
	r.mu.Lock()
	defer r.mu.Unlock()
	id, ip := r.nextIPLocked()
	c := &fakeContainer{
		info: ContainerInfo{
			ID: id, Name: "podswitch-old-" + id, Image: image, Labels: maps.Clone(labels),
			Running: running, IP: ip,
		},
		port:      port,
		listening: running && listening,
		b:         r.byImage[image],
		exited:    make(chan struct{}),
	}
	if !running {
		close(c.exited)
	}
	r.containers[id] = c
	return c.copyInfo()
}

// Runs returns the specs Run was called with.
func (r *fakeRuntime) Runs() []ContainerSpec {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.runs)
}

// RunTimes returns when Run was called for containers of process type
// process (the podswitch.process label), oldest first.
func (r *fakeRuntime) RunTimes(process string) []time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []time.Time
	for i, spec := range r.runs {
		if spec.Labels[LabelProcess] == process {
			out = append(out, r.runAt[i])
		}
	}
	return out
}

// Stops returns the Stop calls.
func (r *fakeRuntime) Stops() []stopCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.stops)
}

// Removes returns the Remove calls.
func (r *fakeRuntime) Removes() []removeCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.removes)
}

// Get returns the container id and whether it exists (not removed).
// Spec returns what container id was created with.
func (r *fakeRuntime) Spec(id string) (ContainerSpec, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.containers[id]
	if c == nil {
		return ContainerSpec{}, false
	}
	return c.spec, true
}

func (r *fakeRuntime) Get(id string) (ContainerInfo, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.containers[id]
	if c == nil {
		return ContainerInfo{}, false
	}
	return c.copyInfo(), true
}

// Env returns the env container id was run with.
func (r *fakeRuntime) Env(id string) map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c := r.containers[id]; c != nil {
		return maps.Clone(c.spec.Env)
	}
	return nil
}

// Listening reports whether addr (ip:port) is a running container that
// listens on that port.
func (r *fakeRuntime) Listening(addr string) bool {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cut {
		return false
	}
	for _, c := range r.containers {
		if c.info.IP == host {
			return c.info.Running && c.listening && c.port == port
		}
	}
	return false
}

// fakeProber accepts a connection where the fake runtime has a container
// listening. It never touches the network.
type fakeProber struct {
	rt *fakeRuntime

	mu     sync.Mutex
	probes int
}

func (p *fakeProber) Probe(ctx context.Context, addr string) error {
	p.mu.Lock()
	p.probes++
	p.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	if p.rt.Listening(addr) {
		return nil
	}
	return fmt.Errorf("dial tcp %s: connect: connection refused", addr)
}

var (
	_ Runtime = (*fakeRuntime)(nil)
	_ Prober  = (*fakeProber)(nil)
)
