package engine

import (
	"context"
	"sync"
	"time"
)

// Limits bound the calls in flight to one container runtime, whatever the
// number of apps and containers: a scale to hundreds of containers, or a
// hundred apps booting at once, queues instead of opening thousands of
// connections to the Podman service (which runs out of files and wedges).
// Long calls that wait for something (Wait, Events, Logs that follow) are
// not counted: there is one per hook or stream.
type Limits struct {
	// Run bounds creates and starts. Default 3: Podman 4 serialises the
	// start of containers anyway.
	Run int
	// Stop bounds stops (which wait up to stop_timeout). Default 8.
	Stop int
	// Other bounds inspects, lists, removes, kills, image checks and log
	// reads. Default 4.
	Other int
}

func (l Limits) withDefaults() Limits {
	if l.Run <= 0 {
		l.Run = 3
	}
	if l.Stop <= 0 {
		l.Stop = 8
	}
	if l.Other <= 0 {
		l.Other = 4
	}
	return l
}

// limited is a Runtime whose calls wait for a free slot of their class.
type limited struct {
	rt               Runtime
	run, stop, other chan struct{}
}

func limit(rt Runtime, l Limits) *limited {
	l = l.withDefaults()
	return &limited{
		rt:    rt,
		run:   make(chan struct{}, l.Run),
		stop:  make(chan struct{}, l.Stop),
		other: make(chan struct{}, l.Other),
	}
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

func (l *limited) Run(ctx context.Context, spec ContainerSpec) (ContainerInfo, error) {
	if err := acquire(ctx, l.run); err != nil {
		return ContainerInfo{}, err
	}
	defer func() { <-l.run }()
	return l.rt.Run(ctx, spec)
}

func (l *limited) Inspect(ctx context.Context, id string) (ContainerInfo, error) {
	if err := acquire(ctx, l.other); err != nil {
		return ContainerInfo{}, err
	}
	defer func() { <-l.other }()
	return l.rt.Inspect(ctx, id)
}

func (l *limited) Stop(ctx context.Context, id string, timeout time.Duration) error {
	if err := acquire(ctx, l.stop); err != nil {
		return err
	}
	defer func() { <-l.stop }()
	return l.rt.Stop(ctx, id, timeout)
}

func (l *limited) Remove(ctx context.Context, id string) error {
	if err := acquire(ctx, l.other); err != nil {
		return err
	}
	defer func() { <-l.other }()
	return l.rt.Remove(ctx, id)
}

func (l *limited) List(ctx context.Context, app string) ([]ContainerInfo, error) {
	if err := acquire(ctx, l.other); err != nil {
		return nil, err
	}
	defer func() { <-l.other }()
	return l.rt.List(ctx, app)
}

func (l *limited) Kill(ctx context.Context, id, signal string) error {
	if err := acquire(ctx, l.other); err != nil {
		return err
	}
	defer func() { <-l.other }()
	return l.rt.Kill(ctx, id, signal)
}

func (l *limited) ImageExists(ctx context.Context, image string) error {
	if err := acquire(ctx, l.other); err != nil {
		return err
	}
	defer func() { <-l.other }()
	return l.rt.ImageExists(ctx, image)
}

func (l *limited) ImageID(ctx context.Context, image string) (string, error) {
	if err := acquire(ctx, l.other); err != nil {
		return "", err
	}
	defer func() { <-l.other }()
	return l.rt.ImageID(ctx, image)
}

func (l *limited) Logs(ctx context.Context, id string, opts LogOptions, fn func(LogLine)) error {
	if !opts.Follow {
		if err := acquire(ctx, l.other); err != nil {
			return err
		}
		defer func() { <-l.other }()
	}
	return l.rt.Logs(ctx, id, opts, fn)
}

func (l *limited) Wait(ctx context.Context, id string) (int, error) { return l.rt.Wait(ctx, id) }

func (l *limited) Events(ctx context.Context, fn func(ContainerEvent)) error {
	return l.rt.Events(ctx, fn)
}

var _ Runtime = (*limited)(nil)
