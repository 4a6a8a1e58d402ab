package podman

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containers/podman/v5/pkg/bindings"
	"github.com/containers/podman/v5/pkg/bindings/containers"
	"github.com/containers/podman/v5/pkg/bindings/system"
	"github.com/containers/podman/v5/pkg/domain/entities/types"

	"github.com/podswitch/podswitch/internal/engine"
)

// These tests talk to the real Podman service (rootful, at $CONTAINER_HOST
// or DefaultURI) with the test app's image, as set up by scripts/setup.sh.
// They fail, rather than skip, when the service does not answer.

const testImage = "localhost/podswitch-testapp:v1"

// harness names and labels what one test creates, and removes it at the
// end of the test.
type harness struct {
	t    *testing.T
	r    *Runtime
	name string // container name prefix: podswitch-rt-test-<random>
	app  string // value of label podswitch.app: rt-test-<random>
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	r := New("")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := r.Ping(ctx); err != nil {
		t.Fatalf("the Podman service at %s does not answer: %v (start it with `bash scripts/setup.sh`)", Redact(r.URI()), err)
	}
	if err := r.ImageExists(ctx, testImage); err != nil {
		t.Fatalf("the test image is missing: %v (build it with `bash scripts/setup.sh`)", err)
	}
	b := make([]byte, 5)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	id := hex.EncodeToString(b)
	h := &harness{t: t, r: r, name: "podswitch-rt-test-" + id, app: "rt-test-" + id}
	t.Cleanup(func() {
		// Anything left with this test's label, whatever its name.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		list, err := r.List(ctx, h.app)
		if err != nil {
			t.Errorf("cleanup: list: %v", err)
			return
		}
		for _, c := range list {
			if err := r.Remove(ctx, c.ID); err != nil {
				t.Errorf("cleanup: remove %s: %v", c.Name, err)
			}
		}
	})
	return h
}

// run starts a container of the test app named <prefix>-<suffix>, with
// PORT=5000 and env, and removes it at the end of the test.
func (h *harness) run(suffix, process string, env map[string]string) engine.ContainerInfo {
	h.t.Helper()
	name := h.name + "-" + suffix
	h.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := h.r.Remove(ctx, name); err != nil && !errors.Is(err, engine.ErrNotFound) {
			h.t.Errorf("cleanup: remove %s: %v", name, err)
		}
	})
	e := map[string]string{"PORT": "5000"}
	for k, v := range env {
		e[k] = v
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	info, err := h.r.Run(ctx, engine.ContainerSpec{
		Name:        name,
		Image:       testImage,
		Env:         e,
		Labels:      map[string]string{engine.LabelApp: h.app, engine.LabelProcess: process},
		StopTimeout: 2 * time.Second,
	})
	if err != nil {
		h.t.Fatalf("run %s: %v", name, err)
	}
	return info
}

func (h *harness) worker(suffix string) engine.ContainerInfo {
	return h.run(suffix, "worker", map[string]string{"MODE": "worker"})
}

// waitExit waits for the container to exit and returns its exit code.
func (h *harness) waitExit(id string, within time.Duration) int {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	code, err := h.r.Wait(ctx, id)
	if err != nil {
		h.t.Fatalf("wait for %s: %v", id, err)
	}
	return code
}

// logLines returns the container's lines with Tail tail, without Follow.
func (h *harness) logLines(id string, tail int) []engine.LogLine {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var lines []engine.LogLine
	if err := h.r.Logs(ctx, id, engine.LogOptions{Tail: tail}, func(l engine.LogLine) { lines = append(lines, l) }); err != nil {
		h.t.Fatalf("logs of %s: %v", id, err)
	}
	return lines
}

// settledGoroutines waits up to 5s for the number of goroutines to drop to
// at most limit and returns the last count.
func settledGoroutines(limit int) int {
	n := runtime.NumGoroutine()
	for deadline := time.Now().Add(5 * time.Second); n > limit && time.Now().Before(deadline); n = runtime.NumGoroutine() {
		time.Sleep(20 * time.Millisecond)
	}
	return n
}

// closeIdle closes the idle connections of r's client, so that counts of
// goroutines do not depend on its connection pool.
func closeIdle(r *Runtime) {
	r.mu.Lock()
	conn := r.conn
	r.mu.Unlock()
	if conn == nil {
		return
	}
	if c, err := bindings.GetClient(conn); err == nil {
		c.Client.CloseIdleConnections()
	}
}

// stableGoroutines returns the number of goroutines once it has not
// changed for 100ms (or after 5s).
func stableGoroutines() int {
	n := runtime.NumGoroutine()
	for deadline, same := time.Now().Add(5*time.Second), 0; same < 5 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
		if m := runtime.NumGoroutine(); m == n {
			same++
		} else {
			n, same = m, 0
		}
	}
	return n
}

func goroutineDump() string {
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)])
}

func TestKillMakesTheContainerExit(t *testing.T) {
	h := newHarness(t)
	c := h.worker("kill")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := h.r.Kill(ctx, c.ID, "SIGTERM"); err != nil {
		t.Fatalf("kill: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Kill took %s: it must not wait for the exit", d)
	}
	if code := h.waitExit(c.ID, 15*time.Second); code != 0 {
		t.Errorf("exit code after SIGTERM = %d, want 0 (the worker exits 0 on SIGTERM)", code)
	}
	// The container no longer runs: Podman refuses, which is no error.
	if err := h.r.Kill(ctx, c.ID, "SIGKILL"); err != nil {
		t.Errorf("kill of an exited container: %v, want nil", err)
	}
	// The worker's last line is the one about SIGTERM: it exited at once
	// (TERM_DELAY unset), with nothing after it.
	lines := h.logLines(c.ID, 1)
	if len(lines) != 1 || !strings.Contains(lines[0].Text, "worker got terminated") {
		t.Errorf("last line = %+v, want the worker's line about SIGTERM", lines)
	}
}

func TestKillMissingContainer(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := h.r.Kill(ctx, h.name+"-missing", "SIGTERM")
	if !errors.Is(err, engine.ErrNotFound) {
		t.Fatalf("kill of a missing container: %v, want ErrNotFound", err)
	}
}

func TestLogsTail(t *testing.T) {
	h := newHarness(t)
	c := h.worker("tail")
	// "worker started", two or more "worker tick", then the line about
	// SIGTERM: at least four lines.
	time.Sleep(2500 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.r.Kill(ctx, c.ID, "SIGTERM"); err != nil {
		t.Fatalf("kill: %v", err)
	}
	h.waitExit(c.ID, 15*time.Second)

	all := h.logLines(c.ID, -1)
	if len(all) < 4 {
		t.Fatalf("all lines: %d, want at least 4: %+v", len(all), all)
	}
	if !strings.Contains(all[0].Text, "worker started") {
		t.Errorf("first line %q, want the worker's start line", all[0].Text)
	}
	for _, l := range all {
		if l.Stream != "stdout" {
			t.Errorf("line %q on %q, want stdout (the test app logs to stdout)", l.Text, l.Stream)
		}
		if strings.ContainsAny(l.Text, "\r\n") {
			t.Errorf("line %q has a line break", l.Text)
		}
	}

	got := h.logLines(c.ID, 2)
	if len(got) != 2 {
		t.Fatalf("Tail 2 gave %d lines: %+v", len(got), got)
	}
	want := all[len(all)-2:]
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("Tail 2 line %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	if !strings.Contains(got[0].Text, "worker tick") || !strings.Contains(got[1].Text, "worker got terminated") {
		t.Errorf("Tail 2 = %+v, want a tick and then the SIGTERM line", got)
	}

	if got := h.logLines(c.ID, 0); len(got) != 0 {
		t.Errorf("Tail 0 gave %+v, want nothing", got)
	}
}

func TestLogsFollowUntilCancel(t *testing.T) {
	h := newHarness(t)
	c := h.worker("follow")
	closeIdle(h.r)
	before := stableGoroutines()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lines := make(chan engine.LogLine, 100)
	done := make(chan error, 1)
	started := time.Now()
	go func() {
		done <- h.r.Logs(ctx, c.ID, engine.LogOptions{Tail: 0, Follow: true}, func(l engine.LogLine) { lines <- l })
	}()
	select {
	case l := <-lines:
		if !strings.Contains(l.Text, "worker tick") {
			t.Errorf("first followed line %q, want a tick (Tail 0 returns no old line)", l.Text)
		}
		if l.Stream != "stdout" {
			t.Errorf("stream %q, want stdout", l.Stream)
		}
		t.Logf("first line after %s: %q", time.Since(started), l.Text)
	case err := <-done:
		t.Fatalf("Logs returned before a line came: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no followed line within 10s (the worker prints one a second)")
	}

	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Logs after cancel: %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Logs did not return within 5s of the cancel")
	}
	closeIdle(h.r)
	if n := settledGoroutines(before); n > before {
		t.Errorf("goroutines: %d before Logs, %d after it returned\n%s", before, n, goroutineDump())
	}
}

func TestLogsFollowEndsWhenTheContainerExits(t *testing.T) {
	h := newHarness(t)
	c := h.worker("follow-exit")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var mu sync.Mutex
	var got []engine.LogLine
	done := make(chan error, 1)
	go func() {
		done <- h.r.Logs(ctx, c.ID, engine.LogOptions{Tail: -1, Follow: true}, func(l engine.LogLine) {
			mu.Lock()
			got = append(got, l)
			mu.Unlock()
		})
	}()
	time.Sleep(1500 * time.Millisecond)
	if err := h.r.Kill(ctx, c.ID, "SIGTERM"); err != nil {
		t.Fatalf("kill: %v", err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Logs: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Logs with Follow did not return within 15s of the container's exit")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) < 2 || !strings.Contains(got[0].Text, "worker started") || !strings.Contains(got[len(got)-1].Text, "worker got terminated") {
		t.Errorf("lines = %+v, want from the start line to the SIGTERM line", got)
	}
}

func TestLogsMissingContainer(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := h.r.Logs(ctx, h.name+"-missing", engine.LogOptions{Tail: -1}, func(engine.LogLine) {})
	if !errors.Is(err, engine.ErrNotFound) {
		t.Fatalf("logs of a missing container: %v, want ErrNotFound", err)
	}
}

func TestImageExists(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.r.ImageExists(ctx, testImage); err != nil {
		t.Errorf("ImageExists(%s): %v", testImage, err)
	}
	const missing = "localhost/nope:v9"
	err := h.r.ImageExists(ctx, missing)
	if !errors.Is(err, engine.ErrImageNotFound) {
		t.Fatalf("ImageExists(%s): %v, want ErrImageNotFound", missing, err)
	}
	if errors.Is(err, engine.ErrUnavailable) || errors.Is(err, engine.ErrNotFound) {
		t.Errorf("ImageExists(%s): %v also wraps another error", missing, err)
	}
	for _, want := range []string{missing, "storage of the Podman service", "does not pull"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message %q does not say %q", err, want)
		}
	}
	t.Logf("missing image: %v", err)
}

func TestImageExistsUnavailable(t *testing.T) {
	r := New("unix://" + filepath.Join(t.TempDir(), "nobody.sock"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.ImageExists(ctx, testImage); !errors.Is(err, engine.ErrUnavailable) || errors.Is(err, engine.ErrImageNotFound) {
		t.Fatalf("ImageExists without a service: %v, want ErrUnavailable", err)
	}
}

// ImageID resolves a tag to the image's ID, the same by ID, and says a
// missing image as ImageExists does.
func TestImageID(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	id, err := h.r.ImageID(ctx, testImage)
	if err != nil {
		t.Fatalf("ImageID(%s): %v", testImage, err)
	}
	if len(id) != 64 || strings.Trim(id, "0123456789abcdef") != "" {
		t.Fatalf("ImageID(%s) = %q, want 64 hex characters", testImage, id)
	}
	if again, err := h.r.ImageID(ctx, id); err != nil || again != id {
		t.Errorf("ImageID(%s) = %q, %v; want the same ID", id, again, err)
	}
	const missing = "localhost/nope:v9"
	_, err = h.r.ImageID(ctx, missing)
	if !errors.Is(err, engine.ErrImageNotFound) || errors.Is(err, engine.ErrUnavailable) || errors.Is(err, engine.ErrNotFound) {
		t.Fatalf("ImageID(%s): %v, want ErrImageNotFound alone", missing, err)
	}
	for _, want := range []string{missing, "storage of the Podman service", "does not pull"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message %q does not say %q", err, want)
		}
	}
	r := New("unix://" + filepath.Join(t.TempDir(), "nobody.sock"))
	if _, err := r.ImageID(ctx, testImage); !errors.Is(err, engine.ErrUnavailable) {
		t.Errorf("ImageID without a service: %v, want ErrUnavailable", err)
	}
}

func TestListLeavesIPEmpty(t *testing.T) {
	h := newHarness(t)
	web := h.run("web", engine.WebProcess, nil)
	worker := h.worker("list-worker")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	list, err := h.r.List(ctx, h.app)
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	if len(list) != 2 {
		t.Fatalf("list = %+v, want 2 containers", list)
	}
	byID := map[string]engine.ContainerInfo{}
	for _, c := range list {
		byID[c.ID] = c
	}
	for _, want := range []engine.ContainerInfo{web, worker} {
		got, ok := byID[want.ID]
		if !ok {
			t.Errorf("%s is not listed", want.Name)
			continue
		}
		if got.IP != "" {
			t.Errorf("%s: IP %q, want it empty", got.Name, got.IP)
		}
		if !got.Running || got.Name != want.Name || got.Image != testImage || got.Labels[engine.LabelApp] != h.app {
			t.Errorf("listed %+v, want running %s of %s with app label %s", got, want.Name, testImage, h.app)
		}
	}
	// Inspect still gives the address.
	if got, err := h.r.Inspect(ctx, web.ID); err != nil || got.IP == "" {
		t.Errorf("inspect of the web container: %+v, %v: want an IP", got, err)
	}

	// An exited container is listed with its exit code.
	if err := h.r.Kill(ctx, worker.ID, "SIGKILL"); err != nil {
		t.Fatal(err)
	}
	h.waitExit(worker.ID, 15*time.Second)
	list, err = h.r.List(ctx, h.app)
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	for _, c := range list {
		if c.ID == worker.ID && (c.Running || c.ExitCode != 137) {
			t.Errorf("killed worker listed as %+v, want not running with exit code 137", c)
		}
	}
}

func TestEventsDeliversDied(t *testing.T) {
	h := newHarness(t)
	closeIdle(h.r)
	before := stableGoroutines()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events := make(chan engine.ContainerEvent, 100)
	done := make(chan error, 1)
	go func() { done <- h.r.Events(ctx, func(e engine.ContainerEvent) { events <- e }) }()
	// Let the stream be open before the container dies.
	time.Sleep(time.Second)
	c := h.worker("events")
	if err := h.r.Kill(ctx, c.ID, "SIGKILL"); err != nil {
		t.Fatalf("kill: %v", err)
	}
	timeout := time.After(20 * time.Second)
wait:
	for {
		select {
		case e := <-events:
			if e.ID != c.ID {
				continue // another test's container
			}
			if e.App != h.app {
				t.Errorf("event app %q, want %q", e.App, h.app)
			}
			if e.ExitCode != 137 {
				t.Errorf("event exit code %d, want 137 (SIGKILL)", e.ExitCode)
			}
			break wait
		case err := <-done:
			t.Fatalf("Events returned: %v", err)
		case <-timeout:
			t.Fatal("no died event for the killed container within 20s")
		}
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Events after cancel: %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Events did not return within 5s of the cancel")
	}
	closeIdle(h.r)
	if n := settledGoroutines(before); n > before {
		t.Errorf("goroutines: %d before Events, %d after it returned\n%s", before, n, goroutineDump())
	}
}

// TestSystemEventsDoesNotBlock documents what the bindings' system.Events
// does with a stream: it returns once the service has answered, before any
// event, and the decoder closes the channel when stop is closed.
func TestSystemEventsDoesNotBlock(t *testing.T) {
	h := newHarness(t)
	ctx, cancel, err := h.r.call(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	ch := make(chan types.Event, 1)
	stop := make(chan bool)
	stream := true
	// An event that does not happen: nothing is sent.
	filters := map[string][]string{"type": {"container"}, "event": {"died"}, "container": {h.name + "-never"}}
	returned := make(chan error, 1)
	go func() {
		returned <- system.Events(ctx, ch, stop, &system.EventsOptions{Stream: &stream, Filters: filters})
	}()
	select {
	case err := <-returned:
		if err != nil {
			t.Fatalf("system.Events: %v", err)
		}
	case <-time.After(5 * time.Second):
		close(stop)
		t.Fatal("system.Events blocked for 5s with an open stream and no event")
	}
	close(stop)
	select {
	case _, ok := <-ch:
		if ok {
			t.Fatal("an event came for a container that does not exist")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the event channel was not closed within 5s of closing stop")
	}
}

// fakeService serves the Podman API on a unix socket: _ping answers like
// Podman 4.3, /events answers 500 or closes the connection, and the
// container create answers as create says.
type fakeService struct {
	uri string

	mu      sync.Mutex
	deletes []string
}

func newFakeService(t *testing.T, events string, create func(w http.ResponseWriter)) *fakeService {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "podman.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeService{uri: "unix://" + sock}
	hangUp := func(w http.ResponseWriter) {
		c, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			c.Close()
		}
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/_ping"):
			w.Header().Set("Libpod-API-Version", "4.3.1")
			fmt.Fprint(w, "OK")
		case strings.HasSuffix(r.URL.Path, "/events") && events == "close":
			hangUp(w)
		case strings.HasSuffix(r.URL.Path, "/events"):
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusInternalServerError)
			fmt.Fprint(w, `{"cause":"boom","message":"events are broken","response":500}`)
		case strings.HasSuffix(r.URL.Path, "/containers/create") && create != nil:
			create(w)
		case r.Method == http.MethodDelete && strings.Contains(r.URL.Path, "/containers/"):
			f.mu.Lock()
			f.deletes = append(f.deletes, r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:])
			f.mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `[]`)
		default:
			http.NotFound(w, r)
		}
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return f
}

func (f *fakeService) deleted() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.deletes...)
}

func TestEventsFailuresLeakNoGoroutine(t *testing.T) {
	for _, tc := range []struct {
		events string
		n      int
	}{
		{"500", 50},
		// The bindings retry a broken request with pauses: fewer rounds.
		{"close", 10},
	} {
		t.Run(tc.events, func(t *testing.T) {
			f := newFakeService(t, tc.events, nil)
			r := New(f.uri)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			events := func() {
				t.Helper()
				err := r.Events(ctx, func(engine.ContainerEvent) { t.Error("an event came from a failing service") })
				if err == nil || ctx.Err() != nil {
					t.Fatalf("Events against a failing service: %v", err)
				}
			}
			// The first call opens the connection.
			events()
			base := stableGoroutines()
			for range tc.n {
				events()
			}
			if n := settledGoroutines(base); n > base+2 {
				t.Errorf("goroutines: %d after 1 failed Events, %d after %d more\n%s", base, n, tc.n, goroutineDump())
			}
		})
	}
}

func TestRunRemovesAContainerWhoseCreateFailed(t *testing.T) {
	spec := engine.ContainerSpec{Name: "podswitch-rt-test-lost", Image: testImage}
	for _, tc := range []struct {
		name       string
		create     func(w http.ResponseWriter)
		wantRemove bool
	}{
		{"transport broke", func(w http.ResponseWriter) {
			c, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				c.Close()
			}
		}, true},
		{"service failed", func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusInternalServerError)
			fmt.Fprint(w, `{"cause":"boom","message":"create failed half way","response":500}`)
		}, true},
		{"name in use (Podman 4.3 and 5)", func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusInternalServerError)
			fmt.Fprint(w, `{"cause":"that name is already in use","message":"creating container storage: the container name \"podswitch-rt-test-lost\" is already in use by e02892e6a3a2. You have to remove that container to be able to reuse that name: that name is already in use","response":500}`)
		}, false},
		{"image not known", func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusInternalServerError)
			fmt.Fprint(w, `{"cause":"image not known","message":"localhost/nope:v9: image not known","response":500}`)
		}, false},
		{"conflict", func(w http.ResponseWriter) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusConflict)
			fmt.Fprint(w, `{"cause":"name in use","message":"the container name is already in use","response":409}`)
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeService(t, "500", tc.create)
			r := New(f.uri)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := r.Run(ctx, spec); err == nil {
				t.Fatal("Run succeeded against a failing create")
			}
			got := f.deleted()
			if tc.wantRemove && (len(got) != 1 || got[0] != spec.Name) {
				t.Errorf("removals %q, want one of %q", got, spec.Name)
			}
			if !tc.wantRemove && len(got) != 0 {
				t.Errorf("removals %q, want none: the name belongs to another container", got)
			}
		})
	}
}

func TestRunNameInUseKeepsTheOtherContainer(t *testing.T) {
	h := newHarness(t)
	c := h.worker("dup")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := h.r.Run(ctx, engine.ContainerSpec{
		Name: c.Name, Image: testImage, Env: map[string]string{"MODE": "worker"},
		Labels: map[string]string{engine.LabelApp: h.app, engine.LabelProcess: "worker"},
	})
	if err == nil {
		t.Fatal("a second container with the same name was run")
	}
	got, err := h.r.Inspect(ctx, c.ID)
	if err != nil || !got.Running {
		t.Fatalf("the first container after the failed Run: %+v, %v: want it running", got, err)
	}
}

func TestWholeSecondsRoundsUp(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want uint
	}{{0, 0}, {400 * time.Millisecond, 1}, {time.Second, 1}, {1001 * time.Millisecond, 2}, {30 * time.Second, 30}} {
		if got := wholeSeconds(tc.d); got != tc.want {
			t.Errorf("wholeSeconds(%s) = %d, want %d", tc.d, got, tc.want)
		}
	}
}

// A stop_timeout under a second is given to Podman (for `podman stop` by
// hand) rounded up to 1 s, never down to 0 (an immediate SIGKILL).
func TestRunStopTimeoutRoundedUp(t *testing.T) {
	h := newHarness(t)
	name := h.name + "-short"
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	t.Cleanup(func() { _ = h.r.Remove(context.Background(), name) })
	info, err := h.r.Run(ctx, engine.ContainerSpec{
		Name: name, Image: testImage, Env: map[string]string{"PORT": "5000", "MODE": "worker"},
		Labels:      map[string]string{engine.LabelApp: h.app, engine.LabelProcess: "worker"},
		StopTimeout: 400 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	cctx, ccancel, err := h.r.call(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer ccancel()
	data, err := containers.Inspect(cctx, info.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := data.Config.StopTimeout; got != 1 {
		t.Errorf("StopTimeout given to Podman = %d, want 1 (400ms rounded up)", got)
	}
	if got := data.Config.StopSignal; got != "SIGTERM" && got != "15" {
		t.Logf("stop signal as Podman reports it: %q", got)
	}
}

// Wait answers at once, with the exit code, for a container that exited
// already, and ErrNotFound for one that is gone: the reaper's stop relies
// on both.
func TestWaitExitedAndMissing(t *testing.T) {
	h := newHarness(t)
	c := h.worker("waited")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := h.r.Kill(ctx, c.ID, "SIGKILL"); err != nil {
		t.Fatal(err)
	}
	if code := h.waitExit(c.ID, 15*time.Second); code != 137 {
		t.Errorf("exit code after SIGKILL = %d, want 137", code)
	}
	start := time.Now()
	if code := h.waitExit(c.ID, 5*time.Second); code != 137 {
		t.Errorf("second wait: exit code %d, want 137", code)
	}
	t.Logf("wait of an exited container answered in %s", time.Since(start))
	if _, err := h.r.Wait(ctx, h.name+"-missing"); !errors.Is(err, engine.ErrNotFound) {
		t.Errorf("wait of a missing container: %v, want ErrNotFound", err)
	}
}
