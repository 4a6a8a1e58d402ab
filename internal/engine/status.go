package engine

import (
	"context"
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

// State is where a container is in its life, in the words users see.
type State string

// Container states.
const (
	StateStarting State = "starting"
	StateReady    State = "ready"
	StateDraining State = "draining"
	StateStopping State = "stopping"
	StateStopped  State = "stopped"
	StateCrashed  State = "crashed"
)

// Deployment kinds.
const (
	KindDeploy  = "deploy"
	KindRestart = "restart"
)

// Deployment is one attempt to put a release in service.
type Deployment struct {
	ID      int64  `json:"id"`
	Kind    string `json:"kind"`
	Release string `json:"release"`
	// Process and Container narrow a restart to one process type or one
	// container.
	Process   string `json:"process,omitempty"`
	Container string `json:"container,omitempty"`
	Image     string `json:"image"`
	Status    Status `json:"status"`
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

	spec    AppSpec
	ctx     context.Context
	cancel  context.CancelFunc
	started bool
	done    chan struct{}
}

// ReleaseInfo describes the release that serves an app.
type ReleaseInfo struct {
	ID    string `json:"id"`
	Image string `json:"image"`
	// Status is the status of the deployment that put it in service.
	Status     Status    `json:"status"`
	DeployedAt time.Time `json:"deployed_at"`
	// Deployment is the id of that deployment; 0 for a release adopted
	// from a previous run.
	Deployment int64 `json:"deployment"`
}

// ContainerStatus is one container as users see it.
type ContainerStatus struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Process   string    `json:"process"`
	Release   string    `json:"release"`
	State     State     `json:"state"`
	Addr      string    `json:"dial,omitempty"`
	StartedAt time.Time `json:"started_at"`
}

// AppStatus is a consistent copy of an app's state.
type AppStatus struct {
	Name string `json:"name"`
	// Release is nil until a release has served.
	Release     *ReleaseInfo      `json:"release"`
	Desired     string            `json:"desired_release"`
	Image       string            `json:"desired_image"`
	Processes   map[string]int    `json:"processes"`
	Containers  []ContainerStatus `json:"containers"`
	Deployments []Deployment      `json:"deployments"`
	// RuntimeError is set while the container runtime cannot be reached.
	RuntimeError string `json:"runtime_error,omitempty"`
	// GaveUp lists the process types whose containers could not be
	// (re)started within restart_attempts; they are retried on the next
	// config change, restart or scale.
	GaveUp []string `json:"gave_up,omitempty"`
}

// History keeps the deployments of apps across restarts of the process.
// Save is called with the lock of the app held: it must be quick and must
// not call back into the engine.
type History interface {
	Load(app string) []Deployment
	Save(app string, deployments []Deployment)
}
