package caddymodule

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"net/http"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
	"go.uber.org/zap"

	"github.com/podswitch/podswitch/internal/engine"
	psnotify "github.com/podswitch/podswitch/internal/notify"
)

// NotifyConfig sends an app's events to a webhook and/or by e-mail.
//
// Whatever it says, every event is also emitted on Caddy's event bus (the
// `events` app) as `podswitch.deployment` (a deployment ended, whatever its
// status), `podswitch.gave_up` (a restart, scale or crash replacement gave
// up after restart_attempts; the running containers keep running) or
// `podswitch.crashed` (a running container exited without podswitch
// stopping it), with the data `app`, `message` and, as they apply,
// `deployment`, `kind`, `status`, `release`, `image`, `process`,
// `container`; and it is logged.
//
// Values of url, headers, host, username, password, from and to may use
// Caddy's global placeholders, such as `{env.SMTP_PASSWORD}`, which are
// replaced when the config is loaded.
type NotifyConfig struct {
	// Webhook posts each event as JSON to a URL. Default: none.
	Webhook *WebhookConfig `json:"webhook,omitempty"`

	// Email sends an e-mail over SMTP on the events that need a person:
	// by default, give-ups and failed deployments. Default: none.
	Email *EmailConfig `json:"email,omitempty"`
}

// WebhookConfig posts each event as a JSON object with the fields `event`
// (deployment, gave_up or crashed), `app`, `time`, `text` (what happened,
// in words) and, as they apply, `status`, `deployment`, `kind`, `release`,
// `image`, `process`, `container`. A transport error, a 5xx or a 429 is
// retried with exponential backoff (0.5s, 1s, 2s...); any other status
// that is not 2xx is not.
type WebhookConfig struct {
	// URL is where events are posted: an http:// or https:// URL.
	// Required. Logs show only its scheme and host.
	URL string `json:"url,omitempty"`

	// Headers are added to every request, for example an Authorization
	// header. Their values are never logged. Default: none.
	Headers http.Header `json:"headers,omitempty"`

	// Timeout bounds each attempt. Default: 10s.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	// Attempts is how many times an event is tried, the first one
	// included. Default: 5. However many there are, the delivery of one
	// event ends after 3 minutes.
	Attempts int `json:"attempts,omitempty"`

	// Events selects the events posted, among `deployment`,
	// `deployment_failed` (deployments that ended neither in success nor
	// aborted), `gave_up` and `crashed`. Default: all events.
	Events []string `json:"events,omitempty"`
}

// EmailConfig sends a plain-text e-mail per event over SMTP. The subject
// says what happened, for example `[podswitch] blog: restart of web gave
// up`; the body gives the details. Temporary failures (the server cannot
// be reached, or answers 4xx) are retried twice with backoff (2s, 4s);
// the delivery of one event ends after 3 minutes in all.
type EmailConfig struct {
	// Host is the SMTP server's host name or address. Required.
	Host string `json:"host,omitempty"`

	// Port is the SMTP server's port. Default: 587, or 25 when tls is
	// `none`. On port 465 the connection is TLS from its first byte
	// (SMTPS) unless tls is `none`.
	Port int `json:"port,omitempty"`

	// Username authenticates to the server with Password, when set. The
	// strongest mechanism the server offers is used; on a connection that
	// is not encrypted, only challenge-response mechanisms (SCRAM,
	// CRAM-MD5) are. Default: no authentication.
	Username string `json:"username,omitempty"`

	// Password goes with Username. It is never logged; prefer a
	// placeholder such as `{env.SMTP_PASSWORD}` to writing it in the
	// config. Default: none.
	Password string `json:"password,omitempty"`

	// From is the sender's address, for example
	// `podswitch <ops@example.com>`. Required.
	From string `json:"from,omitempty"`

	// To are the recipients' addresses. At least one is required.
	To []string `json:"to,omitempty"`

	// TLS is the TLS policy: `mandatory` (STARTTLS, or TLS on port 465,
	// with a certificate valid for host), `opportunistic` (STARTTLS when
	// the server offers it, plain text otherwise) or `none`.
	// Default: mandatory.
	TLS string `json:"tls,omitempty"`

	// SubjectPrefix starts every subject. Default: `[podswitch]`.
	SubjectPrefix string `json:"subject_prefix,omitempty"`

	// Events selects the events e-mailed, among `deployment`,
	// `deployment_failed` (deployments that ended neither in success nor
	// aborted), `gave_up` and `crashed`. Default: gave_up and
	// deployment_failed.
	Events []string `json:"events,omitempty"`

	// Timeout bounds each attempt, connection and conversation.
	// Default: 30s.
	Timeout caddy.Duration `json:"timeout,omitempty"`
}

// validHeaderName reports whether s is an HTTP header field name (an RFC
// 9110 token).
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r > 0x7e || r <= ' ' || strings.ContainsRune(`"(),/:;<=>?@[\]{}`, r) {
			return false
		}
	}
	return true
}

// notifiers turns c into the notifiers of the notify package, with the
// placeholders of repl replaced, and validates them.
func (c *NotifyConfig) notifiers(repl *caddy.Replacer) ([]psnotify.Notifier, error) {
	if c == nil {
		return nil, nil
	}
	r := func(s string) string { return repl.ReplaceKnown(s, "") }
	var out []psnotify.Notifier
	if w := c.Webhook; w != nil {
		n := &psnotify.Webhook{
			URL:      r(w.URL),
			Timeout:  time.Duration(w.Timeout),
			Attempts: w.Attempts,
			Events:   w.Events,
		}
		if w.Timeout < 0 {
			return nil, fmt.Errorf("webhook: timeout must not be negative")
		}
		if w.Attempts < 0 {
			return nil, fmt.Errorf("webhook: attempts must not be negative")
		}
		for name, values := range w.Headers {
			if !validHeaderName(name) {
				return nil, fmt.Errorf("webhook: %q is not a header name", name)
			}
			if n.Header == nil {
				n.Header = http.Header{}
			}
			for _, v := range values {
				n.Header.Add(name, r(v))
			}
		}
		if err := n.Validate(); err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	if e := c.Email; e != nil {
		n := &psnotify.Email{
			Host:          r(e.Host),
			Port:          e.Port,
			Username:      r(e.Username),
			Password:      r(e.Password),
			From:          r(e.From),
			TLS:           psnotify.TLSPolicy(e.TLS),
			SubjectPrefix: e.SubjectPrefix,
			Events:        e.Events,
			Timeout:       time.Duration(e.Timeout),
		}
		for _, to := range e.To {
			n.To = append(n.To, r(to))
		}
		if e.Timeout < 0 {
			return nil, fmt.Errorf("email: timeout must not be negative")
		}
		if err := n.Validate(); err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}

// notifyTimeout bounds the delivery of one event by one notifier, retries
// included.
var notifyTimeout = 3 * time.Minute

// notifyTarget is what the events of one config go to: its events app
// and its apps' notifiers. The host sends events to the target of the
// config the engine follows.
type notifyTarget struct {
	ctx    caddy.Context
	events *caddyevents.App
	logger *zap.Logger
	apps   map[string][]psnotify.Notifier
}

// newNotifyTarget builds the notifiers of apps (replacing placeholders and
// validating them: a bad notify config fails the provisioning).
func newNotifyTarget(ctx caddy.Context, apps map[string]*AppConfig) (*notifyTarget, error) {
	t := &notifyTarget{ctx: ctx, logger: ctx.Logger().Named("notify"), apps: map[string][]psnotify.Notifier{}}
	repl := caddy.NewReplacer()
	for _, name := range slices.Sorted(maps.Keys(apps)) {
		cfg := apps[name]
		if cfg == nil || cfg.Notify == nil {
			continue
		}
		ns, err := cfg.Notify.notifiers(repl)
		if err != nil {
			return nil, fmt.Errorf("app %q: notify: %w", name, err)
		}
		t.apps[name] = ns
	}
	ev, err := ctx.App("events")
	if err != nil {
		return nil, fmt.Errorf("podswitch: loading the events app: %v", err)
	}
	t.events, _ = ev.(*caddyevents.App)
	return t, nil
}

// notify receives the engine's events, in a goroutine of the engine's: it
// emits the Caddy event and hands the message to the app's notifiers,
// each in a goroutine of its own, so that a slow receiver delays nothing.
// Deployment ends, give-ups and crashes are logged by the engine itself;
// notify logs deliveries that fail.
func (t *notifyTarget) notify(ev engine.Event) {
	log := t.logger
	defer func() {
		if r := recover(); r != nil {
			log.Error("event handling panicked", zap.String("app", ev.App), zap.String("event", ev.Name),
				zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
		}
	}()
	m := messageOf(ev)
	for _, n := range t.apps[m.App] {
		if s, ok := n.(psnotify.Selective); ok && !s.Wants(m) {
			continue
		}
		go deliver(log, n, m)
	}
	if t.events != nil {
		t.events.Emit(t.ctx, "podswitch."+m.Event, eventData(m))
	}
}

// deliver sends m through n within notifyTimeout and logs the outcome.
func deliver(log *zap.Logger, n psnotify.Notifier, m psnotify.Message) {
	fields := []zap.Field{zap.String("app", m.App), zap.String("event", m.Event), zap.String("notifier", describeNotifier(n))}
	if m.Deployment != 0 {
		fields = append(fields, zap.Int64("deployment", m.Deployment))
	}
	defer func() {
		if r := recover(); r != nil {
			log.Error("notification panicked", append(fields, zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))...)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), notifyTimeout)
	defer cancel()
	start := time.Now()
	if err := n.Notify(ctx, m); err != nil {
		log.Error("notification failed", append(fields, zap.Duration("duration", time.Since(start)), zap.Error(err))...)
		return
	}
	log.Debug("notification sent", append(fields, zap.Duration("duration", time.Since(start)))...)
}

// describeNotifier names n for logs, without secrets.
func describeNotifier(n psnotify.Notifier) string {
	switch n := n.(type) {
	case *psnotify.Webhook:
		return "webhook " + psnotify.Redact(n.URL)
	case *psnotify.Email:
		return "email " + n.Addr()
	}
	return fmt.Sprintf("%T", n)
}

// messageOf turns an engine event into a notification message.
func messageOf(ev engine.Event) psnotify.Message {
	m := psnotify.Message{
		Event:     ev.Name,
		App:       ev.App,
		Process:   ev.Process,
		Container: ev.Container,
		Host:      ev.Host,
		Text:      ev.Message,
		Output:    ev.Output,
		Time:      ev.Time,
	}
	if d := ev.Deployment; d != nil {
		m.Deployment = d.ID
		m.Kind = d.Kind
		m.Status = string(d.Status)
		m.Release = d.Release
		m.Image = d.Image
		m.Process = cmp.Or(m.Process, d.Process)
		m.Container = cmp.Or(m.Container, d.Container)
		m.Text = cmp.Or(m.Text, d.Error)
		if len(m.Output) == 0 {
			for _, c := range d.Containers {
				if c.Role == "new" && len(c.Output) > 0 {
					m.Output = c.Output
				}
			}
			if h := d.Hook; h != nil && len(m.Output) == 0 && d.Status == engine.StatusHookError {
				m.Output = h.Output
			}
		}
		if m.Time.IsZero() {
			m.Time = d.EndedAt
		}
	}
	if m.Time.IsZero() {
		m.Time = time.Now()
	}
	return m
}

// eventData is the data of the Caddy event for m: `app` and `message`
// always, the other fields as they apply.
func eventData(m psnotify.Message) map[string]any {
	data := map[string]any{"app": m.App, "message": m.Text}
	if m.Event == psnotify.EventDeployment {
		data["deployment"] = m.Deployment
		data["kind"] = m.Kind
		data["status"] = m.Status
		data["release"] = m.Release
		data["image"] = m.Image
	}
	if m.Process != "" {
		data["process"] = m.Process
	}
	if m.Container != "" {
		data["container"] = m.Container
	}
	if m.Host != "" {
		data["host"] = m.Host
	}
	return data
}
