package engine

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
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
	// Settings are the container's memory and CPU limits, networks,
	// volumes and user.
	Settings Settings
	// Aliases are the names the container answers to on each network of
	// Settings.Networks (Podman's default network has no DNS).
	Aliases []string
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
	// OOMKilled says the container was killed for exceeding its memory
	// limit: the runtime said so, or (where Podman does not tell, as
	// Podman 4 on cgroups v1) it had a memory limit and exited by SIGKILL.
	OOMKilled bool
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
	// Stop sends SIGTERM, waits up to timeout, then sends SIGKILL, all
	// within Podman (which counts whole seconds). The engine stops its
	// containers with Kill and Wait instead, to the millisecond.
	Stop(ctx context.Context, id string, timeout time.Duration) error
	// Remove deletes the container, killing it first if it still runs.
	Remove(ctx context.Context, id string) error
	// List returns the containers that carry label podswitch.app (all of
	// them when app is empty), running or not. IP is not filled in (it
	// takes an inspect per container): ask Inspect for it.
	List(ctx context.Context, app string) ([]ContainerInfo, error)
	// Wait blocks until the container has exited and returns its exit
	// code (at once for one that exited already); ErrNotFound when it is
	// gone.
	Wait(ctx context.Context, id string) (int, error)
	// Events calls fn for each container of podswitch that exits, until
	// ctx ends or the stream breaks (then it returns the error).
	Events(ctx context.Context, fn func(ContainerEvent)) error
	// Kill sends signal (for example "SIGTERM") to the container's main
	// process and returns without waiting for it to exit. A container
	// that does not run is not an error; one that is gone is ErrNotFound.
	Kill(ctx context.Context, id, signal string) error
	// Logs calls fn with the container's output lines (stdout and stderr),
	// the last Tail lines first (all of them when Tail is negative), then,
	// with Follow, new lines as they come until ctx ends or the container
	// has exited.
	Logs(ctx context.Context, id string, opts LogOptions, fn func(LogLine)) error
	// ImageExists returns nil when the service has image in its storage,
	// an error wrapping ErrImageNotFound (with the service's words) when
	// it does not.
	ImageExists(ctx context.Context, image string) error
	// ImageID returns the ID of image (a reference such as
	// localhost/blog:v2, or an ID) in the service's storage: hex, without
	// "sha256:". A missing image is an error wrapping ErrImageNotFound,
	// as for ImageExists.
	ImageID(ctx context.Context, image string) (string, error)
}

// LogOptions say which output lines Runtime.Logs returns.
type LogOptions struct {
	// Tail is how many of the last lines to return; negative means all.
	Tail int
	// Follow keeps the stream open for new lines.
	Follow bool
	// Stream says the lines go on to a client that may read slowly (the
	// logs route): the call then never takes a slot that deploys, stops
	// or the resync need (see Limits). Follow implies it.
	Stream bool
}

// LogLine is one line of a container's output.
type LogLine struct {
	// Stream is "stdout" or "stderr".
	Stream string
	Text   string
}

// ErrImageNotFound is wrapped by Runtime.ImageExists and Runtime.ImageID for
// a missing image.
var ErrImageNotFound = errors.New("image not found")

// ContainerEvent says that a container exited.
type ContainerEvent struct {
	ID       string
	App      string
	ExitCode int
	// OOMKilled says the container was killed for exceeding its memory
	// limit.
	OOMKilled bool
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

// httpProbe sends one GET of path to addr, without keeping the connection,
// and returns the answer's status.
func httpProbe(ctx context.Context, addr, path string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("User-Agent", "podswitch-readiness")
	resp, err := readinessClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, nil
}

var readinessClient = &http.Client{
	Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
	// A redirect is an answer: its status is checked, not followed.
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}
