package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/caddyserver/caddy/v2"

	"github.com/podswitch/podswitch/internal/engine"
)

func init() {
	caddy.RegisterModule(Admin{})
}

// Admin serves the podswitch API under /podswitch/ on Caddy's admin
// endpoint, with whatever origin and access rules that endpoint has (the
// remote, TLS one included):
//
//	GET  /podswitch/apps                          every app's status
//	GET  /podswitch/apps/{app}                    one app's status
//	GET  /podswitch/apps/{app}/deployments        its deployments, newest first
//	GET  /podswitch/apps/{app}/deployments/{id}   one deployment, with its timeline
//	GET  /podswitch/apps/{app}/logs               containers' output (?process, ?container, ?tail, ?follow)
//	POST /podswitch/apps/{app}/deploy             {"image": "..."}
//	POST /podswitch/apps/{app}/restart            optional {"process": "web"} or {"container": "id"}
//	POST /podswitch/apps/{app}/scale              {"web": 3, "worker": 1}
//	POST /podswitch/apps/{app}/rollback
//	POST /podswitch/apps/{app}/pause              optional {"timeout": "30s"}
//	POST /podswitch/apps/{app}/maintenance        optional {"message": "..."}
//	POST /podswitch/apps/{app}/resume
//
// Operations act on the engine directly, never through Caddy's config:
// nothing reloads, so no other app or site sees anything. They are kept in
// podswitch's state in Caddy's data directory. Deploy, restart and
// rollback answer 202 with the deployment they started; with ?wait=1
// they answer 200 once it has ended, with its final status in the body,
// whatever that status is: a client (like `caddy podswitch deploy --wait`)
// tells success from failure by the deployment's status, not by the HTTP
// status. Errors answer {"error": "..."} with a 4xx (bad input or a
// conflict; nothing is changed) or a 5xx.
type Admin struct{}

// CaddyModule returns the Caddy module information.
func (Admin) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.podswitch",
		New: func() caddy.Module { return new(Admin) },
	}
}

// Routes returns the admin routes.
func (Admin) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: "/podswitch/", Handler: newAdminAPI(currentManager)}}
}

// maxBodySize bounds the body of a POST to the podswitch API.
const maxBodySize = 64 << 10

// imageCheckTimeout bounds the check that Podman has an image.
const imageCheckTimeout = 30 * time.Second

// adminAPI serves the podswitch routes for the engine manager returns.
type adminAPI struct {
	manager func() *engine.Manager
	mux     *errMux
}

// appHandler answers a request to one app's route.
type appHandler func(w http.ResponseWriter, r *http.Request, m *engine.Manager, s *engine.Supervisor) error

// newAdminAPI routes each path of the API on its method; a GET route
// answers HEAD too.
func newAdminAPI(manager func() *engine.Manager) *adminAPI {
	a := &adminAPI{manager: manager, mux: newErrMux()}
	a.mux.handle("GET /podswitch/apps", a.list)
	a.mux.handle("GET /podswitch/hosts", a.hosts)
	a.mux.handle("GET /podswitch/cluster", a.cluster)
	a.handleApp("GET /podswitch/apps/{app}", a.status)
	a.handleApp("GET /podswitch/apps/{app}/deployments", a.history)
	a.handleApp("GET /podswitch/apps/{app}/deployments/{id}", a.deployment)
	a.handleApp("GET /podswitch/apps/{app}/logs", a.logs)
	a.handleApp("POST /podswitch/apps/{app}/deploy", a.deploy)
	a.handleApp("POST /podswitch/apps/{app}/restart", a.restart)
	a.handleApp("POST /podswitch/apps/{app}/scale", a.scale)
	a.handleApp("POST /podswitch/apps/{app}/rollback", a.rollback)
	a.handleApp("POST /podswitch/apps/{app}/pause", a.pause)
	a.handleApp("POST /podswitch/apps/{app}/maintenance", a.maintenance)
	a.handleApp("POST /podswitch/apps/{app}/resume", a.resume)
	a.handleApp("POST /podswitch/apps/{app}/rollout", a.rollout)
	a.handleApp("POST /podswitch/apps/{app}/promote", a.promote)
	a.handleApp("POST /podswitch/apps/{app}/abort", a.abort)
	return a
}

// handleApp routes pattern to h with the app its path names, after the
// method: 404 when podswitch is not configured or has no such app.
func (a *adminAPI) handleApp(pattern string, h appHandler) {
	a.mux.handle(pattern, func(w http.ResponseWriter, r *http.Request) error {
		m := a.manager()
		if m == nil {
			return apiErr(http.StatusNotFound, "podswitch is not configured")
		}
		name := r.PathValue("app")
		s := m.App(name)
		if s == nil {
			if c := currentCluster(); c != nil && m.Follows(name) {
				return a.followed(w, r, m, c, name)
			}
			return apiErr(http.StatusNotFound, "unknown app %q", name)
		}
		return h(w, r, m, s)
	})
}

// ServeHTTP implements caddy.AdminHandler. A path no route has is a 404, a
// method its route lacks a 405 with Allow, both answered {"error": "..."}
// like every other error, before anything else is looked at. A trailing
// slash is ignored: /podswitch/apps/ is /podswitch/apps.
func (a *adminAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) error {
	allow, matched, err := a.mux.serve(w, withoutTrailingSlash(r))
	switch {
	case matched:
		return err
	case allow != "":
		w.Header().Set("Allow", allow)
		return apiErr(http.StatusMethodNotAllowed, "method %s not allowed on %s; use %s", r.Method, r.URL.Path, useMethods(allow))
	}
	return apiErr(http.StatusNotFound, "no such podswitch endpoint: %s", r.URL.Path)
}

// withoutTrailingSlash returns r, or a shallow copy of it whose path has
// no trailing slash. An encoded one (%2F) is part of the last segment, and
// stays.
func withoutTrailingSlash(r *http.Request) *http.Request {
	if p := r.URL.EscapedPath(); len(p) <= 1 || !strings.HasSuffix(p, "/") {
		return r
	}
	u := *r.URL
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = strings.TrimSuffix(u.RawPath, "/")
	r2 := r.WithContext(r.Context())
	r2.URL = &u
	return r2
}

func (a *adminAPI) list(w http.ResponseWriter, r *http.Request) error {
	m := a.manager()
	if m == nil {
		return apiErr(http.StatusNotFound, "podswitch is not configured")
	}
	c := currentCluster()
	if c == nil {
		out := []engine.AppStatus{}
		for _, name := range m.Apps() {
			if s := m.App(name); s != nil {
				out = append(out, s.Status())
			}
		}
		return writeJSON(w, http.StatusOK, out)
	}
	out := []clusterAppStatus{}
	for _, name := range m.Apps() {
		st, err := appStatus(r.Context(), m, c, name)
		if err != nil {
			return err
		}
		out = append(out, st)
	}
	return writeJSON(w, http.StatusOK, out)
}

// cluster answers the proxies that share this one's storage, which apps
// each leads and whose config differs; 404 when podswitch runs alone.
func (a *adminAPI) cluster(w http.ResponseWriter, _ *http.Request) error {
	c := currentCluster()
	if c == nil || a.manager() == nil {
		return apiErr(http.StatusNotFound, "podswitch runs alone: set Caddy's storage option to a storage the proxies share to run several")
	}
	return writeJSON(w, http.StatusOK, c.status(""))
}

// hosts answers the state of every Podman host of several (an empty list
// with one podman).
func (a *adminAPI) hosts(w http.ResponseWriter, _ *http.Request) error {
	m := a.manager()
	if m == nil {
		return apiErr(http.StatusNotFound, "podswitch is not configured")
	}
	return writeJSON(w, http.StatusOK, m.Hosts())
}

func (a *adminAPI) status(w http.ResponseWriter, r *http.Request, m *engine.Manager, s *engine.Supervisor) error {
	if c := currentCluster(); c != nil {
		st, err := appStatus(r.Context(), m, c, s.Name())
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, st)
	}
	return writeJSON(w, http.StatusOK, s.Status())
}

func (a *adminAPI) history(w http.ResponseWriter, _ *http.Request, _ *engine.Manager, s *engine.Supervisor) error {
	return writeJSON(w, http.StatusOK, s.Status().Deployments)
}

func (a *adminAPI) deployment(w http.ResponseWriter, r *http.Request, _ *engine.Manager, s *engine.Supervisor) error {
	v := r.PathValue("id")
	id, err := strconv.ParseInt(v, 10, 64)
	if err != nil || id <= 0 {
		return apiErr(http.StatusBadRequest, "deployment id %q: want a positive whole number", v)
	}
	d, _, ok := s.Deployment(id)
	if !ok {
		return apiErr(http.StatusNotFound, "app %s has no deployment %d", s.Name(), id)
	}
	return writeJSON(w, http.StatusOK, d)
}

func (a *adminAPI) logs(w http.ResponseWriter, r *http.Request, m *engine.Manager, s *engine.Supervisor) error {
	return serveLogs(w, r, m.Runtime(), s)
}

func (a *adminAPI) resume(w http.ResponseWriter, r *http.Request, _ *engine.Manager, s *engine.Supervisor) error {
	if err := readBody(w, r, &struct{}{}, true); err != nil {
		return err
	}
	if err := s.Resume(); err != nil {
		return opErr(s.Name(), err)
	}
	return writeJSON(w, http.StatusOK, s.Status())
}

// opErr maps an error of an engine operation to an answer.
func opErr(app string, err error) error {
	var in *engine.InputError
	var rec *engine.RecordError
	var conflict *engine.ConflictError
	switch {
	case errors.As(err, &in):
		return apiErr(http.StatusBadRequest, "%v", err)
	case errors.As(err, &conflict):
		return apiErr(http.StatusConflict, "app %s: %v", app, err)
	case errors.As(err, &rec):
		// Nothing was changed: the answer says why, and the operation can
		// be sent again once the disk takes writes.
		return caddy.APIError{HTTPStatus: http.StatusServiceUnavailable, Err: err, Message: err.Error()}
	case errors.Is(err, engine.ErrStarting):
		return caddy.APIError{HTTPStatus: http.StatusServiceUnavailable, Err: err, Message: fmt.Sprintf("app %s: %v", app, err)}
	case errors.Is(err, engine.ErrNoRelease), errors.Is(err, engine.ErrBusy), errors.Is(err, engine.ErrNoRollback),
		errors.Is(err, engine.ErrNotPaused), errors.Is(err, engine.ErrRemoved), errors.Is(err, engine.ErrNoCanary):
		return apiErr(http.StatusConflict, "app %s: %v", app, err)
	}
	return apiErr(http.StatusBadRequest, "%v", err)
}

// wantWait reports whether the request asks to wait for the end of the
// deployment (?wait=1, ?wait=true, or ?wait).
func wantWait(r *http.Request) (bool, error) {
	q := r.URL.Query()
	if !q.Has("wait") {
		return false, nil
	}
	v := q.Get("wait")
	if v == "" {
		return true, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, apiErr(http.StatusBadRequest, "wait=%q: want wait=1 or wait=0", v)
	}
	return b, nil
}

func (a *adminAPI) deploy(w http.ResponseWriter, r *http.Request, m *engine.Manager, s *engine.Supervisor) error {
	wait, err := wantWait(r)
	if err != nil {
		return err
	}
	var body struct {
		Image string `json:"image"`
	}
	if err := readBody(w, r, &body, false); err != nil {
		return err
	}
	if err := checkImage(body.Image); err != nil {
		return err
	}
	imageID, err := resolveImage(r, m, s, body.Image)
	if err != nil {
		return err
	}
	res, err := s.Deploy(body.Image, imageID)
	if err != nil {
		return opErr(s.Name(), err)
	}
	return answerDeployment(w, r, s, res, wait)
}

// resolveImage refuses an image Podman does not have before anything
// changes, and resolves one it has to its ID, without the app's lock: the
// release runs that ID.
func resolveImage(r *http.Request, m *engine.Manager, s *engine.Supervisor, image string) (string, error) {
	ctx, cancel := context.WithTimeout(r.Context(), imageCheckTimeout)
	defer cancel()
	imageID, err := m.Runtime().ImageID(engine.WithHosts(ctx, s.Hosts()), image)
	if err != nil {
		switch {
		case errors.Is(err, engine.ErrImageNotFound):
			return "", apiErr(http.StatusBadRequest, "%s; nothing was changed", engine.MissingImageMessage(image, err))
		case errors.Is(err, engine.ErrUnavailable):
			return "", apiErr(http.StatusServiceUnavailable, "cannot check the image: %v; nothing was changed", err)
		}
		return "", apiErr(http.StatusBadGateway, "checking image %s: %v; nothing was changed", image, err)
	}
	return imageID, nil
}

// rollout starts a canary of an image: {"image": "...", "percent": 20,
// "header": "X-Beta" or "X-Beta=1", "cookie": "beta=1"}. A canary of the
// image that is the canary already changes its share only.
func (a *adminAPI) rollout(w http.ResponseWriter, r *http.Request, m *engine.Manager, s *engine.Supervisor) error {
	wait, err := wantWait(r)
	if err != nil {
		return err
	}
	var body struct {
		Image   string `json:"image"`
		Percent *int   `json:"percent"`
		Header  string `json:"header"`
		Cookie  string `json:"cookie"`
	}
	if err := readBody(w, r, &body, false); err != nil {
		return err
	}
	if err := checkImage(body.Image); err != nil {
		return err
	}
	if body.Percent == nil {
		return apiErr(http.StatusBadRequest, `percent is required: {"image": "...", "percent": 20}`)
	}
	rules := engine.CanaryRules{Percent: *body.Percent}
	rules.Header, rules.HeaderValue, _ = strings.Cut(body.Header, "=")
	if body.Cookie != "" {
		var ok bool
		if rules.Cookie, rules.CookieValue, ok = strings.Cut(body.Cookie, "="); !ok {
			return apiErr(http.StatusBadRequest, "cookie %q: want name=value", body.Cookie)
		}
	}
	if err := rules.Validate(); err != nil {
		return apiErr(http.StatusBadRequest, "%v", err)
	}
	imageID, err := resolveImage(r, m, s, body.Image)
	if err != nil {
		return err
	}
	res, err := s.Canary(body.Image, imageID, rules)
	if err != nil {
		return opErr(s.Name(), err)
	}
	return answerDeployment(w, r, s, res, wait)
}

// promote deploys the canary's release to all traffic, new-first.
func (a *adminAPI) promote(w http.ResponseWriter, r *http.Request, _ *engine.Manager, s *engine.Supervisor) error {
	wait, err := wantWait(r)
	if err != nil {
		return err
	}
	if err := readBody(w, r, &struct{}{}, true); err != nil {
		return err
	}
	res, err := s.Promote()
	if err != nil {
		return opErr(s.Name(), err)
	}
	return answerDeployment(w, r, s, res, wait)
}

// abort ends the canary: every request goes to the serving release.
func (a *adminAPI) abort(w http.ResponseWriter, r *http.Request, _ *engine.Manager, s *engine.Supervisor) error {
	if err := readBody(w, r, &struct{}{}, true); err != nil {
		return err
	}
	if err := s.Abort(); err != nil {
		return opErr(s.Name(), err)
	}
	return writeJSON(w, http.StatusOK, s.Status())
}

// deploymentAnswer is the body of a deploy, restart or rollback answer.
type deploymentAnswer struct {
	// Deployment is the deployment the request started, or the one on
	// its way; nil when there is none.
	Deployment *engine.Deployment `json:"deployment"`
	// Message says why nothing was started, when that is the case.
	Message string `json:"message,omitempty"`
}

// answerDeployment answers what an operation started: 202 and the
// deployment, 200 and its final state with wait, 200 and a message when
// nothing was started.
func answerDeployment(w http.ResponseWriter, r *http.Request, s *engine.Supervisor, res engine.DeployResult, wait bool) error {
	ans := deploymentAnswer{Deployment: res.Deployment, Message: res.Message}
	if ans.Deployment == nil {
		return writeJSON(w, http.StatusOK, ans)
	}
	code := http.StatusAccepted
	if wait && !ans.Deployment.Status.Ended() {
		if d, ok := waitDeployment(r, s, ans.Deployment.ID); ok {
			ans.Deployment, code = &d, http.StatusOK
		}
	} else if ans.Deployment.Status.Ended() {
		code = http.StatusOK
	}
	return writeJSON(w, code, ans)
}

func (a *adminAPI) restart(w http.ResponseWriter, r *http.Request, _ *engine.Manager, s *engine.Supervisor) error {
	wait, err := wantWait(r)
	if err != nil {
		return err
	}
	var body struct {
		Process   string `json:"process"`
		Container string `json:"container"`
	}
	if err := readBody(w, r, &body, true); err != nil {
		return err
	}
	if body.Process != "" && body.Container != "" {
		return apiErr(http.StatusBadRequest, "give process or container, not both")
	}
	if body.Process != "" && !engine.ValidName(body.Process) {
		return apiErr(http.StatusBadRequest, "process type %q: use lowercase letters, digits and dashes", body.Process)
	}
	if strings.TrimSpace(body.Container) != body.Container || (body.Container != "" && strings.ContainsFunc(body.Container, unicode.IsControl)) {
		return apiErr(http.StatusBadRequest, "container %q is not a container id or name", body.Container)
	}
	res, err := s.Restart(body.Process, body.Container)
	if err != nil {
		if body.Container != "" && !errors.Is(err, engine.ErrBusy) && !errors.Is(err, engine.ErrNoRelease) && !errors.Is(err, engine.ErrStarting) {
			return apiErr(http.StatusNotFound, "%v", err)
		}
		return opErr(s.Name(), err)
	}
	return answerDeployment(w, r, s, res, wait)
}

func (a *adminAPI) rollback(w http.ResponseWriter, r *http.Request, _ *engine.Manager, s *engine.Supervisor) error {
	wait, err := wantWait(r)
	if err != nil {
		return err
	}
	if err := readBody(w, r, &struct{}{}, true); err != nil {
		return err
	}
	res, err := s.Rollback()
	if err != nil {
		return opErr(s.Name(), err)
	}
	return answerDeployment(w, r, s, res, wait)
}

func (a *adminAPI) scale(w http.ResponseWriter, r *http.Request, _ *engine.Manager, s *engine.Supervisor) error {
	wait, err := wantWait(r)
	if err != nil {
		return err
	}
	var body map[string]*int
	if err := readBody(w, r, &body, false); err != nil {
		return err
	}
	if len(body) == 0 {
		return apiErr(http.StatusBadRequest, `give at least one process type and its count, e.g. {"web": 2}`)
	}
	counts := make(map[string]int, len(body))
	for name, n := range body {
		if n == nil {
			return apiErr(http.StatusBadRequest, "count of %q: want a whole number from 0 to %d", name, engine.MaxCount)
		}
		counts[name] = *n
	}
	if err := s.Scale(counts); err != nil {
		return opErr(s.Name(), err)
	}
	if wait {
		waitScaled(r.Context(), s)
		return writeJSON(w, http.StatusOK, s.Status())
	}
	return writeJSON(w, http.StatusAccepted, s.Status())
}

// waitScaled waits until the app runs its desired counts (every container
// ready, nothing booting or leaving) or a process type gave up, or ctx
// ends.
func waitScaled(ctx context.Context, s *engine.Supervisor) {
	for {
		if scaled(s.Status()) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// scaled reports whether st runs its desired counts. A canary's
// containers do not count, and an app asleep wants no web container.
func scaled(st engine.AppStatus) bool {
	ready := map[string]int{}
	for _, c := range st.Containers {
		if st.Canary != nil && c.Release == st.Canary.Release {
			continue
		}
		if c.State != engine.StateReady {
			return false
		}
		ready[c.Process]++
	}
	for p, n := range st.Processes {
		if p == engine.WebProcess && st.Idle != nil && !st.Idle.Waking {
			n = 0
		}
		if ready[p] != n && !slices.Contains(st.GaveUp, p) {
			return false
		}
	}
	return true
}

func (a *adminAPI) pause(w http.ResponseWriter, r *http.Request, _ *engine.Manager, s *engine.Supervisor) error {
	var body struct {
		Timeout string `json:"timeout"`
	}
	if err := readBody(w, r, &body, true); err != nil {
		return err
	}
	var timeout time.Duration
	if body.Timeout != "" {
		d, err := caddy.ParseDuration(body.Timeout)
		if err != nil || d < time.Second {
			return apiErr(http.StatusBadRequest, "timeout %q: want a duration from 1s to 1h, e.g. \"30s\"", body.Timeout)
		}
		timeout = d
	}
	if err := s.Pause(timeout); err != nil {
		return opErr(s.Name(), err)
	}
	return writeJSON(w, http.StatusOK, s.Status())
}

func (a *adminAPI) maintenance(w http.ResponseWriter, r *http.Request, _ *engine.Manager, s *engine.Supervisor) error {
	var body struct {
		Message string `json:"message"`
	}
	if err := readBody(w, r, &body, true); err != nil {
		return err
	}
	if err := s.Maintenance(body.Message); err != nil {
		return opErr(s.Name(), err)
	}
	return writeJSON(w, http.StatusOK, s.Status())
}

// waitDeployment waits until deployment id of s has ended, or the request
// is gone, and returns its final copy. The admin server's ReadTimeout (10s)
// does not cut the wait: net/http clears the read deadline once the body
// has been read (TestAdminWaitOutlivesReadTimeout).
func waitDeployment(r *http.Request, s *engine.Supervisor, id int64) (engine.Deployment, bool) {
	d, done, ok := s.Deployment(id)
	if !ok {
		return d, false
	}
	select {
	case <-done:
	case <-r.Context().Done():
		return d, false
	}
	d, _, ok = s.Deployment(id)
	return d, ok
}

// checkImage refuses what cannot be an image reference.
func checkImage(image string) error {
	switch {
	case strings.TrimSpace(image) == "":
		return apiErr(http.StatusBadRequest, `image is required: {"image": "registry/name:tag"}`)
	case len(image) > 1024:
		return apiErr(http.StatusBadRequest, "image is %d bytes long: at most 1024", len(image))
	case strings.ContainsFunc(image, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }):
		return apiErr(http.StatusBadRequest, "image %q: an image reference has no spaces nor control characters", image)
	}
	if err := checkImageRef(image); err != nil {
		return apiErr(http.StatusBadRequest, "%v", err)
	}
	return nil
}

// readBody decodes the JSON body of r into v, refusing unknown fields,
// trailing data and bodies over maxBodySize. An empty body is an error
// unless optional.
func readBody(w http.ResponseWriter, r *http.Request, v any, optional bool) error {
	r.Body = http.MaxBytesReader(w, r.Body, maxBodySize)
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			if optional {
				return nil
			}
			return apiErr(http.StatusBadRequest, "the request needs a JSON body")
		}
		return bodyErr(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		if err != nil {
			return bodyErr(err)
		}
		return apiErr(http.StatusBadRequest, "malformed JSON body: unexpected data after the JSON value")
	}
	return nil
}

func bodyErr(err error) error {
	var tooBig *http.MaxBytesError
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &tooBig):
		return apiErr(http.StatusRequestEntityTooLarge, "request body too large: at most %d bytes", maxBodySize)
	case errors.As(err, &syntax):
		return apiErr(http.StatusBadRequest, "malformed JSON body at byte %d: %v", syntax.Offset, err)
	case errors.As(err, &typ):
		if typ.Field != "" {
			return apiErr(http.StatusBadRequest, "field %q: want %s, not a JSON %s", typ.Field, typeWord(typ.Type.String()), typ.Value)
		}
		if k := typ.Type.Kind(); k == reflect.Int || (k == reflect.Pointer && typ.Type.Elem().Kind() == reflect.Int) {
			return apiErr(http.StatusBadRequest, "counts: want whole numbers, 0 or more, not a JSON %s", typ.Value)
		}
		return apiErr(http.StatusBadRequest, "want a JSON object, not a JSON %s", typ.Value)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return apiErr(http.StatusBadRequest, "malformed JSON body: it ends too soon")
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return apiErr(http.StatusBadRequest, "unknown field %s", strings.TrimPrefix(err.Error(), "json: unknown field "))
	}
	return apiErr(http.StatusBadRequest, "reading the JSON body: %v", err)
}

func typeWord(goType string) string {
	switch strings.TrimPrefix(goType, "*") {
	case "string":
		return "a string"
	case "int", "int64":
		return "a whole number"
	}
	return goType
}

// errorMessage returns the message of an {"error": "..."} body, or the body.
func errorMessage(b []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(b, &e) == nil && e.Error != "" {
		return e.Error
	}
	return strings.TrimSpace(string(b))
}

// apiErr returns an error that Caddy's admin server renders as
// {"error": "<message>"} with the given status.
func apiErr(code int, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	return caddy.APIError{HTTPStatus: code, Err: errors.New(msg), Message: msg}
}

func writeJSON(w http.ResponseWriter, code int, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return apiErr(http.StatusInternalServerError, "encoding the answer: %v", err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
	return nil
}

// Interface guards
var (
	_ caddy.AdminRouter  = Admin{}
	_ caddy.AdminHandler = (*adminAPI)(nil)
)
