package engine

import (
	"fmt"
	"hash"
	"math"
	"path"
	"regexp"
	"strconv"
	"strings"
)

// Settings are the container settings of an app, or the ones a process type
// overrides: each field that is set in a process type's Settings replaces
// the app's (lists whole). A change of any of them makes a new release.
type Settings struct {
	// Memory is the memory limit in bytes (swap included: a container
	// never swaps); 0 means none.
	Memory int64 `json:"memory,omitempty"`
	// CPUs is how many CPUs' worth of time the container may use (a CPU
	// quota over a 100ms period); 0 means no limit.
	CPUs float64 `json:"cpus,omitempty"`
	// Networks are the Podman networks the container joins, in order; the
	// address a web container is dialed at is its address on the first
	// one. Empty means Podman's default network.
	Networks []string `json:"networks,omitempty"`
	// Volumes are mounted in the container.
	Volumes []Volume `json:"volumes,omitempty"`
	// User is the user (and group) the container's process runs as, as
	// Podman's --user takes it; empty means the image's.
	User string `json:"user,omitempty"`
}

// Volume is a named volume or a host path mounted in a container.
type Volume struct {
	// Source is a volume name (Podman creates it when missing) or an
	// absolute host path.
	Source string `json:"source"`
	// Target is the absolute path in the container.
	Target   string `json:"target"`
	ReadOnly bool   `json:"read_only,omitempty"`
}

// Bind reports whether v mounts a host path rather than a named volume.
func (v Volume) Bind() bool { return strings.HasPrefix(v.Source, "/") }

// String returns v as it is written in a config: source:target[:ro].
func (v Volume) String() string {
	s := v.Source + ":" + v.Target
	if v.ReadOnly {
		s += ":ro"
	}
	return s
}

// MinMemory is the smallest memory limit Podman accepts.
const MinMemory = 6 << 20

var (
	volumeNameRE  = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)
	networkNameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)
	memoryRE      = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)$`)
)

// ParseMemory parses a memory size as Podman's --memory takes it: a number
// and a unit, b, k, m or g (also kb, mb, gb, kib, mib, gib, any case), all
// in powers of 1024; no unit means bytes. It must be at least 6 MiB.
func ParseMemory(v string) (int64, error) {
	m := memoryRE.FindStringSubmatch(strings.TrimSpace(v))
	if m == nil {
		return 0, fmt.Errorf("memory %q: want a size such as 256m, 512MiB or 1g", v)
	}
	var mult float64
	switch strings.ToLower(m[2]) {
	case "", "b":
		mult = 1
	case "k", "kb", "kib":
		mult = 1 << 10
	case "m", "mb", "mib":
		mult = 1 << 20
	case "g", "gb", "gib":
		mult = 1 << 30
	case "t", "tb", "tib":
		mult = 1 << 40
	default:
		return 0, fmt.Errorf("memory %q: unknown unit %q (want b, k, m, g)", v, m[2])
	}
	n, err := strconv.ParseFloat(m[1], 64)
	if err != nil || n*mult > math.MaxInt64/2 {
		return 0, fmt.Errorf("memory %q: want a size such as 256m, 512MiB or 1g", v)
	}
	b := int64(n * mult)
	if b < MinMemory {
		return 0, fmt.Errorf("memory %q: want at least 6m (Podman's smallest limit)", v)
	}
	return b, nil
}

// ParseCPUs parses a number of CPUs: a positive decimal such as 0.5 or 2.
func ParseCPUs(v string) (float64, error) {
	n, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
	if err != nil || !(n > 0) || n > 1024 || math.IsInf(n, 0) {
		return 0, fmt.Errorf("cpus %q: want a positive number of CPUs, such as 0.5 or 2", v)
	}
	return n, nil
}

// ParseVolume parses source:target[:ro], where source is a volume name or
// an absolute host path and target an absolute path.
func ParseVolume(v string) (Volume, error) {
	parts := strings.Split(v, ":")
	var vol Volume
	switch {
	case len(parts) == 2:
	case len(parts) == 3 && parts[2] == "ro":
		vol.ReadOnly = true
	case len(parts) == 3 && parts[2] == "rw":
	default:
		return Volume{}, fmt.Errorf("volume %q: want <name or /host/path>:</container/path>[:ro]", v)
	}
	vol.Source, vol.Target = parts[0], parts[1]
	return vol, vol.check()
}

func (v Volume) check() error {
	switch {
	case v.Source == "":
		return fmt.Errorf("volume %q: no source: want a volume name or an absolute host path", v)
	case strings.HasPrefix(v.Source, "/"):
		if path.Clean(v.Source) != v.Source && path.Clean(v.Source)+"/" != v.Source {
			return fmt.Errorf("volume %q: host path %q is not clean", v, v.Source)
		}
	case strings.HasPrefix(v.Source, ".") || strings.Contains(v.Source, "/"):
		return fmt.Errorf("volume %q: host path %q is relative: want an absolute path (or a volume name)", v, v.Source)
	case !volumeNameRE.MatchString(v.Source):
		return fmt.Errorf("volume %q: %q is not a volume name (letters, digits, _ . -)", v, v.Source)
	}
	if !strings.HasPrefix(v.Target, "/") || v.Target == "/" {
		return fmt.Errorf("volume %q: target %q: want an absolute path in the container, not /", v, v.Target)
	}
	return nil
}

// ValidNetworkName reports whether s can name a Podman network.
func ValidNetworkName(s string) bool { return len(s) <= 255 && networkNameRE.MatchString(s) }

// IsZero reports whether no setting is set.
func (c Settings) IsZero() bool {
	return c.Memory == 0 && c.CPUs == 0 && len(c.Networks) == 0 && len(c.Volumes) == 0 && c.User == ""
}

// Over returns c with each setting that o sets replaced by o's.
func (c Settings) Over(o *Settings) Settings {
	if o == nil {
		return c
	}
	if o.Memory != 0 {
		c.Memory = o.Memory
	}
	if o.CPUs != 0 {
		c.CPUs = o.CPUs
	}
	if len(o.Networks) > 0 {
		c.Networks = o.Networks
	}
	if len(o.Volumes) > 0 {
		c.Volumes = o.Volumes
	}
	if o.User != "" {
		c.User = o.User
	}
	return c
}

// Validate reports the first problem of c, in words a user can act on.
func (c Settings) Validate() error {
	if c.Memory < 0 || (c.Memory > 0 && c.Memory < MinMemory) {
		return fmt.Errorf("memory %d: want at least 6m", c.Memory)
	}
	if c.CPUs < 0 || math.IsNaN(c.CPUs) || c.CPUs > 1024 {
		return fmt.Errorf("cpus %v: want a positive number of CPUs", c.CPUs)
	}
	seen := map[string]bool{}
	for _, n := range c.Networks {
		if !ValidNetworkName(n) {
			return fmt.Errorf("network %q: not a network name (letters, digits, _ . -)", n)
		}
		if seen[n] {
			return fmt.Errorf("network %q given twice", n)
		}
		seen[n] = true
	}
	targets := map[string]bool{}
	for _, v := range c.Volumes {
		if err := v.check(); err != nil {
			return err
		}
		if targets[v.Target] {
			return fmt.Errorf("volume target %q given twice", v.Target)
		}
		targets[v.Target] = true
	}
	if strings.ContainsAny(c.User, " \t\n") {
		return fmt.Errorf("user %q: want uid[:gid] or a name", c.User)
	}
	return nil
}

// hash writes c to h for ReleaseID.
func (c Settings) hash(h hash.Hash) {
	fmt.Fprintf(h, "memory\x00%d\x00cpus\x00%s\x00user\x00%s\x00networks\x00%d\x00",
		c.Memory, strconv.FormatFloat(c.CPUs, 'g', -1, 64), c.User, len(c.Networks))
	for _, n := range c.Networks {
		fmt.Fprintf(h, "%s\x00", n)
	}
	fmt.Fprintf(h, "volumes\x00%d\x00", len(c.Volumes))
	for _, v := range c.Volumes {
		fmt.Fprintf(h, "%s\x00%s\x00%t\x00", v.Source, v.Target, v.ReadOnly)
	}
}

// SettingsOf returns the settings of the containers of process type name:
// the app's, with what the process type overrides.
func (s AppSpec) SettingsOf(name string) Settings {
	p, _ := s.Process(name)
	return s.Settings.Over(p.Settings)
}

// Aliases returns the network names the containers of process type process
// of app answer to on the networks the config names (not on Podman's
// default network, which has no DNS): <app>-<process>, and <app> too for
// web containers.
func Aliases(app, process string) []string {
	if process == WebProcess {
		return []string{app, app + "-" + process}
	}
	return []string{app + "-" + process}
}
