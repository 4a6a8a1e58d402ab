// Package podman is the engine's Runtime on the Podman REST API (v4 and v5
// services), through Podman's own Go bindings.
package podman

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containers/podman/v5/libpod/define"
	"github.com/containers/podman/v5/pkg/bindings"
	"github.com/containers/podman/v5/pkg/bindings/containers"
	"github.com/containers/podman/v5/pkg/bindings/system"
	"github.com/containers/podman/v5/pkg/domain/entities/types"
	"github.com/containers/podman/v5/pkg/errorhandling"
	"github.com/containers/podman/v5/pkg/specgen"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	nettypes "go.podman.io/common/libnetwork/types"

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
	uri  string
	opts Options

	mu   sync.Mutex
	conn context.Context // carries the bindings connection; never cancelled
}

// Options are the settings of a connection beyond its address.
type Options struct {
	// TLSCert, TLSKey and TLSCA are the client certificate, its key and
	// the CA of a tcp:// service that speaks TLS (Podman 5.7 and later).
	TLSCert, TLSKey, TLSCA string
	// Via, when set, is the address the connection is made to (a local
	// socket forwarded to the service); errors still name the service's
	// address.
	Via string
}

// New returns a runtime for the service at uri. It does not connect.
func New(uri string) *Runtime { return &Runtime{uri: ResolveURI(uri)} }

// NewWithOptions returns a runtime for the service at uri with opts. It
// does not connect.
func NewWithOptions(uri string, opts Options) *Runtime {
	return &Runtime{uri: ResolveURI(uri), opts: opts}
}

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
		dial := r.uri
		if r.opts.Via != "" {
			dial = r.opts.Via
		}
		c, err := bindings.NewConnectionWithOptions(cctx, bindings.Options{
			URI: dial, TLSCertFile: r.opts.TLSCert, TLSKeyFile: r.opts.TLSKey, TLSCAFile: r.opts.TLSCA,
		})
		stop()
		if err != nil {
			if ctx.Err() != nil {
				return nil, nil, ctx.Err()
			}
			return nil, nil, unreachable(r.uri, err)
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
	if em, ok := apiError(err); ok {
		if em.ResponseCode == http.StatusNotFound {
			return fmt.Errorf("%w: %s", engine.ErrNotFound, em.Message)
		}
		return errors.New(em.Message)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	// A transport error: dial again next time. The old client's idle
	// connections would otherwise stay open, each with its goroutines.
	r.mu.Lock()
	conn := r.conn
	r.conn = nil
	r.mu.Unlock()
	if conn != nil {
		if c, err := bindings.GetClient(conn); err == nil && c.Client != nil {
			c.Client.CloseIdleConnections()
		}
	}
	return unreachable(r.uri, err)
}

// apiError returns the service's answer that err carries, if it carries
// one. The bindings return it by value or by pointer.
func apiError(err error) (errorhandling.ErrorModel, bool) {
	var p *errorhandling.ErrorModel
	if errors.As(err, &p) && p != nil {
		return *p, p.ResponseCode != 0
	}
	var em errorhandling.ErrorModel
	if errors.As(err, &em) {
		return em, em.ResponseCode != 0
	}
	return errorhandling.ErrorModel{}, false
}

// Ping checks that the service answers.
func (r *Runtime) Ping(ctx context.Context) error {
	_, err := r.List(ctx, "\x00none")
	return err
}

// removeAfterFailedCreate bounds the removal of a container whose create
// call failed without a clear answer.
const removeAfterFailedCreate = 5 * time.Second

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
	// The engine stops containers itself (SIGTERM, stop_timeout to the
	// millisecond, SIGKILL); these are for a `podman stop` by hand, which
	// then gives at least stop_timeout too.
	sig := syscall.SIGTERM
	s.StopSignal = &sig
	stop := wholeSeconds(spec.StopTimeout)
	s.StopTimeout = &stop
	noNew := true
	s.NoNewPrivileges = &noNew
	applySettings(s, spec.Settings, spec.Aliases)
	if spec.Publish != "" && spec.Port > 0 && spec.Port < 65536 {
		// HostPort 0: Podman picks a free port at create; a start that
		// loses it to a race fails, as a start error, and is tried again.
		s.PortMappings = []nettypes.PortMapping{{HostIP: spec.Publish, ContainerPort: uint16(spec.Port), Protocol: "tcp"}}
	}
	resp, err := containers.CreateWithSpec(cctx, s, nil)
	if err != nil {
		// Unless the service refused the create, it may have created the
		// container (the transport broke or ctx ended before the answer,
		// or it failed half way), or may still: remove it by name so that
		// a lost answer does not leave behind a container that nobody
		// tracks. check runs first, so that a broken connection is dialed
		// again for the removal.
		mapped := r.check(err)
		if em, ok := apiError(err); !ok || !createRefused(em) {
			rctx, rcancel := context.WithTimeout(context.Background(), removeAfterFailedCreate)
			_ = r.Remove(rctx, spec.Name)
			rcancel()
		}
		return engine.ContainerInfo{}, networkMissing(mapped, spec.Settings.Networks)
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

// memoryKill tells a container killed for its memory limit where Podman does
// not say so: Podman 4 on cgroups v1 leaves OOMKilled false. A container
// with a memory limit that exited with SIGKILL's code is taken as killed by
// the kernel for its memory: the engine itself only kills containers it
// stops, which it does not count as exits of their own.
func memoryKill(running bool, code int32, hc *define.InspectContainerHostConfig) bool {
	return !running && code == 128+int32(syscall.SIGKILL) && hc != nil && hc.Memory > 0
}

// cpuPeriod is the CFS period of a cpus limit, in microseconds (Podman's
// --cpus uses the same).
const cpuPeriod = 100000

// applySettings sets the container settings c on s: memory (swap included,
// so that a container over its limit is killed rather than swapped), CPU
// quota, networks (with aliases, on the networks the config names), volumes
// and user.
func applySettings(s *specgen.SpecGenerator, c engine.Settings, aliases []string) {
	if c.Memory > 0 || c.CPUs > 0 {
		s.ResourceLimits = &specs.LinuxResources{}
	}
	if c.Memory > 0 {
		m, swap := c.Memory, c.Memory
		s.ResourceLimits.Memory = &specs.LinuxMemory{Limit: &m, Swap: &swap}
	}
	if c.CPUs > 0 {
		period := uint64(cpuPeriod)
		quota := int64(c.CPUs * cpuPeriod)
		s.ResourceLimits.CPU = &specs.LinuxCPU{Period: &period, Quota: &quota}
	}
	if len(c.Networks) > 0 {
		s.NetNS = specgen.Namespace{NSMode: specgen.Bridge}
		s.Networks = make(map[string]nettypes.PerNetworkOptions, len(c.Networks))
		for _, n := range c.Networks {
			s.Networks[n] = nettypes.PerNetworkOptions{Aliases: aliases}
		}
	}
	for _, v := range c.Volumes {
		var opts []string
		if v.ReadOnly {
			opts = append(opts, "ro")
		}
		if v.Bind() {
			s.Mounts = append(s.Mounts, specs.Mount{Type: "bind", Source: v.Source, Destination: v.Target, Options: append(opts, "rbind")})
		} else {
			s.Volumes = append(s.Volumes, &specgen.NamedVolume{Name: v.Source, Dest: v.Target, Options: opts})
		}
	}
	s.User = c.User
}

// networkMissing words a create refused for a network that does not exist
// so that the deployment's error names it.
func networkMissing(err error, networks []string) error {
	if err == nil || !strings.Contains(err.Error(), "network not found") {
		return err
	}
	for _, n := range networks {
		if strings.Contains(err.Error(), n) {
			return fmt.Errorf("network %q does not exist in Podman (create it with podman network create %s): %w", n, n, err)
		}
	}
	return fmt.Errorf("a network of %v does not exist in Podman: %w", networks, err)
}

// wholeSeconds returns d in whole seconds, rounded up: Podman counts stop
// timeouts in seconds, and a timeout must never shrink (400ms rounded
// down would be an immediate SIGKILL).
func wholeSeconds(d time.Duration) uint {
	if d <= 0 {
		return 0
	}
	return uint((d + time.Second - 1) / time.Second)
}

// createRefused tells whether the service's answer to a create says that it
// created nothing. A name in use must be told apart above all: the name
// then belongs to another container, which must not be removed. Podman 4.3
// and 5 answer 500 to it, and to a missing image, so the words are checked.
func createRefused(em errorhandling.ErrorModel) bool {
	if em.ResponseCode >= 400 && em.ResponseCode < 500 {
		return true
	}
	for _, s := range []string{"already in use", "already exists", "image not known", "network not found"} {
		if strings.Contains(em.Because, s) || strings.Contains(em.Message, s) {
			return true
		}
	}
	return false
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
		info.OOMKilled = data.State.OOMKilled || memoryKill(data.State.Running, data.State.ExitCode, data.HostConfig)
	}
	if ns := data.NetworkSettings; ns != nil {
		if port := info.Labels[engine.LabelPort]; port != "" {
			for _, hp := range ns.Ports[port+"/tcp"] {
				if hp.HostPort != "" && hp.HostPort != "0" {
					// Published: dialed on the host's address.
					info.Addr = net.JoinHostPort(hp.HostIP, hp.HostPort)
					break
				}
			}
		}
		info.IP = ns.IPAddress
		if a := ns.Networks[info.Labels[engine.LabelNetwork]]; a != nil && a.IPAddress != "" {
			// The first network the config names.
			info.IP = a.IPAddress
		}
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

// Stop implements engine.Runtime: SIGTERM, then SIGKILL after timeout
// rounded up to whole seconds (Podman's unit).
func (r *Runtime) Stop(ctx context.Context, id string, timeout time.Duration) error {
	cctx, cancel, err := r.call(ctx)
	if err != nil {
		return err
	}
	defer cancel()
	t := wholeSeconds(timeout)
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

// List implements engine.Runtime with one call to the list endpoint; IP is
// left empty.
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
		out = append(out, info)
	}
	return out, nil
}

// Wait implements engine.Runtime. It returns as soon as ctx ends: the
// bindings try a failed request three times, sleeping 600 ms in all, even
// once its context has ended, and the stop rule's SIGKILL must not wait
// for that. The call then ends in the background.
func (r *Runtime) Wait(ctx context.Context, id string) (int, error) {
	cctx, cancel, err := r.call(ctx)
	if err != nil {
		return -1, err
	}
	defer cancel()
	type result struct {
		code int32
		err  error
	}
	done := make(chan result, 1)
	go func() {
		code, err := containers.Wait(cctx, id, &containers.WaitOptions{Conditions: []string{"exited", "stopped"}})
		done <- result{code, err}
	}()
	select {
	case res := <-done:
		if res.err != nil {
			if ctx.Err() != nil {
				return -1, ctx.Err()
			}
			return -1, r.check(res.err)
		}
		return int(res.code), nil
	case <-ctx.Done():
		return -1, ctx.Err()
	}
}

// Events implements engine.Runtime: it follows the "died" events of the
// containers that carry podswitch labels.
//
// system.Events does not block while the stream runs: it returns once the
// service has answered with its headers (Podman 4.3 sends them at once) and
// leaves a goroutine of the bindings that decodes the body into ch and
// closes ch when the body ends. Whatever it returns, it may also have
// started a goroutine that waits for stop to close the body: stop is
// therefore closed on every return, the failed ones too.
func (r *Runtime) Events(ctx context.Context, fn func(engine.ContainerEvent)) error {
	cctx, cancel, err := r.call(ctx)
	if err != nil {
		return err
	}
	defer cancel()
	ch := make(chan types.Event, 64)
	stop := make(chan bool)
	defer close(stop)
	stream := true
	err = system.Events(cctx, ch, stop, &system.EventsOptions{
		Stream: &stream,
		// Podman 4 does not match a label filter without a value, and
		// combines several label filters differently from Podman 5: the
		// labels are checked here.
		Filters: map[string][]string{"type": {"container"}, "event": {"died"}},
	})
	if err != nil {
		// ch is not used, and never closed, when the call fails.
		return r.check(err)
	}
	// Closing stop (and cancel) ends the body, then the decoder closes ch;
	// until then it may be blocked sending to ch: drain it.
	defer func() {
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
				if ctx.Err() != nil {
					return ctx.Err()
				}
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
			fn(engine.ContainerEvent{ID: ev.Actor.ID, App: attrs[engine.LabelApp], ExitCode: code, OOMKilled: r.oomKilled(ctx, ev.Actor.ID, code)})
		}
	}
}

// oomKilled tells whether container id, which exited with code, was
// killed for exceeding its memory limit. The event does not say: a
// container that got SIGKILL (exit code 137) is inspected, briefly.
func (r *Runtime) oomKilled(ctx context.Context, id string, code int) bool {
	if code != 128+int(syscall.SIGKILL) {
		return false
	}
	ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	info, err := r.Inspect(ictx, id)
	return err == nil && info.OOMKilled
}

// Kill implements engine.Runtime. A container that does not run is not an
// error: Podman 5 answers 409 for it, Podman 4.3 answers 500 with the cause
// "container state improper".
func (r *Runtime) Kill(ctx context.Context, id, signal string) error {
	cctx, cancel, err := r.call(ctx)
	if err != nil {
		return err
	}
	defer cancel()
	opts := &containers.KillOptions{}
	if signal != "" {
		opts.Signal = &signal
	}
	err = containers.Kill(cctx, id, opts)
	if em, ok := apiError(err); ok && (em.ResponseCode == http.StatusConflict ||
		em.Because == "container state improper" || em.Because == "container is stopped") {
		return nil
	}
	return r.check(err)
}

// Logs implements engine.Runtime. The bindings call blocks and sends each
// frame to an unbuffered channel, so it runs in a goroutine and this call
// receives until that goroutine has returned: cancelling ctx ends the
// request, and with it the goroutine. Receiving from unbuffered channels
// keeps the order of stdout and stderr lines as the service sent them.
func (r *Runtime) Logs(ctx context.Context, id string, opts engine.LogOptions, fn func(engine.LogLine)) error {
	cctx, cancel, err := r.call(ctx)
	if err != nil {
		return err
	}
	defer cancel()
	yes, follow := true, opts.Follow
	o := &containers.LogOptions{Stdout: &yes, Stderr: &yes, Follow: &follow}
	if opts.Tail >= 0 {
		tail := strconv.Itoa(opts.Tail)
		o.Tail = &tail
	}
	stdout, stderr := make(chan string), make(chan string)
	done := make(chan error, 1)
	go func() { done <- containers.Logs(cctx, id, o, stdout, stderr) }()
	finished := false
	defer func() {
		if !finished {
			// fn panicked: end the request and let the goroutine finish.
			cancel()
			go func() {
				for {
					select {
					case <-stdout:
					case <-stderr:
					case <-done:
						return
					}
				}
			}()
		}
	}()
	out := lineSplitter{stream: "stdout", ctx: ctx, fn: fn}
	errs := lineSplitter{stream: "stderr", ctx: ctx, fn: fn}
	for {
		select {
		case s := <-stdout:
			out.write(s)
		case s := <-stderr:
			errs.write(s)
		case err := <-done:
			finished = true
			out.flush()
			errs.flush()
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return r.check(err)
		}
	}
}

// lineSplitter turns the frames of one stream into lines. Podman sends a
// frame per line, with its newline, but a long line can come in parts.
type lineSplitter struct {
	stream  string
	ctx     context.Context
	fn      func(engine.LogLine)
	partial strings.Builder
}

func (l *lineSplitter) write(s string) {
	for {
		i := strings.IndexByte(s, '\n')
		if i < 0 {
			l.partial.WriteString(s)
			return
		}
		text := s[:i]
		if l.partial.Len() > 0 {
			l.partial.WriteString(text)
			text = l.partial.String()
			l.partial.Reset()
		}
		l.emit(text)
		s = s[i+1:]
	}
}

// flush emits a last line that had no newline.
func (l *lineSplitter) flush() {
	if l.partial.Len() > 0 {
		l.emit(l.partial.String())
		l.partial.Reset()
	}
}

func (l *lineSplitter) emit(text string) {
	if l.ctx.Err() != nil {
		return
	}
	l.fn(engine.LogLine{Stream: l.stream, Text: text})
}

// missingImage is the error of image, which the service at uri does not
// have (em, its 404), with its words; engine.MissingImageMessage says what
// to do.
func missingImage(uri, image string, em errorhandling.ErrorModel) error {
	return fmt.Errorf("%w: %s is not in the storage of the Podman service at %s, and podswitch does not pull images (the service says: %s)",
		engine.ErrImageNotFound, image, Redact(uri), em.Message)
}

// ImageExists implements engine.Runtime. It asks the exists endpoint
// itself: images.Exists of the bindings reports any answer but 2xx, a
// failing service too, as a missing image.
func (r *Runtime) ImageExists(ctx context.Context, image string) error {
	cctx, cancel, err := r.call(ctx)
	if err != nil {
		return err
	}
	defer cancel()
	if image == "" {
		return fmt.Errorf("%w: no image named", engine.ErrImageNotFound)
	}
	conn, err := bindings.GetClient(cctx)
	if err != nil {
		return err
	}
	resp, err := conn.DoRequest(cctx, nil, http.MethodGet, "/images/%s/exists", nil, nil, image)
	if err != nil {
		return r.check(err)
	}
	defer resp.Body.Close()
	if resp.IsSuccess() {
		return nil
	}
	err = resp.Process(nil)
	if em, ok := apiError(err); ok && em.ResponseCode == http.StatusNotFound {
		return missingImage(r.uri, image, em)
	}
	if err == nil {
		err = fmt.Errorf("unexpected answer %d", resp.StatusCode)
	}
	return r.check(err)
}

// ImageID implements engine.Runtime: it inspects image in the service's
// storage and returns its ID (hex, without "sha256:").
func (r *Runtime) ImageID(ctx context.Context, image string) (string, error) {
	cctx, cancel, err := r.call(ctx)
	if err != nil {
		return "", err
	}
	defer cancel()
	if image == "" {
		return "", fmt.Errorf("%w: no image named", engine.ErrImageNotFound)
	}
	conn, err := bindings.GetClient(cctx)
	if err != nil {
		return "", err
	}
	resp, err := conn.DoRequest(cctx, nil, http.MethodGet, "/images/%s/json", nil, nil, image)
	if err != nil {
		return "", r.check(err)
	}
	defer resp.Body.Close()
	var report struct {
		ID string `json:"Id"`
	}
	err = resp.Process(&report)
	if em, ok := apiError(err); ok && em.ResponseCode == http.StatusNotFound {
		return "", missingImage(r.uri, image, em)
	}
	if err != nil {
		return "", r.check(err)
	}
	id := strings.TrimPrefix(report.ID, "sha256:")
	if id == "" {
		return "", fmt.Errorf("inspecting image %s: the service gave no ID", image)
	}
	return id, nil
}

// Interface guards
var _ engine.Runtime = (*Runtime)(nil)
