package caddymodule

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/spf13/cobra"
	"go.uber.org/zap/zaptest"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	"github.com/podswitch/podswitch/internal/engine"
)

// apiFakeRuntime is a tiny in-memory engine.Runtime that is also the
// Prober: a container is ready at once unless its image never listens.
type apiFakeRuntime struct {
	mu       sync.Mutex
	n        int
	cs       map[string]*engine.ContainerInfo
	noListen map[string]bool
	// missing are the images ImageExists says the service does not have.
	missing map[string]bool
	// logOpts are the options of the calls to Logs, in order.
	logOpts []engine.LogOptions
}

func newAPIFakeRuntime() *apiFakeRuntime {
	return &apiFakeRuntime{cs: map[string]*engine.ContainerInfo{}, noListen: map[string]bool{}, missing: map[string]bool{}}
}

func (f *apiFakeRuntime) Run(ctx context.Context, spec engine.ContainerSpec) (engine.ContainerInfo, error) {
	if err := ctx.Err(); err != nil {
		return engine.ContainerInfo{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	info := engine.ContainerInfo{
		ID: fmt.Sprintf("%x", sha256.Sum256([]byte{byte(f.n), byte(f.n >> 8)})), Name: spec.Name, Image: spec.Image,
		Labels: maps.Clone(spec.Labels), Running: true, IP: fmt.Sprintf("10.9.%d.%d", f.n/200, f.n%200+1),
	}
	f.cs[info.ID] = &info
	return info, nil
}

func (f *apiFakeRuntime) Inspect(_ context.Context, id string) (engine.ContainerInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.cs[id]
	if c == nil {
		return engine.ContainerInfo{}, engine.ErrNotFound
	}
	cp := *c
	cp.Labels = maps.Clone(c.Labels)
	return cp, nil
}

func (f *apiFakeRuntime) Stop(_ context.Context, id string, _ time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c := f.cs[id]; c != nil {
		c.Running = false
	}
	return nil
}

func (f *apiFakeRuntime) Kill(_ context.Context, id, _ string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c := f.cs[id]; c != nil {
		c.Running = false
	}
	return nil
}

func (f *apiFakeRuntime) Remove(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.cs, id)
	return nil
}

func (f *apiFakeRuntime) List(_ context.Context, app string) ([]engine.ContainerInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []engine.ContainerInfo
	for _, c := range f.cs {
		if app == "" || c.Labels[engine.LabelApp] == app {
			cp := *c
			cp.Labels = maps.Clone(c.Labels)
			out = append(out, cp)
		}
	}
	return out, nil
}

func (f *apiFakeRuntime) Wait(ctx context.Context, id string) (int, error) {
	for {
		f.mu.Lock()
		c := f.cs[id]
		running := c != nil && c.Running
		f.mu.Unlock()
		if !running {
			return 0, nil
		}
		select {
		case <-ctx.Done():
			return -1, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func (f *apiFakeRuntime) Events(ctx context.Context, _ func(engine.ContainerEvent)) error {
	<-ctx.Done()
	return ctx.Err()
}

// Logs gives two lines per container: "line 1 of <name>", "line 2 of
// <name>".
func (f *apiFakeRuntime) Logs(_ context.Context, id string, opts engine.LogOptions, fn func(engine.LogLine)) error {
	f.mu.Lock()
	c := f.cs[id]
	f.logOpts = append(f.logOpts, opts)
	f.mu.Unlock()
	if c == nil {
		return engine.ErrNotFound
	}
	for i := 1; i <= 2; i++ {
		fn(engine.LogLine{Stream: "stdout", Text: fmt.Sprintf("line %d of %s", i, c.Name)})
	}
	return nil
}

func (f *apiFakeRuntime) ImageExists(_ context.Context, image string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.missing[image] {
		return fmt.Errorf("%s: %w", image, engine.ErrImageNotFound)
	}
	return nil
}

// ImageID names no ID (the releases run by reference) but for a missing
// image.
func (f *apiFakeRuntime) ImageID(ctx context.Context, image string) (string, error) {
	return "", f.ImageExists(ctx, image)
}

func (f *apiFakeRuntime) Probe(_ context.Context, addr string) error {
	host, _, _ := net.SplitHostPort(addr)
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.cs {
		if c.IP == host && c.Running && !f.noListen[c.Image] {
			return nil
		}
	}
	return errors.New("connection refused")
}

// setNoListen makes containers of image never accept a connection.
func (f *apiFakeRuntime) setNoListen(image string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.noListen[image] = true
}

// setMissing makes ImageExists refuse image.
func (f *apiFakeRuntime) setMissing(image string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.missing[image] = true
}

const apiSecret = "hunter2-never-shown"

// apiBlogConfig is the config of the test app: two web containers, one
// worker, a secret in env.
var apiBlogConfig = `{"image":"localhost/blog:v1","web":2,` +
	`"processes":{"worker":{"count":1,"command":["/app/worker","--queue","default"]}},` +
	`"env":{"SECRET":"` + apiSecret + `"},` +
	`"boot_timeout":"400ms","stop_timeout":"1s","drain_timeout":"1s","worker_ready_time":"20ms"}`

// blogSpec is the engine's spec of apiBlogConfig.
func blogSpec(t *testing.T) engine.AppSpec {
	t.Helper()
	var cfg AppConfig
	if err := json.Unmarshal([]byte(apiBlogConfig), &cfg); err != nil {
		t.Fatal(err)
	}
	spec, err := cfg.Spec("blog")
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

// newTestManager returns an engine running app blog (apiBlogConfig) on a
// fake runtime; it is closed when the test ends.
func newTestManager(t *testing.T) (*engine.Manager, *apiFakeRuntime) {
	t.Helper()
	rt := newAPIFakeRuntime()
	m := engine.NewManager(engine.Deps{Runtime: rt, Prober: rt, Logger: zaptest.NewLogger(t)})
	t.Cleanup(m.Close)
	m.Apply([]engine.AppSpec{blogSpec(t)})
	return m, rt
}

// waitEnded waits until app blog of m has an ended deployment of
// image that started after the deployment after (0: any) and returns it.
func waitEnded(t *testing.T, m *engine.Manager, image string, after int64) engine.Deployment {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := m.App("blog").Status()
		for _, d := range st.Deployments {
			if d.Image == image && d.ID > after && d.Status.Ended() {
				return d
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no ended deployment of %s after %d: %+v", image, after, st.Deployments)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitSuccess waits for the end of a deployment of image and fails the
// test unless it succeeded.
func waitSuccess(t *testing.T, m *engine.Manager, image string) engine.Deployment {
	t.Helper()
	d := waitEnded(t, m, image, 0)
	if d.Status != engine.StatusSuccess {
		t.Fatalf("deployment of %s: %s %s", image, d.Status, d.Error)
	}
	return d
}

// waitSettled waits until app blog of m runs exactly the containers of
// counts, all ready.
func waitSettled(t *testing.T, m *engine.Manager, counts map[string]int) engine.AppStatus {
	t.Helper()
	counts = maps.Clone(counts)
	maps.DeleteFunc(counts, func(_ string, n int) bool { return n == 0 })
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := m.App("blog").Status()
		got := map[string]int{}
		busy := false
		for _, c := range st.Containers {
			if c.State == engine.StateReady {
				got[c.Process]++
			} else {
				busy = true
			}
		}
		if !busy && maps.Equal(got, counts) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("app did not settle at %v: %+v", counts, st.Containers)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// apiEnv is the podswitch admin API served as Caddy's admin endpoint would
// serve it, with an engine on a fake runtime.
type apiEnv struct {
	t  *testing.T
	rt *apiFakeRuntime
	m  *engine.Manager
	// base is the URL of the endpoint; client dials it.
	base   string
	addr   string
	client *http.Client
}

// caddyAdminErrorBody renders err as Caddy's admin server does
// (adminHandler.handleError).
func caddyAdminErrorBody(w http.ResponseWriter, err error) {
	apiErr, ok := err.(caddy.APIError)
	if !ok {
		apiErr = caddy.APIError{HTTPStatus: http.StatusInternalServerError, Err: err}
	}
	if apiErr.HTTPStatus == 0 {
		apiErr.HTTPStatus = http.StatusInternalServerError
	}
	if apiErr.Message == "" && apiErr.Err != nil {
		apiErr.Message = apiErr.Err.Error()
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(apiErr.HTTPStatus)
	_ = json.NewEncoder(w).Encode(apiErr)
}

// apiMux serves the podswitch routes of m under /podswitch/.
func apiMux(m *engine.Manager) *http.ServeMux {
	api := newAdminAPI(func() *engine.Manager { return m })
	mux := http.NewServeMux()
	mux.HandleFunc("/podswitch/", func(w http.ResponseWriter, r *http.Request) {
		if err := api.ServeHTTP(w, r); err != nil {
			caddyAdminErrorBody(w, err)
		}
	})
	return mux
}

func newAPIEnv(t *testing.T, network string) *apiEnv {
	t.Helper()
	m, rt := newTestManager(t)
	e := &apiEnv{t: t, rt: rt, m: m}
	var ln net.Listener
	var err error
	switch network {
	case "unix":
		dir, err := os.MkdirTemp("", "psapi")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		sock := filepath.Join(dir, "admin.sock")
		ln, err = net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		e.base = "http://127.0.0.1"
		e.addr = "unix/" + sock
		e.client = &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}}}
	default:
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		e.base = "http://" + ln.Addr().String()
		e.addr = ln.Addr().String()
		e.client = &http.Client{}
	}
	// The same timeouts as Caddy's admin server.
	srv := &http.Server{Handler: apiMux(m), ReadTimeout: 10 * time.Second, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	e.waitSuccess("localhost/blog:v1")
	return e
}

// do makes one request to the API, with an Origin header as a browser or
// `caddy` would send, and returns the status and body.
func (e *apiEnv) do(method, path, body string) (int, []byte) {
	e.t.Helper()
	resp, b := e.request(method, path, body)
	return resp.StatusCode, b
}

// request is do with the whole answer.
func (e *apiEnv) request(method, path, body string) (*http.Response, []byte) {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.base+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Origin", "http://origin.test")
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if bytes.Contains(b, []byte(apiSecret)) {
		e.t.Errorf("%s %s: an env value shows in the answer: %s", method, path, b)
	}
	return resp, b
}

func (e *apiEnv) status() engine.AppStatus {
	return e.m.App("blog").Status()
}

func (e *apiEnv) waitSuccess(image string) engine.Deployment {
	e.t.Helper()
	return waitSuccess(e.t, e.m, image)
}

// waitSettled waits until the app runs exactly the containers of counts,
// all ready.
func (e *apiEnv) waitSettled(counts map[string]int) engine.AppStatus {
	e.t.Helper()
	return waitSettled(e.t, e.m, counts)
}

func decodeAnswer(t *testing.T, b []byte) deploymentAnswer {
	t.Helper()
	var ans deploymentAnswer
	if err := json.Unmarshal(b, &ans); err != nil {
		t.Fatalf("answer %s: %v", b, err)
	}
	return ans
}

func decodeStatus(t *testing.T, b []byte) engine.AppStatus {
	t.Helper()
	var st engine.AppStatus
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("answer %s: %v", b, err)
	}
	return st
}

// operationState is what operations change besides containers and
// deployments: overrides, pause and maintenance.
func operationState(t *testing.T, st engine.AppStatus) string {
	t.Helper()
	b, err := json.Marshal(struct {
		Overrides   []engine.OverrideStatus
		Paused      *engine.PauseStatus
		Maintenance *engine.MaintenanceStatus
	}{st.Overrides, st.Paused, st.Maintenance})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Every bad request answers a 4xx with {"error": "..."} and changes
// nothing: not the overrides, the pause or maintenance state, the
// deployments nor the containers.
func TestAdminBadRequests(t *testing.T) {
	e := newAPIEnv(t, "tcp")
	st0 := e.waitSettled(map[string]int{"web": 2, "worker": 1})
	ops0 := operationState(t, st0)
	e.rt.setMissing("localhost/blog:missing")
	huge := `{"image": "` + strings.Repeat("a", maxBodySize) + `"}`
	padded := `{"image": "localhost/blog:v3"}` + strings.Repeat(" ", maxBodySize)

	cases := []struct {
		name, method, path, body string
		code                     int
		msg                      string
	}{
		{"unknown endpoint", "GET", "/podswitch/nope", "", 404, "no such podswitch endpoint"},
		{"unknown app endpoint", "GET", "/podswitch/apps/blog/nope", "", 404, "no such podswitch endpoint"},
		{"too deep", "GET", "/podswitch/apps/blog/deployments/1/x", "", 404, "no such podswitch endpoint"},
		{"unknown app", "GET", "/podswitch/apps/nope", "", 404, `unknown app "nope"`},
		{"deploy unknown app", "POST", "/podswitch/apps/nope/deploy", `{"image": "x:v2"}`, 404, `unknown app "nope"`},
		{"scale unknown app", "POST", "/podswitch/apps/nope/scale", `{"web": 1}`, 404, `unknown app "nope"`},
		{"restart unknown app", "POST", "/podswitch/apps/nope/restart", ``, 404, `unknown app "nope"`},
		{"history unknown app", "GET", "/podswitch/apps/nope/deployments", "", 404, `unknown app "nope"`},
		{"deployment id not a number", "GET", "/podswitch/apps/blog/deployments/abc", "", 400, "deployment id"},
		{"deployment id negative", "GET", "/podswitch/apps/blog/deployments/-1", "", 400, "deployment id"},
		{"unknown deployment", "GET", "/podswitch/apps/blog/deployments/999", "", 404, "no deployment 999"},
		{"GET deploy", "GET", "/podswitch/apps/blog/deploy", "", 405, "method GET not allowed"},
		{"PUT scale", "PUT", "/podswitch/apps/blog/scale", `{"web": 1}`, 405, "method PUT not allowed"},
		{"DELETE app", "DELETE", "/podswitch/apps/blog", "", 405, "method DELETE not allowed"},
		{"POST apps", "POST", "/podswitch/apps", `{}`, 405, "method POST not allowed"},
		{"POST deployments", "POST", "/podswitch/apps/blog/deployments", `{}`, 405, "method POST not allowed"},
		{"deploy no body", "POST", "/podswitch/apps/blog/deploy", "", 400, "needs a JSON body"},
		{"deploy malformed", "POST", "/podswitch/apps/blog/deploy", `{"image": `, 400, "malformed JSON"},
		{"deploy not JSON", "POST", "/podswitch/apps/blog/deploy", `image=x`, 400, "malformed JSON"},
		{"deploy array", "POST", "/podswitch/apps/blog/deploy", `["x"]`, 400, "want a JSON object"},
		{"deploy image number", "POST", "/podswitch/apps/blog/deploy", `{"image": 5}`, 400, `field "image": want a string`},
		{"deploy unknown field", "POST", "/podswitch/apps/blog/deploy", `{"image": "x:v2", "env": {"A": "b"}}`, 400, `unknown field "env"`},
		{"deploy empty object", "POST", "/podswitch/apps/blog/deploy", `{}`, 400, "image is required"},
		{"deploy null", "POST", "/podswitch/apps/blog/deploy", `null`, 400, "image is required"},
		{"deploy empty image", "POST", "/podswitch/apps/blog/deploy", `{"image": ""}`, 400, "image is required"},
		{"deploy blank image", "POST", "/podswitch/apps/blog/deploy", `{"image": "  "}`, 400, "image is required"},
		{"deploy image with space", "POST", "/podswitch/apps/blog/deploy", `{"image": "blog v2"}`, 400, "no spaces"},
		{"deploy image with newline", "POST", "/podswitch/apps/blog/deploy", `{"image": "blog\nv2"}`, 400, "no spaces"},
		{"deploy two objects", "POST", "/podswitch/apps/blog/deploy", `{"image": "x:v2"} {"image": "x:v3"}`, 400, "unexpected data after"},
		{"deploy trailing garbage", "POST", "/podswitch/apps/blog/deploy", `{"image": "x:v2"}]`, 400, "malformed JSON"},
		{"deploy body too large", "POST", "/podswitch/apps/blog/deploy", huge, 413, "too large"},
		{"deploy padded too large", "POST", "/podswitch/apps/blog/deploy", padded, 413, "too large"},
		{"deploy bad wait", "POST", "/podswitch/apps/blog/deploy?wait=maybe", `{"image": "x:v2"}`, 400, "wait="},
		{"scale no body", "POST", "/podswitch/apps/blog/scale", "", 400, "needs a JSON body"},
		{"scale empty", "POST", "/podswitch/apps/blog/scale", `{}`, 400, "at least one process type"},
		{"scale null", "POST", "/podswitch/apps/blog/scale", `null`, 400, "at least one process type"},
		{"scale negative", "POST", "/podswitch/apps/blog/scale", `{"web": -1}`, 400, "count of web is -1: want a whole number from 0 to 1000"},
		{"scale string count", "POST", "/podswitch/apps/blog/scale", `{"web": "3"}`, 400, "want whole numbers"},
		{"scale fraction", "POST", "/podswitch/apps/blog/scale", `{"web": 1.5}`, 400, "want whole numbers"},
		{"scale null count", "POST", "/podswitch/apps/blog/scale", `{"web": null}`, 400, "want a whole number"},
		{"scale array", "POST", "/podswitch/apps/blog/scale", `[3]`, 400, "want a JSON object"},
		{"scale unknown type", "POST", "/podswitch/apps/blog/scale", `{"clock": 1}`, 400, `no process type "clock"`},
		{"scale unknown type with a good one", "POST", "/podswitch/apps/blog/scale", `{"web": 5, "clock": 1}`, 400, `no process type "clock"`},
		{"scale negative with a good one", "POST", "/podswitch/apps/blog/scale", `{"web": 5, "worker": -2}`, 400, "count of worker is -2: want a whole number from 0 to 1000"},
		{"scale too large", "POST", "/podswitch/apps/blog/scale", `{"web": 3` + strings.Repeat(" ", maxBodySize) + `}`, 413, "too large"},
		{"restart unknown field", "POST", "/podswitch/apps/blog/restart", `{"proc": "web"}`, 400, `unknown field "proc"`},
		{"restart process number", "POST", "/podswitch/apps/blog/restart", `{"process": 1}`, 400, `field "process": want a string`},
		{"restart both", "POST", "/podswitch/apps/blog/restart", `{"process": "web", "container": "abc"}`, 400, "not both"},
		{"restart unknown process", "POST", "/podswitch/apps/blog/restart", `{"process": "clock"}`, 400, `no process type "clock"`},
		{"restart bad process name", "POST", "/podswitch/apps/blog/restart", `{"process": "Web!"}`, 400, "lowercase"},
		{"restart unknown container", "POST", "/podswitch/apps/blog/restart", `{"container": "nope"}`, 404, `no running container "nope"`},
		{"restart malformed", "POST", "/podswitch/apps/blog/restart", `{`, 400, "malformed JSON"},
		{"restart bad wait", "POST", "/podswitch/apps/blog/restart?wait=2", ``, 400, "wait="},
		{"deploy missing image", "POST", "/podswitch/apps/blog/deploy", `{"image": "localhost/blog:missing"}`, 400, "image localhost/blog:missing is not on this host: build it or pull it (podman pull localhost/blog:missing), then reload or deploy (localhost/blog:missing: image not found); nothing was changed"},
		{"deploy missing image, waiting", "POST", "/podswitch/apps/blog/deploy?wait=1", `{"image": "localhost/blog:missing"}`, 400, "image not found"},
		{"deploy image that does not parse", "POST", "/podswitch/apps/blog/deploy", `{"image": "localhost/Blog:v2"}`, 400, `image "localhost/Blog:v2" is not a valid image reference`},
		{"deploy image with two tags", "POST", "/podswitch/apps/blog/deploy", `{"image": "blog:v2:v3"}`, 400, "not a valid image reference"},
		{"scale over the limit", "POST", "/podswitch/apps/blog/scale", `{"web": 1001}`, 400, "from 0 to 1000"},
		{"scale over the limit with wait", "POST", "/podswitch/apps/blog/scale?wait=1", `{"worker": 100000}`, 400, "from 0 to 1000"},
		{"rollback without an earlier release", "POST", "/podswitch/apps/blog/rollback", ``, 409, "no earlier release to roll back to"},
		{"rollback unknown field", "POST", "/podswitch/apps/blog/rollback", `{"release": "abc"}`, 400, `unknown field "release"`},
		{"GET rollback", "GET", "/podswitch/apps/blog/rollback", "", 405, "method GET not allowed"},
		{"resume with nothing to resume", "POST", "/podswitch/apps/blog/resume", ``, 409, "neither paused nor in maintenance"},
		{"pause bad timeout", "POST", "/podswitch/apps/blog/pause", `{"timeout": "soon"}`, 400, `timeout "soon"`},
		{"pause negative timeout", "POST", "/podswitch/apps/blog/pause", `{"timeout": "-5s"}`, 400, `timeout "-5s"`},
		{"pause timeout over an hour", "POST", "/podswitch/apps/blog/pause", `{"timeout": "2h"}`, 400, "from 1s to 1h"},
		{"pause timeout under a second", "POST", "/podswitch/apps/blog/pause", `{"timeout": "500ms"}`, 400, "from 1s to 1h"},
		{"pause unknown field", "POST", "/podswitch/apps/blog/pause", `{"for": "5s"}`, 400, `unknown field "for"`},
		{"maintenance message number", "POST", "/podswitch/apps/blog/maintenance", `{"message": 5}`, 400, `field "message": want a string`},
		{"maintenance message too long", "POST", "/podswitch/apps/blog/maintenance", `{"message": "` + strings.Repeat("x", 5000) + `"}`, 400, "at most 4096"},
		{"rollback unknown app", "POST", "/podswitch/apps/nope/rollback", ``, 404, `unknown app "nope"`},
		{"pause unknown app", "POST", "/podswitch/apps/nope/pause", ``, 404, `unknown app "nope"`},
		{"maintenance unknown app", "POST", "/podswitch/apps/nope/maintenance", `{"message": "x"}`, 404, `unknown app "nope"`},
		{"resume unknown app", "POST", "/podswitch/apps/nope/resume", ``, 404, `unknown app "nope"`},
		{"logs unknown app", "GET", "/podswitch/apps/nope/logs", "", 404, `unknown app "nope"`},
		{"logs unknown process", "GET", "/podswitch/apps/blog/logs?process=clock", "", 404, `no container of process type "clock"`},
		{"logs unknown container", "GET", "/podswitch/apps/blog/logs?container=nope", "", 404, `no container "nope"`},
		{"logs bad tail", "GET", "/podswitch/apps/blog/logs?tail=many", "", 400, `tail="many"`},
		{"logs tail too large", "GET", "/podswitch/apps/blog/logs?tail=10001", "", 400, `tail="10001"`},
		{"logs bad follow", "GET", "/podswitch/apps/blog/logs?follow=maybe", "", 400, `follow="maybe"`},
		{"POST logs", "POST", "/podswitch/apps/blog/logs", `{}`, 405, "method POST not allowed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, body := e.do(tc.method, tc.path, tc.body)
			if code != tc.code {
				t.Errorf("status %d, want %d: %s", code, tc.code, body)
			}
			var ans map[string]any
			if err := json.Unmarshal(body, &ans); err != nil {
				t.Fatalf("answer is not JSON: %v: %s", err, body)
			}
			msg, _ := ans["error"].(string)
			if msg == "" || len(ans) != 1 {
				t.Errorf(`answer %s, want {"error": "..."}`, body)
			}
			if !strings.Contains(msg, tc.msg) {
				t.Errorf("error %q does not say %q", msg, tc.msg)
			}
			st := e.status()
			if ops := operationState(t, st); ops != ops0 {
				t.Errorf("overrides, pause or maintenance changed: %s, want %s", ops, ops0)
			}
			if len(st.Deployments) != len(st0.Deployments) {
				t.Errorf("%d deployments, want %d: %+v", len(st.Deployments), len(st0.Deployments), st.Deployments)
			}
			if !maps.Equal(st.Processes, st0.Processes) || st.Desired != st0.Desired || st.Image != st0.Image {
				t.Errorf("desired state changed: %v %s %s", st.Processes, st.Desired, st.Image)
			}
			if !slices.Equal(apiContainerIDs(st), apiContainerIDs(st0)) {
				t.Errorf("containers changed: %v, want %v", apiContainerIDs(st), apiContainerIDs(st0))
			}
			if g := e.m.Pool("blog").Gate(); g != nil {
				t.Errorf("the app's gate is set: %+v", g)
			}
		})
	}
}

func apiContainerIDs(st engine.AppStatus) []string {
	var ids []string
	for _, c := range st.Containers {
		ids = append(ids, c.ID)
	}
	slices.Sort(ids)
	return ids
}

// The read routes answer the status, the history and one deployment.
func TestAdminReadRoutes(t *testing.T) {
	e := newAPIEnv(t, "tcp")
	code, body := e.do("GET", "/podswitch/apps", "")
	var apps []engine.AppStatus
	if code != 200 || json.Unmarshal(body, &apps) != nil || len(apps) != 1 || apps[0].Name != "blog" {
		t.Fatalf("GET /podswitch/apps: %d %s", code, body)
	}
	code, body = e.do("GET", "/podswitch/apps/blog/deployments", "")
	var deps []engine.Deployment
	if code != 200 || json.Unmarshal(body, &deps) != nil || len(deps) != 1 {
		t.Fatalf("GET deployments: %d %s", code, body)
	}
	code, body = e.do("GET", fmt.Sprintf("/podswitch/apps/blog/deployments/%d", deps[0].ID), "")
	var d engine.Deployment
	if code != 200 || json.Unmarshal(body, &d) != nil || d.ID != deps[0].ID || d.Status != engine.StatusSuccess {
		t.Fatalf("GET deployment: %d %s", code, body)
	}
}

// Each route reaches its own handler (the answers below are each
// handler's own, none changes anything); a method a route lacks is a 405
// with Allow, a path no route has a 404, an app the config lacks a 404, all
// {"error": "..."}; the method is checked before the app. Percent-encoded
// letters name the same app; an encoded slash is part of the name, never a
// separator.
func TestAdminRouting(t *testing.T) {
	e := newAPIEnv(t, "tcp")
	st0 := e.waitSettled(map[string]int{"web": 2, "worker": 1})
	ops0 := operationState(t, st0)
	id := strconv.FormatInt(st0.Deployments[0].ID, 10)
	var encodedID string
	for _, c := range []byte(id) {
		encodedID += fmt.Sprintf("%%%02X", c)
	}

	cases := []struct {
		name, method, path, body string
		code                     int
		// allow is the Allow header a 405 must have.
		allow string
		// want is in the body: a JSON error's message when code >= 400.
		want string
	}{
		{"list", "GET", "/podswitch/apps", "", 200, "", `"name": "blog"`},
		{"status", "GET", "/podswitch/apps/blog", "", 200, "", `"name": "blog"`},
		{"status HEAD", "HEAD", "/podswitch/apps/blog", "", 200, "", ""},
		{"history", "GET", "/podswitch/apps/blog/deployments", "", 200, "", `"status": "success"`},
		{"deployment", "GET", "/podswitch/apps/blog/deployments/" + id, "", 200, "", `"id": ` + id},
		{"logs", "GET", "/podswitch/apps/blog/logs?tail=x", "", 400, "", `tail="x"`},
		{"deploy", "POST", "/podswitch/apps/blog/deploy", `{}`, 400, "", "image is required"},
		{"restart", "POST", "/podswitch/apps/blog/restart", `{"process": "clock"}`, 400, "", `no process type "clock"`},
		{"scale", "POST", "/podswitch/apps/blog/scale", `{}`, 400, "", "at least one process type"},
		{"rollback", "POST", "/podswitch/apps/blog/rollback", ``, 409, "", "no earlier release"},
		{"pause", "POST", "/podswitch/apps/blog/pause", `{"timeout": "soon"}`, 400, "", `timeout "soon"`},
		{"maintenance", "POST", "/podswitch/apps/blog/maintenance", `{"message": 5}`, 400, "", `field "message"`},
		{"resume", "POST", "/podswitch/apps/blog/resume", ``, 409, "", "neither paused nor in maintenance"},

		{"trailing slash on the list", "GET", "/podswitch/apps/", "", 200, "", `"name": "blog"`},
		{"trailing slash on an app", "GET", "/podswitch/apps/blog/", "", 200, "", `"name": "blog"`},
		{"trailing slash on an operation", "POST", "/podswitch/apps/blog/rollback/", ``, 409, "", "no earlier release"},

		{"GET on a POST route", "GET", "/podswitch/apps/blog/deploy", "", 405, "POST", "method GET not allowed on /podswitch/apps/blog/deploy; use POST"},
		{"HEAD on a POST route", "HEAD", "/podswitch/apps/blog/resume", "", 405, "POST", ""},
		{"POST on a GET route", "POST", "/podswitch/apps/blog", `{}`, 405, "GET, HEAD", "method POST not allowed on /podswitch/apps/blog; use GET"},
		{"DELETE on the list", "DELETE", "/podswitch/apps", "", 405, "GET, HEAD", "method DELETE not allowed on /podswitch/apps; use GET"},
		{"PUT on a deployment", "PUT", "/podswitch/apps/blog/deployments/" + id, `{}`, 405, "GET, HEAD", "use GET"},
		{"OPTIONS on a POST route", "OPTIONS", "/podswitch/apps/blog/scale", "", 405, "POST", "method OPTIONS not allowed"},
		{"wrong method on an unknown app", "GET", "/podswitch/apps/nope/deploy", "", 405, "POST", "method GET not allowed"},

		{"root", "GET", "/podswitch/", "", 404, "", "no such podswitch endpoint: /podswitch/"},
		{"unknown path", "GET", "/podswitch/nope", "", 404, "", "no such podswitch endpoint: /podswitch/nope"},
		{"unknown operation", "POST", "/podswitch/apps/blog/nope", `{}`, 404, "", "no such podswitch endpoint: /podswitch/apps/blog/nope"},
		{"too deep", "GET", "/podswitch/apps/blog/deployments/1/x", "", 404, "", "no such podswitch endpoint"},
		{"logs too deep", "GET", "/podswitch/apps/blog/logs/web", "", 404, "", "no such podswitch endpoint"},

		{"unknown app", "GET", "/podswitch/apps/nope", "", 404, "", `unknown app "nope"`},
		{"bad app name", "GET", "/podswitch/apps/Bad!App", "", 404, "", `unknown app "Bad!App"`},
		{"bad app name, operation", "POST", "/podswitch/apps/Bad!App/deploy", `{"image": "x:v2"}`, 404, "", `unknown app "Bad!App"`},
		{"bad app name, history", "GET", "/podswitch/apps/..%2E/deployments", "", 404, "", `unknown app "..."`},

		{"encoded letters", "GET", "/podswitch/apps/bl%6Fg", "", 200, "", `"name": "blog"`},
		{"encoded letters, history", "GET", "/podswitch/apps/%62%6C%6F%67/deployments", "", 200, "", `"status": "success"`},
		{"encoded letters, operation", "POST", "/podswitch/apps/bl%6Fg/rollback", ``, 409, "", "app blog: no earlier release"},
		{"encoded deployment id", "GET", "/podswitch/apps/blog/deployments/" + encodedID, "", 200, "", `"id": ` + id},
		{"encoded route name", "POST", "/podswitch/apps/blog/%72esume", ``, 409, "", "neither paused nor in maintenance"},
		{"encoded slash in the app", "GET", "/podswitch/apps/blog%2Fdeployments", "", 404, "", `unknown app "blog/deployments"`},
		{"encoded slash before an operation", "POST", "/podswitch/apps/blog%2Fscale", `{"web": 1}`, 405, "GET, HEAD", "use GET"},
		{"encoded space", "GET", "/podswitch/apps/a%20b", "", 404, "", `unknown app "a b"`},
		{"encoded trailing slash", "GET", "/podswitch/apps/blog%2F", "", 404, "", `unknown app "blog/"`},
		{"encoded deployment id not a number", "GET", "/podswitch/apps/blog/deployments/1%2F2", "", 400, "", `deployment id "1/2"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := e.request(tc.method, tc.path, tc.body)
			if resp.StatusCode != tc.code {
				t.Errorf("status %d, want %d: %s", resp.StatusCode, tc.code, body)
			}
			if allow := resp.Header.Get("Allow"); allow != tc.allow {
				t.Errorf("Allow %q, want %q", allow, tc.allow)
			}
			if tc.method == http.MethodHead {
				if len(body) != 0 {
					t.Errorf("HEAD answered a body: %s", body)
				}
			} else if ct := resp.Header.Get("Content-Type"); ct != "application/json" && !(tc.code == 400 && strings.HasPrefix(tc.path, "/podswitch/apps/blog/logs")) {
				t.Errorf("Content-Type %q, want application/json", ct)
			}
			if tc.code >= 400 && tc.method != http.MethodHead {
				var ans map[string]any
				if err := json.Unmarshal(body, &ans); err != nil {
					t.Fatalf("answer is not JSON: %v: %s", err, body)
				}
				if msg, _ := ans["error"].(string); len(ans) != 1 || !strings.Contains(msg, tc.want) {
					t.Errorf(`answer %s, want {"error": "...%s..."}`, body, tc.want)
				}
			} else if !strings.Contains(string(body), tc.want) {
				t.Errorf("answer %s does not have %s", body, tc.want)
			}
			st := e.status()
			if ops := operationState(t, st); ops != ops0 || len(st.Deployments) != len(st0.Deployments) {
				t.Errorf("the request changed the app: %s, %d deployments", ops, len(st.Deployments))
			}
		})
	}

	// Without podswitch in the config, every route of the API says so.
	unset := newAdminAPI(func() *engine.Manager { return nil })
	for _, path := range []string{"/podswitch/apps", "/podswitch/apps/blog"} {
		err := unset.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, path, nil))
		var apiErr caddy.APIError
		if !errors.As(err, &apiErr) || apiErr.HTTPStatus != http.StatusNotFound || apiErr.Message != "podswitch is not configured" {
			t.Errorf("GET %s without podswitch: %v", path, err)
		}
	}
}

// imageOverride returns the image override of st, if any.
func imageOverride(st engine.AppStatus) (engine.OverrideStatus, bool) {
	for _, o := range st.Overrides {
		if o.Setting == "image" {
			return o, true
		}
	}
	return engine.OverrideStatus{}, false
}

// Deploy makes the image an override of the config's; ?wait=1 answers the
// final status; the image that serves again starts nothing; a release that
// never gets ready answers timeout-error with 200, the old release keeps
// serving, and deploying it again retries it; the config's own image
// drops the override.
func TestAdminDeploy(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			e := newAPIEnv(t, network)
			code, body := e.do("POST", "/podswitch/apps/blog/deploy?wait=1", `{"image": "localhost/blog:v2"}`)
			ans := decodeAnswer(t, body)
			if code != 200 || ans.Deployment == nil || ans.Deployment.Status != engine.StatusSuccess || ans.Deployment.Image != "localhost/blog:v2" ||
				ans.Deployment.Kind != engine.KindDeploy || ans.Deployment.Trigger != "api" {
				t.Fatalf("deploy --wait: %d %s", code, body)
			}
			st := e.status()
			if len(st.Overrides) != 1 {
				t.Fatalf("overrides %+v, want one, of the image", st.Overrides)
			}
			if o := st.Overrides[0]; o.Setting != "image" || o.Operation != "deploy" || o.Value != "localhost/blog:v2" ||
				o.ConfigValue != "localhost/blog:v1" || o.At.IsZero() {
				t.Errorf("override %+v, want image localhost/blog:v2 over the config's localhost/blog:v1, by deploy", o)
			}
			if st.Image != "localhost/blog:v2" || st.Release == nil || st.Release.Image != "localhost/blog:v2" {
				t.Errorf("desired image %q, release %+v; want localhost/blog:v2", st.Image, st.Release)
			}
			// The rest of the app is kept.
			if !maps.Equal(st.Processes, map[string]int{"web": 2, "worker": 1}) {
				t.Errorf("processes %v after a deploy", st.Processes)
			}

			// The same image again: nothing starts.
			code, body = e.do("POST", "/podswitch/apps/blog/deploy", `{"image": "localhost/blog:v2"}`)
			ans = decodeAnswer(t, body)
			if code != 200 || ans.Message == "" || ans.Deployment != nil {
				t.Errorf("same image: %d %s, want 200 with a message and no deployment", code, body)
			}
			if n := len(e.status().Deployments); n != 2 {
				t.Errorf("%d deployments after deploying the same image, want 2", n)
			}

			// Without wait: 202 with the deployment starting.
			code, body = e.do("POST", "/podswitch/apps/blog/deploy", `{"image": "localhost/blog:v3"}`)
			ans = decodeAnswer(t, body)
			if code != 202 || ans.Deployment == nil || ans.Deployment.Image != "localhost/blog:v3" || ans.Message != "" {
				t.Fatalf("deploy: %d %s", code, body)
			}
			e.waitSuccess("localhost/blog:v3")
			e.waitSettled(map[string]int{"web": 2, "worker": 1})

			// A release that never listens.
			e.rt.setNoListen("localhost/blog:bad")
			code, body = e.do("POST", "/podswitch/apps/blog/deploy?wait=1", `{"image": "localhost/blog:bad"}`)
			ans = decodeAnswer(t, body)
			if code != 200 || ans.Deployment == nil || ans.Deployment.Status != engine.StatusTimeoutError {
				t.Fatalf("never-ready deploy --wait: %d %s", code, body)
			}
			failed := ans.Deployment.ID
			st = e.status()
			if st.Release == nil || st.Release.Image != "localhost/blog:v3" {
				t.Errorf("after the failed deploy the release is %+v, want v3", st.Release)
			}
			// Deploying the failed image again retries it.
			code, body = e.do("POST", "/podswitch/apps/blog/deploy?wait=1", `{"image": "localhost/blog:bad"}`)
			ans = decodeAnswer(t, body)
			if code != 200 || ans.Deployment == nil || ans.Deployment.ID <= failed || ans.Deployment.Status != engine.StatusTimeoutError {
				t.Errorf("the failed image again: %d %s, want a new deployment, timeout-error", code, body)
			}
			// Back to the release that serves: no deployment is needed.
			code, body = e.do("POST", "/podswitch/apps/blog/deploy?wait=1", `{"image": "localhost/blog:v3"}`)
			ans = decodeAnswer(t, body)
			if code != 200 || ans.Message == "" || ans.Deployment != nil {
				t.Errorf("back to the serving image: %d %s", code, body)
			}
			if o, ok := imageOverride(e.status()); !ok || o.Value != "localhost/blog:v3" {
				t.Errorf("image override %+v, want localhost/blog:v3", o)
			}
			// The config's image: the override goes, v1 is deployed.
			code, body = e.do("POST", "/podswitch/apps/blog/deploy?wait=1", `{"image": "localhost/blog:v1"}`)
			ans = decodeAnswer(t, body)
			if code != 200 || ans.Deployment == nil || ans.Deployment.Status != engine.StatusSuccess || ans.Deployment.Image != "localhost/blog:v1" {
				t.Errorf("deploy of the config's image: %d %s", code, body)
			}
			if st := e.status(); len(st.Overrides) != 0 {
				t.Errorf("overrides %+v after deploying the config's image, want none", st.Overrides)
			}
		})
	}
}

// Scale overrides the config's counts and answers the app's status; the
// containers follow, the running ones kept; a count back at the config's
// drops its override; ?wait=1 answers once the app runs the counts.
func TestAdminScale(t *testing.T) {
	e := newAPIEnv(t, "tcp")
	before := e.waitSettled(map[string]int{"web": 2, "worker": 1})
	code, body := e.do("POST", "/podswitch/apps/blog/scale", `{"web": 3, "worker": 2}`)
	st := decodeStatus(t, body)
	if code != 202 || st.Processes["web"] != 3 || st.Processes["worker"] != 2 {
		t.Fatalf("scale: %d %s", code, body)
	}
	var got []string
	for _, o := range st.Overrides {
		if o.Operation != "scale" || o.At.IsZero() {
			t.Errorf("override %+v, want operation scale", o)
		}
		got = append(got, o.Setting+"="+o.Value+" over "+o.ConfigValue)
	}
	if want := []string{"count:web=3 over 2", "count:worker=2 over 1"}; !slices.Equal(got, want) {
		t.Errorf("overrides %v, want %v", got, want)
	}
	up := e.waitSettled(map[string]int{"web": 3, "worker": 2})
	for _, id := range apiContainerIDs(before) {
		if !slices.Contains(apiContainerIDs(up), id) {
			t.Errorf("scaling up replaced container %s", id)
		}
	}
	code, body = e.do("POST", "/podswitch/apps/blog/scale", `{"web": 1, "worker": 0}`)
	if code != 202 {
		t.Fatalf("scale down: %d %s", code, body)
	}
	e.waitSettled(map[string]int{"web": 1})

	// Back to the config's counts, waiting.
	code, body = e.do("POST", "/podswitch/apps/blog/scale?wait=1", `{"web": 2, "worker": 1}`)
	st = decodeStatus(t, body)
	if code != 200 || len(st.Overrides) != 0 {
		t.Fatalf("scale to the config's counts --wait: %d %s, want 200 and no override", code, body)
	}
	if !scaled(st) || len(st.Containers) != 3 {
		t.Errorf("the answer of scale --wait shows containers not settled: %+v", st.Containers)
	}
	if n := len(e.status().Deployments); n != 1 {
		t.Errorf("scaling made deployments: %d", n)
	}
}

// Restart replaces containers new first: all, one process type, one
// container.
func TestAdminRestart(t *testing.T) {
	e := newAPIEnv(t, "tcp")
	before := apiContainerIDs(e.waitSettled(map[string]int{"web": 2, "worker": 1}))
	code, body := e.do("POST", "/podswitch/apps/blog/restart?wait=1", "")
	ans := decodeAnswer(t, body)
	if code != 200 || ans.Deployment == nil || ans.Deployment.Kind != engine.KindRestart || ans.Deployment.Status != engine.StatusSuccess {
		t.Fatalf("restart: %d %s", code, body)
	}
	after := apiContainerIDs(e.waitSettled(map[string]int{"web": 2, "worker": 1}))
	for _, id := range after {
		if slices.Contains(before, id) {
			t.Errorf("container %s survived the restart", id)
		}
	}

	code, body = e.do("POST", "/podswitch/apps/blog/restart", `{"process": "worker"}`)
	ans = decodeAnswer(t, body)
	if code != 202 || ans.Deployment == nil || ans.Deployment.Process != "worker" {
		t.Fatalf("restart worker: %d %s", code, body)
	}
	st := e.waitSettled(map[string]int{"web": 2, "worker": 1})
	var web string
	for _, c := range st.Containers {
		if c.Process == "web" {
			if !slices.Contains(after, c.ID) {
				t.Errorf("restarting the worker replaced web container %s", c.ID)
			}
			web = c.ID
		}
	}
	code, body = e.do("POST", "/podswitch/apps/blog/restart?wait=1", `{"container": "`+web[:12]+`"}`)
	ans = decodeAnswer(t, body)
	if code != 200 || ans.Deployment == nil || ans.Deployment.Container != web || ans.Deployment.Status != engine.StatusSuccess {
		t.Fatalf("restart container: %d %s", code, body)
	}
	if slices.Contains(apiContainerIDs(e.waitSettled(map[string]int{"web": 2, "worker": 1})), web) {
		t.Errorf("container %s survived its restart", web)
	}
}

// A restart while a deployment runs answers 409 and changes nothing.
func TestAdminRestartDuringDeploy(t *testing.T) {
	e := newAPIEnv(t, "tcp")
	e.rt.setNoListen("localhost/blog:slow")
	code, body := e.do("POST", "/podswitch/apps/blog/deploy", `{"image": "localhost/blog:slow"}`)
	ans := decodeAnswer(t, body)
	if code != 202 || ans.Deployment == nil || ans.Deployment.Status != engine.StatusStarting {
		t.Fatalf("deploy: %d %s", code, body)
	}
	n := len(e.status().Deployments)
	code, body = e.do("POST", "/podswitch/apps/blog/restart", "")
	if code != http.StatusConflict || !strings.Contains(string(body), "in progress") {
		t.Errorf("restart during a deploy: %d %s, want 409", code, body)
	}
	if got := len(e.status().Deployments); got != n {
		t.Errorf("%d deployments after the refused restart, want %d", got, n)
	}
	d, done, _ := e.m.App("blog").Deployment(ans.Deployment.ID)
	<-done
	if d, _, _ = e.m.App("blog").Deployment(d.ID); d.Status != engine.StatusTimeoutError {
		t.Errorf("the deploy ended %s, want timeout-error (not aborted by the restart)", d.Status)
	}
}

// Rollback deploys the release that served before the serving one, new
// first, as an override of the release.
func TestAdminRollback(t *testing.T) {
	e := newAPIEnv(t, "tcp")
	for _, image := range []string{"localhost/blog:v2", "localhost/blog:v3"} {
		code, body := e.do("POST", "/podswitch/apps/blog/deploy?wait=1", `{"image": "`+image+`"}`)
		if ans := decodeAnswer(t, body); code != 200 || ans.Deployment == nil || ans.Deployment.Status != engine.StatusSuccess {
			t.Fatalf("deploy %s: %d %s", image, code, body)
		}
	}
	v3 := apiContainerIDs(e.waitSettled(map[string]int{"web": 2, "worker": 1}))

	code, body := e.do("POST", "/podswitch/apps/blog/rollback?wait=1", "")
	ans := decodeAnswer(t, body)
	if code != 200 || ans.Deployment == nil || ans.Deployment.Kind != engine.KindRollback ||
		ans.Deployment.Image != "localhost/blog:v2" || ans.Deployment.Status != engine.StatusSuccess {
		t.Fatalf("rollback --wait: %d %s, want a rollback to localhost/blog:v2 ended in success", code, body)
	}
	st := e.waitSettled(map[string]int{"web": 2, "worker": 1})
	if st.Release == nil || st.Release.Image != "localhost/blog:v2" || st.Image != "localhost/blog:v2" {
		t.Errorf("release %+v, desired image %q after the rollback; want localhost/blog:v2", st.Release, st.Image)
	}
	for _, id := range apiContainerIDs(st) {
		if slices.Contains(v3, id) {
			t.Errorf("container %s of v3 still runs after the rollback", id)
		}
	}
	if len(st.Overrides) != 1 || st.Overrides[0].Setting != "release" || st.Overrides[0].Operation != "rollback" ||
		!strings.Contains(st.Overrides[0].Value, "localhost/blog:v2") {
		t.Errorf("overrides %+v, want one of the release, by rollback, to localhost/blog:v2", st.Overrides)
	}
}

// Pause and maintenance set the app's gate and show in its status; resume
// lifts them, and a resume with nothing to resume answers 409. None of
// them touches a container.
func TestAdminPauseMaintenance(t *testing.T) {
	e := newAPIEnv(t, "tcp")
	ids := apiContainerIDs(e.waitSettled(map[string]int{"web": 2, "worker": 1}))
	pool := e.m.Pool("blog")

	code, body := e.do("POST", "/podswitch/apps/blog/pause", `{"timeout": "5s"}`)
	st := decodeStatus(t, body)
	if code != 200 || st.Paused == nil || st.Paused.Timeout != "5s" || st.Paused.Since.IsZero() || st.Maintenance != nil {
		t.Fatalf("pause: %d %s, want 200 with paused {timeout: 5s}", code, body)
	}
	if g := pool.Gate(); g == nil || g.Maintenance || g.Timeout != 5*time.Second {
		t.Errorf("gate %+v after pause, want a pause of 5s", g)
	}
	code, body = e.do("POST", "/podswitch/apps/blog/pause", "")
	if st := decodeStatus(t, body); code != 200 || st.Paused == nil || st.Paused.Timeout != engine.DefaultPauseTimeout.String() {
		t.Errorf("pause without a body: %d %s, want the default timeout", code, body)
	}

	code, body = e.do("POST", "/podswitch/apps/blog/maintenance", `{"message": "Back at 14:00 UTC."}`)
	st = decodeStatus(t, body)
	if code != 200 || st.Maintenance == nil || st.Maintenance.Message != "Back at 14:00 UTC." || st.Paused != nil {
		t.Fatalf("maintenance: %d %s, want 200 with maintenance {message: Back at 14:00 UTC.} and no pause", code, body)
	}
	if g := pool.Gate(); g == nil || !g.Maintenance || g.Message != "Back at 14:00 UTC." {
		t.Errorf("gate %+v in maintenance", g)
	}

	code, body = e.do("POST", "/podswitch/apps/blog/resume", "")
	st = decodeStatus(t, body)
	if code != 200 || st.Paused != nil || st.Maintenance != nil {
		t.Fatalf("resume: %d %s, want 200 with neither pause nor maintenance", code, body)
	}
	if g := pool.Gate(); g != nil {
		t.Errorf("gate %+v after resume, want none", g)
	}
	code, body = e.do("POST", "/podswitch/apps/blog/resume", "")
	if code != http.StatusConflict || !strings.Contains(errorMessage(body), "neither paused nor in maintenance") {
		t.Errorf("resume again: %d %s, want 409", code, body)
	}

	code, body = e.do("POST", "/podswitch/apps/blog/maintenance", "")
	if st := decodeStatus(t, body); code != 200 || st.Maintenance == nil || st.Maintenance.Message != engine.DefaultMaintenanceMessage {
		t.Errorf("maintenance without a body: %d %s, want the default message", code, body)
	}
	if got := apiContainerIDs(e.status()); !slices.Equal(got, ids) {
		t.Errorf("containers %v after pause, maintenance and resume, want %v", got, ids)
	}
	if n := len(e.status().Deployments); n != 1 {
		t.Errorf("%d deployments, want 1", n)
	}
}

// The logs route gives the output of the app's containers, each line
// prefixed with the container's process type and short id.
func TestAdminLogs(t *testing.T) {
	e := newAPIEnv(t, "tcp")
	st := e.waitSettled(map[string]int{"web": 2, "worker": 1})
	var want []string
	var web engine.ContainerStatus
	for _, c := range st.Containers {
		if c.Process == "web" {
			web = c
			want = append(want, "web."+c.ID[:12]+" | line 1 of "+c.Name, "web."+c.ID[:12]+" | line 2 of "+c.Name)
		}
	}
	slices.Sort(want)

	code, body := e.do("GET", "/podswitch/apps/blog/logs?process=web", "")
	got := strings.Split(strings.TrimSuffix(string(body), "\n"), "\n")
	slices.Sort(got)
	if code != 200 || !slices.Equal(got, want) {
		t.Errorf("logs of web: %d\n%s\nwant the lines:\n%s", code, body, strings.Join(want, "\n"))
	}

	code, body = e.do("GET", "/podswitch/apps/blog/logs?container="+web.ID[:12]+"&tail=5", "")
	wantOne := "web." + web.ID[:12] + " | line 1 of " + web.Name + "\nweb." + web.ID[:12] + " | line 2 of " + web.Name + "\n"
	if code != 200 || string(body) != wantOne {
		t.Errorf("logs of one container: %d %q, want %q", code, body, wantOne)
	}

	code, body = e.do("GET", "/podswitch/apps/blog/logs", "")
	if n := strings.Count(string(body), "\n"); code != 200 || n != 6 || !strings.Contains(string(body), "worker.") {
		t.Errorf("logs of every container: %d, %d lines, want 6 with the worker's:\n%s", code, n, body)
	}
	e.rt.mu.Lock()
	opts := slices.Clone(e.rt.logOpts)
	e.rt.mu.Unlock()
	if len(opts) != 6 || opts[2] != (engine.LogOptions{Tail: 5, Stream: true}) || opts[0] != (engine.LogOptions{Tail: 100, Stream: true}) {
		t.Errorf("Logs calls with %+v, want tail 100 by default and 5 with ?tail=5, no follow, as streams (off the shared call slots)", opts)
	}

	// Following is bounded: each followed container is a connection to
	// Podman for as long as the request lasts.
	if code, body := e.do("POST", "/podswitch/apps/blog/scale?wait=1", fmt.Sprintf(`{"web": %d}`, maxFollow+1)); code != 200 {
		t.Fatalf("scale to %d: %d %s", maxFollow+1, code, body)
	}
	code, body = e.do("GET", "/podswitch/apps/blog/logs?process=web&follow=1", "")
	if code != 400 || !strings.Contains(string(body), "narrow it") {
		t.Errorf("follow of %d containers: %d %s, want 400", maxFollow+1, code, body)
	}
}

// ?wait=1 is not cut by the admin server's ReadTimeout.
func TestAdminWaitOutlivesReadTimeout(t *testing.T) {
	e := newAPIEnv(t, "tcp")
	e.rt.setNoListen("localhost/blog:slow")
	// Shorten the read timeout: replace the server with one of 200ms.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: apiMux(e.m), ReadTimeout: 200 * time.Millisecond}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	e.base = "http://" + ln.Addr().String()
	// boot_timeout is 400ms: the answer comes after the read timeout.
	start := time.Now()
	code, body := e.do("POST", "/podswitch/apps/blog/deploy?wait=1", `{"image": "localhost/blog:slow"}`)
	ans := decodeAnswer(t, body)
	if code != 200 || ans.Deployment == nil || ans.Deployment.Status != engine.StatusTimeoutError {
		t.Fatalf("deploy --wait past the read timeout: %d %s", code, body)
	}
	if took := time.Since(start); took < 400*time.Millisecond {
		t.Errorf("the answer came after %s, before boot_timeout: the test proves nothing", took)
	}
}

// cli runs `caddy podswitch args...` against the test endpoint and
// returns its exit status and output.
func (e *apiEnv) cli(args ...string) (int, string, string) {
	e.t.Helper()
	cc, ok := caddycmd.Commands()["podswitch"]
	if !ok {
		e.t.Fatal("caddy podswitch is not registered")
	}
	cmd := &cobra.Command{Use: "podswitch"}
	cc.CobraFunc(cmd)
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(append(args, "--address", e.addr))
	err := cmd.Execute()
	code := 0
	if err != nil {
		code = 1
		if _, err := fmt.Sscanf(err.Error(), "exiting with status %d", &code); err != nil {
			code = 1
		}
	}
	if strings.Contains(out.String()+errOut.String(), apiSecret) {
		e.t.Errorf("caddy podswitch %v shows an env value", args)
	}
	return code, out.String(), errOut.String()
}

func TestCLI(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			e := newAPIEnv(t, network)
			e.waitSettled(map[string]int{"web": 2, "worker": 1})

			code, out, errOut := e.cli("status")
			if code != 0 || !strings.Contains(out, "APP") || !strings.Contains(out, "blog") || !strings.Contains(out, "2/2") {
				t.Errorf("status: %d %q %q", code, out, errOut)
			}
			code, out, errOut = e.cli("status", "blog")
			t.Logf("caddy podswitch status blog:\n%s", out)
			if code != 0 || !strings.Contains(out, "CONTAINER") || strings.Count(out, " ready ") != 3 {
				t.Errorf("status blog: %d %q %q", code, out, errOut)
			}
			code, out, errOut = e.cli("deploy", "blog", "localhost/blog:v2", "--wait")
			if code != 0 || !strings.Contains(out, "success") {
				t.Errorf("deploy --wait: %d %q %q", code, out, errOut)
			}
			e.rt.setNoListen("localhost/blog:bad")
			code, out, errOut = e.cli("deploy", "blog", "localhost/blog:bad", "--wait")
			t.Logf("caddy podswitch deploy blog localhost/blog:bad --wait: exit %d\n%s%s", code, out, errOut)
			if code != exitFailed || !strings.Contains(out, "timeout-error") || !strings.Contains(out, "error: ") {
				t.Errorf("deploy --wait of a never-ready image: %d %q %q", code, out, errOut)
			}
			code, out, errOut = e.cli("deploy", "blog", "localhost/blog:v3", "--json")
			if ans := decodeAnswer(t, []byte(out)); code != 0 || ans.Deployment == nil || ans.Deployment.Image != "localhost/blog:v3" {
				t.Errorf("deploy --json: %d %q %q", code, out, errOut)
			}
			e.waitSuccess("localhost/blog:v3")
			code, out, errOut = e.cli("restart", "blog", "--process", "worker", "--wait")
			if code != 0 || !strings.Contains(out, "restart") || !strings.Contains(out, "success") {
				t.Errorf("restart --wait: %d %q %q", code, out, errOut)
			}
			code, out, errOut = e.cli("scale", "blog", "web=3", "worker=0")
			if code != 0 || !strings.Contains(out, "web=3 worker=0") {
				t.Errorf("scale: %d %q %q", code, out, errOut)
			}
			code, out, errOut = e.cli("history", "blog")
			t.Logf("caddy podswitch history blog:\n%s", out)
			if code != 0 || !strings.Contains(out, "STATUS") || !strings.Contains(out, "timeout-error") || strings.Count(out, "\n") != 6 {
				t.Errorf("history: %d %q %q", code, out, errOut)
			}
			code, out, errOut = e.cli("rollback", "blog", "--wait")
			if code != 0 || !strings.Contains(out, "rollback localhost/blog:v2") || !strings.Contains(out, "success") {
				t.Errorf("rollback --wait: %d %q %q", code, out, errOut)
			}
			code, out, errOut = e.cli("pause", "blog", "--timeout", "10s")
			if code != 0 || out != "app blog: paused\n" || e.status().Paused == nil || e.status().Paused.Timeout != "10s" {
				t.Errorf("pause: %d %q %q", code, out, errOut)
			}
			code, out, errOut = e.cli("maintenance", "blog", "--message", "Back soon.")
			if code != 0 || out != "app blog: in maintenance\n" || e.status().Maintenance == nil || e.status().Maintenance.Message != "Back soon." {
				t.Errorf("maintenance: %d %q %q", code, out, errOut)
			}
			code, out, errOut = e.cli("resume", "blog")
			if code != 0 || out != "app blog: resumed\n" {
				t.Errorf("resume: %d %q %q", code, out, errOut)
			}
			code, out, errOut = e.cli("logs", "blog", "--process", "web")
			lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
			if code != 0 || len(lines) < 6 || !strings.HasPrefix(lines[0], "web.") || !strings.Contains(lines[0], " | line 1 of podswitch-blog-web-") {
				t.Errorf("logs: %d %q %q, want lines of the web containers", code, out, errOut)
			}

			// Failures: exit 1 with the API's message.
			e.rt.setMissing("localhost/blog:missing")
			for _, tc := range []struct {
				args []string
				msg  string
			}{
				{[]string{"status", "nope"}, `unknown app "nope" (HTTP 404)`},
				{[]string{"deploy", "blog"}, "usage: caddy podswitch deploy"},
				{[]string{"deploy", "nope", "x:v1", "--wait"}, `unknown app "nope"`},
				{[]string{"deploy", "blog", "localhost/blog:missing", "--wait"}, "image not found); nothing was changed (HTTP 400)"},
				{[]string{"scale", "blog", "web=-1"}, "want <type>=<count>"},
				{[]string{"scale", "blog", "clock=1"}, `no process type "clock"`},
				{[]string{"restart", "blog", "--container", "nope"}, `no running container "nope"`},
				{[]string{"resume", "blog"}, "neither paused nor in maintenance (HTTP 409)"},
				{[]string{"history"}, "usage: caddy podswitch history"},
				{[]string{"deplyo", "blog", "x:v1"}, `unknown command "deplyo"`},
			} {
				code, out, errOut := e.cli(tc.args...)
				if code != exitError || !strings.Contains(errOut, tc.msg) {
					t.Errorf("caddy podswitch %v: %d %q %q, want exit 1 and %q", tc.args, code, out, errOut, tc.msg)
				}
			}
		})
	}
}
