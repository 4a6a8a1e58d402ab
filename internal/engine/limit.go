package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Limits bound the calls in flight to one container runtime, whatever the
// number of apps and containers: a scale to hundreds of containers, or a
// hundred apps booting at once, queues instead of opening thousands of
// connections to the Podman service (which runs out of files and wedges).
//
// Calls are bounded by class, so that a class whose calls last long never
// holds a slot another class needs: signals (quick) never wait behind
// stops or removes; waits for an exit take no slot at all (there is one
// per container being stopped or hook running, each with a deadline); the
// streams of the logs route (whose callback writes to a client that may
// read slowly) and the event stream never take a slot that deploys, stops
// or the resync need.
type Limits struct {
	// Run bounds creates and starts. Zero (the default) lets the bound
	// follow the runtime's answer times, between 2 and 16, from 3 (see
	// adaptiveLimit): Podman serialises much of a create and a start, so
	// past a few calls in flight each only waits longer inside the
	// service, but a fast host takes more than a slow one. A positive
	// value fixes it.
	Run int
	// Stop bounds Podman's own stop calls (which wait up to the stop
	// timeout). Default 8. The engine stops containers with Kill and
	// Wait; this class is for a caller that asks Podman to stop.
	Stop int
	// Signal bounds kills (SIGTERM, SIGKILL), which Podman answers at
	// once. Default 32.
	Signal int
	// Other bounds inspects, lists, removes, image checks and the short
	// log reads of the engine (the last lines of a crashed container).
	// Default 4.
	Other int
	// Streams bounds the log streams of the logs route (LogOptions.Stream
	// or Follow). Default 256.
	Streams int
}

// The adaptive bound of creates and starts.
const (
	runLimitInitial = 3
	runLimitMin     = 2
	runLimitMax     = 16
)

func (l Limits) withDefaults() Limits {
	if l.Stop <= 0 {
		l.Stop = 8
	}
	if l.Signal <= 0 {
		l.Signal = 32
	}
	if l.Other <= 0 {
		l.Other = 4
	}
	if l.Streams <= 0 {
		l.Streams = 256
	}
	return l
}

// Deadlines of the bounded calls whose caller set none, so that a runtime
// that never answers frees the slot: no call holds one for ever.
var (
	runCallTimeout   = 5 * time.Minute
	shortCallTimeout = time.Minute
)

// limited is a Runtime whose calls wait for a free slot of their class.
// Each Podman host of a HostSet has classes of its own, so that a host
// that does not answer never holds the slots the others need; the calls
// of no host (a single runtime's, and a HostSet's lists and image checks,
// which ask every host) share the base ones.
type limited struct {
	rt     Runtime
	limits Limits
	*classes
	hostsMu sync.Mutex
	byHost  map[string]*classes
}

// classes are the slots of one runtime.
type classes struct {
	run                          *adaptiveLimit
	stop, signal, other, streams chan struct{}
}

func limit(rt Runtime, l Limits) *limited {
	l = l.withDefaults()
	return &limited{rt: rt, limits: l, classes: newClasses(l), byHost: map[string]*classes{}}
}

func newClasses(l Limits) *classes {
	run := newAdaptiveLimit(runLimitInitial, runLimitMin, runLimitMax)
	if l.Run > 0 {
		run = newAdaptiveLimit(l.Run, l.Run, l.Run)
	}
	return &classes{
		run:     run,
		stop:    make(chan struct{}, l.Stop),
		signal:  make(chan struct{}, l.Signal),
		other:   make(chan struct{}, l.Other),
		streams: make(chan struct{}, l.Streams),
	}
}

// of returns the classes of host ("" for the base ones).
func (l *limited) of(host string) *classes {
	if host == "" {
		return l.classes
	}
	l.hostsMu.Lock()
	defer l.hostsMu.Unlock()
	c := l.byHost[host]
	if c == nil {
		c = newClasses(l.limits)
		l.byHost[host] = c
	}
	return c
}

// each runs fn(i, items[i]) for every item, each in a goroutine of its own
// that starts only once a slot of slots is free: a long list never means
// as many goroutines at once. It stops starting new ones when ctx ends
// and returns when the ones started have.
func each[T any](ctx context.Context, slots chan struct{}, items []T, fn func(int, T)) {
	var wg sync.WaitGroup
	for i, item := range items {
		if acquire(ctx, slots) != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-slots }()
			fn(i, item)
		})
	}
	wg.Wait()
}

// acquire waits for a slot of sem, or for ctx to end.
func acquire(ctx context.Context, sem chan struct{}) error {
	select {
	case sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// slot waits for a slot of sem and returns ctx with a deadline of d when
// it had none, and the function that gives both back.
func slot(ctx context.Context, sem chan struct{}, d time.Duration) (context.Context, func(), error) {
	if err := acquire(ctx, sem); err != nil {
		return ctx, nil, err
	}
	cancel := func() {}
	if _, ok := ctx.Deadline(); !ok {
		ctx, cancel = context.WithTimeout(ctx, d)
	}
	return ctx, func() { cancel(); <-sem }, nil
}

// Run waits for a slot of the adaptive run class and tells it how long the
// runtime took to answer, and how.
func (l *limited) Run(ctx context.Context, spec ContainerSpec) (ContainerInfo, error) {
	cl := l.of(spec.Host)
	adm, err := cl.run.acquire(ctx)
	if err != nil {
		return ContainerInfo{}, err
	}
	start := time.Now()
	budget, _ := ctx.Value(runBudgetKey{}).(*runBudget)
	callCtx, cancel := ctx, context.CancelFunc(func() {})
	switch _, ok := ctx.Deadline(); {
	case budget != nil:
		budget.admitted = start
		callCtx, cancel = context.WithTimeout(ctx, budget.timeout)
	case !ok:
		callCtx, cancel = context.WithTimeout(ctx, runCallTimeout)
	}
	defer cancel()
	info, err := l.rt.Run(callCtx, spec)
	cl.run.release(adm, time.Since(start), runOutcome(ctx, err))
	if err != nil && budget != nil && callCtx.Err() != nil && ctx.Err() == nil {
		err = fmt.Errorf("%w: %w", errRunBudget, err)
	}
	return info, err
}

// runBudget is how long a create and start may take once admitted, given
// to Run through its context (withRunBudget): the wait for a slot is
// podswitch's own queue, not the app's boot, so it does not count against
// boot_timeout (a cold start of many apps queues longer than one boot).
// Run notes when the call was admitted, from which the boot's own
// deadline counts.
type runBudget struct {
	timeout  time.Duration
	admitted time.Time
}

type runBudgetKey struct{}

func withRunBudget(ctx context.Context, b *runBudget) context.Context {
	return context.WithValue(ctx, runBudgetKey{}, b)
}

// errRunBudget wraps the error of a Run cut by its budget.
var errRunBudget = errors.New("not created and started within its budget")

// runOutcome classes how a create and start ended for the adaptive bound:
// an error of the caller's own (a missing image, a caller that gave up)
// says nothing of the runtime's load; no answer at all halves the bound.
func runOutcome(ctx context.Context, err error) callResult {
	switch {
	case err == nil:
		return answered
	case ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded):
		return refused // the caller gave up
	case errors.Is(err, ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		return unanswered
	}
	return refused
}

func (l *limited) Inspect(ctx context.Context, id string) (ContainerInfo, error) {
	ctx, release, err := slot(ctx, l.of(HostOf(id)).other, shortCallTimeout)
	if err != nil {
		return ContainerInfo{}, err
	}
	defer release()
	return l.rt.Inspect(ctx, id)
}

func (l *limited) Stop(ctx context.Context, id string, timeout time.Duration) error {
	ctx, release, err := slot(ctx, l.of(HostOf(id)).stop, timeout+shortCallTimeout)
	if err != nil {
		return err
	}
	defer release()
	return l.rt.Stop(ctx, id, timeout)
}

func (l *limited) Remove(ctx context.Context, id string) error {
	ctx, release, err := slot(ctx, l.of(HostOf(id)).other, shortCallTimeout)
	if err != nil {
		return err
	}
	defer release()
	return l.rt.Remove(ctx, id)
}

func (l *limited) List(ctx context.Context, app string) ([]ContainerInfo, error) {
	ctx, release, err := slot(ctx, l.other, shortCallTimeout)
	if err != nil {
		return nil, err
	}
	defer release()
	return l.rt.List(ctx, app)
}

func (l *limited) Kill(ctx context.Context, id, signal string) error {
	ctx, release, err := slot(ctx, l.of(HostOf(id)).signal, shortCallTimeout)
	if err != nil {
		return err
	}
	defer release()
	return l.rt.Kill(ctx, id, signal)
}

func (l *limited) ImageExists(ctx context.Context, image string) error {
	ctx, release, err := slot(ctx, l.other, shortCallTimeout)
	if err != nil {
		return err
	}
	defer release()
	return l.rt.ImageExists(ctx, image)
}

func (l *limited) ImageID(ctx context.Context, image string) (string, error) {
	ctx, release, err := slot(ctx, l.other, shortCallTimeout)
	if err != nil {
		return "", err
	}
	defer release()
	return l.rt.ImageID(ctx, image)
}

// Logs takes a slot of the stream class for a stream to a client (which
// may read slowly, and whose end the client decides), of the other class
// for a short read of the engine, with a deadline.
func (l *limited) Logs(ctx context.Context, id string, opts LogOptions, fn func(LogLine)) error {
	cl := l.of(HostOf(id))
	sem := cl.other
	if opts.Stream || opts.Follow {
		sem = cl.streams
	}
	if err := acquire(ctx, sem); err != nil {
		return err
	}
	defer func() { <-sem }()
	if !opts.Stream && !opts.Follow {
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, shortCallTimeout)
			defer cancel()
		}
	}
	return l.rt.Logs(ctx, id, opts, fn)
}

// Wait takes no slot: it waits for an exit, with the caller's deadline
// (stop_timeout, postdeploy_timeout).
func (l *limited) Wait(ctx context.Context, id string) (int, error) { return l.rt.Wait(ctx, id) }

func (l *limited) Events(ctx context.Context, fn func(ContainerEvent)) error {
	return l.rt.Events(ctx, fn)
}

var _ Runtime = (*limited)(nil)
