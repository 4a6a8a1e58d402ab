package caddymodule

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/podswitch/podswitch/internal/engine"
)

// The gate handler and the upstream source fail the config load for an
// app the podswitch app lacks.
func TestValidateGate(t *testing.T) {
	validate := func(t *testing.T, handler string) error {
		t.Helper()
		t.Setenv("XDG_DATA_HOME", t.TempDir())
		raw := `{"storage": {"module": "file_system", "root": "` + t.TempDir() + `"}, "apps": {
			"podswitch": {"podman": "` + testPodman + `", "apps": {"blog": {"image": "localhost/blog:v1"}, "shop": {"image": "localhost/shop:v1"}}},
			"http": {"servers": {"srv0": {"listen": ["127.0.0.1:0"], "automatic_https": {"disable": true},
				"routes": [{"handle": [` + handler + `]}]}}}}}`
		var cfg caddy.Config
		if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
			t.Fatalf("%v\n%s", err, raw)
		}
		return caddy.Validate(&cfg)
	}
	for _, tc := range []struct {
		name, handler, want string
	}{
		{"unknown app", `{"handler": "podswitch_gate", "app": "nope"}`, `podswitch_gate: app "nope" is not configured in the podswitch global option (it has: blog, shop)`},
		{"no app", `{"handler": "podswitch_gate"}`, "podswitch_gate: app is required"},
		{"valid", `{"handler": "podswitch_gate", "app": "shop"}`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := validate(t, tc.handler)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// gateTest is a Gate on the pool of app blog of an engine over the fake
// runtime, with a next handler that counts its calls.
type gateTest struct {
	s    *engine.Supervisor
	gate *Gate
	next caddyhttp.Handler
	hits atomic.Int32
}

func newGateTest(t *testing.T) *gateTest {
	t.Helper()
	m, _ := newTestManager(t)
	// The app serves before the gate is tried (and its first deployment
	// has ended when the test closes the engine).
	waitSuccess(t, m, "localhost/blog:v1")
	g := &gateTest{s: m.App("blog"), gate: &Gate{App: "blog", pool: m.Pool("blog")}}
	g.next = caddyhttp.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) error {
		g.hits.Add(1)
		_, err := w.Write([]byte("from the app"))
		return err
	})
	return g
}

// serve makes one request through the gate and returns what it answered.
func (g *gateTest) serve(ctx context.Context) (*httptest.ResponseRecorder, error) {
	rec := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodGet, "/", nil).WithContext(ctx)
	return rec, g.gate.ServeHTTP(rec, r, g.next)
}

// check503 checks that rec is the gate's 503 with Retry-After and a body
// containing msg.
func check503(t *testing.T, rec *httptest.ResponseRecorder, msg string) {
	t.Helper()
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("status %d, want 503", rec.Code)
	}
	if got := rec.Header().Get("Retry-After"); got != "30" {
		t.Errorf("Retry-After %q, want 30", got)
	}
	if got := rec.Header().Get("Cache-Control"); got != "no-store" {
		t.Errorf("Cache-Control %q, want no-store", got)
	}
	if !strings.Contains(rec.Body.String(), msg) {
		t.Errorf("body %q, want %q", rec.Body.String(), msg)
	}
}

func TestGateMaintenance(t *testing.T) {
	g := newGateTest(t)
	rec, err := g.serve(context.Background())
	if err != nil || rec.Code != http.StatusOK || rec.Body.String() != "from the app" || g.hits.Load() != 1 {
		t.Fatalf("without pause nor maintenance: %v %d %q, want the request passed on", err, rec.Code, rec.Body)
	}
	if err := g.s.Maintenance("Back at 14:00 UTC."); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	rec, err = g.serve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	check503(t, rec, "Back at 14:00 UTC.")
	if took := time.Since(start); took > time.Second {
		t.Errorf("the answer in maintenance took %s, want it at once", took)
	}
	if g.hits.Load() != 1 {
		t.Error("a request in maintenance reached the app")
	}
	if err := g.s.Resume(); err != nil {
		t.Fatal(err)
	}
	if rec, err := g.serve(context.Background()); err != nil || rec.Code != http.StatusOK || g.hits.Load() != 2 {
		t.Errorf("after resume: %v %d, want the request passed on", err, rec.Code)
	}
}

func TestGatePauseTimeout(t *testing.T) {
	g := newGateTest(t)
	const timeout = 200 * time.Millisecond
	if err := g.s.Pause(timeout); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	rec, err := g.serve(context.Background())
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	check503(t, rec, "paused")
	if took < timeout || took > timeout+5*time.Second {
		t.Errorf("the 503 of a pause of %s came after %s", timeout, took)
	}
	if g.hits.Load() != 0 {
		t.Error("a request whose pause timed out reached the app")
	}

	// A client that leaves while it waits gets nothing written.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	rec, err = g.serve(ctx)
	if err != nil || rec.Body.Len() != 0 || rec.Header().Get("Retry-After") != "" || g.hits.Load() != 0 {
		t.Errorf("client gone while paused: %v, %q %v; want nothing written", err, rec.Body, rec.Header())
	}
}

func TestGatePauseResume(t *testing.T) {
	g := newGateTest(t)
	if err := g.s.Pause(time.Minute); err != nil {
		t.Fatal(err)
	}
	type result struct {
		rec *httptest.ResponseRecorder
		err error
	}
	done := make(chan result, 2)
	for range 2 {
		go func() {
			rec, err := g.serve(context.Background())
			done <- result{rec, err}
		}()
	}
	g.waitHeld(t, 2)
	if g.hits.Load() != 0 {
		t.Fatal("the app got a request during the pause")
	}
	if err := g.s.Resume(); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		select {
		case r := <-done:
			if r.err != nil || r.rec.Code != http.StatusOK || r.rec.Body.String() != "from the app" {
				t.Errorf("after resume: %v %d %q, want the app's answer", r.err, r.rec.Code, r.rec.Body)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a request held by the pause did not go on after resume")
		}
	}
	if g.hits.Load() != 2 {
		t.Errorf("the app got %d requests, want 2", g.hits.Load())
	}
}

// waitHeld waits until the app's pause holds n requests.
func (g *gateTest) waitHeld(t *testing.T, n int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		p := g.s.Status().Paused
		if p != nil && p.Held == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the pause holds %+v, want %d requests", p, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// serveAll makes n requests through the gate, each in its own goroutine,
// and returns the channel that gets their answers.
func (g *gateTest) serveAll(n int) <-chan *httptest.ResponseRecorder {
	out := make(chan *httptest.ResponseRecorder, n)
	for range n {
		go func() {
			rec, err := g.serve(context.Background())
			if err != nil {
				rec.Code = 599 // no handler of the gate returns an error
			}
			out <- rec
		}()
	}
	return out
}

// answers takes n answers from ch, failing after a generous wait.
func answers(t *testing.T, ch <-chan *httptest.ResponseRecorder, n int) []*httptest.ResponseRecorder {
	t.Helper()
	var out []*httptest.ResponseRecorder
	for range n {
		select {
		case rec := <-ch:
			out = append(out, rec)
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of %d held requests got no answer", n-len(out), n)
		}
	}
	return out
}

// A pause holds at most its bound of requests: the next gets 503 with
// Retry-After at once, and the app gets it neither then nor at resume;
// the held ones go on at resume.
func TestGatePauseBounded(t *testing.T) {
	g := newGateTest(t)
	engine.SetMaxHeldForTest(g.gate.pool, 3)
	if err := g.s.Pause(time.Hour); err != nil {
		t.Fatal(err)
	}
	held := g.serveAll(3)
	g.waitHeld(t, 3)
	rec, err := g.serve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	check503(t, rec, "cannot hold more requests")
	if err := g.s.Resume(); err != nil {
		t.Fatal(err)
	}
	for _, rec := range answers(t, held, 3) {
		if rec.Code != http.StatusOK {
			t.Errorf("a held request got %d after resume, want the app's 200", rec.Code)
		}
	}
	if g.hits.Load() != 3 {
		t.Errorf("the app got %d requests, want the 3 held", g.hits.Load())
	}
}

// When the server shuts down as Caddy exits, every held request gets 503
// with Retry-After at once, so that the shutdown, which waits for them,
// ends; later ones get it at once too. A shutdown for a reload releases
// nothing: the pause stands in the new config, and the requests go on at
// resume.
func TestGatePauseReleasedAtExit(t *testing.T) {
	g := newGateTest(t)
	g.gate.release = newReleaseSignal()
	if err := g.s.Pause(time.Hour); err != nil {
		t.Fatal(err)
	}
	isExiting := false
	exiting = func() bool { return isExiting }
	t.Cleanup(func() { exiting = caddy.Exiting })

	held := g.serveAll(2)
	g.waitHeld(t, 2)
	g.gate.release.onShutdown() // a reload
	select {
	case rec := <-held:
		t.Fatalf("a reload released a held request: %d %q", rec.Code, rec.Body)
	default:
	}
	if err := g.s.Resume(); err != nil {
		t.Fatal(err)
	}
	for _, rec := range answers(t, held, 2) {
		if rec.Code != http.StatusOK {
			t.Errorf("a request held across a reload got %d at resume, want 200", rec.Code)
		}
	}

	if err := g.s.Pause(time.Hour); err != nil {
		t.Fatal(err)
	}
	held = g.serveAll(2)
	g.waitHeld(t, 2)
	isExiting = true
	g.gate.release.onShutdown()
	for _, rec := range answers(t, held, 2) {
		check503(t, rec, "shutting down")
		if got := rec.Header().Get("Connection"); got != "close" {
			t.Errorf("Connection %q, want close", got)
		}
	}
	rec, err := g.serve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	check503(t, rec, "shutting down")
	if g.hits.Load() != 2 {
		t.Errorf("the app got %d requests, want the 2 released by resume", g.hits.Load())
	}
	if p := g.s.Status().Paused; p == nil || p.Held != 0 {
		t.Errorf("pause %+v, want it standing with nothing held", p)
	}
}

// An app asleep (idle_timeout) or waking up holds requests like a pause,
// but its 503s say that it is starting, in plain text, with the gate's
// Retry-After: the pause page is for pauses only. A request held past the
// gate's timeout (boot_timeout) gets one, and so does a request over the
// bound of held requests, at once; the held requests go on when the gate
// lifts (the first web container is ready).
func TestGateWakingTimeout(t *testing.T) {
	m := engine.NewManager(engine.Deps{})
	t.Cleanup(m.Close)
	ref := m.Pool("blog")
	engine.SetMaxHeldForTest(ref, 1)
	var hits atomic.Int32
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) error {
		hits.Add(1)
		_, err := w.Write([]byte("from the app"))
		return err
	})
	g := &Gate{App: "blog", pool: ref, pages: pages{pause: []byte("<h1>paused</h1>"), maintenance: []byte("<h1>maintenance</h1>")}}
	serve := func() *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		if err := g.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil), next); err != nil {
			t.Error(err)
		}
		return rec
	}
	checkStarting := func(t *testing.T, rec *httptest.ResponseRecorder, msg string) {
		t.Helper()
		if rec.Code != http.StatusServiceUnavailable {
			t.Errorf("status %d, want 503", rec.Code)
		}
		if got := rec.Header().Get("Retry-After"); got != "5" {
			t.Errorf("Retry-After %q, want 5", got)
		}
		if got := rec.Header().Get("Cache-Control"); got != "no-store" {
			t.Errorf("Cache-Control %q, want no-store", got)
		}
		if got := rec.Header().Get("Content-Type"); got != "text/plain; charset=utf-8" {
			t.Errorf("Content-Type %q, want text/plain (not the pause page)", got)
		}
		if got := rec.Body.String(); got != msg+"\n" {
			t.Errorf("body %q, want %q", got, msg+"\n")
		}
	}
	waking := func(timeout time.Duration) *engine.Gate {
		return &engine.Gate{Waking: true, Timeout: timeout, RetryAfter: 5 * time.Second, Since: time.Now()}
	}

	const timeout = 200 * time.Millisecond
	engine.SetGateForTest(ref, waking(timeout))
	start := time.Now()
	rec := serve()
	took := time.Since(start)
	checkStarting(t, rec, "The service is starting. Please try again shortly.")
	if took < timeout || took > timeout+5*time.Second {
		t.Errorf("the 503 of a wake with a boot_timeout of %s came after %s", timeout, took)
	}
	if hits.Load() != 0 {
		t.Error("a request whose wake timed out reached the app")
	}

	engine.SetGateForTest(ref, waking(time.Hour))
	held := make(chan *httptest.ResponseRecorder, 1)
	go func() { held <- serve() }()
	deadline := time.Now().Add(10 * time.Second)
	for ref.Held() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("the gate holds %d requests, want 1", ref.Held())
		}
		time.Sleep(5 * time.Millisecond)
	}
	start = time.Now()
	rec = serve()
	checkStarting(t, rec, "The service is starting and cannot hold more requests. Please try again shortly.")
	if took := time.Since(start); took > time.Second {
		t.Errorf("the 503 over the bound took %s, want it at once", took)
	}
	engine.SetGateForTest(ref, nil) // a web container is ready
	select {
	case rec := <-held:
		if rec.Code != http.StatusOK || rec.Body.String() != "from the app" {
			t.Errorf("the held request got %d %q when the gate lifted, want the app's answer", rec.Code, rec.Body)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the held request did not go on when the gate lifted")
	}
	if hits.Load() != 1 {
		t.Errorf("the app got %d requests, want the 1 held", hits.Load())
	}
}
