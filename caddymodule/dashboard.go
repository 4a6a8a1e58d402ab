package caddymodule

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/podswitch/podswitch/internal/engine"
)

func init() {
	caddy.RegisterModule(new(Dashboard))
}

// Timing of the dashboard's event streams.
var (
	// dashMinGap is the least time between two updates of one stream: the
	// engine changes many times a second during a deployment, and a page
	// needs to hear of it within a second, not at each change.
	dashMinGap = 250 * time.Millisecond
	// dashHeartbeat is how often an idle stream sends a comment, so that
	// proxies keep it open and a client that left is noticed.
	dashHeartbeat = 20 * time.Second
	// dashWriteTimeout bounds one write to a stream's client.
	dashWriteTimeout = 10 * time.Second
	// dashRetry is the reconnection delay the page's EventSource is told.
	dashRetry = time.Second
)

// maxDashStreams bounds the dashboard's event streams open at once in the
// process, over every podswitch_dashboard handler of every config: each
// holds a connection, a goroutine and a subscription to the change feed,
// and renders a view at each change. A stream over the bound is answered
// 503 with Retry-After (dashStreamsRetryAfter); the page tries again.
const maxDashStreams = 64

// dashStreamsRetryAfter is the Retry-After of a stream over the bound, in
// seconds.
const dashStreamsRetryAfter = "5"

// dashStreams counts the process's open streams against maxDashStreams.
var dashStreams = &streamSlots{max: maxDashStreams}

// streamSlots counts open streams against a bound, without a lock. It must
// not be copied.
type streamSlots struct {
	n   atomic.Int32
	max int32
}

// take counts a stream in, unless max are open.
func (s *streamSlots) take() bool {
	for {
		n := s.n.Load()
		if n >= s.max {
			return false
		}
		if s.n.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// give counts a stream out.
func (s *streamSlots) give() { s.n.Add(-1) }

// Dashboard serves a read-only web page of every podswitch app: the
// overview, each app's containers and deployments, and the timeline of a
// deployment, kept up to date by server-sent events. It reads the engine
// in-process and changes nothing. It never shows env values nor the
// containers' output.
//
// It answers these paths, relative to where it is mounted (at a site root,
// or under `handle_path /prefix/*`, which strips the prefix):
//
//	/                                   the page
//	/assets/app.js, /assets/app.css     its script and style
//	/api/apps                           the overview (JSON)
//	/api/apps/{app}[?deployment=ID]     one app; a deployment in full (the newest by default)
//	/api/apps/{app}/deployments/{id}    one deployment with its containers' timelines
//	/api/events[?app=A[&deployment=ID]] the same, as a stream of server-sent events
//
// Put an auth handler in front of it (basic_auth, forward_auth): it shows
// image names, container addresses and errors to whoever reaches it.
type Dashboard struct {
	src    dashSource
	logger *zap.Logger
	mux    *errMux
	// done is closed when the server that serves the handler shuts down or
	// its config is unloaded: every stream then ends, so that neither waits
	// for the other (an event stream never ends by itself).
	done chan struct{}
	// mu orders the start of a stream (streams.Add) before the end of the
	// handler (close of done, then streams.Wait).
	mu      sync.Mutex
	ended   bool
	streams sync.WaitGroup
}

// dashSource is what the dashboard reads: the engine, the feed that tells
// which apps changed, and the crashes heard of; and the slots its streams
// take.
type dashSource struct {
	manager *engine.Manager
	changes *changeFeed
	crashes *crashLog
	slots   *streamSlots
}

// CaddyModule returns the Caddy module information.
func (*Dashboard) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.podswitch_dashboard",
		New: func() caddy.Module { return new(Dashboard) },
	}
}

// Provision finds the engine of the podswitch app and ties the handler's
// streams to the life of its server and config.
func (d *Dashboard) Provision(ctx caddy.Context) error {
	v, err := ctx.AppIfConfigured("podswitch")
	if err != nil {
		return fmt.Errorf("podswitch_dashboard: the podswitch global option (apps.podswitch) is not configured: %w", err)
	}
	a, _ := v.(*App)
	if a == nil || a.host == nil {
		return errors.New("podswitch_dashboard: the podswitch app is not provisioned")
	}
	d.setup(dashSource{manager: a.host.manager, changes: a.host.changes, crashes: dashCrashes, slots: dashStreams}, ctx.Logger())
	// Caddy stops a config's servers (and, on exit, waits for their
	// requests) before it cleans its modules up: the streams must end when
	// the server begins to shut down, not only at Cleanup.
	if srv, ok := ctx.Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server); ok && srv != nil {
		srv.RegisterOnShutdown(d.end)
		// No auth in front of it on a public address: say so.
		d.warnIfUnguarded(ctx, srv)
	}
	// Crashes of serving containers leave no trace in the status once the
	// container is replaced; the podswitch.crashed event tells of them.
	ev, err := ctx.App("events")
	if err != nil {
		return fmt.Errorf("podswitch_dashboard: loading the events app: %v", err)
	}
	if evApp, ok := ev.(*caddyevents.App); ok {
		if err := evApp.On("podswitch.crashed", crashRecorder{log: dashCrashes, changes: a.host.changes}); err != nil {
			d.logger.Warn("crashes will not show on the dashboard", zap.Error(err))
		}
	}
	return nil
}

// setup makes d serve src.
func (d *Dashboard) setup(src dashSource, logger *zap.Logger) {
	d.src = src
	d.logger = logger
	d.done = make(chan struct{})
	d.mux = d.routes()
}

// routes are the dashboard's paths. Every one is GET (and so HEAD).
func (d *Dashboard) routes() *errMux {
	m := newErrMux()
	for path, a := range dashAssets {
		pattern := "GET " + path
		if path == "/" {
			pattern = "GET /{$}"
		}
		m.handle(pattern, a.serve)
	}
	m.handle("GET /index.html", dashAssets["/"].serve)
	m.handle("GET /api/apps", d.serveOverview)
	m.handle("GET /api/apps/{app}", d.serveApp)
	m.handle("GET /api/apps/{app}/deployments/{id}", d.serveDeployment)
	m.handle("GET /api/events", d.serveEvents)
	return m
}

// Cleanup ends the streams still open, and waits a moment for them.
func (d *Dashboard) Cleanup() error {
	d.end()
	waited := make(chan struct{})
	go func() { d.streams.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(2 * time.Second):
	}
	return nil
}

func (d *Dashboard) end() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.ended && d.done != nil {
		close(d.done)
	}
	d.ended = true
}

// startStream counts a stream in, unless the handler has ended.
func (d *Dashboard) startStream() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ended {
		return false
	}
	d.streams.Add(1)
	return true
}

// dashAsset is an embedded file as served.
type dashAsset struct {
	body  []byte
	ctype string
	etag  string
	// page is set on the page, which gets the security policy.
	page bool
}

// serve answers the file, revalidated by its ETag.
func (a *dashAsset) serve(w http.ResponseWriter, r *http.Request) error {
	h := w.Header()
	h.Set("Content-Type", a.ctype)
	h.Set("Cache-Control", "no-cache")
	h.Set("ETag", a.etag)
	if a.page {
		h.Set("Content-Security-Policy", dashCSP)
		h.Set("X-Frame-Options", "DENY")
	}
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
	return nil
}

//go:embed dashboard/index.html dashboard/app.js dashboard/app.css
var dashboardFiles embed.FS

// dashAssets are the embedded files by the path they are served at.
var dashAssets = func() map[string]*dashAsset {
	out := map[string]*dashAsset{}
	for path, file := range map[string]string{
		"/":               "dashboard/index.html",
		"/assets/app.js":  "dashboard/app.js",
		"/assets/app.css": "dashboard/app.css",
	} {
		b, err := dashboardFiles.ReadFile(file)
		if err != nil {
			panic(err)
		}
		ctype := "text/html; charset=utf-8"
		switch {
		case strings.HasSuffix(file, ".js"):
			ctype = "text/javascript; charset=utf-8"
		case strings.HasSuffix(file, ".css"):
			ctype = "text/css; charset=utf-8"
		}
		sum := sha256.Sum256(b)
		out[path] = &dashAsset{body: b, ctype: ctype, etag: `"` + hex.EncodeToString(sum[:8]) + `"`, page: path == "/"}
	}
	return out
}()

// dashCSP allows the page only its own script, style and connections.
const dashCSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// ServeHTTP implements caddyhttp.MiddlewareHandler. It answers every
// request itself.
func (d *Dashboard) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		return dashError(w, http.StatusMethodNotAllowed, "the dashboard is read-only")
	}
	h := w.Header()
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	if r.URL.Path == "" {
		// The page, mounted with handle_path at /prefix and asked for
		// at /prefix.
		u := *r.URL
		u.Path, u.RawPath = "/", ""
		r = r.WithContext(r.Context())
		r.URL = &u
	}
	// Every route is GET, so the mux never answers 405; a path it has no
	// route for, or would redirect (to a cleaned path, which under a
	// stripped prefix is the wrong one), is not found.
	if _, matched, err := d.mux.serve(w, r); matched {
		return err
	}
	return dashError(w, http.StatusNotFound, "not found: the dashboard serves /, /assets/ and /api/ of the path it is given; under a path prefix, mount it with handle_path, which strips the prefix")
}

func (d *Dashboard) serveOverview(w http.ResponseWriter, _ *http.Request) error {
	return dashJSON(w, d.overview())
}

func (d *Dashboard) serveApp(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("app")
	id, err := dashDeploymentParam(r)
	if err != nil {
		return dashError(w, http.StatusBadRequest, err.Error())
	}
	v := d.appView(name, id)
	if v.Missing != "" {
		return dashError(w, http.StatusNotFound, fmt.Sprintf("no app %q in the running config", name))
	}
	return dashJSON(w, v)
}

func (d *Dashboard) serveDeployment(w http.ResponseWriter, r *http.Request) error {
	name, v := r.PathValue("app"), r.PathValue("id")
	id, err := strconv.ParseInt(v, 10, 64)
	if err != nil || id <= 0 {
		return dashError(w, http.StatusBadRequest, fmt.Sprintf("deployment %q: want a number", v))
	}
	s := d.src.manager.App(name)
	if s == nil {
		return dashError(w, http.StatusNotFound, fmt.Sprintf("no app %q in the running config", name))
	}
	dep, _, ok := s.Deployment(id)
	if !ok {
		return dashError(w, http.StatusNotFound, fmt.Sprintf("app %q has no deployment %d in its history", name, id))
	}
	return dashJSON(w, withoutOutput(dep))
}

// dashDeploymentParam reads ?deployment=ID; 0 means the newest.
func dashDeploymentParam(r *http.Request) (int64, error) {
	v := r.URL.Query().Get("deployment")
	if v == "" {
		return 0, nil
	}
	id, err := strconv.ParseInt(v, 10, 64)
	if err != nil || id <= 0 {
		return 0, fmt.Errorf("deployment %q: want a number", v)
	}
	return id, nil
}

func dashJSON(w http.ResponseWriter, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, err = w.Write(b)
	return err
}

func dashError(w http.ResponseWriter, status int, msg string) error {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// serveEvents streams the view the query names as server-sent events: the
// overview (event `overview` at first and when the list of apps changed,
// then `apps` with the apps that changed and those removed), or one app
// (event `app`, at first and whenever it changed). Updates follow a change
// within dashMinGap. The stream ends when the client leaves or the
// handler's server or config goes away; the page then reconnects. At most
// maxDashStreams are open at once; the slot is freed when the stream ends.
func (d *Dashboard) serveEvents(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	app := q.Get("app")
	if app != "" && !engine.ValidName(app) {
		return dashError(w, http.StatusBadRequest, fmt.Sprintf("app %q: not an app name", app))
	}
	depID, err := dashDeploymentParam(r)
	if err != nil {
		return dashError(w, http.StatusBadRequest, err.Error())
	}
	if !d.startStream() {
		return dashError(w, http.StatusServiceUnavailable, "the dashboard is being unloaded; try again")
	}
	defer d.streams.Done()
	if !d.src.slots.take() {
		w.Header().Set("Retry-After", dashStreamsRetryAfter)
		return dashError(w, http.StatusServiceUnavailable, fmt.Sprintf("too many dashboard streams open (at most %d); try again in a few seconds", d.src.slots.max))
	}
	defer d.src.slots.give()
	sub, unsubscribe := d.src.changes.subscribe()
	defer unsubscribe()

	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return nil
	}
	send := func(prefix, event string, v any) error {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		_ = rc.SetWriteDeadline(time.Now().Add(dashWriteTimeout))
		if _, err := fmt.Fprintf(w, "%sevent: %s\ndata: %s\n\n", prefix, event, b); err != nil {
			return err
		}
		return rc.Flush()
	}
	first := fmt.Sprintf("retry: %d\n", dashRetry.Milliseconds())
	if app == "" {
		err = send(first, "overview", d.overview())
	} else {
		err = send(first, "app", d.appView(app, depID))
	}
	if err != nil {
		return nil // the client left
	}
	if c := d.logger.Check(zap.DebugLevel, "dashboard stream opened"); c != nil {
		c.Write(zap.String("app", app), zap.String("remote", r.RemoteAddr))
	}

	heartbeat := time.NewTicker(dashHeartbeat)
	defer heartbeat.Stop()
	var last time.Time
	for {
		select {
		case <-r.Context().Done():
			return nil
		case <-d.done:
			return nil
		case <-heartbeat.C:
			_ = rc.SetWriteDeadline(time.Now().Add(dashWriteTimeout))
			if _, err := fmt.Fprint(w, ": keepalive\n\n"); err != nil {
				return nil
			}
			if rc.Flush() != nil {
				return nil
			}
			continue
		case <-sub.Wake():
		}
		if wait := time.Until(last.Add(dashMinGap)); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-r.Context().Done():
				t.Stop()
				return nil
			case <-d.done:
				t.Stop()
				return nil
			case <-t.C:
			}
		}
		changed := sub.Take()
		listChanged := slices.Contains(changed, "")
		switch {
		case len(changed) == 0:
			continue
		case app == "" && listChanged:
			err = send("", "overview", d.overview())
		case app == "":
			err = send("", "apps", d.patch(changed))
		case listChanged || slices.Contains(changed, app):
			err = send("", "app", d.appView(app, depID))
		default:
			continue // other apps changed
		}
		if err != nil {
			return nil
		}
		last = time.Now()
	}
}

// dashOverview is every app, summed up.
type dashOverview struct {
	Now  time.Time        `json:"now"`
	Apps []dashAppSummary `json:"apps"`
}

// dashPatch is the apps that changed, and the names of those no longer
// in the config.
type dashPatch struct {
	Now     time.Time        `json:"now"`
	Apps    []dashAppSummary `json:"apps"`
	Removed []string         `json:"removed,omitempty"`
}

// dashAppSummary is one app on the overview.
type dashAppSummary struct {
	Name string `json:"name"`
	// Release is the release that serves; nil until one has.
	Release        *engine.ReleaseInfo `json:"release"`
	DesiredRelease string              `json:"desired_release"`
	DesiredImage   string              `json:"desired_image"`
	DesiredImageID string              `json:"desired_image_id,omitempty"`
	Processes      []dashProcess       `json:"processes"`
	// Last is the newest deployment.
	Last         *dashDeployment           `json:"last_deployment,omitempty"`
	Paused       *engine.PauseStatus       `json:"paused,omitempty"`
	Maintenance  *engine.MaintenanceStatus `json:"maintenance,omitempty"`
	Idle         *engine.IdleStatus        `json:"idle,omitempty"`
	LastWake     *engine.WakeStatus        `json:"last_wake,omitempty"`
	Canary       *engine.CanaryStatus      `json:"canary,omitempty"`
	RuntimeError string                    `json:"runtime_error,omitempty"`
	GaveUp       []string                  `json:"gave_up,omitempty"`
	// Hosts are the app's Podman hosts, of several, with their states.
	Hosts []engine.HostStatus `json:"hosts,omitempty"`
	// Crashes are the crashes of serving containers within crashWindow.
	Crashes []dashCrash `json:"recent_crashes,omitempty"`
	// Attention is what needs a person, worst first.
	Attention []dashNote `json:"attention,omitempty"`
	// Level is the worst of Attention ("bad", "warn"), else "busy" while a
	// deployment runs, else "ok".
	Level string `json:"level"`
}

// dashProcess is one process type: how many containers it wants and how
// many it has in each state.
type dashProcess struct {
	Name        string      `json:"name"`
	Want        int         `json:"want"`
	States      []dashCount `json:"states"`
	Unreachable int         `json:"unreachable,omitempty"`
	// live counts the containers that run or are about to; crashed are
	// the ids of those in state crashed.
	live    int
	crashed []string
}

// dashCount is how many containers are in a state.
type dashCount struct {
	State engine.State `json:"state"`
	N     int          `json:"n"`
}

// dashNote is one thing that needs a person; At, when set, is when it
// happened (the page shows its age).
type dashNote struct {
	Level string    `json:"level"` // "bad" or "warn"
	Text  string    `json:"text"`
	At    time.Time `json:"at,omitzero"`
}

// dashDeployment is a deployment in a list: what it did and how it went,
// without the containers' timelines.
type dashDeployment struct {
	ID         int64         `json:"id"`
	Kind       string        `json:"kind"`
	Trigger    string        `json:"trigger,omitempty"`
	Process    string        `json:"process,omitempty"`
	Container  string        `json:"container,omitempty"`
	Status     engine.Status `json:"status"`
	Error      string        `json:"error,omitempty"`
	Image      string        `json:"image"`
	ImageID    string        `json:"image_id,omitempty"`
	Release    string        `json:"release"`
	StartedAt  time.Time     `json:"started_at"`
	EndedAt    time.Time     `json:"ended_at,omitzero"`
	SwitchedAt time.Time     `json:"switched_at,omitzero"`
	RetiredAt  time.Time     `json:"retired_at,omitzero"`
	// New and Old count the containers it started and those it replaced.
	New int `json:"new"`
	Old int `json:"old"`
	// Crashed counts its new containers that crashed; Failed those that
	// never became ready (crashed or discarded), each a failed attempt.
	Crashed int `json:"crashed,omitempty"`
	Failed  int `json:"failed,omitempty"`
}

// dashAppView is the page of one app. Missing names an app the config does
// not have (then nothing else is set but Now).
type dashAppView struct {
	Now         time.Time                `json:"now"`
	Missing     string                   `json:"missing,omitempty"`
	App         *dashAppSummary          `json:"app,omitempty"`
	Containers  []engine.ContainerStatus `json:"containers,omitempty"`
	Overrides   []engine.OverrideStatus  `json:"overrides,omitempty"`
	Deployments []dashDeployment         `json:"deployments,omitempty"`
	// Deployment is the deployment asked for (the newest by default), with
	// its containers' timelines; nil when the history does not have it.
	Deployment *engine.Deployment `json:"deployment,omitempty"`
}

func (d *Dashboard) overview() dashOverview {
	now := time.Now()
	names := d.src.manager.Apps()
	out := dashOverview{Now: now, Apps: make([]dashAppSummary, 0, len(names))}
	for _, name := range names {
		if st, ok := statusOf(d.src.manager, name); ok {
			out.Apps = append(out.Apps, withClusterNotes(summarize(st, d.src.crashes.recent(name, now), now)))
		}
	}
	return out
}

func (d *Dashboard) patch(names []string) dashPatch {
	now := time.Now()
	out := dashPatch{Now: now, Apps: []dashAppSummary{}}
	for _, name := range names {
		if st, ok := statusOf(d.src.manager, name); ok {
			out.Apps = append(out.Apps, withClusterNotes(summarize(st, d.src.crashes.recent(name, now), now)))
		} else {
			out.Removed = append(out.Removed, name)
		}
	}
	return out
}

func (d *Dashboard) appView(name string, depID int64) dashAppView {
	now := time.Now()
	st, ok := statusOf(d.src.manager, name)
	if !ok {
		return dashAppView{Now: now, Missing: name}
	}
	sum := withClusterNotes(summarize(st, d.src.crashes.recent(name, now), now))
	v := dashAppView{
		Now: now, App: &sum, Containers: st.Containers, Overrides: st.Overrides,
		Deployments: make([]dashDeployment, 0, len(st.Deployments)),
	}
	for i := range st.Deployments {
		dep := &st.Deployments[i]
		v.Deployments = append(v.Deployments, deploymentSummary(dep))
		if v.Deployment == nil && (depID == 0 || dep.ID == depID) {
			full := withoutOutput(*dep)
			v.Deployment = &full
		}
	}
	return v
}

// withoutOutput returns d without its containers' and hook's output: an
// app may print anything, secrets included, and the dashboard may be seen
// by more people than the host's command line.
func withoutOutput(d engine.Deployment) engine.Deployment {
	d.Containers = slices.Clone(d.Containers)
	for i := range d.Containers {
		d.Containers[i].Output = nil
	}
	if d.Hook != nil {
		h := *d.Hook
		h.Output = nil
		d.Hook = &h
	}
	return d
}

func deploymentSummary(d *engine.Deployment) dashDeployment {
	s := dashDeployment{
		ID: d.ID, Kind: d.Kind, Trigger: d.Trigger, Process: d.Process, Container: d.Container,
		Status: d.Status, Error: d.Error, Image: d.Image, ImageID: d.ImageID, Release: d.Release,
		StartedAt: d.StartedAt, EndedAt: d.EndedAt, SwitchedAt: d.SwitchedAt, RetiredAt: d.RetiredAt,
	}
	for _, c := range d.Containers {
		if c.Role != "new" {
			s.Old++
			continue
		}
		s.New++
		booted, crashed := false, false
		for _, t := range c.Timeline {
			switch t.State {
			case engine.StateBooted, engine.StateReady:
				booted = true
			case engine.StateCrashed:
				crashed = true
			}
		}
		if crashed {
			s.Crashed++
		}
		if crashed && !booted || !booted && (c.State == engine.StateStopping || c.State == engine.StateStopped) {
			s.Failed++
		}
	}
	return s
}

// crashWindow is how far back a crash counts as recent; two crashes of a
// process type within it are a crash loop.
const crashWindow = 10 * time.Minute

// summarize sums up an app for the overview and says what needs a person.
func summarize(st engine.AppStatus, crashes []dashCrash, now time.Time) dashAppSummary {
	s := dashAppSummary{
		Name: st.Name, Release: st.Release, DesiredRelease: st.Desired, DesiredImage: st.Image, DesiredImageID: st.ImageID,
		Paused: st.Paused, Maintenance: st.Maintenance, Idle: st.Idle, LastWake: st.LastWake, Canary: st.Canary, RuntimeError: st.RuntimeError,
		GaveUp: st.GaveUp, Crashes: crashes, Hosts: st.Hosts,
	}
	deploying := false
	if len(st.Deployments) > 0 {
		last := deploymentSummary(&st.Deployments[0])
		s.Last = &last
		deploying = !last.Status.Ended()
	}
	s.Processes = processesOf(st)
	var bad, warn []dashNote
	if st.AllUnhealthy != "" {
		bad = append(bad, dashNote{Text: st.AllUnhealthy})
	}
	if st.RuntimeError != "" {
		bad = append(bad, dashNote{Text: "Podman cannot be reached: " + st.RuntimeError})
	}
	for _, h := range st.Hosts {
		switch h.State {
		case engine.HostLost, engine.HostUnreachable:
			bad = append(bad, dashNote{Text: hostMessage(h, ""), At: h.Since})
		case engine.HostUnmanaged:
			warn = append(warn, dashNote{Text: hostMessage(h, ""), At: h.Since})
		}
	}
	for _, p := range st.GaveUp {
		bad = append(bad, dashNote{Text: fmt.Sprintf("gave up restarting %s containers after restart_attempts; a deploy, restart, scale or config change tries again", p)})
	}
	if l := s.Last; l != nil && l.Status.Ended() && l.Status != engine.StatusSuccess && l.Status != engine.StatusAborted {
		text := fmt.Sprintf("%s #%d of %s ended with %s", l.Kind, l.ID, l.Image, l.Status)
		if l.Error != "" {
			text += ": " + l.Error
		}
		bad = append(bad, dashNote{Text: text, At: l.EndedAt})
	}
	byProc := map[string][]dashCrash{}
	for _, c := range crashes {
		byProc[c.Process] = append(byProc[c.Process], c)
	}
	for _, p := range slices.Sorted(maps.Keys(byProc)) {
		cs := byProc[p]
		last := cs[len(cs)-1].At
		if len(cs) >= 2 {
			bad = append(bad, dashNote{Text: fmt.Sprintf("crash loop: %s containers crashed %d times in the last %d min", p, len(cs), int(crashWindow.Minutes())), At: last})
		} else {
			warn = append(warn, dashNote{Text: fmt.Sprintf("a %s container crashed and was replaced", p), At: last})
		}
	}
	for _, p := range s.Processes {
		for _, id := range p.crashed {
			if !slices.ContainsFunc(crashes, func(c dashCrash) bool { return c.Container == id }) {
				warn = append(warn, dashNote{Text: fmt.Sprintf("%s container %s crashed", p.Name, shortID(id))})
			}
		}
		if p.Unreachable > 0 {
			warn = append(warn, dashNote{Text: fmt.Sprintf("%d %s container(s) unhealthy, stopped answering their health check: out of the pool until they answer or are replaced", p.Unreachable, p.Name)})
		}
		asleep := st.Idle != nil && p.Name == engine.WebProcess
		if !deploying && !asleep && st.Release != nil && p.live < p.Want && !slices.Contains(st.GaveUp, p.Name) {
			warn = append(warn, dashNote{Text: fmt.Sprintf("%s: %d of %d containers running", p.Name, p.live, p.Want)})
		}
	}
	for _, n := range bad {
		n.Level = "bad"
		s.Attention = append(s.Attention, n)
	}
	for _, n := range warn {
		n.Level = "warn"
		s.Attention = append(s.Attention, n)
	}
	switch {
	case len(bad) > 0:
		s.Level = "bad"
	case len(warn) > 0:
		s.Level = "warn"
	case deploying:
		s.Level = "busy"
	default:
		s.Level = "ok"
	}
	return s
}

// withClusterNotes adds to s what needs a person of the cluster of
// proxies this one is part of: a shared storage that does not answer, and
// proxies whose podswitch config differs from this one's.
func withClusterNotes(s dashAppSummary) dashAppSummary {
	c := currentCluster()
	if c == nil {
		return s
	}
	st := c.status(s.Name)
	var notes []dashNote
	if st.Storage != "" {
		notes = append(notes, dashNote{Level: "bad", Text: "the shared storage does not answer (" + st.Storage + "): routing goes on as before, operations are refused"})
	}
	if len(st.Drift) > 0 {
		notes = append(notes, dashNote{Level: "warn", Text: "the podswitch config of proxies " + strings.Join(st.Drift, ", ") + " differs from this proxy's: give every proxy the same config"})
	}
	if len(notes) == 0 {
		return s
	}
	s.Attention = append(notes, s.Attention...)
	slices.SortStableFunc(s.Attention, func(a, b dashNote) int {
		return cmp.Compare(noteRank(a.Level), noteRank(b.Level))
	})
	switch {
	case s.Attention[0].Level == "bad":
		s.Level = "bad"
	case s.Level != "bad":
		s.Level = "warn"
	}
	return s
}

// noteRank orders notes worst first.
func noteRank(level string) int {
	if level == "bad" {
		return 0
	}
	return 1
}

// stateOrder is the order states are listed in.
var stateOrder = []engine.State{
	engine.StateReady, engine.StateUnhealthy, engine.StateBooted, engine.StateStarting, engine.StateDraining,
	engine.StateStopping, engine.StateCrashed, engine.StateStopped,
}

// processesOf counts the app's containers by process type and state: the
// process types the app wants, web first, then any other it still runs.
func processesOf(st engine.AppStatus) []dashProcess {
	byName := map[string]*dashProcess{}
	get := func(name string) *dashProcess {
		p := byName[name]
		if p == nil {
			p = &dashProcess{Name: name, Want: st.Processes[name]}
			byName[name] = p
		}
		return p
	}
	for name := range st.Processes {
		get(name)
	}
	counts := map[string]map[engine.State]int{}
	for _, c := range st.Containers {
		if c.Canary {
			continue // the canary's own line says how many serve
		}
		p := get(c.Process)
		if counts[c.Process] == nil {
			counts[c.Process] = map[engine.State]int{}
		}
		counts[c.Process][c.State]++
		switch c.State {
		case engine.StateStarting, engine.StateBooted, engine.StateReady, engine.StateUnhealthy:
			p.live++
		case engine.StateCrashed:
			p.crashed = append(p.crashed, c.ID)
		}
		if c.Unreachable {
			p.Unreachable++
		}
	}
	out := make([]dashProcess, 0, len(byName))
	for _, p := range byName {
		p.States = []dashCount{}
		for _, state := range stateOrder {
			if n := counts[p.Name][state]; n > 0 {
				p.States = append(p.States, dashCount{State: state, N: n})
			}
		}
		out = append(out, *p)
	}
	slices.SortFunc(out, func(a, b dashProcess) int {
		aw, bw := a.Name == engine.WebProcess, b.Name == engine.WebProcess
		if aw != bw {
			if aw {
				return -1
			}
			return 1
		}
		return cmp.Compare(a.Name, b.Name)
	})
	return out
}

// dashCrash is a crash of a serving container.
type dashCrash struct {
	Process   string    `json:"process"`
	Container string    `json:"container"`
	At        time.Time `json:"at"`
	Message   string    `json:"message,omitempty"`
}

// crashLog keeps the crashes of serving containers heard of lately, per
// app, for as long as the process runs (across config reloads): the
// engine's status forgets a crashed container once it is replaced.
type crashLog struct {
	mu   sync.Mutex
	apps map[string][]dashCrash
}

// crashKeep bounds the crashes kept per app.
const crashKeep = 50

var dashCrashes = newCrashLog()

func newCrashLog() *crashLog { return &crashLog{apps: map[string][]dashCrash{}} }

// record notes a crash, once per container, and forgets those older than
// crashWindow.
func (l *crashLog) record(app string, c dashCrash) {
	l.mu.Lock()
	defer l.mu.Unlock()
	cs := l.apps[app]
	if c.Container != "" && slices.ContainsFunc(cs, func(x dashCrash) bool { return x.Container == c.Container }) {
		return
	}
	cutoff := c.At.Add(-crashWindow)
	cs = slices.DeleteFunc(cs, func(x dashCrash) bool { return x.At.Before(cutoff) })
	cs = append(cs, c)
	if len(cs) > crashKeep {
		cs = cs[len(cs)-crashKeep:]
	}
	l.apps[app] = cs
}

// recent returns app's crashes within crashWindow before now, oldest
// first.
func (l *crashLog) recent(app string, now time.Time) []dashCrash {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []dashCrash
	for _, c := range l.apps[app] {
		if now.Sub(c.At) <= crashWindow {
			out = append(out, c)
		}
	}
	return out
}

// crashRecorder hears the podswitch.crashed events of its config's events
// app and keeps them in the crash log.
type crashRecorder struct {
	log     *crashLog
	changes *changeFeed
}

// Handle implements caddyevents.Handler.
func (cr crashRecorder) Handle(_ context.Context, e caddy.Event) error {
	app, _ := e.Data["app"].(string)
	if app == "" {
		return nil
	}
	c := dashCrash{At: e.Timestamp()}
	c.Process, _ = e.Data["process"].(string)
	c.Container, _ = e.Data["container"].(string)
	c.Message, _ = e.Data["message"].(string)
	cr.log.record(app, c)
	if cr.changes != nil {
		cr.changes.publish(app)
	}
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Dashboard)(nil)
	_ caddy.CleanerUpper          = (*Dashboard)(nil)
	_ caddyhttp.MiddlewareHandler = (*Dashboard)(nil)
	_ caddyevents.Handler         = crashRecorder{}
)
