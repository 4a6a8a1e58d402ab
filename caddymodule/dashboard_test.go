package caddymodule

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/podswitch/podswitch/internal/browsertest"
	"github.com/podswitch/podswitch/internal/engine"
)

// dashEnv is the dashboard served by an httptest server over an engine on
// the fake runtime.
type dashEnv struct {
	t       *testing.T
	rt      *apiFakeRuntime
	m       *engine.Manager
	crashes *crashLog
	d       *Dashboard
	srv     *httptest.Server
}

func newDashEnv(t *testing.T, log *zap.Logger, specs ...engine.AppSpec) *dashEnv {
	t.Helper()
	rt := newAPIFakeRuntime()
	feed := newChangeFeed()
	m := engine.NewManager(engine.Deps{Runtime: rt, Prober: rt, Logger: log, Changed: feed.publish})
	t.Cleanup(m.Close)
	m.Apply(specs)
	e := &dashEnv{t: t, rt: rt, m: m, crashes: newCrashLog()}
	e.d = new(Dashboard)
	e.d.setup(dashSource{manager: m, changes: feed, crashes: e.crashes, slots: &streamSlots{max: maxDashStreams}}, log)
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := e.d.ServeHTTP(w, r, nil); err != nil {
			t.Errorf("%s %s: %v", r.Method, r.URL, err)
		}
	}))
	t.Cleanup(e.srv.Close)
	// The streams end first, or the server's Close would wait for them.
	t.Cleanup(func() { _ = e.d.Cleanup() })
	return e
}

// newBlogDash is a dashboard over app blog (apiBlogConfig), serving v1.
func newBlogDash(t *testing.T) *dashEnv {
	t.Helper()
	e := newDashEnv(t, zaptest.NewLogger(t), blogSpec(t))
	waitSuccess(t, e.m, "localhost/blog:v1")
	waitSettled(t, e.m, map[string]int{"web": 2, "worker": 1})
	return e
}

// get does one request and returns status, headers and body. No answer may
// show an env value.
func (e *dashEnv) get(path string, hdr ...string) (int, http.Header, []byte) {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodGet, e.srv.URL+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	if strings.Contains(string(b), apiSecret) {
		e.t.Errorf("GET %s shows an env value: %s", path, b)
	}
	return resp.StatusCode, resp.Header, b
}

func (e *dashEnv) getJSON(path string, v any) {
	e.t.Helper()
	code, h, b := e.get(path)
	if code != http.StatusOK {
		e.t.Fatalf("GET %s: %d %s", path, code, b)
	}
	if ct := h.Get("Content-Type"); ct != "application/json" {
		e.t.Errorf("GET %s: Content-Type %q", path, ct)
	}
	if err := json.Unmarshal(b, v); err != nil {
		e.t.Fatalf("GET %s: %v in %s", path, err, b)
	}
}

// The page and its assets are served with their types, revalidated by
// ETag, with a policy that allows nothing from elsewhere; every URL in the
// page is relative, so that it works under a path prefix.
func TestDashboardAssets(t *testing.T) {
	e := newBlogDash(t)
	total := 0
	for _, c := range []struct{ path, ctype, file string }{
		{"/", "text/html; charset=utf-8", "dashboard/index.html"},
		{"/index.html", "text/html; charset=utf-8", "dashboard/index.html"},
		{"/assets/app.js", "text/javascript; charset=utf-8", "dashboard/app.js"},
		{"/assets/app.css", "text/css; charset=utf-8", "dashboard/app.css"},
	} {
		code, h, b := e.get(c.path)
		if code != http.StatusOK || h.Get("Content-Type") != c.ctype {
			t.Errorf("GET %s: %d %q, want 200 %q", c.path, code, h.Get("Content-Type"), c.ctype)
		}
		want, _ := dashboardFiles.ReadFile(c.file)
		if string(b) != string(want) {
			t.Errorf("GET %s: body is not %s", c.path, c.file)
		}
		if h.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: no nosniff", c.path)
		}
		etag := h.Get("ETag")
		if code, _, _ := e.get(c.path, "If-None-Match", etag); etag == "" || code != http.StatusNotModified {
			t.Errorf("GET %s with If-None-Match %s: %d, want 304", c.path, etag, code)
		}
		if c.path != "/index.html" {
			total += len(b)
		}
	}
	t.Logf("page weight as served (HTML+JS+CSS, uncompressed): %d bytes", total)
	if total > 60_000 {
		t.Errorf("the page weighs %d bytes: keep it small", total)
	}

	_, h, page := e.get("/")
	csp := h.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("Content-Security-Policy %q lacks %q", csp, want)
		}
	}
	for _, ref := range regexp.MustCompile(`(?:href|src)="([^"]*)"`).FindAllStringSubmatch(string(page), -1) {
		if u := ref[1]; strings.HasPrefix(u, "/") || strings.Contains(u, "://") {
			t.Errorf("the page refers to %q: every URL must be relative and local", u)
		}
	}
	js, _ := dashboardFiles.ReadFile("dashboard/app.js")
	if !strings.Contains(string(js), "'api/events'") || strings.Contains(string(js), "'/api") {
		t.Errorf("app.js must open its stream at the relative URL api/events")
	}
	if strings.Contains(string(js), "http://") || strings.Contains(string(js), "https://") {
		t.Errorf("app.js names a network address")
	}

	// Read-only; unknown paths say how to mount it.
	resp, err := http.Post(e.srv.URL+"/api/apps", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST: %d Allow %q, want 405 GET, HEAD", resp.StatusCode, resp.Header.Get("Allow"))
	}
	if code, _, b := e.get("/podswitch/"); code != http.StatusNotFound || !strings.Contains(string(b), "handle_path") {
		t.Errorf("GET /podswitch/: %d %s, want 404 naming handle_path", code, b)
	}
}

// Each path reaches its own handler; anything but GET and HEAD is a 405
// with Allow, whatever the path; a path without a route is a 404 that
// says how to mount the dashboard, never a redirect (under handle_path a
// redirect would leave the prefix); percent-encoded letters are the
// letters, an encoded slash is part of a name.
func TestDashboardRouting(t *testing.T) {
	e := newBlogDash(t)
	id := strconv.FormatInt(e.m.App("blog").Status().Deployments[0].ID, 10)
	const html, js, css, jsonType, sse = "text/html; charset=utf-8", "text/javascript; charset=utf-8", "text/css; charset=utf-8", "application/json", "text/event-stream"
	cases := []struct {
		method, path string
		code         int
		ctype        string
		// want is in the body: the message of a JSON error when code
		// >= 400.
		want string
	}{
		{"GET", "/", 200, html, "<html"},
		{"GET", "/index.html", 200, html, "<html"},
		{"GET", "/assets/app.js", 200, js, "api/events"},
		{"GET", "/assets/app.css", 200, css, ""},
		{"GET", "/api/apps", 200, jsonType, `"name":"blog"`},
		{"GET", "/api/apps/blog", 200, jsonType, `"containers":`},
		{"GET", "/api/apps/blog?deployment=" + id, 200, jsonType, `"deployment":{"id":` + id},
		{"GET", "/api/apps/blog/deployments/" + id, 200, jsonType, `"id":` + id},
		{"HEAD", "/api/events", 200, sse, ""},
		{"HEAD", "/api/apps/blog", 200, jsonType, ""},

		{"POST", "/api/apps", 405, jsonType, "read-only"},
		{"DELETE", "/nope", 405, jsonType, "read-only"},
		{"OPTIONS", "/", 405, jsonType, "read-only"},

		{"GET", "/nope", 404, jsonType, "handle_path"},
		{"GET", "/podswitch/", 404, jsonType, "handle_path"},
		{"GET", "/assets/", 404, jsonType, "handle_path"},
		{"GET", "/api/apps/", 404, jsonType, "handle_path"},
		{"GET", "/api/apps/blog/", 404, jsonType, "handle_path"},
		{"GET", "/api/apps/blog/deployments", 404, jsonType, "handle_path"},
		{"GET", "/api/events/blog", 404, jsonType, "handle_path"},
		{"GET", "/api/../api/apps", 404, jsonType, "handle_path"},
		{"GET", "//api/apps", 404, jsonType, "handle_path"},
		{"GET", "/assets/./app.js", 404, jsonType, "handle_path"},

		{"GET", "/api/apps/nope", 404, jsonType, `no app "nope"`},
		{"GET", "/api/apps/Bad!App", 404, jsonType, `no app "Bad!App"`},
		{"GET", "/api/apps/Bad!App/deployments/1", 404, jsonType, `no app "Bad!App"`},
		{"GET", "/api/apps/blog/deployments/x", 400, jsonType, `deployment "x"`},
		{"GET", "/api/apps/blog/deployments/0", 400, jsonType, `deployment "0"`},
		{"GET", "/api/apps/blog?deployment=x", 400, jsonType, `deployment "x"`},

		{"GET", "/api/apps/bl%6Fg", 200, jsonType, `"containers":`},
		{"GET", "/api/%61pps", 200, jsonType, `"name":"blog"`},
		{"GET", "/assets/app%2Ejs", 200, js, "api/events"},
		{"GET", "/api/apps/blog%2Fdeployments%2F" + id, 404, jsonType, `no app "blog/deployments/` + id + `"`},
		{"GET", "/api/apps/blog/deployments/1%2F2", 400, jsonType, `deployment "1/2"`},
	}
	for _, tc := range cases {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, e.srv.URL+tc.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.code || resp.Header.Get("Content-Type") != tc.ctype {
				t.Errorf("%d %q, want %d %q: %.200s", resp.StatusCode, resp.Header.Get("Content-Type"), tc.code, tc.ctype, b)
			}
			if loc := resp.Header.Get("Location"); loc != "" {
				t.Errorf("redirected to %s", loc)
			}
			if allow := resp.Header.Get("Allow"); (tc.code == 405) != (allow == "GET, HEAD") {
				t.Errorf("Allow %q", allow)
			}
			if tc.code != 405 && resp.Header.Get("X-Content-Type-Options") != "nosniff" {
				t.Errorf("no nosniff")
			}
			switch {
			case tc.method == http.MethodHead:
				if len(b) != 0 {
					t.Errorf("HEAD answered a body: %.200s", b)
				}
			case tc.code >= 400:
				var body map[string]string
				if json.Unmarshal(b, &body) != nil || len(body) != 1 || !strings.Contains(body["error"], tc.want) {
					t.Errorf(`answer %s, want {"error": "...%s..."}`, b, tc.want)
				}
			case !strings.Contains(string(b), tc.want):
				t.Errorf("answer %.200s does not have %s", b, tc.want)
			}
		})
	}

	// Mounted with handle_path at /prefix and asked for at /prefix, the
	// path is empty: the page.
	w := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.URL.Path = ""
	if err := e.d.ServeHTTP(w, r, nil); err != nil || w.Code != http.StatusOK || w.Header().Get("Content-Type") != html {
		t.Errorf("GET of an empty path: %v %d %q", err, w.Code, w.Header().Get("Content-Type"))
	}
}

// The JSON of the overview, an app and a deployment; unknown apps and
// deployments are 404, bad ids 400.
func TestDashboardJSON(t *testing.T) {
	e := newBlogDash(t)

	var ov dashOverview
	e.getJSON("/api/apps", &ov)
	if len(ov.Apps) != 1 || ov.Apps[0].Name != "blog" {
		t.Fatalf("overview apps: %+v", ov.Apps)
	}
	a := ov.Apps[0]
	if a.Release == nil || a.Release.Image != "localhost/blog:v1" || a.Level != "ok" || len(a.Attention) != 0 {
		t.Errorf("blog: release %+v level %s attention %+v", a.Release, a.Level, a.Attention)
	}
	if a.Last == nil || a.Last.Status != engine.StatusSuccess || a.Last.New != 3 {
		t.Errorf("last deployment: %+v", a.Last)
	}
	wantProcs := []dashProcess{
		{Name: "web", Want: 2, States: []dashCount{{engine.StateReady, 2}}},
		{Name: "worker", Want: 1, States: []dashCount{{engine.StateReady, 1}}},
	}
	if len(a.Processes) != 2 {
		t.Fatalf("processes: %+v", a.Processes)
	}
	for i, p := range a.Processes {
		w := wantProcs[i]
		if p.Name != w.Name || p.Want != w.Want || !slices.Equal(p.States, w.States) {
			t.Errorf("process %d: %+v, want %+v", i, p, w)
		}
	}

	var v dashAppView
	e.getJSON("/api/apps/blog", &v)
	if v.App == nil || len(v.Containers) != 3 || len(v.Deployments) != 1 || v.Deployment == nil {
		t.Fatalf("app view: %+v", v)
	}
	for _, c := range v.Containers {
		if c.ID == "" || c.State != engine.StateReady || (c.Process == "web") != (c.Addr != "") || c.Since.IsZero() {
			t.Errorf("container %+v", c)
		}
	}
	d := v.Deployment
	if len(d.Containers) != 3 || d.SwitchedAt.IsZero() {
		t.Errorf("newest deployment: %+v", d)
	}
	for _, c := range d.Containers {
		if c.Role != "new" || len(c.Timeline) < 3 || c.Timeline[0].State != engine.StateStarting {
			t.Errorf("deployment container %+v", c)
		}
	}

	var dep engine.Deployment
	e.getJSON(fmt.Sprintf("/api/apps/blog/deployments/%d", d.ID), &dep)
	if dep.ID != d.ID || len(dep.Containers) != 3 {
		t.Errorf("deployment %d: %+v", d.ID, dep)
	}
	e.getJSON(fmt.Sprintf("/api/apps/blog?deployment=%d", d.ID), &v)
	if v.Deployment == nil || v.Deployment.ID != d.ID {
		t.Errorf("?deployment=%d: %+v", d.ID, v.Deployment)
	}

	for path, want := range map[string]int{
		"/api/apps/nope":                    http.StatusNotFound,
		"/api/apps/nope/deployments/1":      http.StatusNotFound,
		"/api/apps/blog/deployments/99":     http.StatusNotFound,
		"/api/apps/blog/deployments/x":      http.StatusBadRequest,
		"/api/apps/blog?deployment=x":       http.StatusBadRequest,
		"/api/events?app=Not_A_Name":        http.StatusBadRequest,
		"/api/events?app=blog&deployment=0": http.StatusBadRequest,
	} {
		code, h, b := e.get(path)
		var body struct{ Error string }
		if code != want || h.Get("Content-Type") != "application/json" || json.Unmarshal(b, &body) != nil || body.Error == "" {
			t.Errorf("GET %s: %d %s, want %d with an error", path, code, b, want)
		}
	}
}

// A failed deployment shows with its status on the overview, as something
// that needs a person; the containers' output, which the engine keeps, is
// not served.
func TestDashboardFailedDeployment(t *testing.T) {
	e := newBlogDash(t)
	e.rt.setNoListen("localhost/blog:v3")
	if _, err := e.m.App("blog").Deploy("localhost/blog:v3", ""); err != nil {
		t.Fatal(err)
	}
	failed := waitEnded(t, e.m, "localhost/blog:v3", 0)
	if failed.Status != engine.StatusTimeoutError {
		t.Fatalf("deployment of v3: %s", failed.Status)
	}
	// The engine keeps output of the failed containers, once captured.
	deadline := time.Now().Add(10 * time.Second)
	for {
		d, _, _ := e.m.App("blog").Deployment(failed.ID)
		if slices.ContainsFunc(d.Containers, func(c engine.ContainerRecord) bool { return len(c.Output) > 0 }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the engine kept no output of deployment %d: %+v", failed.ID, d.Containers)
		}
		time.Sleep(10 * time.Millisecond)
	}

	var ov dashOverview
	e.getJSON("/api/apps", &ov)
	a := ov.Apps[0]
	if a.Level != "bad" || a.Last == nil || a.Last.Status != engine.StatusTimeoutError || a.Release.Image != "localhost/blog:v1" {
		t.Errorf("after a failed deploy: level %s last %+v release %+v", a.Level, a.Last, a.Release)
	}
	if len(a.Attention) == 0 || !strings.Contains(a.Attention[0].Text, "timeout-error") {
		t.Errorf("attention: %+v", a.Attention)
	}
	for _, path := range []string{"/api/apps/blog", fmt.Sprintf("/api/apps/blog/deployments/%d", failed.ID)} {
		_, _, b := e.get(path)
		if strings.Contains(string(b), "line 1 of") {
			t.Errorf("GET %s shows a container's output: %s", path, b)
		}
		if !strings.Contains(string(b), string(engine.StatusTimeoutError)) {
			t.Errorf("GET %s does not show the status", path)
		}
	}
}

// sseEvent is one server-sent event.
type sseEvent struct{ name, data string }

// openStream opens path as an event stream and returns its events; the
// channel closes when the stream ends.
func (e *dashEnv) openStream(path string) (<-chan sseEvent, *http.Response) {
	e.t.Helper()
	return openStreamURL(e.t, e.srv.URL+path)
}

func openStreamURL(t *testing.T, url string) (<-chan sseEvent, *http.Response) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %d %q %s", url, resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	return readEvents(resp.Body), resp
}

// readEvents returns the events read from body; the channel closes when
// body ends.
func readEvents(body io.Reader) <-chan sseEvent {
	ch := make(chan sseEvent, 100)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(body)
		sc.Buffer(make([]byte, 1<<20), 1<<24)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.name != "" {
					ch <- ev
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, "event: "):
				ev.name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				ev.data = strings.TrimPrefix(line, "data: ")
			}
		}
	}()
	return ch
}

// next returns the next event, failing the test if none comes in time.
func next(t *testing.T, ch <-chan sseEvent, timeout time.Duration) sseEvent {
	t.Helper()
	select {
	case ev, ok := <-ch:
		if !ok {
			t.Fatal("the stream ended")
		}
		if strings.Contains(ev.data, apiSecret) {
			t.Errorf("event %s shows an env value: %s", ev.name, ev.data)
		}
		return ev
	case <-time.After(timeout):
		t.Fatalf("no event within %s", timeout)
	}
	return sseEvent{}
}

// The overview stream sends the overview, then each app that changed,
// soon after the change: a deploy shows as starting, then as success with
// the new image. At Cleanup, the stream ends.
func TestDashboardEvents(t *testing.T) {
	e := newBlogDash(t)
	ch, _ := e.openStream("/api/events")
	ev := next(t, ch, 5*time.Second)
	var ov dashOverview
	if ev.name != "overview" || json.Unmarshal([]byte(ev.data), &ov) != nil || len(ov.Apps) != 1 {
		t.Fatalf("first event: %s %s", ev.name, ev.data)
	}

	t0 := time.Now()
	if _, err := e.m.App("blog").Deploy("localhost/blog:v2", ""); err != nil {
		t.Fatal(err)
	}
	var seen []engine.Status
	var first time.Duration
	for {
		ev := next(t, ch, 5*time.Second)
		if ev.name != "apps" {
			t.Fatalf("event %s, want apps: %s", ev.name, ev.data)
		}
		var p dashPatch
		if err := json.Unmarshal([]byte(ev.data), &p); err != nil {
			t.Fatal(err)
		}
		if len(p.Apps) != 1 || p.Apps[0].Name != "blog" || len(p.Removed) != 0 {
			t.Fatalf("patch: %s", ev.data)
		}
		a := p.Apps[0]
		if a.Last == nil || a.Last.Image != "localhost/blog:v2" {
			continue
		}
		if first == 0 {
			first = time.Since(t0)
		}
		if len(seen) == 0 || seen[len(seen)-1] != a.Last.Status {
			seen = append(seen, a.Last.Status)
		}
		if a.Last.Status == engine.StatusSuccess && a.Release.Image == "localhost/blog:v2" {
			break
		}
	}
	t.Logf("first update %s after the deploy; statuses seen: %v", first, seen)
	if seen[0] != engine.StatusStarting {
		t.Errorf("statuses seen %v: want starting first", seen)
	}

	// Cleanup ends the stream; a new one is refused until the handler is
	// provisioned again.
	if err := e.d.Cleanup(); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(5 * time.Second)
	for ended := false; !ended; {
		select {
		case _, ok := <-ch:
			ended = !ok
		case <-deadline:
			t.Fatal("the stream did not end at Cleanup")
		}
	}
	if code, _, _ := e.get("/api/events"); code != http.StatusServiceUnavailable {
		t.Errorf("a stream after Cleanup: %d, want 503", code)
	}
}

// The handler ends its streams when its server begins to shut down, as
// Caddy's stop and reload do (before the config's Cleanup): a graceful
// shutdown does not wait for an open page.
func TestDashboardStreamsEndAtShutdown(t *testing.T) {
	e := newBlogDash(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: e.srv.Config.Handler}
	srv.RegisterOnShutdown(e.d.end)
	go srv.Serve(ln)
	ch, _ := openStreamURL(t, "http://"+ln.Addr().String()+"/api/events?app=blog")
	if ev := next(t, ch, 5*time.Second); ev.name != "app" {
		t.Fatalf("first event %s", ev.name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	t0 := time.Now()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown with an open stream: %v after %s", err, time.Since(t0))
	}
	for range ch {
	}
}

// At most maxDashStreams streams are open at once: the next is answered
// 503 with Retry-After at once; a stream whose client left frees its slot
// for a new one, and so do the streams ended as the server shuts down.
func TestDashboardStreamsCapped(t *testing.T) {
	e := newBlogDash(t)
	// Each connection the server is done with, by the client's address: a
	// stream's handler, and so its slot, is done before.
	closed := make(chan string, 4*maxDashStreams)
	srv := httptest.NewUnstartedServer(e.srv.Config.Handler)
	srv.Config.ConnState = func(c net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			closed <- c.RemoteAddr().String()
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	t.Cleanup(e.d.end) // before srv.Close, which waits for the streams
	client := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(client.CloseIdleConnections)

	// open asks for a stream; it returns the answer and the client's
	// address on its connection.
	open := func(path string) (*http.Response, string) {
		t.Helper()
		var addr string
		trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { addr = i.Conn.LocalAddr().String() }}
		req, err := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), http.MethodGet, srv.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp, addr
	}
	// stream opens a stream that must be accepted, and waits for its
	// first event: from then on it holds a slot.
	stream := func(path string) (*http.Response, string, <-chan sseEvent) {
		t.Helper()
		resp, addr := open(path)
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(resp.Body)
			t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
		}
		ch := readEvents(resp.Body)
		if ev := next(t, ch, 10*time.Second); ev.name != "overview" && ev.name != "app" {
			t.Fatalf("GET %s: first event %s", path, ev.name)
		}
		return resp, addr, ch
	}

	type open1 struct {
		resp *http.Response
		addr string
		ch   <-chan sseEvent
	}
	var streams []open1
	for i := range maxDashStreams {
		path := "/api/events"
		if i%2 == 1 {
			path += "?app=blog"
		}
		resp, addr, ch := stream(path)
		streams = append(streams, open1{resp, addr, ch})
	}

	refused := func() {
		t.Helper()
		resp, _ := open("/api/events?app=blog")
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("stream %d: %d, want 503", maxDashStreams+1, resp.StatusCode)
		}
		b, _ := io.ReadAll(resp.Body)
		var body map[string]string
		if resp.Header.Get("Retry-After") != "5" || json.Unmarshal(b, &body) != nil || !strings.Contains(body["error"], "too many dashboard streams") {
			t.Fatalf("stream %d: Retry-After %q %s, want 5 and an error", maxDashStreams+1, resp.Header.Get("Retry-After"), b)
		}
	}
	refused()
	// The other routes are not bounded.
	if code, _, b := e.get("/api/apps"); code != http.StatusOK {
		t.Fatalf("GET /api/apps with every stream slot taken: %d %s", code, b)
	}

	// A client leaves: its slot is free once the server is done with its
	// connection.
	gone := streams[0]
	streams = streams[1:]
	gone.resp.Body.Close()
	for addr := ""; addr != gone.addr; {
		select {
		case addr = <-closed:
		case <-time.After(10 * time.Second):
			t.Fatal("the server did not end the stream whose client left")
		}
	}
	resp, addr, ch := stream("/api/events")
	streams = append(streams, open1{resp, addr, ch})
	refused()

	// The server shuts down: every stream ends, and every slot is free.
	e.d.end()
	for _, s := range streams {
		for range s.ch {
		}
	}
	if n := e.d.src.slots.n.Load(); n != 0 {
		t.Errorf("%d stream slots taken after every stream ended", n)
	}
}

// scriptedRuntime is the fake runtime whose next web containers fail as
// planned: "crash" exits at once, "hang" never accepts a connection.
type scriptedRuntime struct {
	*apiFakeRuntime
	mu   sync.Mutex
	plan []string
	hang map[string]bool // by IP
}

func (s *scriptedRuntime) Run(ctx context.Context, spec engine.ContainerSpec) (engine.ContainerInfo, error) {
	info, err := s.apiFakeRuntime.Run(ctx, spec)
	if err != nil || spec.Labels[engine.LabelProcess] != engine.WebProcess {
		return info, err
	}
	s.mu.Lock()
	step := ""
	if len(s.plan) > 0 {
		step, s.plan = s.plan[0], s.plan[1:]
	}
	if step == "hang" {
		s.hang[info.IP] = true
	}
	s.mu.Unlock()
	if step == "crash" {
		f := s.apiFakeRuntime
		f.mu.Lock()
		f.cs[info.ID].Running, f.cs[info.ID].ExitCode = false, 3
		f.mu.Unlock()
	}
	return info, nil
}

func (s *scriptedRuntime) Probe(ctx context.Context, addr string) error {
	host, _, _ := net.SplitHostPort(addr)
	s.mu.Lock()
	hang := s.hang[host]
	s.mu.Unlock()
	if hang {
		return errors.New("connection refused")
	}
	return s.apiFakeRuntime.Probe(ctx, addr)
}

// A restart whose first new container crashes and whose second never
// listens succeeds at its third: the dashboard counts the failed attempts
// and the crash, and the timeline labels each attempt and marks the crash.
func TestDashboardTimelineRetries(t *testing.T) {
	var cfg AppConfig
	if err := json.Unmarshal([]byte(`{"image":"localhost/retry:v1","web":1,"boot_timeout":"500ms","stop_timeout":"1s","drain_timeout":"0s","restart_attempts":3}`), &cfg); err != nil {
		t.Fatal(err)
	}
	spec, err := cfg.Spec("retry")
	if err != nil {
		t.Fatal(err)
	}
	rt := &scriptedRuntime{apiFakeRuntime: newAPIFakeRuntime(), hang: map[string]bool{}}
	feed := newChangeFeed()
	m := engine.NewManager(engine.Deps{Runtime: rt, Prober: rt, Logger: zap.NewNop(), Changed: feed.publish})
	t.Cleanup(m.Close)
	m.Apply([]engine.AppSpec{spec})
	e := &dashEnv{t: t, rt: rt.apiFakeRuntime, m: m, crashes: newCrashLog()}
	e.d = new(Dashboard)
	e.d.setup(dashSource{manager: m, changes: feed, crashes: e.crashes, slots: &streamSlots{max: maxDashStreams}}, zap.NewNop())
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _ = e.d.ServeHTTP(w, r, nil) }))
	t.Cleanup(e.srv.Close)
	t.Cleanup(func() { _ = e.d.Cleanup() })

	deadline := time.Now().Add(20 * time.Second)
	waitDep := func(kind string) engine.Deployment {
		t.Helper()
		for {
			st := m.App("retry").Status()
			if len(st.Deployments) > 0 && st.Deployments[0].Kind == kind && st.Deployments[0].Status.Ended() && !st.Deployments[0].RetiredAt.IsZero() == (kind == engine.KindRestart) {
				return st.Deployments[0]
			}
			if time.Now().After(deadline) {
				t.Fatalf("no ended %s: %+v", kind, st.Deployments)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitDep(engine.KindDeploy)
	rt.mu.Lock()
	rt.plan = []string{"crash", "hang"}
	rt.mu.Unlock()
	if _, err := m.App("retry").Restart(engine.WebProcess, ""); err != nil {
		t.Fatal(err)
	}
	d := waitDep(engine.KindRestart)
	if d.Status != engine.StatusSuccess {
		t.Fatalf("restart: %s %s", d.Status, d.Error)
	}
	var v dashAppView
	e.getJSON("/api/apps/retry", &v)
	if s := v.Deployments[0]; s.New != 3 || s.Old != 1 || s.Failed != 2 || s.Crashed != 1 {
		t.Errorf("restart summary: new %d old %d failed %d crashed %d, want 3 1 2 1", s.New, s.Old, s.Failed, s.Crashed)
	}

	browsertest.Path(t)
	ctx := browsertest.New(t, 1280, 900)
	if err := chromedp.Do(ctx, chromedp.Navigate(e.srv.URL+"/#/apps/retry")); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`document.querySelectorAll('#timeline .tl-row[data-role=new]').length === 3`,
		chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(10*time.Second))); err != nil {
		t.Fatal(err)
	}
	labels, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll('#timeline .tl-row[data-role=new] .tl-label .muted')].map(e => e.innerText)`))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(labels, []string{"failed", "failed", "retry 2"}) {
		t.Errorf("attempt labels %q, want failed, failed, retry 2", labels)
	}
	marks, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('#timeline .tl-row[data-role=new] .mark').length`))
	if err != nil || marks != 1 {
		t.Errorf("%d crash marks (%v), want 1", marks, err)
	}
	png, err := chromedp.Run(ctx, chromedp.Screenshot(chromedp.CSS("#timeline")))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(browsertest.ScreenshotDir(t), "timeline-retries.png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// The stream of one app sends the app's page at once and again when it
// changes; an app the config does not have is said to be missing.
func TestDashboardAppEvents(t *testing.T) {
	e := newBlogDash(t)
	ch, _ := e.openStream("/api/events?app=blog")
	ev := next(t, ch, 5*time.Second)
	var v dashAppView
	if ev.name != "app" || json.Unmarshal([]byte(ev.data), &v) != nil || v.App == nil || len(v.Containers) != 3 {
		t.Fatalf("first event: %s %s", ev.name, ev.data)
	}
	if err := e.m.App("blog").Scale(map[string]int{"web": 3}); err != nil {
		t.Fatal(err)
	}
	for {
		ev := next(t, ch, 5*time.Second)
		var v dashAppView
		if ev.name != "app" || json.Unmarshal([]byte(ev.data), &v) != nil || v.App == nil {
			t.Fatalf("event: %s %s", ev.name, ev.data)
		}
		ready := 0
		for _, c := range v.Containers {
			if c.Process == "web" && c.State == engine.StateReady {
				ready++
			}
		}
		if ready == 3 {
			break
		}
	}

	missing, _ := e.openStream("/api/events?app=nope")
	ev = next(t, missing, 5*time.Second)
	var gone dashAppView
	if ev.name != "app" || json.Unmarshal([]byte(ev.data), &gone) != nil || gone.Missing != "nope" || gone.App != nil {
		t.Errorf("stream of an unknown app: %s %s", ev.name, ev.data)
	}
}

// What needs a person stands out, worst first; a deployment in progress is
// busy; nothing else is ok.
func TestDashboardAttention(t *testing.T) {
	now := time.Now()
	rel := &engine.ReleaseInfo{ID: "r1", Image: "img:v1", Status: engine.StatusSuccess, DeployedAt: now.Add(-time.Hour)}
	ready := func(id, process string) engine.ContainerStatus {
		return engine.ContainerStatus{ID: id, Process: process, State: engine.StateReady, Since: now}
	}
	dep := func(st engine.Status) []engine.Deployment {
		return []engine.Deployment{{ID: 7, Kind: "deploy", Image: "img:v2", Status: st, Error: "it broke", StartedAt: now}}
	}
	base := func() engine.AppStatus {
		return engine.AppStatus{Name: "a", Release: rel, Processes: map[string]int{"web": 2},
			Containers: []engine.ContainerStatus{ready("c1", "web"), ready("c2", "web")}}
	}
	crash := func(id string, ago time.Duration) dashCrash {
		return dashCrash{Process: "web", Container: id, At: now.Add(-ago)}
	}
	for _, c := range []struct {
		name    string
		change  func(*engine.AppStatus)
		crashes []dashCrash
		level   string
		texts   []string
	}{
		{"ok", func(*engine.AppStatus) {}, nil, "ok", nil},
		{"deploying", func(s *engine.AppStatus) {
			s.Deployments = dep(engine.StatusStarting)
			s.Containers = append(s.Containers, engine.ContainerStatus{ID: "c3", Process: "web", State: engine.StateStarting})
		}, nil, "busy", nil},
		{"failed last deployment", func(s *engine.AppStatus) { s.Deployments = dep(engine.StatusCrashedError) },
			nil, "bad", []string{"deploy #7 of img:v2 ended with crashed-error: it broke"}},
		{"aborted is no failure", func(s *engine.AppStatus) { s.Deployments = dep(engine.StatusAborted) }, nil, "ok", nil},
		{"gave up", func(s *engine.AppStatus) { s.GaveUp = []string{"web"}; s.Containers = s.Containers[:1] },
			nil, "bad", []string{"gave up restarting web containers"}},
		{"one crash", func(*engine.AppStatus) {}, []dashCrash{crash("x", 3*time.Minute)},
			"warn", []string{"a web container crashed and was replaced"}},
		{"crash loop", func(*engine.AppStatus) {}, []dashCrash{crash("x", 3*time.Minute), crash("y", time.Minute)},
			"bad", []string{"crash loop: web containers crashed 2 times"}},
		{"missing container", func(s *engine.AppStatus) { s.Containers = s.Containers[:1] },
			nil, "warn", []string{"web: 1 of 2 containers running"}},
		{"crashed container", func(s *engine.AppStatus) { s.Containers[1].State = engine.StateCrashed },
			nil, "warn", []string{"web container c2 crashed", "web: 1 of 2 containers running"}},
		{"unhealthy", func(s *engine.AppStatus) {
			s.Containers[0].Unreachable = true
			s.Containers[0].State = engine.StateUnhealthy
		},
			nil, "warn", []string{"1 web container(s) unhealthy"}},
		{"all unhealthy", func(s *engine.AppStatus) {
			for i := range s.Containers {
				s.Containers[i].Unreachable, s.Containers[i].State = true, engine.StateUnhealthy
			}
			s.AllUnhealthy = engine.AllUnhealthyMessage
		}, nil, "bad", []string{"every web container fails its health check", "2 web container(s) unhealthy"}},
		{"runtime away", func(s *engine.AppStatus) { s.RuntimeError = "dial unix: refused" },
			nil, "bad", []string{"Podman cannot be reached: dial unix: refused"}},
		{"paused is no problem", func(s *engine.AppStatus) { s.Paused = &engine.PauseStatus{Since: now, Timeout: "30s"} }, nil, "ok", nil},
		{"asleep is no problem", func(s *engine.AppStatus) {
			s.Idle = &engine.IdleStatus{Since: now}
			s.Containers = nil
		}, nil, "ok", nil},
		{"a canary's containers are not web's", func(s *engine.AppStatus) {
			s.Canary = &engine.CanaryStatus{Release: "r2", InService: true, Ready: 2, CanaryRules: engine.CanaryRules{Percent: 20}}
			s.Containers = []engine.ContainerStatus{ready("c1", "web"), {ID: "c5", Process: "web", Release: "r2", State: engine.StateReady, Canary: true}}
		}, nil, "warn", []string{"web: 1 of 2 containers running"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			st := base()
			c.change(&st)
			s := summarize(st, c.crashes, now)
			if s.Level != c.level {
				t.Errorf("level %s, want %s (attention %+v)", s.Level, c.level, s.Attention)
			}
			if len(s.Attention) != len(c.texts) {
				t.Fatalf("attention %+v, want %q", s.Attention, c.texts)
			}
			for i, want := range c.texts {
				if !strings.Contains(s.Attention[i].Text, want) {
					t.Errorf("attention %d: %q, want it to say %q", i, s.Attention[i].Text, want)
				}
			}
			if n := len(c.crashes); n > 0 && !s.Attention[0].At.Equal(c.crashes[n-1].At) {
				t.Errorf("the crash note is dated %v, want the last crash's %v", s.Attention[0].At, c.crashes[n-1].At)
			}
		})
	}
}

// Crash events are kept once per container, for crashWindow.
func TestDashboardCrashRecorder(t *testing.T) {
	l := newCrashLog()
	feed := newChangeFeed()
	sub, unsub := feed.subscribe()
	defer unsub()
	rec := crashRecorder{log: l, changes: feed}
	emit := func(app, container string) {
		ev, err := caddy.NewEvent(caddy.Context{}, "podswitch.crashed", map[string]any{
			"app": app, "process": "web", "container": container, "message": "web container exited with code 3"})
		if err != nil {
			t.Fatal(err)
		}
		if err := rec.Handle(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
	}
	emit("blog", "c1")
	emit("blog", "c1") // the same crash heard twice (two dashboards)
	emit("blog", "c2")
	emit("shop", "c3")
	got := l.recent("blog", time.Now())
	if len(got) != 2 || got[0].Container != "c1" || got[1].Container != "c2" || got[0].Message == "" {
		t.Errorf("recent crashes of blog: %+v", got)
	}
	if n := len(l.recent("blog", time.Now().Add(crashWindow+time.Second))); n != 0 {
		t.Errorf("%d crashes older than the window still count", n)
	}
	if apps := sub.Take(); !slices.Equal(apps, []string{"blog", "shop"}) {
		t.Errorf("changes published: %v", apps)
	}
}

// The overview of 100 apps, some failing, crashing, paused or in
// maintenance, rendered by a real Chromium: every app is listed, and the
// time from navigation to the rows being in the DOM is logged (a figure,
// not a limit).
func TestDashboardRender100Apps(t *testing.T) {
	browsertest.Path(t)
	if testing.Short() {
		t.Skip("short")
	}
	var specs []engine.AppSpec
	for i := range 100 {
		var cfg AppConfig
		img := "localhost/shop:v1"
		if i%25 == 7 {
			img = "localhost/broken:v1"
		}
		raw := fmt.Sprintf(`{"image":%q,"web":%d,"boot_timeout":"300ms","stop_timeout":"1s","drain_timeout":"0s","worker_ready_time":"10ms"}`, img, 1+i%3)
		if i%10 == 3 {
			raw = fmt.Sprintf(`{"image":%q,"web":1,"processes":{"worker":{"count":1}},"boot_timeout":"300ms","worker_ready_time":"10ms"}`, img)
		}
		if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
			t.Fatal(err)
		}
		if img == "localhost/broken:v1" {
			// Its timed-out first deployment stays as it ended (bad), never
			// tried again (busy) while the page is looked at.
			cfg.RestartAttempts = new(int)
		}
		spec, err := cfg.Spec(fmt.Sprintf("app-%03d", i))
		if err != nil {
			t.Fatal(err)
		}
		specs = append(specs, spec)
	}
	e := newDashEnv(t, zap.NewNop())
	e.rt.setNoListen("localhost/broken:v1")
	e.m.Apply(specs)
	deadline := time.Now().Add(60 * time.Second)
	for _, s := range specs {
		for {
			st := e.m.App(s.Name).Status()
			if len(st.Deployments) > 0 && st.Deployments[0].Status.Ended() {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("app %s did not deploy: %+v", s.Name, st.Deployments)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	_ = e.m.App("app-011").Pause(30 * time.Second)
	_ = e.m.App("app-012").Maintenance("Back at 14:00 UTC.")
	e.crashes.record("app-020", dashCrash{Process: "web", Container: "a", At: time.Now().Add(-4 * time.Minute)})
	e.crashes.record("app-020", dashCrash{Process: "web", Container: "b", At: time.Now().Add(-time.Minute)})
	e.crashes.record("app-021", dashCrash{Process: "web", Container: "c", At: time.Now().Add(-2 * time.Minute)})

	t0 := time.Now()
	var ov dashOverview
	e.getJSON("/api/apps", &ov)
	b, _ := json.Marshal(ov)
	t.Logf("overview of %d apps: %d bytes of JSON, built and served in %s", len(ov.Apps), len(b), time.Since(t0).Round(time.Microsecond))

	ctx := browsertest.New(t, 1280, 900)
	const observe = `new MutationObserver((_, o) => {
		if (document.querySelectorAll('li.app').length >= 100) { window.__rendered = performance.now(); o.disconnect(); }
	}).observe(document, {childList: true, subtree: true});`
	if _, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: observe}); err != nil {
		t.Fatal(err)
	}
	var times []float64
	for i := range 5 {
		if err := chromedp.Do(ctx, chromedp.Navigate(e.srv.URL+fmt.Sprintf("/?run=%d", i))); err != nil {
			t.Fatal(err)
		}
		rendered, err := chromedp.Run(ctx, chromedp.Poll[float64](`window.__rendered`, chromedp.WithPollingTimeout(20*time.Second)))
		if err != nil {
			t.Fatal(err)
		}
		rows, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('li.app').length`))
		if err != nil {
			t.Fatal(err)
		}
		if rows != 100 {
			t.Fatalf("%d rows, want 100", rows)
		}
		times = append(times, rendered)
	}
	t.Logf("overview of 100 apps in the DOM %v ms after navigation start (5 loads)", times)
	slices.Sort(times)
	t.Logf("median %.0f ms", times[2])

	levels, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]int](`[...document.querySelectorAll('li.app')].reduce((m, li) => (m[li.dataset.level] = (m[li.dataset.level] || 0) + 1, m), {})`))
	if err != nil {
		t.Fatal(err)
	}
	if levels["bad"] < 5 || levels["warn"] < 1 || levels["ok"] < 50 {
		t.Errorf("levels on the page: %v", levels)
	}
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatal(err)
	}
	dir := browsertest.ScreenshotDir(t)
	if err := os.WriteFile(filepath.Join(dir, "overview-100-apps.png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
		Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}}}); err != nil {
		t.Fatal(err)
	}
	if png, err = chromedp.Run(ctx, chromedp.CaptureScreenshot()); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "overview-100-apps-dark.png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", filepath.Join(dir, "overview-100-apps.png"))
}

// The dashboard shows a release's tag with the short image ID it pins, on
// the app's page and in its deployments.
func TestDashboardShowsImageID(t *testing.T) {
	const id = "3f2a9c1d0b7e5566778899aabbccddeeff00112233445566778899aabbccddee"
	e := newBlogDash(t)
	if _, err := e.m.App("blog").Deploy("localhost/blog:v2", id); err != nil {
		t.Fatal(err)
	}
	waitSuccess(t, e.m, "localhost/blog:v2")
	var v dashAppView
	e.getJSON("/api/apps/blog", &v)
	if v.App == nil || v.App.Release == nil || v.App.Release.ImageID != id || v.App.DesiredImageID != id ||
		len(v.Deployments) == 0 || v.Deployments[0].ImageID != id {
		t.Fatalf("app view: %+v, deployments %+v; want image ID %s", v.App, v.Deployments, id)
	}

	browsertest.Path(t)
	ctx := browsertest.New(t, 1280, 900)
	if err := chromedp.Do(ctx, chromedp.Navigate(e.srv.URL+"/#/apps/blog")); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`document.querySelectorAll('table.deps [data-image-id]').length > 0`,
		chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(10*time.Second))); err != nil {
		t.Fatalf("no image ID in the deployments table: %v", err)
	}
	shown, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll('[data-image-id]')].map(e => e.innerText.trim())`))
	if err != nil {
		t.Fatal(err)
	}
	if len(shown) < 2 || slices.ContainsFunc(shown, func(s string) bool { return s != id[:12] }) {
		t.Errorf("image IDs shown %q, want the release's and the deployment's, each %s", shown, id[:12])
	}
}

// The dashboard shows a canary in service with its share, and does not
// count its containers among the serving release's; a real browser.
func TestDashboardCanaryBadge(t *testing.T) {
	e := newBlogDash(t)
	s := e.m.App("blog")
	res, err := s.Canary("localhost/blog:v2", "", engine.CanaryRules{Percent: 20})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if st := s.Status(); st.Canary != nil && st.Canary.InService {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("canary %d not in service: %+v", res.Deployment.ID, s.Status().Canary)
		}
		time.Sleep(20 * time.Millisecond)
	}
	browsertest.Path(t)
	ctx := browsertest.New(t, 1280, 900)
	if err := chromedp.Do(ctx, chromedp.Navigate(e.srv.URL+"/")); err != nil {
		t.Fatal(err)
	}
	badge, err := chromedp.Run(ctx, chromedp.Poll[string](`(document.querySelector('.badge.b-canary') || {}).innerText`,
		chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(10*time.Second)))
	if err != nil || badge != "canary 20%" {
		t.Fatalf("canary badge %q (%v), want \"canary 20%%\"", badge, err)
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(browsertest.ScreenshotDir(t), "canary-overview.png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
	var v dashAppView
	e.getJSON("/api/apps/blog", &v)
	if v.App == nil || v.App.Canary == nil || v.App.Canary.Percent != 20 || v.App.Canary.Ready != 2 {
		t.Fatalf("app view canary %+v", v.App)
	}
	for _, p := range v.App.Processes {
		n := 0
		for _, c := range p.States {
			n += c.N
		}
		if p.Name == engine.WebProcess && n != 2 {
			t.Errorf("web counts %+v: want the serving release's 2, not the canary's", p.States)
		}
	}
}

// An app on two hosts, one of which has its API down: the app's page lists
// each host with its state, and the host that does not answer is a note
// that needs a person; each container's ID shows its host.
func TestDashboardHosts(t *testing.T) {
	a, b := newAPIFakeRuntime(), newAPIFakeRuntime()
	var bDown atomic.Bool
	hs := engine.NewHostSet(zaptest.NewLogger(t))
	t.Cleanup(hs.Close)
	hs.Update([]engine.HostConfig{
		{Name: "a", Runtime: a, Address: "192.0.2.1", Key: "a"},
		{Name: "b", Runtime: b, Address: "192.0.2.2", Key: "b", Ping: func(context.Context) error {
			if bDown.Load() {
				return errors.New("dial unix /run/podman/podman.sock: connection refused")
			}
			return nil
		}},
	}, 0)
	feed := newChangeFeed()
	m := engine.NewManager(engine.Deps{Runtime: hs, Hosts: hs, Prober: a, Logger: zaptest.NewLogger(t), Changed: feed.publish})
	t.Cleanup(m.Close)
	m.Apply([]engine.AppSpec{blogSpec(t)})
	waitSuccess(t, m, "localhost/blog:v1")
	waitSettled(t, m, map[string]int{"web": 2, "worker": 1})
	bDown.Store(true)
	deadline := time.Now().Add(20 * time.Second)
	for hs.State("b") != engine.HostUnmanaged {
		if time.Now().After(deadline) {
			t.Fatalf("host b is %s, want unmanaged", hs.State("b"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	e := &dashEnv{t: t, rt: a, m: m, crashes: newCrashLog()}
	e.d = new(Dashboard)
	e.d.setup(dashSource{manager: m, changes: feed, crashes: e.crashes, slots: &streamSlots{max: maxDashStreams}}, zap.NewNop())
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _ = e.d.ServeHTTP(w, r, nil) }))
	t.Cleanup(e.srv.Close)
	t.Cleanup(func() { _ = e.d.Cleanup() })

	browsertest.Path(t)
	ctx := browsertest.New(t, 1280, 900)
	if err := chromedp.Do(ctx, chromedp.Navigate(e.srv.URL+"/#/apps/blog")); err != nil {
		t.Fatal(err)
	}
	states, err := chromedp.Run(ctx, chromedp.Poll[string](`Array.from(document.querySelectorAll('[data-host]')).map(e => e.dataset.host + ':' + e.dataset.hostState).join(' ')`,
		chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(10*time.Second)))
	if err != nil || states != "a:up b:unmanaged" {
		t.Fatalf("hosts on the page %q (%v), want \"a:up b:unmanaged\"", states, err)
	}
	note, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
	if err != nil || !strings.Contains(note, "host b: its Podman API does not answer") {
		t.Errorf("the page does not say host b's API does not answer (%v):\n%s", err, note)
	}
	ids, err := chromedp.Run(ctx, chromedp.Evaluate[string](`Array.from(document.querySelectorAll('tr[data-container] td:first-child')).map(e => e.innerText).join(' ')`))
	if err != nil || !strings.Contains(ids, "a/") || !strings.Contains(ids, "b/") {
		t.Errorf("container IDs on the page %q (%v), want them with their hosts", ids, err)
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(browsertest.ScreenshotDir(t), "hosts-app.png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}
