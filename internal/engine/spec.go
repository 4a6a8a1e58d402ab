// Package engine runs the containers of podswitch apps: it holds, per app, the
// desired state, starts and probes containers through a Runtime, swaps the
// app's traffic pool atomically when a release is ready and drains and stops
// what it replaces. It knows nothing of Caddy.
package engine

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"time"
)

// WebProcess is the process type that gets PORT and traffic.
const WebProcess = "web"

// Defaults of the platform (see the container management document).
const (
	DefaultBootTimeout     = 60 * time.Second
	DefaultStopTimeout     = 30 * time.Second
	DefaultDrainTimeout    = 30 * time.Second
	DefaultRestartAttempts = 20
	DefaultPort            = 5000
	DefaultWorkerReadyTime = 2 * time.Second
	// DefaultUnhealthyTimeout is how long a ready web container may fail
	// its health checks before it is replaced.
	DefaultUnhealthyTimeout = 30 * time.Second
)

// Labels put on every container podswitch starts.
const (
	LabelApp     = "podswitch.app"
	LabelRelease = "podswitch.release"
	LabelProcess = "podswitch.process"
	// LabelPort records the PORT of a web container, so that a later run
	// can dial it even after the config changed the port.
	LabelPort = "podswitch.port"
	// LabelNetwork names the network whose address a container is dialed
	// at, when the config names networks (the first one).
	LabelNetwork = "podswitch.network"
)

// HookProcess is the process label of the one-off postdeploy container.
const HookProcess = "postdeploy"

// DefaultHookTimeout bounds a postdeploy hook.
const DefaultHookTimeout = 10 * time.Minute

// ProcessSpec is one process type of an app.
type ProcessSpec struct {
	// Name is the process type: "web" or any other word (worker, clock...).
	Name string `json:"name"`
	// Count is how many containers of this type run.
	Count int `json:"count"`
	// Command overrides the image's command; empty means the image's own.
	Command []string `json:"command,omitempty"`
	// Settings, when set, override the app's container settings for this
	// process type (see Settings.Over).
	Settings *Settings `json:"settings,omitempty"`
}

// AppSpec is the desired state of one app.
type AppSpec struct {
	Name string
	// Image is the image reference the config or a deploy gave (a tag);
	// ImageID, once a deployment resolved it, is the image ID every
	// container of the release runs, so that a tag rebuilt later changes
	// nothing that runs. Empty means not resolved yet: a new release
	// resolves it before its first container, and a release kept by an
	// older podswitch (which did not pin) runs by reference.
	Image   string
	ImageID string
	// Env is given to every container. Values are secrets: never log them,
	// never keep them.
	Env map[string]string
	// EnvSource is Env as the config wrote it (placeholders unresolved)
	// and EnvFiles the env files it names: what the engine keeps of a
	// release, resolved again with Deps.ResolveEnv when a kept release is
	// run again. Both may be empty (Env is then kept as nothing).
	EnvSource map[string]string
	EnvFiles  []string
	// Processes holds one entry per process type; "web" may be absent (a
	// worker-only app) but no name appears twice.
	Processes []ProcessSpec
	// Port is the value of PORT given to web containers.
	Port         int
	BootTimeout  time.Duration
	StopTimeout  time.Duration
	DrainTimeout time.Duration
	// RestartAttempts is how many times a failed boot of a restart, scale-up
	// or crash replacement is retried (so it is tried RestartAttempts+1
	// times).
	RestartAttempts int
	// WorkerReadyTime is how long a non-web container must keep running to
	// count as booted.
	WorkerReadyTime time.Duration
	// Postdeploy, when set, runs once per deployment in a one-off container
	// of the new release before the switch; a non-zero exit fails it.
	Postdeploy  []string
	HookTimeout time.Duration
	// ReadyPath, when set, makes a web container ready only once an HTTP
	// GET of this path answers with a status in ReadyStatus (after the TCP
	// accept).
	ReadyPath string
	// ReadyStatus is the accepted status range of ReadyPath, [low, high];
	// zero means 200-299.
	ReadyStatus [2]int
	// UnhealthyTimeout is how long a ready web container may fail its
	// health checks (out of the pool) before it is replaced, new-first;
	// zero never replaces it. Like DrainTimeout, zero has a meaning: the
	// caller sets DefaultUnhealthyTimeout when the setting is absent.
	UnhealthyTimeout time.Duration
	// Hosts are the hosts of a HostSet the app's containers go to; empty
	// means every host (or the one host). Where containers run is not
	// part of the release.
	Hosts []string
	// IdleTimeout, when set, scales the app's web containers to zero
	// after no request for that long (its workers keep running); the next
	// request wakes it (see idle.go). Zero never does.
	IdleTimeout time.Duration
	// RestCheckInterval, when over the 500ms of an app with traffic, is
	// how often the ready web containers of the app are checked while it
	// is at rest (no request for 10s): a host of many quiet apps then
	// spends a fraction of the CPU on checks, and a container that stops
	// answering while its app rests leaves the pool within that interval
	// (at once at the first request). Zero checks every 500ms always.
	RestCheckInterval time.Duration
	// Settings are the container settings (memory, cpus, networks,
	// volumes, user) of every process type that does not override them,
	// and of the postdeploy hook.
	Settings Settings
}

// MaxCount is the most containers of one process type an app may ask for:
// a bound that a typo (a count of 100,000) meets before Podman does.
const MaxCount = 1000

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,40}[a-z0-9])?$`)

// ValidName reports whether s can name an app or a process type (it becomes
// part of container names and labels).
func ValidName(s string) bool { return nameRE.MatchString(s) }

// WithDefaults returns a copy of s with every zero setting set to its
// default, but for DrainTimeout and RestartAttempts, where zero has a
// meaning (no wait, no retry): the caller sets their defaults when the
// setting is absent.
func (s AppSpec) WithDefaults() AppSpec {
	if s.Port == 0 {
		s.Port = DefaultPort
	}
	if s.BootTimeout == 0 {
		s.BootTimeout = DefaultBootTimeout
	}
	if s.StopTimeout == 0 {
		s.StopTimeout = DefaultStopTimeout
	}
	if s.WorkerReadyTime == 0 {
		s.WorkerReadyTime = DefaultWorkerReadyTime
	}
	if s.HookTimeout == 0 {
		s.HookTimeout = DefaultHookTimeout
	}
	if s.ReadyStatus == [2]int{} {
		s.ReadyStatus = [2]int{200, 299}
	}
	if len(s.Processes) == 0 {
		s.Processes = []ProcessSpec{{Name: WebProcess, Count: 1}}
	}
	return s
}

// Validate reports the first problem of s, in words a user can act on.
func (s AppSpec) Validate() error {
	if !ValidName(s.Name) {
		return fmt.Errorf("app name %q: use lowercase letters, digits and dashes (at most 42)", s.Name)
	}
	if strings.TrimSpace(s.Image) == "" {
		return errors.New("image is required")
	}
	if s.Port < 0 || s.Port > 65535 {
		return fmt.Errorf("port %d out of range", s.Port)
	}
	for name, d := range map[string]time.Duration{
		"boot_timeout": s.BootTimeout, "stop_timeout": s.StopTimeout,
		"drain_timeout": s.DrainTimeout, "worker_ready_time": s.WorkerReadyTime,
		"postdeploy_timeout": s.HookTimeout, "unhealthy_timeout": s.UnhealthyTimeout,
		"idle_timeout": s.IdleTimeout, "rest_check_interval": s.RestCheckInterval,
	} {
		if d < 0 {
			return fmt.Errorf("%s must not be negative", name)
		}
	}
	if s.IdleTimeout > 0 && s.IdleTimeout < MinIdleTimeout {
		return fmt.Errorf("idle_timeout %s: want at least %s (or 0, never)", s.IdleTimeout, MinIdleTimeout)
	}
	if r := s.RestCheckInterval; r > MaxRestCheckInterval {
		return fmt.Errorf("rest_check_interval %s: want at most %s", r, MaxRestCheckInterval)
	}
	if s.RestartAttempts < 0 {
		return errors.New("restart_attempts must not be negative")
	}
	if s.ReadyPath != "" && !strings.HasPrefix(s.ReadyPath, "/") {
		return fmt.Errorf("ready_path %q: want a path that starts with /", s.ReadyPath)
	}
	if r := s.ReadyStatus; r != [2]int{} && (r[0] < 100 || r[1] > 599 || r[0] > r[1]) {
		return fmt.Errorf("ready_status %d-%d: want statuses from 100 to 599, low to high", r[0], r[1])
	}
	if err := s.Settings.Validate(); err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, p := range s.Processes {
		if !ValidName(p.Name) || p.Name == HookProcess {
			return fmt.Errorf("process type %q: use lowercase letters, digits and dashes", p.Name)
		}
		if seen[p.Name] {
			return fmt.Errorf("process type %q given twice", p.Name)
		}
		seen[p.Name] = true
		if p.Count < 0 {
			return fmt.Errorf("process type %q: count must not be negative", p.Name)
		}
		if p.Count > MaxCount {
			return fmt.Errorf("process type %q: count %d is over the limit of %d", p.Name, p.Count, MaxCount)
		}
		if p.Settings != nil {
			if err := p.Settings.Validate(); err != nil {
				return fmt.Errorf("process type %q: %w", p.Name, err)
			}
		}
	}
	for k := range s.Env {
		if k == "" || strings.ContainsAny(k, "= \t\n") {
			return fmt.Errorf("env name %q is not valid", k)
		}
		if k == "PORT" {
			return errors.New("env PORT is set by podswitch; use port instead")
		}
	}
	return nil
}

var releaseKey atomic.Pointer[[]byte]

// SetReleaseKey sets the secret that release IDs are derived with. Release
// IDs are public (labels, API, notifications) and env values are secrets:
// without a key, a weak secret could be guessed from an ID offline. The key
// must stay the same across restarts, or every app is redeployed once.
func SetReleaseKey(key []byte) {
	k := slices.Clone(key)
	releaseKey.Store(&k)
}

// ReleaseID identifies what a release runs: the image (reference, and ID
// once resolved: a tag that names another image is another release), the
// env, the commands of every process type and the container settings.
// Counts and timeouts are not part of it, so changing them scales instead
// of deploying. An unresolved spec hashes as podswitch did before it pinned
// images, and settings are hashed only when set, so that the releases an
// older version left are still recognised.
func (s AppSpec) ReleaseID() string {
	var h hash.Hash
	if k := releaseKey.Load(); k != nil && len(*k) > 0 {
		h = hmac.New(sha256.New, *k)
	} else {
		h = sha256.New()
	}
	fmt.Fprintf(h, "image\x00%s\x00port\x00%d\x00", s.Image, s.Port)
	if s.ImageID != "" {
		fmt.Fprintf(h, "image_id\x00%s\x00", s.ImageID)
	}
	keys := make([]string, 0, len(s.Env))
	for k := range s.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(h, "env\x00%s\x00%s\x00", k, s.Env[k])
	}
	fmt.Fprintf(h, "postdeploy\x00%d\x00", len(s.Postdeploy))
	for _, a := range s.Postdeploy {
		fmt.Fprintf(h, "%s\x00", a)
	}
	procs := append([]ProcessSpec(nil), s.Processes...)
	sort.Slice(procs, func(i, j int) bool { return procs[i].Name < procs[j].Name })
	for _, p := range procs {
		fmt.Fprintf(h, "proc\x00%s\x00%d\x00", p.Name, len(p.Command))
		for _, a := range p.Command {
			fmt.Fprintf(h, "%s\x00", a)
		}
		if p.Settings != nil && !p.Settings.IsZero() {
			fmt.Fprintf(h, "proc_settings\x00")
			p.Settings.hash(h)
		}
	}
	if !s.Settings.IsZero() {
		fmt.Fprintf(h, "settings\x00")
		s.Settings.hash(h)
	}
	return hex.EncodeToString(h.Sum(nil))[:12]
}

// RunImage is what the release's containers are created from: the pinned
// image ID, or the reference while none is known.
func (s AppSpec) RunImage() string {
	if s.ImageID != "" {
		return s.ImageID
	}
	return s.Image
}

// ShortImageID returns the first 12 hex characters of an image ID, as
// Podman shows it.
func ShortImageID(id string) string { return id[:min(12, len(id))] }

// Process returns the spec of process type name and whether it exists.
func (s AppSpec) Process(name string) (ProcessSpec, bool) {
	for _, p := range s.Processes {
		if p.Name == name {
			return p, true
		}
	}
	return ProcessSpec{}, false
}

// Counts returns the number of containers per process type.
func (s AppSpec) Counts() map[string]int {
	m := make(map[string]int, len(s.Processes))
	for _, p := range s.Processes {
		m[p.Name] = p.Count
	}
	return m
}
