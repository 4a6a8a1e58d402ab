// Package notify sends podswitch's events (a deployment's end, a restart
// that gave up, a container that crashed) to people and systems outside
// Caddy: a webhook that receives JSON, and e-mail over SMTP. It knows
// nothing of Caddy: the caddymodule package turns its config into the
// notifiers of this package and calls them off the engine's path.
package notify

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Event names, as in Message.Event.
const (
	// EventDeployment is the end of a deployment (of a new release or of a
	// restart), whatever its status.
	EventDeployment = "deployment"
	// EventGaveUp is a restart, scale or crash replacement that gave up
	// after restart_attempts tries; the existing containers keep running.
	EventGaveUp = "gave_up"
	// EventCrashed is a running container that exited without podswitch
	// stopping it.
	EventCrashed = "crashed"
	// EventHost is a change of the state of a Podman host (of several)
	// the app runs on: unmanaged, unreachable, lost, up again.
	EventHost = "host"
)

// Selectors name the events a notifier wants (Webhook.Events,
// Email.Events): the event names above, plus SelectDeploymentFailed.
const (
	// SelectDeploymentFailed selects the deployments that ended with a
	// failure status (neither success nor aborted).
	SelectDeploymentFailed = "deployment_failed"
)

// Selectors are all valid selectors, in the order they are documented.
var Selectors = []string{EventDeployment, SelectDeploymentFailed, EventGaveUp, EventCrashed, EventHost}

// DefaultEmailEvents are the events e-mailed when Email.Events is empty:
// what needs a person's attention.
var DefaultEmailEvents = []string{EventGaveUp, SelectDeploymentFailed, EventHost}

// Message is one event, as notifiers send it. The webhook posts it as JSON
// with the tags below.
type Message struct {
	// Event is EventDeployment, EventGaveUp or EventCrashed.
	Event string `json:"event"`
	// App is the app's name.
	App string `json:"app"`
	// Host is the host of a host event.
	Host string `json:"host,omitempty"`
	// Status is a deployment's final status (success, timeout-error,
	// crashed-error, start-error, hook-error, aborted); empty for other
	// events.
	Status string `json:"status,omitempty"`
	// Deployment is the deployment's id; 0 for other events.
	Deployment int64 `json:"deployment,omitempty"`
	// Kind is the deployment's kind (deploy, restart); empty for other
	// events.
	Kind string `json:"kind,omitempty"`
	// Release and Image are the release concerned, when known.
	Release string `json:"release,omitempty"`
	Image   string `json:"image,omitempty"`
	// Process is the process type concerned (web, worker...), when known.
	Process string `json:"process,omitempty"`
	// Container is the container concerned, when known.
	Container string `json:"container,omitempty"`
	// Text says what happened, in words: a failed deployment's error, why
	// a restart gave up, how a container exited.
	Text string `json:"text,omitempty"`
	// Output holds the last lines of output of the container concerned,
	// when it failed or crashed.
	Output []string `json:"output,omitempty"`
	// Time is when it happened.
	Time time.Time `json:"time"`
}

// Failed reports whether m is bad news: a give-up, a crash, or a
// deployment that ended neither in success nor aborted.
func (m Message) Failed() bool {
	switch m.Event {
	case EventGaveUp, EventCrashed:
		return true
	case EventDeployment:
		return m.Status != "success" && m.Status != "aborted" && m.Status != "starting" && m.Status != ""
	}
	return false
}

// Summary is a one-line description of m, used as an e-mail subject.
func (m Message) Summary() string {
	var b strings.Builder
	b.WriteString(m.App)
	b.WriteString(": ")
	switch m.Event {
	case EventDeployment:
		kind := m.Kind
		if kind == "" {
			kind = "deployment"
		}
		fmt.Fprintf(&b, "%s %d ", kind, m.Deployment)
		switch {
		case m.Status == "success":
			b.WriteString("succeeded")
		case m.Status == "aborted":
			b.WriteString("aborted")
		default:
			fmt.Fprintf(&b, "failed (%s)", m.Status)
		}
		if m.Image != "" {
			fmt.Fprintf(&b, ", image %s", m.Image)
		}
	case EventGaveUp:
		b.WriteString("restart")
		if m.Process != "" {
			fmt.Fprintf(&b, " of %s", m.Process)
		}
		if m.Container != "" {
			fmt.Fprintf(&b, " (container %s)", m.Container)
		}
		b.WriteString(" gave up")
	case EventCrashed:
		b.WriteString("container ")
		if m.Container != "" {
			b.WriteString(m.Container + " ")
		}
		if m.Process != "" {
			fmt.Fprintf(&b, "of %s ", m.Process)
		}
		b.WriteString("crashed")
	default:
		b.WriteString(m.Event)
	}
	return b.String()
}

// Notifier sends messages somewhere.
type Notifier interface {
	// Notify sends m. It returns once m is delivered, it gave up, or ctx
	// is done.
	Notify(ctx context.Context, m Message) error
}

// Selective is a Notifier that sends only some events.
type Selective interface {
	Notifier
	// Wants reports whether the notifier sends m.
	Wants(m Message) bool
}

// Wants reports whether a notifier that selects events (see Selectors)
// sends m; with no selectors it uses defaults.
func Wants(events, defaults []string, m Message) bool {
	if len(events) == 0 {
		events = defaults
	}
	if len(events) == 0 {
		return true
	}
	if slices.Contains(events, m.Event) {
		return true
	}
	return m.Event == EventDeployment && m.Failed() && slices.Contains(events, SelectDeploymentFailed)
}

// CheckSelectors returns an error naming the first unknown selector.
func CheckSelectors(events []string) error {
	for _, e := range events {
		if !slices.Contains(Selectors, e) {
			return fmt.Errorf("unknown event %q (want %s)", e, strings.Join(Selectors, ", "))
		}
	}
	return nil
}
