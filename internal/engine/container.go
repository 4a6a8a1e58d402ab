package engine

import (
	"context"
	"slices"
	"time"
)

// State is where a container is in its life, in the words users see.
type State string

// Container states. A container goes
//
//	starting → booted → ready → draining → stopping → stopped
//
// and from any state before stopping to crashed (it exited on its own),
// then to stopped once it is removed. A container that fails to boot or is
// no longer wanted before it served goes from starting or booted straight
// to stopping. Adopted containers begin as ready; leftovers of other
// releases begin as stopping.
const (
	// StateStarting: created and started, not yet accepting connections
	// on PORT (web) or not yet running for worker_ready_time (others).
	StateStarting State = "starting"
	// StateBooted: ready to serve, but not in the pool yet: its release
	// waits for its siblings or its postdeploy hook.
	StateBooted State = "booted"
	// StateReady: serving. A ready web container is in the traffic pool
	// unless it stopped answering the health check.
	StateReady State = "ready"
	// StateDraining: out of the pool; the requests in flight to it end.
	StateDraining State = "draining"
	// StateStopping: SIGTERM sent; SIGKILL after stop_timeout; then removed.
	StateStopping State = "stopping"
	// StateStopped: removed.
	StateStopped State = "stopped"
	// StateCrashed: it exited on its own; it is removed and, if it was
	// serving, replaced.
	StateCrashed State = "crashed"
	// StateUnhealthy is what users see of a ready web container that
	// fails its health checks: out of the pool until it answers again or
	// is replaced. It is not a state of the machine (the container stays
	// ready), only a word of the status.
	StateUnhealthy State = "unhealthy"
)

// next holds the allowed transitions. Everything else is a bug, logged and
// refused by fleet.setState.
var next = map[State][]State{
	"":            {StateStarting, StateReady, StateStopping},
	StateStarting: {StateBooted, StateStopping, StateCrashed},
	StateBooted:   {StateReady, StateStopping, StateCrashed},
	StateReady:    {StateDraining, StateCrashed},
	StateDraining: {StateStopping, StateCrashed},
	StateStopping: {StateStopped},
	StateCrashed:  {StateStopped},
}

// live reports whether a container in state st counts toward its process
// type's count: it runs or is about to.
func (st State) live() bool {
	return st == StateStarting || st == StateBooted || st == StateReady
}

// Transition is one change of a container's state.
type Transition struct {
	State State     `json:"state"`
	At    time.Time `json:"at"`
	// Note says why, where there is more to say than the state.
	Note string `json:"note,omitempty"`
}

// Container is the supervisor's record of one container. Its fields are
// guarded by the supervisor's lock; state changes only through fleet.setState.
type Container struct {
	ID      string
	Name    string
	Process string
	Release string
	// Addr is the dial address (ip:PORT) of a web container.
	Addr string

	state State
	// created is when podswitch asked the runtime to create it (zero for
	// one adopted or found).
	created time.Time
	// timeline holds every state the container went through, oldest first.
	timeline []Transition
	// owner is the deployment that booted the container and has not
	// switched it in yet; 0 for the app's serving set.
	owner int64
	// canary is set on a web container of the app's canary in service
	// (see canary.go): it serves its share, not the pool's.
	canary bool
	// cancel ends the container's boot, if it is booting.
	cancel context.CancelFunc
	// unhealthy is set on a ready web container that failed health
	// checks in a row (since unhealthySince, the last one for healthErr):
	// it is kept out of the pool until it answers again. replacing is set
	// once it was unhealthy for unhealthy_timeout: it no longer counts
	// toward its process type's count and is retired once a replacement
	// is ready.
	unhealthy      bool
	unhealthySince time.Time
	healthErr      string
	replacing      bool
	probeFails     int
	inspecting     bool
	// exitCode is set once it exited (-1: gone without a code).
	exitCode *int
	// output holds its last lines of output, kept when it failed to boot
	// or crashed.
	output []string
	// grace is whether stopping it sends SIGTERM and waits stop_timeout:
	// false for one that never ran the app (nothing to save).
	grace bool
	// reaping is set once a task stops and removes it.
	reaping bool
	// crashedServing is set when it crashed while serving: users hear of
	// it once its output is kept.
	crashedServing bool
	// retiredBy is the deployment that switched it out; abandoned the
	// rollout that booted it and failed.
	retiredBy *logEntry
	abandoned *rollout
}

// State returns the container's current state.
func (c *Container) State() State { return c.state }

// since returns when the container entered its current state.
func (c *Container) since() time.Time {
	if n := len(c.timeline); n > 0 {
		return c.timeline[n-1].At
	}
	return time.Time{}
}

// entered returns when the container first entered st, or zero.
func (c *Container) entered(st State) time.Time {
	for _, t := range c.timeline {
		if t.State == st {
			return t.At
		}
	}
	return time.Time{}
}

// cancelBoot ends the container's boot, if any.
func (c *Container) cancelBoot() {
	if c.cancel != nil {
		c.cancel()
		c.cancel = nil
	}
}

// status returns what users see of c.
func (c *Container) status() ContainerStatus {
	st := ContainerStatus{
		ID: c.ID, Name: c.Name, Process: c.Process, Release: c.Release, Host: HostOf(c.ID),
		State: c.state, Addr: c.Addr, Since: c.since(), StartedAt: c.entered(StateStarting), Canary: c.canary,
	}
	if c.unhealthy && c.state == StateReady {
		st.State, st.Since, st.Unreachable = StateUnhealthy, c.unhealthySince, true
		st.Note = "out of the pool: " + c.healthErr
		if c.replacing {
			st.Note += "; being replaced"
		}
	}
	return st
}

// record returns c's timeline as a deployment keeps it.
func (c *Container) record(role string) ContainerRecord {
	r := ContainerRecord{
		ID: c.ID, Name: c.Name, Process: c.Process, Release: c.Release, Role: role,
		State: c.state, CreatedAt: c.created, Timeline: slices.Clone(c.timeline), Output: slices.Clone(c.output),
	}
	if c.exitCode != nil {
		code := *c.exitCode
		r.ExitCode = &code
	}
	return r
}

// shortID returns the first 12 characters of a container ID, after its
// host (of several) if it has one.
func shortID(id string) string {
	host, local := splitID(id)
	if len(local) > 12 {
		local = local[:12]
	}
	return QualifyID(host, local)
}
