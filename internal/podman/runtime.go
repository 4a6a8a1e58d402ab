// Package podman is the engine's Runtime on the Podman REST API (v4 and v5
// services), through Podman's own Go bindings.
package podman

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/containers/podman/v5/pkg/bindings"
	"github.com/containers/podman/v5/pkg/bindings/containers"
	"github.com/containers/podman/v5/pkg/bindings/system"
	"github.com/containers/podman/v5/pkg/domain/entities/types"
	"github.com/containers/podman/v5/pkg/errorhandling"
	"github.com/containers/podman/v5/pkg/specgen"

	"github.com/podswitch/podswitch/internal/engine"
)

// DefaultURI is where a rootful Podman service listens.
const DefaultURI = "unix:///run/podman/podman.sock"

// ResolveURI returns uri, else $CONTAINER_HOST, else DefaultURI.
func ResolveURI(uri string) string {
	if uri != "" {
		return uri
	}
	if env := os.Getenv("CONTAINER_HOST"); env != "" {
		return env
	}
	return DefaultURI
}

// Redact hides the password of a service address (ssh://user:pass@host).
func Redact(uri string) string {
	if u, err := url.Parse(uri); err == nil && u.User != nil {
		return u.Redacted()
	}
	return uri
}

// Runtime talks to one Podman service. It connects on first use and again
// after the service was unreachable, so a service that starts late or
// restarts is picked up without a restart of Caddy.
type Runtime struct {
	uri string

	mu   sync.Mutex
	conn context.Context // carries the bindings connection; never cancelled
}

// New returns a runtime for the service at uri. It does not connect.
func New(uri string) *Runtime { return &Runtime{uri: ResolveURI(uri)} }

// URI returns the service address.
func (r *Runtime) URI() string { return r.uri }

// call returns a context with the bindings connection and ctx's deadline and
// cancellation.
func (r *Runtime) call(ctx context.Context) (context.Context, context.CancelFunc, error) {
	r.mu.Lock()
	conn := r.conn
	r.mu.Unlock()
	if conn == nil {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		stop := context.AfterFunc(ctx, cancel)
		c, err := bindings.NewConnection(cctx, r.uri)
		stop()
		if err != nil {
			if ctx.Err() != nil {
				return nil, nil, ctx.Err()
			}
			return nil, nil, fmt.Errorf("%w: podman service at %s: %v", engine.ErrUnavailable, Redact(r.uri), err)
		}
		// The connection keeps the context it was made with: make it one
		// that is never cancelled.
		conn = context.WithoutCancel(c)
		r.mu.Lock()
		r.conn = conn
		r.mu.Unlock()
	}
	cctx, cancel := context.WithCancel(conn)
	stop := context.AfterFunc(ctx, cancel)
	if dl, ok := ctx.Deadline(); ok {
		var cancelDL context.CancelFunc
		cctx, cancelDL = context.WithDeadline(cctx, dl)
		return cctx, func() { stop(); cancelDL(); cancel() }, nil
	}
	return cctx, func() { stop(); cancel() }, nil
}

// check forgets the connection after a transport error, so that the next
// call dials again, and maps Podman's 404 to engine.ErrNotFound.
func (r *Runtime) check(err error) error {
	if err == nil {
		return nil
	}
	// The bindings return the service's error by value or by pointer.
	var em errorhandling.ErrorModel
	if p := (*errorhandling.ErrorModel)(nil); errors.As(err, &p) {
		em = *p
	} else if !errors.As(err, &em) {
		em.ResponseCode = 0
	}
	if em.ResponseCode != 0 {
		if em.ResponseCode == http.StatusNotFound {
			return fmt.Errorf("%w: %s", engine.ErrNotFound, em.Message)
		}
		return errors.New(em.Message)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	// A transport error: dial again next time.
	r.mu.Lock()
	r.conn = nil
	r.mu.Unlock()
	return fmt.Errorf("%w: podman service at %s: %v", engine.ErrUnavailable, Redact(r.uri), err)
}

// Ping checks that the service answers.
func (r *Runtime) Ping(ctx context.Context) error {
	_, err := r.List(ctx, "\x00none")
	return err
}

// Run implements engine.Runtime.
func (r *Runtime) Run(ctx context.Context, spec engine.ContainerSpec) (engine.ContainerInfo, error) {
	cctx, cancel, err := r.call(ctx)
	if err != nil {
		return engine.ContainerInfo{}, err
	}
	defer cancel()
	s := specgen.NewSpecGenerator(spec.Image, false)
	s.Name = spec.Name
	s.Env = spec.Env
	s.Labels = spec.Labels
	if len(spec.Command) > 0 {
		s.Command = spec.Command
	}
	sig := syscall.SIGTERM
	s.StopSignal = &sig
	stop := uint(spec.StopTimeout.Round(time.Second) / time.Second)
	s.StopTimeout = &stop
	noNew := true
	s.NoNewPrivileges = &noNew
	resp, err := containers.CreateWithSpec(cctx, s, nil)
	if err != nil {
		if ctx.Err() != nil {
			// The service may have created it after we stopped waiting:
			// remove it by name so that it is not left behind.
			rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = r.Remove(rctx, spec.Name)
		}
		return engine.ContainerInfo{}, r.check(err)
	}
	info := engine.ContainerInfo{ID: resp.ID, Name: spec.Name, Image: spec.Image, Labels: spec.Labels}
	if err := containers.Start(cctx, resp.ID, nil); err != nil {
		return info, r.check(err)
	}
	got, err := r.inspect(cctx, resp.ID)
	if err != nil {
		return info, err
	}
	return got, nil
}

// Inspect implements engine.Runtime.
func (r *Runtime) Inspect(ctx context.Context, id string) (engine.ContainerInfo, error) {
	cctx, cancel, err := r.call(ctx)
	if err != nil {
		return engine.ContainerInfo{}, err
	}
	defer cancel()
	return r.inspect(cctx, id)
}

func (r *Runtime) inspect(cctx context.Context, id string) (engine.ContainerInfo, error) {
	data, err := containers.Inspect(cctx, id, nil)
	if err != nil {
		return engine.ContainerInfo{}, r.check(err)
	}
	info := engine.ContainerInfo{ID: data.ID, Name: data.Name, Image: data.ImageName}
	if data.Config != nil {
		info.Labels = data.Config.Labels
	}
	if data.State != nil {
		info.Running = data.State.Running
		info.ExitCode = int(data.State.ExitCode)
	}
	if ns := data.NetworkSettings; ns != nil {
		info.IP = ns.IPAddress
		if info.IP == "" {
			// Pick a network's address in a stable order.
			names := make([]string, 0, len(ns.Networks))
			for n := range ns.Networks {
				names = append(names, n)
			}
			sort.Strings(names)
			for _, n := range names {
				if a := ns.Networks[n]; a != nil && a.IPAddress != "" {
					info.IP = a.IPAddress
					break
				}
			}
		}
	}
	return info, nil
}

// Stop implements engine.Runtime: SIGTERM, then SIGKILL after timeout.
func (r *Runtime) Stop(ctx context.Context, id string, timeout time.Duration) error {
	cctx, cancel, err := r.call(ctx)
	if err != nil {
		return err
	}
	defer cancel()
	t := uint(timeout.Round(time.Second) / time.Second)
	ignore := true
	return r.check(containers.Stop(cctx, id, &containers.StopOptions{Timeout: &t, Ignore: &ignore}))
}

// Remove implements engine.Runtime.
func (r *Runtime) Remove(ctx context.Context, id string) error {
	cctx, cancel, err := r.call(ctx)
	if err != nil {
		return err
	}
	defer cancel()
	force, volumes, ignore := true, true, true
	var zero uint
	_, err = containers.Remove(cctx, id, &containers.RemoveOptions{Force: &force, Volumes: &volumes, Ignore: &ignore, Timeout: &zero})
	return r.check(err)
}

// List implements engine.Runtime. Running web containers are inspected for
// their IP address.
func (r *Runtime) List(ctx context.Context, app string) ([]engine.ContainerInfo, error) {
	cctx, cancel, err := r.call(ctx)
	if err != nil {
		return nil, err
	}
	defer cancel()
	label := engine.LabelApp
	if app != "" {
		label += "=" + app
	}
	all := true
	list, err := containers.List(cctx, &containers.ListOptions{All: &all, Filters: map[string][]string{"label": {label}}})
	if err != nil {
		return nil, r.check(err)
	}
	out := make([]engine.ContainerInfo, 0, len(list))
	for _, c := range list {
		info := engine.ContainerInfo{ID: c.ID, Image: c.Image, Labels: c.Labels, Running: c.State == "running", ExitCode: int(c.ExitCode)}
		if len(c.Names) > 0 {
			info.Name = c.Names[0]
		}
		if info.Running && c.Labels[engine.LabelProcess] == engine.WebProcess {
			got, err := r.inspect(cctx, c.ID)
			if errors.Is(err, engine.ErrNotFound) {
				continue
			}
			if err != nil {
				return nil, err
			}
			info.IP, info.Running = got.IP, got.Running
		}
		out = append(out, info)
	}
	return out, nil
}

// Wait implements engine.Runtime.
func (r *Runtime) Wait(ctx context.Context, id string) (int, error) {
	cctx, cancel, err := r.call(ctx)
	if err != nil {
		return -1, err
	}
	defer cancel()
	code, err := containers.Wait(cctx, id, &containers.WaitOptions{Conditions: []string{"exited", "stopped"}})
	if err != nil {
		return -1, r.check(err)
	}
	return int(code), nil
}

// Events implements engine.Runtime: it follows the "died" events of the
// containers that carry podswitch labels.
func (r *Runtime) Events(ctx context.Context, fn func(engine.ContainerEvent)) error {
	cctx, cancel, err := r.call(ctx)
	if err != nil {
		return err
	}
	defer cancel()
	ch := make(chan types.Event, 64)
	stop := make(chan bool)
	stream := true
	err = system.Events(cctx, ch, stop, &system.EventsOptions{
		Stream: &stream,
		// Podman 4 does not match a label filter without a value, and
		// combines several label filters differently from Podman 5: the
		// labels are checked here.
		Filters: map[string][]string{"type": {"container"}, "event": {"died"}},
	})
	if err != nil {
		return r.check(err)
	}
	defer func() {
		close(stop)
		// Let the bindings' reader goroutine finish: it may be blocked
		// sending to ch.
		go func() {
			for range ch {
			}
		}()
	}()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev, ok := <-ch:
			if !ok {
				return r.check(fmt.Errorf("podman event stream closed"))
			}
			attrs := ev.Actor.Attributes
			if attrs[engine.LabelApp] == "" {
				continue
			}
			code := -1
			if c, err := strconv.Atoi(attrs["containerExitCode"]); err == nil {
				code = c
			}
			fn(engine.ContainerEvent{ID: ev.Actor.ID, App: attrs[engine.LabelApp], ExitCode: code})
		}
	}
}

// Interface guards
var _ engine.Runtime = (*Runtime)(nil)
