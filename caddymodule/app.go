// Package caddymodule adapts the podswitch engine to Caddy: the podswitch
// app, the reverse_proxy upstream source, the admin routes and the
// Caddyfile global option.
package caddymodule

import (
	"errors"
	"fmt"
	"maps"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/certmagic"
	"go.podman.io/image/v5/docker/reference"
	"go.uber.org/zap"

	"github.com/podswitch/podswitch/internal/engine"
	"github.com/podswitch/podswitch/internal/podman"
)

func init() {
	caddy.RegisterModule(App{})
}

// App runs the containers of web apps with Podman and keeps their traffic
// pools for the `podswitch` site directive (and reverse_proxy's
// `dynamic podswitch <app>` upstream source).
//
// The running config holds each app's settings: a reload that changes an
// app's image, env, port, commands or container settings (memory, cpus,
// networks, volumes, user) deploys a new release with zero downtime; one
// that changes only counts scales; one that leaves an app unchanged
// touches none of its containers. An app removed from the config
// is drained and stopped. Operations (deploy, scale, restart, rollback,
// pause, maintenance) act on the engine directly, without a reload, and
// override the config's value of the settings they name for as long as the
// config keeps the value it had (see the README). A config that Caddy
// refuses changes nothing: the engine follows a config only once it runs.
// Stopping Caddy leaves the containers running; the next start adopts them.
type App struct {
	// Podman is the address of the Podman API service, for example
	// `unix:///run/podman/podman.sock`. Default: $CONTAINER_HOST, then
	// unix:///run/podman/podman.sock.
	Podman string `json:"podman,omitempty"`

	// Hosts are several Podman hosts, by name, instead of one podman:
	// each process type of an app is spread over the app's hosts that are
	// up (see HostConfig). Default: none (the one podman).
	Hosts map[string]*HostConfig `json:"hosts,omitempty"`

	// HostDownAfter is how long the containers of a host may not answer
	// before they are replaced on the other hosts. Default: 10s.
	HostDownAfter caddy.Duration `json:"host_down_after,omitempty"`

	// LeaseDuration is the term of an app's lease when several proxies
	// share Caddy's storage (the `storage` option): the leader of an app
	// renews it every third of it, and another proxy takes the app over
	// once it has seen no renewal for that long. At least 2s. Default: 15s.
	LeaseDuration caddy.Duration `json:"lease_duration,omitempty"`

	// Apps are the apps to run, by name. A name is lowercase letters,
	// digits and dashes.
	Apps map[string]*AppConfig `json:"apps,omitempty"`

	specs []engine.AppSpec
	host  *host
	// storage is the config's storage when it is shared (several proxies),
	// else nil.
	storage certmagic.Storage
	notify  *notifyTarget
	// pages are the apps' maintenance and pause pages, by app.
	pages  map[string]pages
	logger *zap.Logger
	// done is closed by Cleanup.
	done chan struct{}
}

// AppConfig is the desired state of one app.
type AppConfig struct {
	// Image is the container image of the release, for example
	// `localhost/blog:v2`. Required. It must exist in the Podman service's
	// storage: podswitch does not pull.
	Image string `json:"image,omitempty"`

	// Web is the number of web containers, 0 to 1000. Web containers get
	// the PORT environment variable and the traffic. Default: 1.
	Web *int `json:"web,omitempty"`

	// WebCommand overrides the image's command for web containers.
	// Default: the image's command.
	WebCommand []string `json:"web_command,omitempty"`

	// WebSettings override the app's container settings for web
	// containers. Default: the app's.
	WebSettings *ContainerSettings `json:"web_settings,omitempty"`

	// ContainerSettings (memory, cpus, networks, volumes, user) apply to
	// every container of the app, the postdeploy hook's too, but where a
	// process type overrides them.
	ContainerSettings

	// Processes are the other process types (worker, clock...), by name.
	// They get no PORT and no traffic.
	Processes map[string]*ProcessConfig `json:"processes,omitempty"`

	// Env is given to every container of the app. Values are never logged
	// nor shown by the podswitch API, and may use Caddy's global
	// placeholders, such as `{env.DATABASE_URL}`, to keep secrets out of
	// the config (Caddy's own /config/ shows what is written here). PORT is
	// set by podswitch.
	Env map[string]string `json:"env,omitempty"`

	// EnvFiles are files of `NAME=value` lines (blank lines and `#`
	// comments skipped, `export ` and matching quotes allowed), read when
	// the config loads and again at each deploy: the safe place for
	// secrets, which then appear in no log, API answer, /config/ or
	// autosave. Env wins over a file, a later file over an earlier one.
	// Default: none.
	EnvFiles []string `json:"env_files,omitempty"`

	// ReadyPath, when set, makes a web container ready only once an HTTP
	// GET of this path (after the TCP accept on PORT) answers with a
	// status in ReadyStatus; until then, or past boot_timeout, it is not
	// ready. Default: none (a TCP accept is ready, the platform's rule).
	ReadyPath string `json:"ready_path,omitempty"`

	// ReadyStatus is the range of statuses of ReadyPath that are ready,
	// as `200-299` or one status. Default: `200-299`.
	ReadyStatus string `json:"ready_status,omitempty"`

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

	// DrainTimeout bounds how long the requests in flight to a container
	// that left the pool may take before the container gets SIGTERM; 0
	// does not wait. Each container waits for its own requests only.
	// Default: 30s.
	DrainTimeout *caddy.Duration `json:"drain_timeout,omitempty"`

	// UnhealthyTimeout is how long a ready web container may fail its
	// health checks (a GET of ready_path, or a TCP connect without one,
	// every 500ms, or every rest_check_interval while the app is at rest;
	// out of the pool meanwhile) before it is replaced,
	// new-first: a replacement boots and the unhealthy container is
	// retired once it is ready. 0 never replaces it. Default: 30s.
	UnhealthyTimeout *caddy.Duration `json:"unhealthy_timeout,omitempty"`

	// IdleTimeout scales the app's web containers to zero after no
	// request for that long (its workers keep running; the release
	// stays). The next request is held while a web container boots, then
	// served; requests held past boot_timeout, or over 1000 held at once,
	// get 503 with Retry-After. At least 5s; 0 (the default) never
	// sleeps. Requests must come through the podswitch directive (or the
	// podswitch_gate handler, or podswitch upstreams) to count.
	IdleTimeout caddy.Duration `json:"idle_timeout,omitempty"`

	// RestCheckInterval makes the health checks follow traffic: while the
	// app has had no request for 10s (and no container fails its checks),
	// its ready web containers are checked only this often, not every
	// 500ms; the first request runs a check at once and brings the 500ms
	// pace back. A host of many quiet apps then spends a fraction of the
	// CPU on checks; the price is that a container that stops answering
	// while its app rests leaves the pool only within this interval, or at
	// the first request. At most 5m. Default: 500ms, always.
	RestCheckInterval caddy.Duration `json:"rest_check_interval,omitempty"`

	// Hosts are the hosts (of the config's host blocks) the app's
	// containers go to. Default: every host.
	Hosts []string `json:"hosts,omitempty"`
	// hostsAt is where a Caddyfile gave Hosts, for its errors.
	hostsAt *caddyfile.Dispenser

	// RestartAttempts is how many times a restart, a scale-up or the
	// replacement of a crashed container retries a container that fails
	// to boot (or crashes again soon after), with exponential backoff
	// (from 1s, doubling, at most 1m, ±50% jitter), before it gives up and
	// notifies; 0 does not retry. Default: 20.
	RestartAttempts *int `json:"restart_attempts,omitempty"`

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

	// MaintenancePage is an HTML file answered (503, Retry-After, as
	// text/html) instead of the plain text message while the app is in
	// maintenance. It is read when the config loads: a file that cannot
	// be read, is empty or is larger than 1 MiB fails the load. Default:
	// none (the maintenance message, as plain text).
	MaintenancePage string `json:"maintenance_page,omitempty"`

	// PausePage is an HTML file answered (503, Retry-After, as text/html)
	// instead of the plain text message to a request that a pause does
	// not hold to the end: its timeout passed, the pause holds its limit
	// of requests, or Caddy shuts down. Read and bounded as
	// MaintenancePage. Default: none (plain text).
	PausePage string `json:"pause_page,omitempty"`
}

// ProcessConfig is one non-web process type.
type ProcessConfig struct {
	// Count is the number of containers of this type, 0 to 1000.
	// Default: 0.
	Count int `json:"count,omitempty"`
	// Command overrides the image's command. Default: the image's command.
	Command []string `json:"command,omitempty"`
	// ContainerSettings override the app's for this process type: each
	// one set replaces the app's.
	ContainerSettings
}

// CaddyModule returns the Caddy module information.
func (App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "podswitch",
		New: func() caddy.Module { return new(App) },
	}
}

// Spec turns the config of app name into the engine's spec, with defaults,
// and validates it. It resolves the env (placeholders, env files).
func (c *AppConfig) Spec(name string) (engine.AppSpec, error) { return c.spec(name, true) }

// spec is Spec; without resolve, env values stay as written (for the
// checks made when a Caddyfile is adapted, which must not depend on the
// environment of the machine that adapts it).
func (c *AppConfig) spec(name string, resolve bool) (engine.AppSpec, error) {
	if c == nil {
		return engine.AppSpec{}, fmt.Errorf("app %q: no config", name)
	}
	web := 1
	if c.Web != nil {
		web = *c.Web
	}
	env := maps.Clone(c.Env)
	if resolve {
		var err error
		if env, err = resolveEnv(c.Env, c.EnvFiles); err != nil {
			return engine.AppSpec{}, fmt.Errorf("app %q: %w", name, err)
		}
	}
	status, err := parseStatusRange(c.ReadyStatus)
	if err != nil {
		return engine.AppSpec{}, fmt.Errorf("app %q: %w", name, err)
	}
	if c.ReadyPath != "" && !strings.HasPrefix(c.ReadyPath, "/") {
		return engine.AppSpec{}, fmt.Errorf("app %q: ready_path %q: want a path that starts with /", name, c.ReadyPath)
	}
	spec := engine.AppSpec{
		Name:            name,
		Image:           c.Image,
		Env:             env,
		EnvSource:       maps.Clone(c.Env),
		EnvFiles:        slices.Clone(c.EnvFiles),
		ReadyPath:       c.ReadyPath,
		ReadyStatus:     status,
		Port:            c.Port,
		BootTimeout:     time.Duration(c.BootTimeout),
		StopTimeout:     time.Duration(c.StopTimeout),
		DrainTimeout:    engine.DefaultDrainTimeout,
		RestartAttempts: engine.DefaultRestartAttempts,
		WorkerReadyTime: time.Duration(c.WorkerReadyTime),
		Postdeploy:      c.Postdeploy,
		HookTimeout:     time.Duration(c.PostdeployTimeout),
		Processes:       []engine.ProcessSpec{{Name: engine.WebProcess, Count: web, Command: c.WebCommand}},
	}
	if spec.Settings, err = c.ContainerSettings.settings(); err != nil {
		return engine.AppSpec{}, fmt.Errorf("app %q: %w", name, err)
	}
	if spec.Processes[0].Settings, err = c.WebSettings.override(); err != nil {
		return engine.AppSpec{}, fmt.Errorf("app %q: web: %w", name, err)
	}
	if c.DrainTimeout != nil {
		spec.DrainTimeout = time.Duration(*c.DrainTimeout)
	}
	if c.RestartAttempts != nil {
		spec.RestartAttempts = *c.RestartAttempts
	}
	spec.UnhealthyTimeout = engine.DefaultUnhealthyTimeout
	if c.UnhealthyTimeout != nil {
		spec.UnhealthyTimeout = time.Duration(*c.UnhealthyTimeout)
	}
	spec.IdleTimeout = time.Duration(c.IdleTimeout)
	spec.RestCheckInterval = time.Duration(c.RestCheckInterval)
	spec.Hosts = slices.Clone(c.Hosts)
	for _, n := range slices.Sorted(maps.Keys(c.Processes)) {
		if n == engine.WebProcess {
			return engine.AppSpec{}, fmt.Errorf("app %q: process type web is set with web, not processes", name)
		}
		p := c.Processes[n]
		if p == nil {
			p = &ProcessConfig{}
		}
		over, err := p.ContainerSettings.override()
		if err != nil {
			return engine.AppSpec{}, fmt.Errorf("app %q: process %q: %w", name, n, err)
		}
		spec.Processes = append(spec.Processes, engine.ProcessSpec{Name: n, Count: p.Count, Command: p.Command, Settings: over})
	}
	if err := spec.Validate(); err != nil {
		return engine.AppSpec{}, fmt.Errorf("app %q: %w", name, err)
	}
	if err := checkImageRef(spec.Image); err != nil {
		return engine.AppSpec{}, fmt.Errorf("app %q: %w", name, err)
	}
	return spec.WithDefaults(), nil
}

// checkPodmanURI refuses a Podman service address without a scheme the
// bindings know.
func checkPodmanURI(uri string) error {
	u, err := url.Parse(uri)
	if err != nil || u.Scheme == "" {
		return fmt.Errorf("podman %q: want an address with a scheme: unix:///run/podman/podman.sock, tcp://host:port or ssh://user@host/run/podman/podman.sock", uri)
	}
	switch u.Scheme {
	case "unix", "tcp", "ssh":
		return nil
	}
	return fmt.Errorf("podman %q: scheme %q is not one of unix, tcp, ssh", uri, u.Scheme)
}

// checkImageRef refuses an image reference that does not parse, with the
// words of the containers image reference parser.
func checkImageRef(image string) error {
	if _, err := reference.ParseNormalizedNamed(image); err != nil {
		return fmt.Errorf("image %q is not a valid image reference: %v", image, err)
	}
	return nil
}

// parseStatusRange parses `200-299` or `204`; empty is the default.
func parseStatusRange(v string) ([2]int, error) {
	if v == "" {
		return [2]int{}, nil
	}
	lo, hi, isRange := strings.Cut(v, "-")
	if !isRange {
		hi = lo
	}
	l, err1 := strconv.Atoi(lo)
	h, err2 := strconv.Atoi(hi)
	if err1 != nil || err2 != nil || l < 100 || h > 599 || l > h {
		return [2]int{}, fmt.Errorf("ready_status %q: want a status or a range of statuses from 100 to 599, e.g. 200-299", v)
	}
	return [2]int{l, h}, nil
}

// envPlaceholder finds {env.NAME} placeholders.
var envPlaceholder = regexp.MustCompile(`\{env\.([^{}]+)\}`)

// resolveEnv returns the env containers get: the env files' variables,
// then env's values with Caddy's global placeholders ({env.*},
// {system.*}) replaced (other braces are left as they are). An {env.NAME}
// whose variable is not set in Caddy's environment is an error, not an
// empty value. The engine calls it again when it runs a kept release and
// at each deploy. No value appears in an error.
func resolveEnv(source map[string]string, files []string) (map[string]string, error) {
	out := map[string]string{}
	for _, f := range files {
		vars, err := readEnvFile(f)
		if err != nil {
			return nil, err
		}
		maps.Copy(out, vars)
	}
	repl := caddy.NewReplacer()
	for _, k := range slices.Sorted(maps.Keys(source)) {
		v := source[k]
		for _, m := range envPlaceholder.FindAllStringSubmatch(v, -1) {
			if _, ok := os.LookupEnv(m[1]); !ok {
				return nil, fmt.Errorf("env %s: {env.%s} is not set in Caddy's environment", k, m[1])
			}
		}
		out[k] = repl.ReplaceKnown(v, "")
	}
	return out, nil
}

// readEnvFile reads an env file: `NAME=value` lines; blank lines and
// lines starting with # are skipped; `export NAME=value` is allowed; a
// value in matching single or double quotes loses them. Errors name the
// file and line, never a value.
func readEnvFile(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("env_file: %w", err)
	}
	vars := map[string]string{}
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(strings.TrimSuffix(line, "\r"))
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		line = strings.TrimPrefix(line, "export ")
		name, value, ok := strings.Cut(line, "=")
		name = strings.TrimSpace(name)
		if !ok || name == "" || strings.ContainsAny(name, " \t\"'") {
			return nil, fmt.Errorf("env_file %s:%d: want NAME=value", path, i+1)
		}
		if name == "PORT" {
			return nil, fmt.Errorf("env_file %s:%d: PORT is set by podswitch; use port", path, i+1)
		}
		value = strings.TrimSpace(value)
		if n := len(value); n >= 2 && (value[0] == '"' || value[0] == '\'') && value[n-1] == value[0] {
			value = value[1 : n-1]
		}
		vars[name] = value
	}
	return vars, nil
}

// Provision turns the config into specs, builds the apps' notifiers and
// takes a reference on the process-wide host, which outlives config
// reloads.
func (a *App) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger()
	a.done = make(chan struct{})
	if a.Podman != "" {
		if err := checkPodmanURI(a.Podman); err != nil {
			return err
		}
	}
	if err := a.checkHosts(); err != nil {
		return err
	}
	if len(a.Hosts) > 0 {
		// Opening the hosts reads their key and known_hosts files (it
		// connects to nothing): a file that is missing or bad refuses the
		// config here rather than at its commit.
		cfgs, err := a.hostConfigs(ctx.Logger())
		if err != nil {
			return err
		}
		for _, c := range cfgs {
			if c.Close != nil {
				c.Close()
			}
		}
	}
	a.specs = a.specs[:0]
	for _, n := range slices.Sorted(maps.Keys(a.Apps)) {
		spec, err := a.Apps[n].Spec(n)
		if err != nil {
			return err
		}
		a.specs = append(a.specs, spec)
	}
	if err := a.loadPages(); err != nil {
		return err
	}
	t, err := newNotifyTarget(ctx, a.Apps)
	if err != nil {
		return err
	}
	a.notify = t
	if d := time.Duration(a.LeaseDuration); d != 0 && d < minLeaseDuration {
		return fmt.Errorf("lease_duration %s: want at least %s", d, minLeaseDuration)
	}
	a.storage = sharedStorage(ctx)
	h, err := acquireHost(a.logger, a.storage)
	if err != nil {
		return err
	}
	a.host = h
	if c := h.committedApp(); c != nil && (c.storage != nil) != (a.storage != nil) {
		// The records, the owner of the containers and the release IDs
		// differ between the two.
		return errors.New("setting or removing a shared storage (the storage option) needs a restart of Caddy (caddy stop, then caddy run with the new config), not a reload")
	}
	if a.storage != nil && h.cluster != nil {
		if err := sameCluster(a.storage, h.cluster.id); err != nil {
			return err
		}
	}
	if c := h.committedApp(); c != nil && (len(c.Hosts) > 0) != (len(a.Hosts) > 0) {
		// The containers' IDs, addresses and runtime differ between the
		// two: the running apps would be lost track of.
		return errors.New("switching between a lone podman and host blocks needs a restart of Caddy (caddy stop, then caddy run with the new config), not a reload")
	}
	if h.committedApp() != nil && len(a.Hosts) > 0 {
		for _, hs := range h.manager.Hosts() {
			// Its containers would be lost track of, left running. A host
			// lost or unreachable may go: its containers are replaced
			// elsewhere, and what still runs there is the user's to stop.
			if a.Hosts[hs.Name] == nil && hs.Containers > 0 && (hs.State == engine.HostUp || hs.State == engine.HostUnmanaged) {
				return fmt.Errorf("host %q still runs %d containers of podswitch: take it out of the apps' hosts first (hosts ...), reload, and remove its host block once it runs none", hs.Name, hs.Containers)
			}
		}
	}
	if reg := ctx.GetMetricsRegistry(); reg != nil {
		if err := promMetrics.register(reg); err != nil {
			return fmt.Errorf("podswitch metrics: %w", err)
		}
	}
	return nil
}

// Start returns at once: the engine follows this config only once Caddy
// runs it (caddy.ActiveContext), so that a config Caddy refuses after its
// apps started (another app failed to start) changes no container.
func (a *App) Start() error {
	if err := a.host.lockErr; err != nil {
		return err
	}
	if a.storage != nil && a.host.cluster != nil {
		// This config's storage value from now on: the one of the config
		// it replaces is closed when that config is unloaded.
		a.host.shared.set(a.storage)
	}
	go a.host.commitWhenActive(a)
	a.logger.Info("podswitch started", zap.Int("apps", len(a.specs)), zap.String("podman", podman.Redact(podman.ResolveURI(a.Podman))))
	return nil
}

// Stop hands the engine to the config that replaced this one, if it runs:
// Caddy stops the old config after it switched to the new one, and before
// it closes the old config's logs.
func (a *App) Stop() error {
	a.host.commitActive()
	return nil
}

// Cleanup drops this config's reference on the host. When the last one
// goes, a running config without podswitch stops every app; an exit, or a
// first start that failed, leaves them running for the next start to
// adopt.
func (a *App) Cleanup() error {
	if a.done != nil {
		close(a.done)
	}
	if a.host != nil {
		if a.storage != nil && a.host.shared != nil {
			// A config that never ran (refused after it started) hands
			// the storage back to the one that runs.
			if c := a.host.committedApp(); c != nil && c != a && c.storage != nil {
				a.host.shared.set(c.storage)
			}
		}
		// a.host stays set: a commit running now may still read it.
		releaseHost()
	}
	return nil
}

// Interface guards
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
)
