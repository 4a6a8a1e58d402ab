package caddymodule

import (
	"fmt"
	"slices"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/podswitch/podswitch/internal/engine"
)

// ContainerSettings are the container settings of an app, or of one process
// type, where each one that is set replaces the app's. A change of any of
// them deploys a new release.
type ContainerSettings struct {
	// Memory is the memory limit of each container, as Podman's --memory
	// takes it: 64m, 512MiB, 1g (powers of 1024), at least 6m. Swap
	// counts in it: a container that goes over is killed (OOMKilled), a
	// crash. Default: no limit.
	Memory string `json:"memory,omitempty"`

	// CPUs is how many CPUs' worth of time each container may use, as
	// Podman's --cpus: a positive number such as 0.5 or 2. Default: no
	// limit.
	CPUs float64 `json:"cpus,omitempty"`

	// Networks are the Podman networks each container joins, which must
	// exist (`podman network create <name>`); a web container is dialed
	// at its address on the first one. On these networks, web containers
	// answer to the names `<app>` and `<app>-web`, the others to
	// `<app>-<type>`. Default: Podman's default network.
	Networks []string `json:"networks,omitempty"`

	// Volumes are mounted in each container, as
	// `<source>:<target>[:ro]`: the source is a named volume (created by
	// Podman when missing) or an absolute host path, the target an
	// absolute path in the container. Default: none.
	Volumes []string `json:"volumes,omitempty"`

	// User is the user the container's process runs as, as Podman's
	// --user: `uid[:gid]` or a name. Default: the image's.
	User string `json:"user,omitempty"`
}

// settings returns c in the engine's form, or the first problem of it.
func (c ContainerSettings) settings() (engine.Settings, error) {
	s := engine.Settings{CPUs: c.CPUs, Networks: slices.Clone(c.Networks), User: c.User}
	if c.Memory != "" {
		m, err := engine.ParseMemory(c.Memory)
		if err != nil {
			return engine.Settings{}, err
		}
		s.Memory = m
	}
	if c.CPUs < 0 {
		return engine.Settings{}, fmt.Errorf("cpus %v: want a positive number of CPUs, such as 0.5 or 2", c.CPUs)
	}
	for _, v := range c.Volumes {
		vol, err := engine.ParseVolume(v)
		if err != nil {
			return engine.Settings{}, err
		}
		s.Volumes = append(s.Volumes, vol)
	}
	return s, s.Validate()
}

// override returns c in the engine's form as the override of a process
// type: nil when c sets nothing.
func (c *ContainerSettings) override() (*engine.Settings, error) {
	if c == nil {
		return nil, nil
	}
	s, err := c.settings()
	if err != nil || s.IsZero() {
		return nil, err
	}
	return &s, nil
}

// settingDirectives are the Caddyfile subdirectives of ContainerSettings.
var settingDirectives = []string{"memory", "cpus", "network", "volume", "user"}

// parseSetting reads the setting subdirective d is at into c. Each may be
// given once but volume, which may repeat.
func parseSetting(d *caddyfile.Dispenser, c *ContainerSettings) error {
	dir := d.Val()
	args := d.RemainingArgs()
	if len(args) == 0 {
		return d.Errf("%s: want a value", dir)
	}
	if dir != "network" && len(args) != 1 {
		return d.Errf("%s: want one value, got %d", dir, len(args))
	}
	switch dir {
	case "memory":
		if _, err := engine.ParseMemory(args[0]); err != nil {
			return d.Errf("%v", err)
		}
		c.Memory = args[0]
	case "cpus":
		n, err := engine.ParseCPUs(args[0])
		if err != nil {
			return d.Errf("%v", err)
		}
		c.CPUs = n
	case "network":
		for _, n := range args {
			if !engine.ValidNetworkName(n) {
				return d.Errf("network %q: not a network name (letters, digits, _ . -)", n)
			}
			if slices.Contains(c.Networks, n) {
				return d.Errf("network %q given twice", n)
			}
		}
		c.Networks = args
	case "volume":
		if _, err := engine.ParseVolume(args[0]); err != nil {
			return d.Errf("%v", err)
		}
		c.Volumes = append(c.Volumes, args[0])
	case "user":
		c.User = args[0]
	}
	return nil
}

// parseSettingsBlock reads the block of settings that may follow a web or
// process line: what that process type overrides.
func parseSettingsBlock(d *caddyfile.Dispenser, what string) (*ContainerSettings, error) {
	var c *ContainerSettings
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		dir := d.Val()
		if !slices.Contains(settingDirectives, dir) {
			return nil, d.Errf("%s: unknown setting %q (want one of %v)", what, dir, settingDirectives)
		}
		if seen[dir] && dir != "volume" {
			return nil, d.Errf("%s: %s is given twice", what, dir)
		}
		seen[dir] = true
		if c == nil {
			c = new(ContainerSettings)
		}
		if err := parseSetting(d, c); err != nil {
			return nil, err
		}
	}
	return c, nil
}
