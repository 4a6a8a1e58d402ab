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
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/spf13/cobra"
	"go.uber.org/zap"

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
}

func newAPIFakeRuntime() *apiFakeRuntime {
	return &apiFakeRuntime{cs: map[string]*engine.ContainerInfo{}, noListen: map[string]bool{}}
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

// apiFakeConfig stands in for Caddy's config API
// (/config/apps/podswitch/apps/{app}): GET with an Etag, PATCH with
// If-Match, and a "config load" that hands the specs to the manager.
type apiFakeConfig struct {
	mu      sync.Mutex
	apps    map[string][]byte
	m       *engine.Manager
	patches int
	// hosts and origins are the Host and Origin headers of the requests.
	hosts, origins []string
	// beforePatch, when set, runs (once per call, config lock held) before
	// each PATCH is checked, to make a concurrent change.
	beforePatch func(apps map[string][]byte)
}

func apiEtag(path string, raw []byte) string {
	return fmt.Sprintf(`"%s %x"`, path, sha256.Sum256(raw))
}

func (f *apiFakeConfig) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	app := strings.TrimPrefix(r.URL.Path, "/config/apps/podswitch/apps/")
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hosts = append(f.hosts, r.Host)
	f.origins = append(f.origins, r.Header.Get("Origin"))
	fail := func(code int, msg string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
	}
	switch r.Method {
	case http.MethodGet:
		raw, ok := f.apps[app]
		if !ok {
			raw = []byte("null")
		}
		w.Header().Set("Etag", apiEtag(r.URL.Path, raw))
		w.Write(raw)
	case http.MethodPatch:
		if f.beforePatch != nil {
			f.beforePatch(f.apps)
		}
		cur, ok := f.apps[app]
		if !ok {
			fail(http.StatusNotFound, "no app "+app)
			return
		}
		if im := r.Header.Get("If-Match"); im != "" && im != apiEtag(r.URL.Path, cur) {
			fail(http.StatusPreconditionFailed, "If-Match header did not match current config hash")
			return
		}
		body, _ := io.ReadAll(r.Body)
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		var cfg AppConfig
		if err := dec.Decode(&cfg); err != nil {
			fail(http.StatusBadRequest, "loading new config: "+err.Error())
			return
		}
		next := maps.Clone(f.apps)
		var compact bytes.Buffer
		_ = json.Compact(&compact, body)
		next[app] = compact.Bytes()
		specs, err := apiSpecs(next)
		if err != nil {
			fail(http.StatusBadRequest, "loading new config: "+err.Error())
			return
		}
		f.apps = next
		f.patches++
		f.m.Apply(specs)
	default:
		fail(http.StatusMethodNotAllowed, "method not allowed")
	}
}

func apiSpecs(apps map[string][]byte) ([]engine.AppSpec, error) {
	var specs []engine.AppSpec
	for _, name := range slices.Sorted(maps.Keys(apps)) {
		var cfg AppConfig
		if err := json.Unmarshal(apps[name], &cfg); err != nil {
			return nil, err
		}
		spec, err := cfg.Spec(name)
		if err != nil {
			return nil, err
		}
		specs = append(specs, spec)
	}
	return specs, nil
}

// snapshot returns the config and the number of changes made to it.
func (f *apiFakeConfig) snapshot() (string, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, _ := json.Marshal(f.apps)
	return string(b), f.patches
}

func (f *apiFakeConfig) appConfig(t *testing.T, app string) map[string]any {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	var v map[string]any
	if err := json.Unmarshal(f.apps[app], &v); err != nil {
		t.Fatal(err)
	}
	return v
}

const apiSecret = "hunter2-never-shown"

// apiBlogConfig is the config of the test app: two web containers, one
// worker, a secret in env.
var apiBlogConfig = `{"image":"localhost/blog:v1","web":2,` +
	`"processes":{"worker":{"count":1,"command":["/app/worker","--queue","default"]}},` +
	`"env":{"SECRET":"` + apiSecret + `"},` +
	`"boot_timeout":"400ms","stop_timeout":"1s","drain_timeout":"1s","worker_ready_time":"20ms"}`

// apiEnv is the podswitch admin API served as Caddy's admin endpoint would
// serve it, next to a fake config API, with a manager on a fake runtime.
type apiEnv struct {
	t    *testing.T
	rt   *apiFakeRuntime
	m    *engine.Manager
	conf *apiFakeConfig
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

func newAPIEnv(t *testing.T, network string) *apiEnv {
	t.Helper()
	rt := newAPIFakeRuntime()
	m := engine.NewManager(engine.Deps{Runtime: rt, Prober: rt, Logger: zap.NewNop()})
	conf := &apiFakeConfig{apps: map[string][]byte{"blog": []byte(apiBlogConfig)}, m: m}
	specs, err := apiSpecs(conf.apps)
	if err != nil {
		t.Fatal(err)
	}
	m.Apply(specs)
	api := &adminAPI{manager: func() *engine.Manager { return m }}
	mux := http.NewServeMux()
	mux.HandleFunc("/podswitch/", func(w http.ResponseWriter, r *http.Request) {
		if err := api.serve(w, r); err != nil {
			caddyAdminErrorBody(w, err)
		}
	})
	mux.Handle("/config/apps/podswitch/apps/", conf)

	e := &apiEnv{t: t, rt: rt, m: m, conf: conf}
	var ln net.Listener
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
	srv := &http.Server{Handler: mux, ReadTimeout: 10 * time.Second, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() {
		srv.Close()
		m.Close()
	})
	e.waitSuccess("localhost/blog:v1")
	return e
}

// do makes one request to the API, with an Origin header as a browser or
// `caddy` would send, and returns the status and body.
func (e *apiEnv) do(method, path, body string) (int, []byte) {
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
	return resp.StatusCode, b
}

func (e *apiEnv) status() engine.AppStatus {
	return e.m.App("blog").Status()
}

func (e *apiEnv) waitSuccess(image string) engine.Deployment {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := e.status()
		for _, d := range st.Deployments {
			if d.Image == image {
				if d.Status.Ended() {
					if d.Status != engine.StatusSuccess {
						e.t.Fatalf("deployment of %s: %s %s", image, d.Status, d.Error)
					}
					return d
				}
				break
			}
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("no ended deployment of %s: %+v", image, st.Deployments)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitSettled waits until the app runs exactly the containers of counts,
// all ready.
func (e *apiEnv) waitSettled(counts map[string]int) engine.AppStatus {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := e.status()
		got := map[string]int{}
		busy := false
		for _, c := range st.Containers {
			if c.State == engine.StateReady {
				got[c.Process]++
			} else {
				busy = true
			}
		}
		maps.DeleteFunc(counts, func(_ string, n int) bool { return n == 0 })
		if !busy && maps.Equal(got, counts) {
			return st
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("app did not settle at %v: %+v", counts, st.Containers)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func decodeAnswer(t *testing.T, b []byte) deploymentAnswer {
	t.Helper()
	var ans deploymentAnswer
	if err := json.Unmarshal(b, &ans); err != nil {
		t.Fatalf("answer %s: %v", b, err)
	}
	return ans
}

// Every bad request answers a 4xx with {"error": "..."} and changes
// nothing: not the config, not the deployments, not the containers.
func TestAdminBadRequests(t *testing.T) {
	e := newAPIEnv(t, "tcp")
	st0 := e.waitSettled(map[string]int{"web": 2, "worker": 1})
	conf0, patches0 := e.conf.snapshot()
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
		{"scale negative", "POST", "/podswitch/apps/blog/scale", `{"web": -1}`, 400, "0 or more"},
		{"scale string count", "POST", "/podswitch/apps/blog/scale", `{"web": "3"}`, 400, "want whole numbers"},
		{"scale fraction", "POST", "/podswitch/apps/blog/scale", `{"web": 1.5}`, 400, "want whole numbers"},
		{"scale null count", "POST", "/podswitch/apps/blog/scale", `{"web": null}`, 400, "want a whole number"},
		{"scale array", "POST", "/podswitch/apps/blog/scale", `[3]`, 400, "want a JSON object"},
		{"scale unknown type", "POST", "/podswitch/apps/blog/scale", `{"clock": 1}`, 400, `no process type "clock"`},
		{"scale unknown type with a good one", "POST", "/podswitch/apps/blog/scale", `{"web": 5, "clock": 1}`, 400, `no process type "clock"`},
		{"scale negative with a good one", "POST", "/podswitch/apps/blog/scale", `{"web": 5, "worker": -2}`, 400, "0 or more"},
		{"scale too large", "POST", "/podswitch/apps/blog/scale", `{"web": 3` + strings.Repeat(" ", maxBodySize) + `}`, 413, "too large"},
		{"restart unknown field", "POST", "/podswitch/apps/blog/restart", `{"proc": "web"}`, 400, `unknown field "proc"`},
		{"restart process number", "POST", "/podswitch/apps/blog/restart", `{"process": 1}`, 400, `field "process": want a string`},
		{"restart both", "POST", "/podswitch/apps/blog/restart", `{"process": "web", "container": "abc"}`, 400, "not both"},
		{"restart unknown process", "POST", "/podswitch/apps/blog/restart", `{"process": "clock"}`, 400, `no process type "clock"`},
		{"restart bad process name", "POST", "/podswitch/apps/blog/restart", `{"process": "Web!"}`, 400, "lowercase"},
		{"restart unknown container", "POST", "/podswitch/apps/blog/restart", `{"container": "nope"}`, 404, `no running container "nope"`},
		{"restart malformed", "POST", "/podswitch/apps/blog/restart", `{`, 400, "malformed JSON"},
		{"restart bad wait", "POST", "/podswitch/apps/blog/restart?wait=2", ``, 400, "wait="},
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
			if conf, patches := e.conf.snapshot(); conf != conf0 || patches != patches0 {
				t.Errorf("the config changed: %d patches, %s", patches-patches0, conf)
			}
			st := e.status()
			if len(st.Deployments) != len(st0.Deployments) {
				t.Errorf("%d deployments, want %d: %+v", len(st.Deployments), len(st0.Deployments), st.Deployments)
			}
			if !maps.Equal(st.Processes, st0.Processes) || st.Desired != st0.Desired {
				t.Errorf("desired state changed: %v %s", st.Processes, st.Desired)
			}
			if !slices.Equal(apiContainerIDs(st), apiContainerIDs(st0)) {
				t.Errorf("containers changed: %v, want %v", apiContainerIDs(st), apiContainerIDs(st0))
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

// Deploy changes the image in the config; ?wait=1 answers the final
// status; the same image again starts nothing; a release that never gets
// ready answers timeout-error with 200 and the old release keeps serving.
func TestAdminDeploy(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			e := newAPIEnv(t, network)
			code, body := e.do("POST", "/podswitch/apps/blog/deploy?wait=1", `{"image": "localhost/blog:v2"}`)
			ans := decodeAnswer(t, body)
			if code != 200 || ans.Deployment == nil || ans.Deployment.Status != engine.StatusSuccess || ans.Deployment.Image != "localhost/blog:v2" || ans.Deployment.Kind != engine.KindDeploy {
				t.Fatalf("deploy --wait: %d %s", code, body)
			}
			cfg := e.conf.appConfig(t, "blog")
			if cfg["image"] != "localhost/blog:v2" {
				t.Errorf("config image %v, want localhost/blog:v2", cfg["image"])
			}
			// Everything else of the config is kept.
			if env, _ := cfg["env"].(map[string]any); env["SECRET"] != apiSecret || cfg["boot_timeout"] != "400ms" || cfg["web"] != 2.0 {
				t.Errorf("the rest of the config changed: %v", cfg)
			}
			// Host and Origin of the request went to the config API.
			e.conf.mu.Lock()
			for i := range e.conf.origins {
				if e.conf.origins[i] != "http://origin.test" {
					t.Errorf("config request %d had Origin %q", i, e.conf.origins[i])
				}
				if want := strings.TrimPrefix(e.base, "http://"); e.conf.hosts[i] != want {
					t.Errorf("config request %d had Host %q, want %q", i, e.conf.hosts[i], want)
				}
			}
			e.conf.mu.Unlock()

			// The same image again: nothing starts.
			_, patches := e.conf.snapshot()
			code, body = e.do("POST", "/podswitch/apps/blog/deploy", `{"image": "localhost/blog:v2"}`)
			ans = decodeAnswer(t, body)
			if code != 200 || ans.Message == "" || ans.Deployment == nil || ans.Deployment.Status != engine.StatusSuccess {
				t.Errorf("same image: %d %s", code, body)
			}
			if _, p := e.conf.snapshot(); p != patches {
				t.Errorf("deploying the desired image changed the config")
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
			e.rt.mu.Lock()
			e.rt.noListen["localhost/blog:bad"] = true
			e.rt.mu.Unlock()
			code, body = e.do("POST", "/podswitch/apps/blog/deploy?wait=1", `{"image": "localhost/blog:bad"}`)
			ans = decodeAnswer(t, body)
			if code != 200 || ans.Deployment == nil || ans.Deployment.Status != engine.StatusTimeoutError {
				t.Fatalf("never-ready deploy --wait: %d %s", code, body)
			}
			st := e.status()
			if st.Release == nil || st.Release.Image != "localhost/blog:v3" {
				t.Errorf("after the failed deploy the release is %+v, want v3", st.Release)
			}
			// The failed image is the desired one: asking again starts
			// nothing and answers the failed deployment.
			code, body = e.do("POST", "/podswitch/apps/blog/deploy?wait=1", `{"image": "localhost/blog:bad"}`)
			ans = decodeAnswer(t, body)
			if code != 200 || ans.Message == "" || ans.Deployment == nil || ans.Deployment.Status != engine.StatusTimeoutError {
				t.Errorf("same failed image: %d %s", code, body)
			}
			// Back to the release that serves: the config changes, no
			// deployment is needed.
			code, body = e.do("POST", "/podswitch/apps/blog/deploy?wait=1", `{"image": "localhost/blog:v3"}`)
			ans = decodeAnswer(t, body)
			if code != 200 || ans.Message == "" || ans.Deployment == nil || ans.Deployment.Status != engine.StatusSuccess {
				t.Errorf("back to the serving image: %d %s", code, body)
			}
			if got := e.conf.appConfig(t, "blog")["image"]; got != "localhost/blog:v3" {
				t.Errorf("config image %v, want v3", got)
			}
		})
	}
}

// A config change made between the read and the write is kept: the API
// reads again once; a config that keeps changing answers 409.
func TestAdminDeployConcurrentConfigChange(t *testing.T) {
	e := newAPIEnv(t, "tcp")
	once := true
	e.conf.beforePatch = func(apps map[string][]byte) {
		if once {
			once = false
			// Someone else adds an env var meanwhile.
			var cfg map[string]any
			_ = json.Unmarshal(apps["blog"], &cfg)
			cfg["env"].(map[string]any)["OTHER"] = "x"
			apps["blog"], _ = json.Marshal(cfg)
		}
	}
	code, body := e.do("POST", "/podswitch/apps/blog/deploy?wait=1", `{"image": "localhost/blog:v2"}`)
	if ans := decodeAnswer(t, body); code != 200 || ans.Deployment == nil || ans.Deployment.Status != engine.StatusSuccess {
		t.Fatalf("deploy: %d %s", code, body)
	}
	cfg := e.conf.appConfig(t, "blog")
	if env := cfg["env"].(map[string]any); cfg["image"] != "localhost/blog:v2" || env["OTHER"] != "x" {
		t.Errorf("config %v: want the new image and the concurrent change", cfg)
	}

	e.conf.mu.Lock()
	n := 0
	e.conf.beforePatch = func(apps map[string][]byte) {
		n++
		apps["blog"] = append(bytes.TrimSuffix(apps["blog"], []byte("}")), []byte(fmt.Sprintf(`,"port":%d}`, 5000+n))...)
	}
	e.conf.mu.Unlock()
	code, body = e.do("POST", "/podswitch/apps/blog/scale", `{"web": 3}`)
	if code != http.StatusConflict || !strings.Contains(string(body), "keeps changing") {
		t.Errorf("config changing all the time: %d %s", code, body)
	}
	if web := e.conf.appConfig(t, "blog")["web"]; web != 2.0 {
		t.Errorf("web %v after the refused scale, want 2", web)
	}
}

// Scale sets web and other process counts in the config and answers the
// app's status; the containers follow.
func TestAdminScale(t *testing.T) {
	e := newAPIEnv(t, "tcp")
	before := e.waitSettled(map[string]int{"web": 2, "worker": 1})
	code, body := e.do("POST", "/podswitch/apps/blog/scale", `{"web": 3, "worker": 2}`)
	var st engine.AppStatus
	if code != 202 || json.Unmarshal(body, &st) != nil || st.Processes["web"] != 3 || st.Processes["worker"] != 2 {
		t.Fatalf("scale: %d %s", code, body)
	}
	cfg := e.conf.appConfig(t, "blog")
	worker := cfg["processes"].(map[string]any)["worker"].(map[string]any)
	if cfg["web"] != 3.0 || worker["count"] != 2.0 || len(worker["command"].([]any)) != 3 {
		t.Errorf("config after scale: %v", cfg)
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
	code, body = e.do("POST", "/podswitch/apps/blog/scale", `{"web": 1}`)
	if code != 200 {
		t.Errorf("scale to the same count: %d %s, want 200", code, body)
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
	e.rt.mu.Lock()
	e.rt.noListen["localhost/blog:slow"] = true
	e.rt.mu.Unlock()
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

// ?wait=1 is not cut by the admin server's ReadTimeout.
func TestAdminWaitOutlivesReadTimeout(t *testing.T) {
	e := newAPIEnv(t, "tcp")
	e.rt.mu.Lock()
	e.rt.noListen["localhost/blog:slow"] = true
	e.rt.mu.Unlock()
	// Shorten the read timeout: replace the server with one of 200ms.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	api := &adminAPI{manager: func() *engine.Manager { return e.m }}
	mux := http.NewServeMux()
	mux.HandleFunc("/podswitch/", func(w http.ResponseWriter, r *http.Request) {
		if err := api.serve(w, r); err != nil {
			caddyAdminErrorBody(w, err)
		}
	})
	mux.Handle("/config/apps/podswitch/apps/", e.conf)
	srv := &http.Server{Handler: mux, ReadTimeout: 200 * time.Millisecond}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	e.base = "http://" + ln.Addr().String()
	// boot_timeout is 400ms: the answer comes after the read timeout.
	code, body := e.do("POST", "/podswitch/apps/blog/deploy?wait=1", `{"image": "localhost/blog:slow"}`)
	ans := decodeAnswer(t, body)
	if code != 200 || ans.Deployment == nil || ans.Deployment.Status != engine.StatusTimeoutError {
		t.Fatalf("deploy --wait past the read timeout: %d %s", code, body)
	}
}

// runCLI runs `caddy podswitch args...` against the test endpoint and
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
			e.rt.mu.Lock()
			e.rt.noListen["localhost/blog:bad"] = true
			e.rt.mu.Unlock()
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

			// Failures: exit 1 with the API's message.
			for _, tc := range []struct {
				args []string
				msg  string
			}{
				{[]string{"status", "nope"}, `unknown app "nope" (HTTP 404)`},
				{[]string{"deploy", "blog"}, "usage: caddy podswitch deploy"},
				{[]string{"deploy", "nope", "x:v1", "--wait"}, `unknown app "nope"`},
				{[]string{"scale", "blog", "web=-1"}, "want <type>=<count>"},
				{[]string{"scale", "blog", "clock=1"}, `no process type "clock"`},
				{[]string{"restart", "blog", "--container", "nope"}, `no running container "nope"`},
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

// The history store writes each app's deployments to its own file, at
// most historyLimit of them, and gives them back to a new store.
func TestFileHistory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "history")
	h := newFileHistory(dir, nil)
	var ds []engine.Deployment
	for i := 1; i <= 70; i++ {
		ds = append(ds, engine.Deployment{ID: int64(i), Kind: engine.KindDeploy, Image: fmt.Sprintf("x:v%d", i), Status: engine.StatusSuccess, StartedAt: time.Unix(int64(i), 0).UTC()})
		h.Save("blog", slices.Clone(ds))
	}
	h.Save("other", ds[:1])
	h.Save("../evil", ds[:1])
	h.Close()

	files, _ := filepath.Glob(filepath.Join(dir, "*"))
	slices.Sort(files)
	if want := []string{filepath.Join(dir, "blog.json"), filepath.Join(dir, "other.json")}; !slices.Equal(files, want) {
		t.Errorf("files %v, want %v (and no temporary file left)", files, want)
	}
	h2 := newFileHistory(dir, nil)
	defer h2.Close()
	got := h2.Load("blog")
	if len(got) != historyLimit || got[0].ID != 21 || got[len(got)-1].ID != 70 || !got[0].StartedAt.Equal(time.Unix(21, 0)) {
		t.Fatalf("loaded %d deployments, %+v ... %+v", len(got), got[0], got[len(got)-1])
	}
	if got := h2.Load("none"); got != nil {
		t.Errorf("Load of an app without a file = %v", got)
	}
	// A damaged file is ignored, not fatal.
	os.WriteFile(filepath.Join(dir, "broken.json"), []byte("{"), 0o600)
	if got := h2.Load("broken"); got != nil {
		t.Errorf("Load of a damaged file = %v", got)
	}
	// Save returns at once and a later Load in the same process sees it.
	h2.Save("blog", ds[:2])
	if got := h2.Load("blog"); len(got) != 2 {
		t.Errorf("Load after Save = %d deployments, want 2", len(got))
	}
}

// With the store wired into the engine, the deployments of an app survive
// a new manager, as they survive a restart of Caddy.
func TestFileHistoryWithEngine(t *testing.T) {
	dir := t.TempDir()
	rt := newAPIFakeRuntime()
	spec := func(image string) []engine.AppSpec {
		var cfg AppConfig
		json.Unmarshal([]byte(apiBlogConfig), &cfg)
		cfg.Image = image
		s, err := cfg.Spec("blog")
		if err != nil {
			t.Fatal(err)
		}
		return []engine.AppSpec{s}
	}
	h := newFileHistory(dir, nil)
	m := engine.NewManager(engine.Deps{Runtime: rt, Prober: rt, History: h})
	m.Apply(spec("localhost/blog:v1"))
	waitApp(t, m, "localhost/blog:v1")
	m.Apply(spec("localhost/blog:v2"))
	waitApp(t, m, "localhost/blog:v2")
	m.Close()
	h.Close()

	h2 := newFileHistory(dir, nil)
	defer h2.Close()
	m2 := engine.NewManager(engine.Deps{Runtime: rt, Prober: rt, History: h2})
	defer m2.Close()
	m2.Apply(spec("localhost/blog:v2"))
	deps := m2.App("blog").Status().Deployments
	if len(deps) != 2 || deps[0].Image != "localhost/blog:v2" || deps[1].Image != "localhost/blog:v1" || deps[0].Status != engine.StatusSuccess {
		t.Fatalf("history after a restart: %+v", deps)
	}
}

func waitApp(t *testing.T, m *engine.Manager, image string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, d := range m.App("blog").Status().Deployments {
			if d.Image == image && d.Status.Ended() {
				if d.Status != engine.StatusSuccess {
					t.Fatalf("%s: %s %s", image, d.Status, d.Error)
				}
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no ended deployment of %s", image)
}
