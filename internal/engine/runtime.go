package engine

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
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
	// Host is the host the container runs on, of a HostSet (chosen by
	// the supervisor's placement); empty for a single host.
	Host string
	// Port is the PORT of a web container (0 for another). Publish, when
	// set, is the address the runtime publishes it on, with a port it
	// picks (ContainerInfo.Addr says which).
	Port    int
	Publish string
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
	// Addr, when set, is where its published PORT is dialed (the host's
	// address and the port Podman picked): it wins over IP.
	Addr string
	// recorded says the engine took it from its app record, not from the
	// runtime (a host that did not answer at adoption).
	recorded bool
}

// dialAddr returns where info, a web container listening on port, is
// dialed: its published address, else its IP and port, else "".
func dialAddr(info ContainerInfo, port string) string {
	switch {
	case info.Addr != "":
		return info.Addr
	case info.IP != "":
		return net.JoinHostPort(info.IP, port)
	}
	return ""
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

// httpProbe sends one GET of path to addr on a connection of its own and
// returns the status of the answer, read from its status line; nothing
// more of the answer is read. A new connection each time, because a check
// must see that the app still accepts connections, which a kept one would
// hide. It is written by hand rather than with net/http's client: with
// ready_path every ready web container is checked twice a second, and the
// client's transport costs goroutines and some 70 allocations a check
// where this costs a dial and a few small buffers (BenchmarkHTTPProbe).
// A redirect is an answer: its status is returned, never followed.
func httpProbe(ctx context.Context, addr, path string) (int, error) {
	if path == "" || path[0] != '/' || strings.ContainsAny(path, " \r\n") {
		return 0, fmt.Errorf("ready path %q is not an absolute path", path)
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	// The connection's deadline is the context's: an exchange cut by it
	// answers the context's error, as a dial cut by it does.
	fail := func(err error) (int, error) {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			<-ctx.Done()
			return 0, ctx.Err()
		}
		return 0, err
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	deadline, _ := ctx.Deadline()
	_ = c.SetDeadline(deadline)
	// A context cancelled before its deadline ends the exchange too.
	defer context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })()
	req := make([]byte, 0, 96+len(path)+len(addr))
	req = append(req, "GET "...)
	req = append(req, path...)
	req = append(req, " HTTP/1.1\r\nHost: "...)
	req = append(req, addr...)
	req = append(req, "\r\nUser-Agent: podswitch-readiness\r\nConnection: close\r\n\r\n"...)
	if _, err := c.Write(req); err != nil {
		return fail(err)
	}
	line, err := bufio.NewReaderSize(c, 256).ReadSlice('\n')
	if err != nil && len(line) < len("HTTP/1.1 200") {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return fail(err)
	}
	return statusCode(line)
}

// statusCode reads the status of an HTTP/1.x status line
// ("HTTP/1.1 204 No Content").
func statusCode(line []byte) (int, error) {
	const prefix = "HTTP/1."
	if len(line) < len(prefix)+5 || string(line[:len(prefix)]) != prefix || line[len(prefix)+1] != ' ' {
		return 0, fmt.Errorf("not an HTTP/1 answer: %q", line)
	}
	code := 0
	for _, ch := range line[len(prefix)+2 : len(prefix)+5] {
		if ch < '0' || ch > '9' {
			return 0, fmt.Errorf("not an HTTP/1 answer: %q", line)
		}
		code = code*10 + int(ch-'0')
	}
	return code, nil
}
