// Package caddymodule adapts the podswitch engine to Caddy: the podswitch
// app, the reverse_proxy upstream source, the admin routes and the
// Caddyfile global option.
package caddymodule

import (
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/podswitch/podswitch/internal/engine"
	"github.com/podswitch/podswitch/internal/podman"
)

func init() {
	caddy.RegisterModule(App{})
}

// App runs the containers of web apps with Podman and keeps their traffic
// pools for reverse_proxy's `dynamic podswitch <app>` upstream source.
//
// The running config is the desired state: a reload that changes an app's
// image, env, port or commands deploys a new release with zero downtime; one
// that changes only counts scales; one that leaves an app unchanged touches
// none of its containers. An app removed from the config is drained and
// stopped. Stopping Caddy leaves the containers running; the next start
// adopts them.
type App struct {
	// Podman is the address of the Podman API service, for example
	// `unix:///run/podman/podman.sock`. Default: $CONTAINER_HOST, then
	// unix:///run/podman/podman.sock.
	Podman string `json:"podman,omitempty"`

	// Apps are the apps to run, by name. A name is lowercase letters,
	// digits and dashes.
	Apps map[string]*AppConfig `json:"apps,omitempty"`

	specs  []engine.AppSpec
	shared *shared
	logger *zap.Logger
}

// AppConfig is the desired state of one app.
type AppConfig struct {
	// Image is the container image of the release, for example
	// `localhost/blog:v2`. Required. It must exist in the Podman service's
	// storage: podswitch does not pull.
	Image string `json:"image,omitempty"`

	// Web is the number of web containers. Web containers get the PORT
	// environment variable and the traffic. Default: 1.
	Web *int `json:"web,omitempty"`

	// WebCommand overrides the image's command for web containers.
	// Default: the image's command.
	WebCommand []string `json:"web_command,omitempty"`

	// Processes are the other process types (worker, clock...), by name.
	// They get no PORT and no traffic.
	Processes map[string]*ProcessConfig `json:"processes,omitempty"`

	// Env is given to every container of the app. Values are never logged
	// nor shown by the podswitch API, and may use Caddy's global
	// placeholders, such as `{env.DATABASE_URL}`, to keep secrets out of
	// the config (Caddy's own /config/ shows what is written here). PORT is
	// set by podswitch.
	Env map[string]string `json:"env,omitempty"`

	// Port is the value of PORT, the port web containers must listen on
	// (each container has its own address). Default: 5000.
	Port int `json:"port,omitempty"`

	// BootTimeout is how long a new web container has to accept a TCP
	// connection on PORT (and a non-web container to keep running for
	// worker_ready_time) before the boot fails. Default: 60s.
	BootTimeout caddy.Duration `json:"boot_timeout,omitempty"`

	// StopTimeout is how long a container has between SIGTERM and SIGKILL.
	// Default: 30s.
	StopTimeout caddy.Duration `json:"stop_timeout,omitempty"`

	// DrainTimeout bounds how long requests in flight to a container that
	// left the pool may take before the container gets SIGTERM.
	// Default: 30s.
	DrainTimeout caddy.Duration `json:"drain_timeout,omitempty"`

	// RestartAttempts is how many times a restart, a scale-up or the
	// replacement of a crashed container retries a container that fails
	// to boot, with exponential backoff (from 1s, doubling, at most 1m,
	// ±50% jitter), before it gives up and notifies. 0 means the default.
	// Default: 20.
	RestartAttempts int `json:"restart_attempts,omitempty"`

	// WorkerReadyTime is how long a non-web container must keep running to
	// count as booted. Default: 2s.
	WorkerReadyTime caddy.Duration `json:"worker_ready_time,omitempty"`

	// Postdeploy is a command run once per deployment, in a one-off
	// container of the new release, after its containers are ready and
	// before the switch. A non-zero exit ends the deployment as hook-error
	// and the old release keeps serving. Default: none.
	Postdeploy []string `json:"postdeploy,omitempty"`

	// PostdeployTimeout bounds the postdeploy hook; a hook still running
	// then ends the deployment as hook-error. Default: 10m.
	PostdeployTimeout caddy.Duration `json:"postdeploy_timeout,omitempty"`

	// Notify sends the app's events (deployment ends, give-ups, crashes)
	// to a webhook and/or by e-mail, besides Caddy's event bus and log.
	Notify *NotifyConfig `json:"notify,omitempty"`
}

// ProcessConfig is one non-web process type.
type ProcessConfig struct {
	// Count is the number of containers of this type. Default: 0.
	Count int `json:"count,omitempty"`
	// Command overrides the image's command. Default: the image's command.
	Command []string `json:"command,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "podswitch",
		New: func() caddy.Module { return new(App) },
	}
}

// Spec turns the config of app name into the engine's spec, with defaults,
// and validates it.
func (c *AppConfig) Spec(name string) (engine.AppSpec, error) {
	if c == nil {
		return engine.AppSpec{}, fmt.Errorf("app %q: no config", name)
	}
	web := 1
	if c.Web != nil {
		web = *c.Web
	}
	spec := engine.AppSpec{
		Name:            name,
		Image:           c.Image,
		Env:             expandEnv(c.Env),
		Port:            c.Port,
		BootTimeout:     time.Duration(c.BootTimeout),
		StopTimeout:     time.Duration(c.StopTimeout),
		DrainTimeout:    time.Duration(c.DrainTimeout),
		RestartAttempts: c.RestartAttempts,
		WorkerReadyTime: time.Duration(c.WorkerReadyTime),
		Postdeploy:      c.Postdeploy,
		HookTimeout:     time.Duration(c.PostdeployTimeout),
		Processes:       []engine.ProcessSpec{{Name: engine.WebProcess, Count: web, Command: c.WebCommand}},
	}
	names := make([]string, 0, len(c.Processes))
	for n := range c.Processes {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		if n == engine.WebProcess {
			return engine.AppSpec{}, fmt.Errorf("app %q: process type web is set with web, not processes", name)
		}
		p := c.Processes[n]
		if p == nil {
			p = &ProcessConfig{}
		}
		spec.Processes = append(spec.Processes, engine.ProcessSpec{Name: n, Count: p.Count, Command: p.Command})
	}
	if err := spec.Validate(); err != nil {
		return engine.AppSpec{}, fmt.Errorf("app %q: %w", name, err)
	}
	return spec.WithDefaults(), nil
}

// expandEnv replaces Caddy's global placeholders ({env.*}, {system.*}) in
// env values; other braces are left as they are.
func expandEnv(env map[string]string) map[string]string {
	if len(env) == 0 {
		return env
	}
	repl := caddy.NewReplacer()
	out := make(map[string]string, len(env))
	for k, v := range env {
		out[k] = repl.ReplaceKnown(v, "")
	}
	return out
}

// Provision turns the config into specs and takes a reference on the
// engine, which outlives config reloads.
func (a *App) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger()
	names := make([]string, 0, len(a.Apps))
	for n := range a.Apps {
		names = append(names, n)
	}
	slices.Sort(names)
	a.specs = a.specs[:0]
	for _, n := range names {
		spec, err := a.Apps[n].Spec(n)
		if err != nil {
			return err
		}
		a.specs = append(a.specs, spec)
	}
	if err := setNotifyTargets(ctx, a.Apps); err != nil {
		return err
	}
	a.shared = acquireShared(a)
	if reg := ctx.GetMetricsRegistry(); reg != nil {
		if err := promMetrics.register(reg); err != nil {
			return fmt.Errorf("podswitch metrics: %w", err)
		}
	}
	return nil
}

// Start hands the desired state to the engine. It returns at once: the
// rollouts go on in the background.
func (a *App) Start() error {
	a.shared.apply(a)
	a.logger.Info("podswitch started", zap.Int("apps", len(a.specs)), zap.String("podman", podman.Redact(podman.ResolveURI(a.Podman))))
	return nil
}

// Stop does nothing: what happens to the apps is decided in Cleanup, once
// Caddy has said whether this config was replaced, refused or the process
// is exiting.
func (a *App) Stop() error { return nil }

// Cleanup drops this config's reference on the engine. If this config's
// state was applied but another config stays (a reload that Caddy refused
// after this app started), the engine goes back to that config. When the
// last reference goes, a running config without podswitch stops every app;
// an exit, or a first start that failed, leaves them running for the next
// start to adopt.
func (a *App) Cleanup() error {
	if a.shared != nil {
		a.shared.release(a)
		a.shared = nil
	}
	return nil
}

// shared is the state that outlives config reloads. It must not be copied.
type shared struct {
	runtime *switchRuntime
	manager *engine.Manager

	// guarded by sharedMu
	live    []*App // provisioned and not cleaned up, oldest first
	applied *App   // whose specs the engine runs
}

var (
	sharedMu  sync.Mutex
	sharedCur *shared
)

func acquireShared(a *App) *shared {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if sharedCur == nil {
		setReleaseKey(a.logger)
		rt := new(switchRuntime)
		sharedCur = &shared{
			runtime: rt,
			manager: engine.NewManager(engine.Deps{
				Runtime: rt,
				Prober:  engine.TCPProber{},
				Logger:  a.logger,
				Notify: func(ev engine.Event) {
					promMetrics.observe(ev)
					notify(ev)
				},
				ObserveBoot: promMetrics.observeBoot,
				History:     defaultHistory(),
			}),
		}
	}
	sharedCur.live = append(sharedCur.live, a)
	return sharedCur
}

// apply makes a's specs the desired state.
func (s *shared) apply(a *App) {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	s.applied = a
	s.runtime.set(podman.New(a.Podman))
	s.manager.Apply(a.specs)
}

func (s *shared) release(a *App) {
	sharedMu.Lock()
	s.live = slices.DeleteFunc(s.live, func(x *App) bool { return x == a })
	if len(s.live) > 0 {
		if s.applied == a {
			// Caddy refused the config this app belonged to and keeps the
			// one before it: so does the engine.
			prev := s.live[len(s.live)-1]
			s.applied = prev
			s.runtime.set(podman.New(prev.Podman))
			s.manager.Apply(prev.specs)
			prev.logger.Warn("config refused after podswitch applied it; back to the running config")
		}
		sharedMu.Unlock()
		return
	}
	sharedCur = nil
	sharedMu.Unlock()
	if caddy.Exiting() || caddy.ActiveContext().Context == nil || s.applied == nil {
		// Caddy is exiting, or no config runs (its first start failed), or
		// this config never started: leave the apps to the next start.
		s.manager.Close()
		return
	}
	// podswitch left the running config: drain and stop every app, in the
	// background so that the reload returns promptly.
	s.manager.Apply(nil)
	go func() {
		s.manager.Wait()
		s.manager.Close()
	}()
}

// currentManager returns the engine of the running config, or nil.
func currentManager() *engine.Manager {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if sharedCur == nil {
		return nil
	}
	return sharedCur.manager
}

// Interface guards
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
)
