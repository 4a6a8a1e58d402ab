package caddymodule

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
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
// endpoint, with whatever origin and access rules that endpoint has:
//
//	GET  /podswitch/apps                          every app's status
//	GET  /podswitch/apps/{app}                    one app's status
//	GET  /podswitch/apps/{app}/deployments        its deployments, newest first
//	GET  /podswitch/apps/{app}/deployments/{id}   one deployment
//	POST /podswitch/apps/{app}/deploy             {"image": "..."}
//	POST /podswitch/apps/{app}/restart            optional {"process": "web"} or {"container": "id"}
//	POST /podswitch/apps/{app}/scale              {"web": 3, "worker": 1}
//
// Deploy and scale change the running Caddy config (the desired state),
// through Caddy's own config API on the admin endpoint the request came in
// on, so that autosave keeps the change and a later reload of the same
// config changes nothing. Deploy and restart answer 202 with the
// deployment they started; with ?wait=1 they answer 200 once it has ended,
// with its final status in the body, whatever that status is: a client
// (like `caddy podswitch deploy --wait`) tells success from failure by the
// deployment's status, not by the HTTP status. Errors answer
// {"error": "..."} with a 4xx (bad input; nothing is changed) or a 5xx.
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
	api := &adminAPI{manager: currentManager}
	return []caddy.AdminRoute{{Pattern: "/podswitch/", Handler: caddy.AdminHandlerFunc(api.serve)}}
}

// maxBodySize bounds the body of a POST to the podswitch API.
const maxBodySize = 64 << 10

// configTimeout bounds one round trip through Caddy's config API (it
// includes a config load).
const configTimeout = 2 * time.Minute

// adminAPI serves the podswitch routes for the engine manager returns.
type adminAPI struct {
	manager func() *engine.Manager
}

// deploymentAnswer is the body of a deploy or restart answer.
type deploymentAnswer struct {
	// Deployment is the deployment the request started, or the latest one
	// of the image when nothing was started; nil when there is none.
	Deployment *engine.Deployment `json:"deployment"`
	// Message says why nothing was started, when that is the case.
	Message string `json:"message,omitempty"`
}

func (a *adminAPI) serve(w http.ResponseWriter, r *http.Request) error {
	path := strings.Trim(strings.TrimPrefix(r.URL.Path, "/podswitch/"), "/")
	parts := strings.Split(path, "/")
	if len(parts) == 0 || parts[0] != "apps" || len(parts) > 4 {
		return apiErr(http.StatusNotFound, "no such podswitch endpoint: %s", r.URL.Path)
	}

	// Find the route and check the method before anything else.
	method := http.MethodGet
	switch {
	case len(parts) <= 2:
	case len(parts) == 3 && parts[2] == "deployments":
	case len(parts) == 4 && parts[2] == "deployments":
	case len(parts) == 3 && (parts[2] == "deploy" || parts[2] == "restart" || parts[2] == "scale"):
		method = http.MethodPost
	default:
		return apiErr(http.StatusNotFound, "no such podswitch endpoint: %s", r.URL.Path)
	}
	if r.Method != method && !(method == http.MethodGet && r.Method == http.MethodHead) {
		w.Header().Set("Allow", method)
		return apiErr(http.StatusMethodNotAllowed, "method %s not allowed on %s; use %s", r.Method, r.URL.Path, method)
	}

	m := a.manager()
	if m == nil {
		return apiErr(http.StatusNotFound, "podswitch is not configured")
	}
	if len(parts) == 1 {
		out := []engine.AppStatus{}
		for _, name := range m.Apps() {
			if s := m.App(name); s != nil {
				out = append(out, s.Status())
			}
		}
		return writeJSON(w, http.StatusOK, out)
	}
	app := parts[1]
	s := m.App(app)
	if s == nil {
		return apiErr(http.StatusNotFound, "unknown app %q", app)
	}
	if len(parts) == 2 {
		return writeJSON(w, http.StatusOK, s.Status())
	}
	switch parts[2] {
	case "deployments":
		if len(parts) == 3 {
			return writeJSON(w, http.StatusOK, s.Status().Deployments)
		}
		id, err := strconv.ParseInt(parts[3], 10, 64)
		if err != nil || id <= 0 {
			return apiErr(http.StatusBadRequest, "deployment id %q: want a positive whole number", parts[3])
		}
		d, _, ok := s.Deployment(id)
		if !ok {
			return apiErr(http.StatusNotFound, "app %s has no deployment %d", app, id)
		}
		return writeJSON(w, http.StatusOK, d)
	case "deploy":
		return a.deploy(w, r, m, app)
	case "restart":
		return a.restart(w, r, s, app)
	case "scale":
		return a.scale(w, r, m, app)
	}
	return apiErr(http.StatusNotFound, "no such podswitch endpoint: %s", r.URL.Path)
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

func (a *adminAPI) deploy(w http.ResponseWriter, r *http.Request, m *engine.Manager, app string) error {
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
	image := body.Image
	s := m.App(app)
	if s == nil {
		return apiErr(http.StatusNotFound, "unknown app %q", app)
	}
	before := newestID(s.Status().Deployments)

	changed, err := updateAppConfig(r, app, func(cfg map[string]json.RawMessage) (bool, error) {
		var cur string
		if raw, ok := cfg["image"]; ok {
			_ = json.Unmarshal(raw, &cur)
		}
		if cur == image {
			return false, nil
		}
		cfg["image"] = jsonValue(image)
		return true, nil
	})
	if err != nil {
		return err
	}

	// The config load ran Supervisor.Update synchronously: the deployment,
	// if the change started one, is there now.
	if s = m.App(app); s == nil {
		return apiErr(http.StatusConflict, "app %q left the config while it was being deployed", app)
	}
	deps := s.Status().Deployments
	var ans deploymentAnswer
	code := http.StatusAccepted
	if changed {
		for i := range deps {
			if d := deps[i]; d.ID > before && d.Kind == engine.KindDeploy && d.Image == image {
				ans.Deployment = &d
				break
			}
		}
	}
	if ans.Deployment == nil {
		code = http.StatusOK
		for i := range deps {
			if deps[i].Image == image {
				d := deps[i]
				ans.Deployment = &d
				break
			}
		}
		if changed {
			ans.Message = fmt.Sprintf("the config of app %s now names image %s, whose release already serves or was the last one tried: no deployment started", app, image)
		} else {
			ans.Message = fmt.Sprintf("image %s is already the desired image of app %s: no deployment started", image, app)
		}
		if d := ans.Deployment; d != nil && d.Status.Ended() && d.Status != engine.StatusSuccess {
			ans.Message += fmt.Sprintf(" (its last deployment ended %s; deploying the same image again does not retry it)", d.Status)
		}
	}
	if wait && ans.Deployment != nil && !ans.Deployment.Status.Ended() {
		if d, ok := waitDeployment(w, r, s, ans.Deployment.ID); ok {
			ans.Deployment, code = &d, http.StatusOK
		}
	}
	return writeJSON(w, code, ans)
}

func (a *adminAPI) restart(w http.ResponseWriter, r *http.Request, s *engine.Supervisor, app string) error {
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
	d, err := s.Restart(body.Process, body.Container)
	switch {
	case errors.Is(err, engine.ErrNoRelease), errors.Is(err, engine.ErrBusy):
		return apiErr(http.StatusConflict, "app %s: %v", app, err)
	case err != nil && body.Container != "":
		return apiErr(http.StatusNotFound, "%v", err)
	case err != nil:
		return apiErr(http.StatusBadRequest, "%v", err)
	}
	id := d.ID // set once when d was made; the rest of d is the engine's
	cp, _, ok := s.Deployment(id)
	if !ok {
		return apiErr(http.StatusInternalServerError, "restart %d of app %s vanished from its history", id, app)
	}
	code := http.StatusAccepted
	if wait && !cp.Status.Ended() {
		if fin, ok := waitDeployment(w, r, s, id); ok {
			cp, code = fin, http.StatusOK
		}
	} else if cp.Status.Ended() {
		code = http.StatusOK
	}
	return writeJSON(w, code, deploymentAnswer{Deployment: &cp})
}

func (a *adminAPI) scale(w http.ResponseWriter, r *http.Request, m *engine.Manager, app string) error {
	var body map[string]*int
	if err := readBody(w, r, &body, false); err != nil {
		return err
	}
	if len(body) == 0 {
		return apiErr(http.StatusBadRequest, `give at least one process type and its count, e.g. {"web": 2}`)
	}
	names := make([]string, 0, len(body))
	for name, n := range body {
		if n == nil {
			return apiErr(http.StatusBadRequest, "count of %q: want a whole number, 0 or more", name)
		}
		if *n < 0 {
			return apiErr(http.StatusBadRequest, "count of %q is %d: want a whole number, 0 or more", name, *n)
		}
		names = append(names, name)
	}
	slices.Sort(names)

	changed, err := updateAppConfig(r, app, func(cfg map[string]json.RawMessage) (bool, error) {
		procs := map[string]map[string]json.RawMessage{}
		if raw, ok := cfg["processes"]; ok && !isNull(raw) {
			if err := json.Unmarshal(raw, &procs); err != nil {
				return false, apiErr(http.StatusInternalServerError, "reading the processes of app %s from the config: %v", app, err)
			}
		}
		changed := false
		for _, name := range names {
			n := *body[name]
			if name == engine.WebProcess {
				cur := 1
				if raw, ok := cfg["web"]; ok && !isNull(raw) {
					_ = json.Unmarshal(raw, &cur)
				}
				if cur != n {
					cfg["web"] = jsonValue(n)
					changed = true
				}
				continue
			}
			p, ok := procs[name]
			if !ok {
				known := []string{engine.WebProcess}
				for k := range procs {
					known = append(known, k)
				}
				slices.Sort(known[1:])
				return false, apiErr(http.StatusBadRequest, "app %s has no process type %q (it has: %s)", app, name, strings.Join(known, ", "))
			}
			if p == nil {
				p = map[string]json.RawMessage{}
				procs[name] = p
			}
			cur := 0
			if raw, ok := p["count"]; ok && !isNull(raw) {
				_ = json.Unmarshal(raw, &cur)
			}
			if cur != n {
				p["count"] = jsonValue(n)
				changed = true
			}
		}
		if changed && len(procs) > 0 {
			cfg["processes"] = jsonValue(procs)
		}
		return changed, nil
	})
	if err != nil {
		return err
	}
	s := m.App(app)
	if s == nil {
		return apiErr(http.StatusConflict, "app %q left the config while it was being scaled", app)
	}
	if !changed {
		return writeJSON(w, http.StatusOK, s.Status())
	}
	return writeJSON(w, http.StatusAccepted, s.Status())
}

// waitDeployment waits until deployment id of s has ended, or the request
// is gone, and returns its final copy. The admin server's ReadTimeout (10s)
// does not cut the wait: net/http clears the read deadline once the body
// has been read (TestAdminWaitOutlivesReadTimeout), and the replacement of
// the admin server by the config load lets requests in flight finish.
func waitDeployment(w http.ResponseWriter, r *http.Request, s *engine.Supervisor, id int64) (engine.Deployment, bool) {
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

func newestID(deps []engine.Deployment) int64 {
	var id int64
	for _, d := range deps {
		id = max(id, d.ID)
	}
	return id
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

func isNull(raw json.RawMessage) bool { return bytes.Equal(bytes.TrimSpace(raw), []byte("null")) }

func jsonValue(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// updateAppConfig changes the config of app in the running Caddy config
// through Caddy's config API, on the admin endpoint r came in on: it reads
// /config/apps/podswitch/apps/{app} with its Etag, lets modify change it
// and, if modify reports a change, writes it back with If-Match, so that a
// concurrent change is never lost. When the config changed in between, it
// starts over once. Writing it back loads the new config: Caddy provisions
// and starts it, and autosaves it.
func updateAppConfig(r *http.Request, app string, modify func(cfg map[string]json.RawMessage) (bool, error)) (bool, error) {
	cc, err := newConfigClient(r)
	if err != nil {
		return false, err
	}
	// Once the change is sent, see it through even if the client leaves.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), configTimeout)
	defer cancel()
	path := "/config/apps/podswitch/apps/" + app
	for attempt := 0; ; attempt++ {
		raw, etag, err := cc.get(ctx, path)
		if err != nil {
			return false, err
		}
		var cfg map[string]json.RawMessage
		if err := json.Unmarshal(raw, &cfg); err != nil {
			return false, apiErr(http.StatusInternalServerError, "reading the config of app %s: %v", app, err)
		}
		if cfg == nil {
			return false, apiErr(http.StatusNotFound, "app %q is not in the running config", app)
		}
		changed, err := modify(cfg)
		if err != nil || !changed {
			return false, err
		}
		code, msg, err := cc.patch(ctx, path, jsonValue(cfg), etag)
		switch {
		case err != nil:
			return false, err
		case code == http.StatusPreconditionFailed && attempt == 0:
			continue
		case code == http.StatusPreconditionFailed:
			return false, apiErr(http.StatusConflict, "the config of app %s keeps changing; try again", app)
		case code >= 300:
			return false, apiErr(code, "the config change was refused: %s", msg)
		}
		return true, nil
	}
}

// configClient talks to Caddy's config API on the admin endpoint a request
// came in on, with that request's Host and Origin, so that the endpoint's
// origin checks pass as they did for the request.
type configClient struct {
	client *http.Client
	host   string
	origin string
}

func newConfigClient(r *http.Request) (*configClient, error) {
	if r.TLS != nil {
		return nil, apiErr(http.StatusNotImplemented, "deploy and scale change the running config: use the local admin endpoint, not the remote one")
	}
	la, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if la == nil {
		return nil, apiErr(http.StatusInternalServerError, "cannot tell which admin endpoint the request came in on")
	}
	network, addr := la.Network(), la.String()
	switch network {
	case "tcp", "tcp4", "tcp6", "unix":
	default:
		return nil, apiErr(http.StatusNotImplemented, "admin endpoint on network %q: deploy and scale need a TCP or unix socket admin endpoint", network)
	}
	host := r.Host
	if host == "" {
		host = "127.0.0.1"
	}
	return &configClient{
		client: &http.Client{Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, network, addr)
			},
		}},
		host:   host,
		origin: r.Header.Get("Origin"),
	}, nil
}

func (c *configClient) do(ctx context.Context, method, path string, body []byte, etag string) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+c.host+path, rd)
	if err != nil {
		return nil, apiErr(http.StatusInternalServerError, "making the config request: %v", err)
	}
	req.Host = c.host
	if c.origin != "" {
		req.Header.Set("Origin", c.origin)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if etag != "" {
		req.Header.Set("If-Match", etag)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, apiErr(http.StatusBadGateway, "reaching Caddy's config API: %v", err)
	}
	return resp, nil
}

// get returns the config at path and its Etag.
func (c *configClient) get(ctx context.Context, path string) ([]byte, string, error) {
	resp, err := c.do(ctx, http.MethodGet, path, nil, "")
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, "", apiErr(http.StatusBadGateway, "reading the config: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, "", apiErr(http.StatusBadGateway, "reading the config: HTTP %d: %s", resp.StatusCode, errorMessage(b))
	}
	return b, resp.Header.Get("Etag"), nil
}

// patch replaces the config at path if it still has etag, and returns the
// status and error message of Caddy's answer.
func (c *configClient) patch(ctx context.Context, path string, body []byte, etag string) (int, string, error) {
	resp, err := c.do(ctx, http.MethodPatch, path, body, etag)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, errorMessage(b), nil
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
var _ caddy.AdminRouter = Admin{}
