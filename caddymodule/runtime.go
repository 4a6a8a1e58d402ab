package caddymodule

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/podswitch/podswitch/internal/engine"
	"github.com/podswitch/podswitch/internal/podman"
)

// switchRuntime is the runtime the engine keeps across reloads: one
// Podman service, or the HostSet of several hosts. A reload that changes
// the podman address swaps the service behind it.
type switchRuntime struct {
	cur atomic.Pointer[keyedRuntime]
}

type keyedRuntime struct {
	key string
	rt  engine.Runtime
}

// set installs rt under key unless the current runtime has that key (so
// that its connection is kept).
func (s *switchRuntime) set(key string, rt engine.Runtime) {
	if cur := s.cur.Load(); cur != nil && cur.key == key {
		return
	}
	s.cur.Store(&keyedRuntime{key, rt})
}

// setPodman installs the one Podman service at uri.
func (s *switchRuntime) setPodman(uri string) {
	rt := podman.New(uri)
	s.set("podman:"+rt.URI(), rt)
}

func (s *switchRuntime) rt() engine.Runtime {
	if r := s.cur.Load(); r != nil {
		return r.rt
	}
	// Before the first Start: the default service, kept for next time.
	rt := podman.New("")
	s.cur.CompareAndSwap(nil, &keyedRuntime{"podman:" + rt.URI(), rt})
	return s.cur.Load().rt
}

func (s *switchRuntime) Run(ctx context.Context, spec engine.ContainerSpec) (engine.ContainerInfo, error) {
	return s.rt().Run(ctx, spec)
}

func (s *switchRuntime) Inspect(ctx context.Context, id string) (engine.ContainerInfo, error) {
	return s.rt().Inspect(ctx, id)
}

func (s *switchRuntime) Stop(ctx context.Context, id string, timeout time.Duration) error {
	return s.rt().Stop(ctx, id, timeout)
}

func (s *switchRuntime) Remove(ctx context.Context, id string) error {
	return s.rt().Remove(ctx, id)
}

func (s *switchRuntime) List(ctx context.Context, app string) ([]engine.ContainerInfo, error) {
	return s.rt().List(ctx, app)
}

func (s *switchRuntime) Wait(ctx context.Context, id string) (int, error) {
	return s.rt().Wait(ctx, id)
}

// Events follows the runtime current when it is called; after a change of
// podman address the stream moves over when the old one breaks, and the
// supervisors' resync covers the gap.
func (s *switchRuntime) Events(ctx context.Context, fn func(engine.ContainerEvent)) error {
	return s.rt().Events(ctx, fn)
}

func (s *switchRuntime) Kill(ctx context.Context, id, signal string) error {
	return s.rt().Kill(ctx, id, signal)
}

func (s *switchRuntime) Logs(ctx context.Context, id string, opts engine.LogOptions, fn func(engine.LogLine)) error {
	return s.rt().Logs(ctx, id, opts, fn)
}

func (s *switchRuntime) ImageExists(ctx context.Context, image string) error {
	return s.rt().ImageExists(ctx, image)
}

func (s *switchRuntime) ImageID(ctx context.Context, image string) (string, error) {
	return s.rt().ImageID(ctx, image)
}

// Interface guards
var _ engine.Runtime = (*switchRuntime)(nil)
