package caddymodule

import (
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"

	"github.com/podswitch/podswitch/internal/engine"
)

func init() {
	httpcaddyfile.RegisterGlobalOption("podswitch", parseGlobalOption)
}

// parseGlobalOption parses the podswitch global option. Syntax:
//
//	podswitch {
//		podman <address>
//		host <name> {            # several Podman hosts, instead of podman
//			podman <ssh://user@host/socket | tcp://host:port | unix:///socket>
//			identity <private key file>
//			known_hosts <file>
//			address <ip>
//			insecure
//			tls_cert <file>
//			tls_key <file>
//			tls_ca <file>
//		}
//		host_down_after <duration>
//		lease_duration <duration>
//		app <name> {
//			hosts <host...>
//			image <reference>
//			web <count> [<command...>] [{
//				<setting> ...
//			}]
//			process <type> <count> [<command...>] [{
//				<setting> ...
//			}]
//			memory <size>
//			cpus <number>
//			network <name...>
//			volume <source>:<target>[:ro]
//			user <uid[:gid]|name>
//			env <NAME> <value>
//			env_file <path>
//			port <number>
//			ready_path <path>
//			ready_status <status>[-<status>]
//			boot_timeout <duration>
//			stop_timeout <duration>
//			drain_timeout <duration>
//			unhealthy_timeout <duration>
//			idle_timeout <duration>
//			rest_check_interval <duration>
//			restart_attempts <number>
//			worker_ready_time <duration>
//			postdeploy <command...>
//			postdeploy_timeout <duration>
//			maintenance_page <file.html>
//			pause_page <file.html>
//			notify {
//				webhook <url>
//				email {
//					... (see parseNotify)
//				}
//			}
//		}
//	}
//
// The option may appear once; its errors carry the file and line.
func parseGlobalOption(d *caddyfile.Dispenser, existing any) (any, error) {
	if existing != nil {
		d.Next() // the option's name: the error's file and line
		return nil, d.Err("podswitch: the global option may appear only once")
	}
	app := new(App)
	if err := app.UnmarshalCaddyfile(d); err != nil {
		return nil, err
	}
	return httpcaddyfile.App{Name: "podswitch", Value: caddyconfig.JSON(app, nil)}, nil
}

// UnmarshalCaddyfile sets up the app from Caddyfile tokens; see
// parseGlobalOption for the syntax.
func (a *App) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // option name
	if d.NextArg() {
		return d.ArgErr()
	}
	var hostsAt []appHosts
	var podmanAt *caddyfile.Dispenser
	for d.NextBlock(0) {
		switch d.Val() {
		case "podman":
			if a.Podman != "" {
				return d.Errf("podswitch: podman is given twice")
			}
			if !d.NextArg() {
				return d.Errf("podman: want the address of the Podman service, e.g. podman unix:///run/podman/podman.sock")
			}
			a.Podman = d.Val()
			podmanAt = caddyfile.NewDispenser([]caddyfile.Token{d.Token()})
			if d.NextArg() {
				return d.ArgErr()
			}
			if err := checkPodmanURI(a.Podman); err != nil {
				return d.Errf("%v", err)
			}
		case "host":
			if !d.NextArg() {
				return d.Errf("host: want a name: host <name> { podman ...; address ... }")
			}
			name := d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}
			if _, dup := a.Hosts[name]; dup {
				return d.Errf("host %q is defined twice", name)
			}
			at := caddyfile.NewDispenser([]caddyfile.Token{d.Token()})
			h, err := parseHost(d, name)
			if err != nil {
				return err
			}
			if err := checkHost(name, h); err != nil {
				at.Next()
				return at.Errf("%v", err)
			}
			if a.Hosts == nil {
				a.Hosts = map[string]*HostConfig{}
			}
			a.Hosts[name] = h
		case "lease_duration":
			v, err := oneArg(d)
			if err != nil {
				return err
			}
			dur, err := caddy.ParseDuration(v)
			if err != nil {
				return d.Errf("lease_duration: %q is not a duration: %v", v, err)
			}
			if dur < minLeaseDuration {
				return d.Errf("lease_duration: %q is too short: want at least %s", v, minLeaseDuration)
			}
			a.LeaseDuration = caddy.Duration(dur)
		case "host_down_after":
			v, err := oneArg(d)
			if err != nil {
				return err
			}
			dur, err := caddy.ParseDuration(v)
			if err != nil {
				return d.Errf("host_down_after: %q is not a duration: %v", v, err)
			}
			if dur < minHostDownAfter {
				return d.Errf("host_down_after: %q is too short: want at least %s", v, minHostDownAfter)
			}
			a.HostDownAfter = caddy.Duration(dur)
		case "app":
			if !d.NextArg() {
				return d.Errf("app: want a name: app <name> { ... }")
			}
			name := d.Val()
			if !engine.ValidName(name) {
				return d.Errf("app %q: a name is lowercase letters, digits and dashes (at most 42)", name)
			}
			if d.NextArg() {
				return d.ArgErr()
			}
			if _, dup := a.Apps[name]; dup {
				return d.Errf("app %q is defined twice", name)
			}
			cfg, err := parseApp(d, name)
			if err != nil {
				return err
			}
			if cfg.hostsAt != nil {
				hostsAt = append(hostsAt, appHosts{name, cfg.Hosts, cfg.hostsAt})
			}
			if a.Apps == nil {
				a.Apps = map[string]*AppConfig{}
			}
			a.Apps[name] = cfg
		default:
			return d.Errf("podswitch: unknown subdirective %q (want podman, host, host_down_after, lease_duration or app)", d.Val())
		}
	}
	if len(a.Hosts) > 0 && a.Podman != "" {
		podmanAt.Next()
		return podmanAt.Errf("podswitch: podman and host blocks exclude each other: put the Podman address in a host block")
	}
	for _, ah := range hostsAt {
		for _, h := range ah.hosts {
			if a.Hosts[h] == nil {
				ah.at.Next()
				if len(a.Hosts) == 0 {
					return ah.at.Errf("app %q: hosts: the config has no host block", ah.app)
				}
				return ah.at.Errf("app %q: host %q is not defined (hosts: %s)", ah.app, h, strings.Join(slices.Sorted(maps.Keys(a.Hosts)), ", "))
			}
		}
	}
	return nil
}

// appHosts is an app's hosts line, checked once every host block is read.
type appHosts struct {
	app   string
	hosts []string
	at    *caddyfile.Dispenser
}

// parseHost parses the block of `host <name> { ... }`.
func parseHost(d *caddyfile.Dispenser, name string) (*HostConfig, error) {
	h := new(HostConfig)
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		dir := d.Val()
		if seen[dir] {
			return nil, d.Errf("host %q: %s is given twice", name, dir)
		}
		seen[dir] = true
		if dir == "insecure" {
			if d.NextArg() {
				return nil, d.ArgErr()
			}
			h.Insecure = true
			continue
		}
		field := map[string]*string{
			"podman": &h.Podman, "identity": &h.Identity, "known_hosts": &h.KnownHosts, "address": &h.Address,
			"tls_cert": &h.TLSCert, "tls_key": &h.TLSKey, "tls_ca": &h.TLSCA,
		}[dir]
		if field == nil {
			return nil, d.Errf("host %q: unknown subdirective %q (want podman, identity, known_hosts, address, insecure, tls_cert, tls_key or tls_ca)", name, dir)
		}
		v, err := oneArg(d)
		if err != nil {
			return nil, err
		}
		*field = v
	}
	return h, nil
}

func parseApp(d *caddyfile.Dispenser, name string) (*AppConfig, error) {
	cfg := new(AppConfig)
	// at points at the app's name, where a missing image is reported.
	at := caddyfile.NewDispenser([]caddyfile.Token{d.Token()})
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		dir := d.Val()
		switch dir {
		case "env", "process", "env_file", "volume":
		default:
			if seen[dir] {
				return nil, d.Errf("app %q: %s is given twice", name, dir)
			}
			seen[dir] = true
		}
		switch dir {
		case "image":
			v, err := oneArg(d)
			if err != nil {
				return nil, err
			}
			if err := checkImageRef(v); err != nil {
				return nil, d.Errf("%v", err)
			}
			cfg.Image = v
		case "web":
			n, err := countArg(d)
			if err != nil {
				return nil, err
			}
			cfg.Web = &n
			cfg.WebCommand = d.RemainingArgs()
			if cfg.WebSettings, err = parseSettingsBlock(d, "web"); err != nil {
				return nil, err
			}
		case "process":
			if !d.NextArg() {
				return nil, d.Errf("process: want process <type> <count> [<command...>]")
			}
			typ := d.Val()
			if typ == engine.WebProcess {
				return nil, d.Errf("process web: set web containers with: web <count> [<command...>]")
			}
			if !engine.ValidName(typ) {
				return nil, d.Errf("process %q: a type is lowercase letters, digits and dashes", typ)
			}
			if _, dup := cfg.Processes[typ]; dup {
				return nil, d.Errf("process %q is defined twice", typ)
			}
			n, err := countArg(d)
			if err != nil {
				return nil, err
			}
			if cfg.Processes == nil {
				cfg.Processes = map[string]*ProcessConfig{}
			}
			pc := &ProcessConfig{Count: n, Command: d.RemainingArgs()}
			over, err := parseSettingsBlock(d, "process "+typ)
			if err != nil {
				return nil, err
			}
			if over != nil {
				pc.ContainerSettings = *over
			}
			cfg.Processes[typ] = pc
		case "env":
			args := d.RemainingArgs()
			if len(args) == 1 {
				return nil, d.Errf("env %s: no value; if you wrote {$%s} or another {$VAR}, that variable is not set in the environment Caddy was started with (or use {env.%s}, read when the config loads, or env_file)", args[0], args[0], args[0])
			}
			if len(args) != 2 {
				return nil, d.Errf("env: want env <NAME> <value>")
			}
			if args[0] == "PORT" {
				return nil, d.Errf("env PORT: PORT is set by podswitch; use port <number>")
			}
			if args[0] == "" || strings.ContainsAny(args[0], "= \t") {
				return nil, d.Errf("env: %q is not a variable name", args[0])
			}
			if _, dup := cfg.Env[args[0]]; dup {
				return nil, d.Errf("env %s is given twice", args[0])
			}
			if cfg.Env == nil {
				cfg.Env = map[string]string{}
			}
			cfg.Env[args[0]] = args[1]
		case "env_file":
			v, err := oneArg(d)
			if err != nil {
				return nil, err
			}
			if slices.Contains(cfg.EnvFiles, v) {
				return nil, d.Errf("env_file %s is given twice", v)
			}
			cfg.EnvFiles = append(cfg.EnvFiles, v)
		case "ready_path":
			v, err := oneArg(d)
			if err != nil {
				return nil, err
			}
			if !strings.HasPrefix(v, "/") {
				return nil, d.Errf("ready_path %q: want a path that starts with /", v)
			}
			cfg.ReadyPath = v
		case "ready_status":
			v, err := oneArg(d)
			if err != nil {
				return nil, err
			}
			if _, err := parseStatusRange(v); err != nil {
				return nil, d.Errf("%v", err)
			}
			cfg.ReadyStatus = v
		case "port":
			n, err := portArg(d)
			if err != nil {
				return nil, err
			}
			cfg.Port = n
		case "boot_timeout", "stop_timeout", "drain_timeout", "worker_ready_time", "postdeploy_timeout", "unhealthy_timeout", "idle_timeout", "rest_check_interval":
			v, err := oneArg(d)
			if err != nil {
				return nil, err
			}
			dur, err := caddy.ParseDuration(v)
			if err != nil {
				return nil, d.Errf("%s: %q is not a duration: %v", dir, v, err)
			}
			if dur < 0 {
				return nil, d.Errf("%s: %q must not be negative", dir, v)
			}
			switch dir {
			case "boot_timeout":
				cfg.BootTimeout = caddy.Duration(dur)
			case "stop_timeout":
				cfg.StopTimeout = caddy.Duration(dur)
			case "drain_timeout":
				dt := caddy.Duration(dur)
				cfg.DrainTimeout = &dt
			case "worker_ready_time":
				cfg.WorkerReadyTime = caddy.Duration(dur)
			case "postdeploy_timeout":
				cfg.PostdeployTimeout = caddy.Duration(dur)
			case "unhealthy_timeout":
				ut := caddy.Duration(dur)
				cfg.UnhealthyTimeout = &ut
			case "idle_timeout":
				if dur > 0 && dur < engine.MinIdleTimeout {
					return nil, d.Errf("idle_timeout: %q is too short: want at least %s, or 0 (never)", v, engine.MinIdleTimeout)
				}
				cfg.IdleTimeout = caddy.Duration(dur)
			case "rest_check_interval":
				if dur > engine.MaxRestCheckInterval {
					return nil, d.Errf("rest_check_interval: %q is too long: want at most %s", v, engine.MaxRestCheckInterval)
				}
				cfg.RestCheckInterval = caddy.Duration(dur)
			}
		case "hosts":
			cfg.Hosts = d.RemainingArgs()
			if len(cfg.Hosts) == 0 {
				return nil, d.Errf("hosts: want the names of host blocks: hosts <name...>")
			}
			for i, h := range cfg.Hosts {
				if slices.Contains(cfg.Hosts[:i], h) {
					return nil, d.Errf("hosts: %q is named twice", h)
				}
			}
			cfg.hostsAt = caddyfile.NewDispenser([]caddyfile.Token{d.Token()})
		case "postdeploy":
			cfg.Postdeploy = d.RemainingArgs()
			if len(cfg.Postdeploy) == 0 {
				return nil, d.Errf("postdeploy: want a command: postdeploy <command...>")
			}
		case "notify":
			n, err := parseNotify(d)
			if err != nil {
				return nil, err
			}
			cfg.Notify = n
		case "memory", "cpus", "network", "volume", "user":
			if err := parseSetting(d, &cfg.ContainerSettings); err != nil {
				return nil, err
			}
		case "restart_attempts":
			n, err := countArg(d)
			if err != nil {
				return nil, err
			}
			cfg.RestartAttempts = &n
		case "maintenance_page", "pause_page":
			v, err := oneArg(d)
			if err != nil {
				return nil, err
			}
			if _, err := readPage(dir, v); err != nil {
				return nil, d.Errf("app %q: %v", name, err)
			}
			if dir == "maintenance_page" {
				cfg.MaintenancePage = v
			} else {
				cfg.PausePage = v
			}
		default:
			return nil, d.Errf("app %q: unknown subdirective %q", name, dir)
		}
	}
	at.Next()
	if cfg.Image == "" {
		return nil, at.Errf("app %q: image is required", name)
	}
	// The meaning of the settings is checked where JSON configs are
	// checked too (Provision), with the same words; here the error gets
	// the app's file and line.
	if _, err := cfg.spec(name, false); err != nil {
		return nil, at.Errf("%v", err)
	}
	return cfg, nil
}

func oneArg(d *caddyfile.Dispenser) (string, error) {
	dir := d.Val()
	if !d.NextArg() {
		return "", d.Errf("%s: want one value", dir)
	}
	v := d.Val()
	if d.NextArg() {
		return "", d.Errf("%s: want one value, got also %q", dir, d.Val())
	}
	return v, nil
}

// portArg reads one port number (1-65535).
func portArg(d *caddyfile.Dispenser) (int, error) {
	v, err := oneArg(d)
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 65535 {
		return 0, d.Errf("port: %q is not a port number (1-65535)", v)
	}
	return n, nil
}

func countArg(d *caddyfile.Dispenser) (int, error) {
	dir := d.Val()
	if !d.NextArg() {
		return 0, d.Errf("%s: want a count", dir)
	}
	n, err := strconv.Atoi(d.Val())
	if err != nil || n < 0 {
		return 0, d.Errf("%s: %q is not a count (a whole number, 0 or more)", dir, d.Val())
	}
	if n > engine.MaxCount && dir != "restart_attempts" {
		return 0, d.Errf("%s: %d containers is over the limit of %d per process type", dir, n, engine.MaxCount)
	}
	return n, nil
}

// Interface guards
var _ caddyfile.Unmarshaler = (*App)(nil)
