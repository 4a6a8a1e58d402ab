package engine

import (
	"context"
	"errors"
	"net"
	"time"
)

// ContainerSpec is what the engine asks a Runtime to run.
type ContainerSpec struct {
	Name        string
	Image       string
	Command     []string
	Env         map[string]string
	Labels      map[string]string
	StopTimeout time.Duration
}

// ContainerInfo is what a Runtime knows of one container.
type ContainerInfo struct {
	ID      string
	Name    string
	Image   string
	Labels  map[string]string
	Running bool
	// ExitCode is meaningful once Running is false and the container ran.
	ExitCode int
	// IP is the address the container can be dialed at from this host.
	IP string
}

// Runtime runs containers. The Podman implementation lives in
// internal/podman; tests use a fake. Every method must honour ctx.
type Runtime interface {
	// Run creates and starts a container and returns it as started.
	Run(ctx context.Context, spec ContainerSpec) (ContainerInfo, error)
	// Inspect returns the container's current state; ErrNotFound when it
	// is gone.
	Inspect(ctx context.Context, id string) (ContainerInfo, error)
	// Stop sends SIGTERM, waits up to timeout, then sends SIGKILL.
	Stop(ctx context.Context, id string, timeout time.Duration) error
	// Remove deletes the container, killing it first if it still runs.
	Remove(ctx context.Context, id string) error
	// List returns the containers that carry label podswitch.app (all of
	// them when app is empty), running or not.
	List(ctx context.Context, app string) ([]ContainerInfo, error)
	// Wait blocks until the container has exited and returns its exit
	// code.
	Wait(ctx context.Context, id string) (int, error)
	// Events calls fn for each container of podswitch that exits, until
	// ctx ends or the stream breaks (then it returns the error).
	Events(ctx context.Context, fn func(ContainerEvent)) error
}

// ContainerEvent says that a container exited.
type ContainerEvent struct {
	ID       string
	App      string
	ExitCode int
}

// ErrNotFound is returned by Runtime.Inspect for a container that is gone.
var ErrNotFound = errors.New("container not found")

// ErrUnavailable wraps the errors of a runtime that could not be reached.
// The engine waits for the runtime to come back rather than failing the
// operation.
var ErrUnavailable = errors.New("container runtime unavailable")

// Prober tells whether something accepts TCP connections at an address.
type Prober interface {
	// Probe makes one attempt and returns nil when a connection was
	// accepted.
	Probe(ctx context.Context, addr string) error
}

// TCPProber dials with a short timeout and closes the connection at once.
type TCPProber struct {
	// Timeout bounds one attempt; zero means 500ms.
	Timeout time.Duration
}

// Probe implements Prober.
func (p TCPProber) Probe(ctx context.Context, addr string) error {
	t := p.Timeout
	if t == 0 {
		t = 500 * time.Millisecond
	}
	d := net.Dialer{Timeout: t}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	return c.Close()
}
