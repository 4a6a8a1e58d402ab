package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/podswitch/podswitch/internal/engine"
)

// Scenarios of stops: the platform's rule (SIGTERM, exactly stop_timeout,
// SIGKILL) for every container however many stop together, retirements
// that survive a kill -9, and log readers that hold nothing deploys need.

// stopRecord is a "container stopped" line of Caddy's log.
type stopRecord struct {
	Container string
	Process   string
	ExitCode  int
	SIGKILL   bool
	// Took is from SIGTERM to the exit seen, KillAfter from SIGTERM to
	// SIGKILL.
	Took, KillAfter time.Duration
}

// stopRecords returns the stops Caddy logged for app.
func (c *caddyProc) stopRecords(app string) []stopRecord {
	var out []stopRecord
	for _, l := range strings.Split(c.rawLogs(), "\n") {
		if !strings.Contains(l, `"container stopped"`) {
			continue
		}
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) != nil || m["app"] != app {
			continue
		}
		r := stopRecord{}
		r.Container, _ = m["container"].(string)
		r.Process, _ = m["process"].(string)
		if f, ok := m["exit_code"].(float64); ok {
			r.ExitCode = int(f)
		}
		r.SIGKILL, _ = m["sigkill"].(bool)
		r.Took, r.KillAfter = logDuration(m["took"]), logDuration(m["sigkill_after"])
		out = append(out, r)
	}
	return out
}

// logDuration reads a duration field of a log line: Caddy's encoder
// writes them in seconds.
func logDuration(v any) time.Duration {
	switch v := v.(type) {
	case float64:
		return time.Duration(v * float64(time.Second))
	case string:
		d, _ := time.ParseDuration(v)
		return d
	}
	return 0
}

// countState returns how many containers of process type process app has,
// and how many of them are ready.
func countState(st engine.AppStatus, process string) (all, ready int) {
	for _, ct := range st.Containers {
		if ct.Process == process {
			all++
			if ct.State == engine.StateReady {
				ready++
			}
		}
	}
	return all, ready
}

// waitProcess waits until app has want containers of process, all ready.
func (c *caddyProc) waitProcess(app, process string, want int, timeout time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		all, ready := countState(c.status(app), process)
		if all == want && ready == want {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("app %s: %d %s containers (%d ready) after %s, want %d ready", app, all, process, ready, timeout, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A scale-down of 20 workers that each need 25 s after SIGTERM, with
// stop_timeout 30s: every one gets SIGTERM at once and exits 0 by itself
// (none is SIGKILLed), and the scale-down takes about 25 s, not the 75 s
// of 8 stop slots (whose last ones used to be SIGKILLed without a SIGTERM).
func TestStopsScaleDownOf20Workers(t *testing.T) {
	app := uniqueName("stop20")
	lines := []string{"env TERM_DELAY 25s", "stop_timeout 30s", "worker_ready_time 500ms", "drain_timeout 1s"}
	cfg := appCfg{Name: app, Image: imageV1, Web: 1, Lines: append([]string{"process worker 20 /app worker"}, lines...)}
	c := startCaddy(t, cfg)
	c.mustDeploy(app, imageV1, 3*time.Minute)
	c.waitProcess(app, "worker", 20, 3*time.Minute)

	t0 := time.Now()
	cfg.Lines = append([]string{"process worker 0 /app worker"}, lines...)
	c.reload(cfg)
	deadline := time.Now().Add(3 * time.Minute)
	for {
		if all, _ := countState(c.status(app), "worker"); all == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("workers still there %s after the scale-down", time.Since(t0))
		}
		time.Sleep(100 * time.Millisecond)
	}
	took := time.Since(t0)
	recs := c.stopRecords(app)
	var slowest, fastest time.Duration
	exited0 := 0
	for _, r := range recs {
		if r.Process != "worker" {
			continue
		}
		if r.ExitCode != 0 || r.SIGKILL {
			t.Errorf("worker %s: exit code %d, SIGKILL %v; want 0 by itself", r.Container, r.ExitCode, r.SIGKILL)
			continue
		}
		exited0++
		slowest = max(slowest, r.Took)
		if fastest == 0 || r.Took < fastest {
			fastest = r.Took
		}
	}
	t.Logf("scale-down of 20 workers (TERM_DELAY 25s, stop_timeout 30s): %s in all; %d exited 0 without SIGKILL, SIGTERM to exit %s to %s",
		took.Round(time.Millisecond), exited0, fastest.Round(time.Millisecond), slowest.Round(time.Millisecond))
	if exited0 != 20 {
		t.Errorf("%d of 20 workers exited 0 by themselves (stops logged: %+v)", exited0, recs)
	}
}

// stop_timeout 400ms with a worker that needs 10 s after SIGTERM: podswitch
// sends SIGKILL about 400 ms after SIGTERM, not at once (Podman's whole
// seconds rounded it to 0: exit code 137 without any grace) nor after a
// second.
func TestStopsTimeoutUnderASecond(t *testing.T) {
	app := uniqueName("stop400")
	lines := []string{"env TERM_DELAY 10s", "stop_timeout 400ms", "worker_ready_time 500ms"}
	cfg := appCfg{Name: app, Image: imageV1, Web: 1, Lines: append([]string{"process worker 1 /app worker"}, lines...)}
	c := startCaddy(t, cfg)
	c.mustDeploy(app, imageV1, 2*time.Minute)
	c.waitProcess(app, "worker", 1, time.Minute)
	var id string
	for _, ct := range c.status(app).Containers {
		if ct.Process == "worker" {
			id = ct.ID
		}
	}
	cfg.Lines = append([]string{"process worker 0 /app worker"}, lines...)
	c.reload(cfg)
	deadline := time.Now().Add(time.Minute)
	var rec *stopRecord
	for rec == nil {
		for _, r := range c.stopRecords(app) {
			if strings.HasPrefix(id, r.Container) {
				rec = &r
			}
		}
		if rec == nil && time.Now().After(deadline) {
			t.Fatalf("no stop of worker %s logged", id)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("stop_timeout 400ms: SIGKILL %v, sent %s after SIGTERM, exit seen %s after SIGTERM, exit code %d",
		rec.SIGKILL, rec.KillAfter.Round(time.Millisecond), rec.Took.Round(time.Millisecond), rec.ExitCode)
	if !rec.SIGKILL {
		t.Errorf("stop %+v, want SIGKILL (the worker needs 10s)", rec)
	}
	if rec.KillAfter < 400*time.Millisecond {
		t.Errorf("SIGKILL %s after SIGTERM, before stop_timeout 400ms", rec.KillAfter)
	}
}

// kill -9 of Caddy while a restart's old containers drain (a slow request
// in flight, drain_timeout 60s): the next start stops them, since they were
// recorded as retiring before they drained, and serves the restart's new
// containers. Before, the next start could adopt them and cut the surplus
// at random.
func TestStopsKillDuringRestartDrain(t *testing.T) {
	app := uniqueName("stopkill")
	cfg := appCfg{Name: app, Image: imageV1, Web: 2, Lines: []string{"drain_timeout 60s", "stop_timeout 5s"}}
	c := startCaddy(t, cfg)
	c.mustDeploy(app, imageV1, 2*time.Minute)
	before := webIDs(c.waitSettled(app, 2, time.Minute))
	client := &http.Client{Timeout: 2 * time.Minute}
	var slow sync.WaitGroup
	for range 6 { // in flight to both containers, most likely
		slow.Go(func() {
			if resp, err := client.Get(c.url("/slow?d=40s")); err == nil {
				resp.Body.Close()
			}
		})
	}
	time.Sleep(time.Second)
	d := c.restartAPI(app, "")
	if got := c.waitDeploymentID(app, d.ID, 2*time.Minute); got.Status != engine.StatusSuccess {
		t.Fatalf("restart: %s %s", got.Status, got.Error)
	}
	var draining []string
	var fresh []string
	for _, ct := range c.status(app).Containers {
		switch {
		case ct.State == engine.StateDraining:
			draining = append(draining, ct.ID)
		case ct.State == engine.StateReady && !slices.Contains(before, ct.ID):
			fresh = append(fresh, ct.ID)
		}
	}
	if len(draining) == 0 || len(fresh) != 2 {
		t.Fatalf("after the restart: draining %v, fresh %v; want old ones draining and 2 new ones", draining, fresh)
	}
	c.kill()
	t.Logf("killed caddy with %d old containers draining", len(draining))
	slow.Wait()

	t0 := time.Now()
	c.launch()
	deadline := time.Now().Add(90 * time.Second)
	for {
		var ids []string
		for _, ci := range podmanContainers(t, app) {
			ids = append(ids, ci.ID)
		}
		slices.Sort(ids)
		slices.Sort(fresh)
		if slices.Equal(ids, fresh) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("containers %v %s after the start, want only the restart's %v", ids, time.Since(t0), fresh)
		}
		time.Sleep(200 * time.Millisecond)
	}
	gone := time.Since(t0)
	if got := webIDs(c.waitSettled(app, 2, time.Minute)); !slices.Equal(got, fresh) {
		t.Errorf("serving %v after the start, want the restart's %v", got, fresh)
	}
	for range 20 {
		if code, body := get(t, c.url("/")); code != http.StatusOK {
			t.Fatalf("GET / after the start: %d %s", code, body)
		}
	}
	t.Logf("after the start: old containers gone in %s, the restart's 2 serve", gone.Round(time.Millisecond))
}

// stalledReader opens GET path on the admin endpoint with a tiny receive
// buffer and reads nothing: Caddy's writes to it block once a few
// kilobytes are on their way.
func stalledReader(t *testing.T, admin, path string) net.Conn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 1024) })
		if err != nil {
			return err
		}
		return serr
	}}
	conn, err := d.Dial("tcp", admin)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, admin); err != nil {
		t.Fatal(err)
	}
	return conn
}

// fillOutput makes the web container at addr print n lines (each control
// request logs one).
func fillOutput(t *testing.T, addr string, n int) {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	var wg sync.WaitGroup
	var failed sync.Once
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < n; i += 8 {
				resp, err := client.Post("http://"+addr+"/control/up?status=200", "", nil)
				if err != nil {
					failed.Do(func() { t.Errorf("filling the output: %v", err) })
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
	wg.Wait()
}

// Four `logs` readers that stall (they read nothing of a large output): a
// deploy still switches, in about the time of one without them. Before, a
// log read held one of the 4 shared Podman call slots while it wrote to
// its client, and the deploy never switched.
func TestStopsStalledLogReaders(t *testing.T) {
	app := uniqueName("stoplogs")
	cfg := appCfg{Name: app, Image: imageV1, Web: 2, Lines: []string{"drain_timeout 1s", "stop_timeout 5s"}}
	c := startCaddy(t, cfg)
	c.mustDeploy(app, imageV1, 2*time.Minute)
	c.waitSettled(app, 2, time.Minute)

	deploy := func(image string) engine.Deployment {
		t.Helper()
		code, body := c.api(http.MethodPost, "/podswitch/apps/"+app+"/deploy", `{"image": "`+image+`"}`)
		if code != http.StatusAccepted && code != http.StatusOK {
			t.Fatalf("deploy %s: %d %s", image, code, body)
		}
		return c.mustDeploy(app, image, 2*time.Minute)
	}
	base := deploy(imageV2)
	baseTook := base.SwitchedAt.Sub(base.StartedAt)
	st := c.waitSettled(app, 2, time.Minute)

	// A large output (about 1.4 MB) in one container, four readers of all
	// of it that read nothing.
	target := st.Containers[0]
	for _, ct := range st.Containers {
		if ct.Process == engine.WebProcess {
			target = ct
		}
	}
	fillOutput(t, target.Addr, 20000)
	path := "/podswitch/apps/" + app + "/logs?tail=-1&container=" + target.ID
	var conns []net.Conn
	for range 4 {
		conns = append(conns, stalledReader(t, c.admin, path))
	}
	// Each has its answer's first bytes: the route has started.
	for i, conn := range conns {
		conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		line, err := bufio.NewReaderSize(conn, 16).ReadString('\n')
		if err != nil || !strings.Contains(line, "200") {
			t.Fatalf("reader %d: %q %v", i, line, err)
		}
	}
	time.Sleep(2 * time.Second) // their writes block

	d := deploy(imageV1)
	took := d.SwitchedAt.Sub(d.StartedAt)
	t.Logf("deploy switched in %s with 4 stalled log readers, %s without", took.Round(time.Millisecond), baseTook.Round(time.Millisecond))
	if got := c.waitSettled(app, 2, time.Minute); len(got.Containers) != 2 {
		t.Errorf("containers after the deploy: %+v", got.Containers)
	}
}
