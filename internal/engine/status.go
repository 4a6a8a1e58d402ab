package engine

import (
	"time"
)

// Status is the outcome of a deployment, in the words users see.
type Status string

// Deployment statuses.
const (
	StatusStarting     Status = "starting"
	StatusSuccess      Status = "success"
	StatusTimeoutError Status = "timeout-error"
	StatusCrashedError Status = "crashed-error"
	StatusStartError   Status = "start-error"
	StatusHookError    Status = "hook-error"
	StatusAborted      Status = "aborted"
)

// Ended reports whether s is final.
func (s Status) Ended() bool { return s != StatusStarting && s != "" }

// Deployment kinds.
const (
	KindDeploy   = "deploy"
	KindRestart  = "restart"
	KindRollback = "rollback"
)

// Deployment is the record of one attempt to put a release (or, for a
// restart, new containers of the serving release) in service. It is what
// the history keeps and the API shows; the supervisor's working state of a
// deployment in progress is a rollout.
type Deployment struct {
	ID      int64  `json:"id"`
	Kind    string `json:"kind"`
	Release string `json:"release"`
	// Process and Container narrow a restart to one process type or one
	// container.
	Process   string `json:"process,omitempty"`
	Container string `json:"container,omitempty"`
	Image     string `json:"image"`
	// ImageID is the image ID the release runs, once the deployment
	// resolved Image to it (empty for a release that runs by reference).
	ImageID string `json:"image_id,omitempty"`
	// Trigger says what asked for it: "config", "api" (an operation) or
	// "start" (an interrupted deployment started over).
	Trigger string `json:"trigger,omitempty"`
	Status  Status `json:"status"`
	// Error says why a deployment failed, in Podman's words where it has
	// them.
	Error     string    `json:"error,omitempty"`
	StartedAt time.Time `json:"started_at"`
	EndedAt   time.Time `json:"ended_at,omitzero"`
	// LastReadyAt is when the last container of the release booted (a web
	// container's first accepted TCP connection); SwitchedAt is when its
	// pool was swapped in.
	LastReadyAt time.Time `json:"last_ready_at,omitzero"`
	SwitchedAt  time.Time `json:"switched_at,omitzero"`
	// Containers are the timelines of the containers it started (role
	// "new") and of those it replaced (role "old").
	Containers []ContainerRecord `json:"containers,omitempty"`
	// Hook is the postdeploy hook's run, if the release has one.
	Hook *HookRecord `json:"hook,omitempty"`
	// Note says what the deployment waits for or waited for (a postdeploy
	// hook of another deployment), since NoteAt.
	Note   string    `json:"note,omitempty"`
	NoteAt time.Time `json:"note_at,omitzero"`
	// RetiredAt is when the last container it replaced was stopped.
	RetiredAt time.Time `json:"retired_at,omitzero"`
	// Percent is the share of new clients a canary deployment's release
	// gets; CanaryEnded says how its canary ended, once it did.
	Percent     *int   `json:"percent,omitempty"`
	CanaryEnded string `json:"canary_ended,omitempty"`
}

// ContainerRecord is one container as a deployment remembers it.
type ContainerRecord struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	Process string `json:"process"`
	Release string `json:"release"`
	// Role is "new" (started by the deployment) or "old" (replaced by it).
	Role  string `json:"role"`
	State State  `json:"state"`
	// CreatedAt is when podswitch asked Podman to create it (the
	// timeline's first state, starting, is when it had started).
	CreatedAt time.Time    `json:"created_at,omitzero"`
	Timeline  []Transition `json:"timeline"`
	ExitCode  *int         `json:"exit_code,omitempty"`
	// Output holds the container's last lines of output when it failed to
	// boot or crashed.
	Output []string `json:"output,omitempty"`
}

// HookRecord is the run of a postdeploy hook.
type HookRecord struct {
	Container string    `json:"container,omitempty"`
	StartedAt time.Time `json:"started_at"`
	EndedAt   time.Time `json:"ended_at,omitzero"`
	ExitCode  *int      `json:"exit_code,omitempty"`
	Output    []string  `json:"output,omitempty"`
}

// ReleaseInfo describes the release that serves an app.
type ReleaseInfo struct {
	ID    string `json:"id"`
	Image string `json:"image"`
	// ImageID is the image ID every container of the release runs; empty
	// for a release of an older podswitch, which runs by reference.
	ImageID string `json:"image_id,omitempty"`
	// Status is the status of the deployment that put it in service.
	Status     Status    `json:"status"`
	DeployedAt time.Time `json:"deployed_at"`
	// Deployment is the id of that deployment; 0 for a release adopted
	// without a record of it.
	Deployment int64 `json:"deployment"`
}

// ContainerStatus is one container as users see it.
type ContainerStatus struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	Process string `json:"process"`
	Release string `json:"release"`
	// Host is the host it runs on, of several (empty for one).
	Host  string `json:"host,omitempty"`
	State State  `json:"state"`
	Addr  string `json:"dial,omitempty"`
	// Canary is set on a web container of the app's canary.
	Canary bool `json:"canary,omitempty"`
	// Since is when it entered its state; StartedAt when it was started
	// (zero for one adopted from a previous run).
	Since     time.Time `json:"since"`
	StartedAt time.Time `json:"started_at,omitzero"`
	// Unreachable is set on a ready web container that fails its health
	// checks (its State is then "unhealthy"): it is out of the pool until
	// it answers again or is replaced.
	Unreachable bool `json:"unreachable,omitempty"`
	// Note says why, where there is more to say than the state (the last
	// health check that failed).
	Note string `json:"note,omitempty"`
}

// OverrideStatus is one setting an operation changed over the config.
type OverrideStatus struct {
	// Setting is "image", "release" (a rollback: image, env and commands
	// of an earlier release) or "count:<process type>".
	Setting string `json:"setting"`
	Value   string `json:"value"`
	// ConfigValue is what the config says; the override stands as long as
	// it says that.
	ConfigValue string    `json:"config_value"`
	Operation   string    `json:"operation"`
	At          time.Time `json:"at"`
}

// PauseStatus is a pause in effect.
type PauseStatus struct {
	Since time.Time `json:"since"`
	// Timeout is how long a request waits before it is answered 503.
	Timeout string `json:"timeout"`
	// Held is how many requests the pause holds now; MaxHeld is how many
	// it may hold at once, the next being answered 503.
	Held    int64 `json:"held"`
	MaxHeld int64 `json:"max_held"`
}

// MaintenanceStatus is maintenance mode in effect.
type MaintenanceStatus struct {
	Since   time.Time `json:"since"`
	Message string    `json:"message"`
}

// AppStatus is a consistent copy of an app's state.
type AppStatus struct {
	Name string `json:"name"`
	// Release is nil until a release has served.
	Release *ReleaseInfo `json:"release"`
	// Desired is the release the config and the operations ask for; it
	// differs from Release while a deployment runs or after one failed.
	Desired string `json:"desired_release"`
	Image   string `json:"desired_image"`
	// ImageID is the image ID the desired image was resolved to, once it
	// was.
	ImageID     string             `json:"desired_image_id,omitempty"`
	Processes   map[string]int     `json:"processes"`
	Containers  []ContainerStatus  `json:"containers"`
	Deployments []Deployment       `json:"deployments"`
	Overrides   []OverrideStatus   `json:"overrides,omitempty"`
	Paused      *PauseStatus       `json:"paused,omitempty"`
	Maintenance *MaintenanceStatus `json:"maintenance,omitempty"`
	// RuntimeError is set while the container runtime cannot be reached.
	RuntimeError string `json:"runtime_error,omitempty"`
	// Hosts are the app's hosts, of several, with their states.
	Hosts []HostStatus `json:"hosts,omitempty"`
	// Others counts the containers of another podswitch instance that
	// carry the app's name (on the same Podman); they are left alone.
	Others int `json:"other_instances,omitempty"`
	// GaveUp lists the process types whose containers could not be
	// (re)started within restart_attempts; they are retried on the next
	// release, config change, restart or scale.
	GaveUp []string `json:"gave_up,omitempty"`
	// AllUnhealthy is set while every ready web container fails its
	// health check: the pool then keeps them all rather than none.
	AllUnhealthy string `json:"all_unhealthy,omitempty"`
	// Idle is set while the app sleeps (idle_timeout) or wakes up.
	Idle *IdleStatus `json:"idle,omitempty"`
	// LastWake is the app's last wake and its cold start.
	LastWake *WakeStatus `json:"last_wake,omitempty"`
	// Canary is the app's canary, booting or in service.
	Canary *CanaryStatus `json:"canary,omitempty"`
}

// History keeps the deployments of apps across restarts of the process.
// Save is called with the lock of the app held: it must be quick and must
// not call back into the engine.
type History interface {
	Load(app string) []Deployment
	Save(app string, deployments []Deployment)
}
