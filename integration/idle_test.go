package integration

import (
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/podswitch/podswitch/internal/engine"
)

// Scale to zero: an app that gets no request for its idle_timeout stops
// its web containers while its worker runs on; 50 concurrent first
// requests are held while a web container boots and all get 200; the app
// sleeps again once idle. The test logs the cold start.
func TestIdleScaleToZero(t *testing.T) {
	app := uniqueName("iz")
	cfg := appCfg{Name: app, Image: imageV1, Web: 1, Lines: []string{
		"process worker 1 /app worker", "worker_ready_time 500ms", "idle_timeout 5s", "drain_timeout 2s", "stop_timeout 5s",
	}}
	c := startCaddy(t, cfg)
	c.mustDeploy(app, imageV1, 60*time.Second)
	st := c.waitSettled(app, 1, 30*time.Second)
	workers := idsOf(st, "worker")
	if len(workers) != 1 {
		t.Fatalf("workers %v, want 1", workers)
	}
	if code, body := get(t, c.url("/")); code != http.StatusOK || !strings.HasPrefix(body, "version=v1") {
		t.Fatalf("awake: %d %q", code, body)
	}
	first := webIDs(st)

	asleep := c.waitAsleep(app, 60*time.Second)
	if asleep.Release == nil || asleep.Idle.Held != 0 {
		t.Fatalf("asleep: release %+v idle %+v", asleep.Release, asleep.Idle)
	}
	running := func(process string) []string {
		var ids []string
		for _, ct := range podmanContainers(t, app) {
			if ct.Running && ct.Labels[engine.LabelProcess] == process {
				ids = append(ids, ct.ID)
			}
		}
		return ids
	}
	if web := running(engine.WebProcess); len(web) != 0 {
		t.Fatalf("web containers run in Podman while asleep: %v", web)
	}
	if w := running("worker"); !slices.Equal(w, workers) {
		t.Fatalf("workers running while asleep %v, want %v untouched", w, workers)
	}

	// 50 concurrent first requests: all held while a container boots.
	const n = 50
	type answer struct {
		code int
		body string
		took time.Duration
		err  error
	}
	answers := make([]answer, n)
	client := &http.Client{Timeout: 90 * time.Second}
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		wg.Go(func() {
			resp, err := client.Get(c.url("/"))
			if err != nil {
				answers[i] = answer{err: err, took: time.Since(start)}
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			answers[i] = answer{code: resp.StatusCode, body: string(b), took: time.Since(start)}
		})
	}
	wg.Wait()
	var fastest, slowest time.Duration
	for i, a := range answers {
		if a.err != nil || a.code != http.StatusOK || !strings.HasPrefix(a.body, "version=v1") {
			t.Errorf("first request %d: %d %q %v, want 200 from v1", i, a.code, a.body, a.err)
		}
		if fastest == 0 || a.took < fastest {
			fastest = a.took
		}
		slowest = max(slowest, a.took)
	}
	st = c.status(app)
	if st.Idle != nil || st.LastWake == nil || st.LastWake.Trigger != "request" {
		t.Fatalf("after the wake: idle %+v, last wake %+v", st.Idle, st.LastWake)
	}
	t.Logf("cold start: %d concurrent first requests answered 200 in %s to %s; the engine measured %s from the first request to a ready web container",
		n, fastest.Round(time.Millisecond), slowest.Round(time.Millisecond), st.LastWake.ColdStart)
	if web := webIDs(st); len(web) != 1 || slices.Contains(first, web[0]) {
		t.Errorf("web containers after the wake %v (before the sleep %v): want one new one", web, first)
	}
	if w := running("worker"); !slices.Equal(w, workers) {
		t.Errorf("workers after the wake %v, want %v untouched", w, workers)
	}
	if d := st.Deployments; len(d) != 1 {
		t.Errorf("the sleep and wake made deployments: %+v", d)
	}
	if _, metrics := get(t, "http://"+c.admin+"/metrics"); !strings.Contains(metrics, `podswitch_cold_start_seconds_count{app="`+app+`",trigger="request"} 1`) {
		t.Errorf("metrics lack the cold start of %s", app)
	}

	// Idle again: asleep again.
	c.waitAsleep(app, 60*time.Second)
}

// waitAsleep waits until app sleeps with no web container left, and
// returns its status.
func (c *caddyProc) waitAsleep(app string, timeout time.Duration) engine.AppStatus {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st := c.status(app)
		if st.Idle != nil && !st.Idle.Waking && len(webIDs(st)) == 0 {
			return st
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("app %s not asleep within %s: idle %+v, containers %+v", app, timeout, st.Idle, st.Containers)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// idsOf returns the sorted IDs of app's containers of process.
func idsOf(st engine.AppStatus, process string) []string {
	var ids []string
	for _, ct := range st.Containers {
		if ct.Process == process {
			ids = append(ids, ct.ID)
		}
	}
	slices.Sort(ids)
	return ids
}
