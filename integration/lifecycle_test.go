package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/podswitch/podswitch/internal/engine"
)

// logLine is one line of Caddy's JSON log.
type logLine struct {
	At     time.Time
	Msg    string
	Fields map[string]any
}

// str returns field name of l as a string.
func (l logLine) str(name string) string {
	v, _ := l.Fields[name].(string)
	return v
}

// logLines returns what Caddy logged so far, parsed.
func (c *caddyProc) logLines() []logLine {
	f, err := os.Open(filepath.Join(c.dir, "caddy.log"))
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []logLine
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) != nil {
			continue
		}
		ts, _ := m["ts"].(float64)
		msg, _ := m["msg"].(string)
		out = append(out, logLine{At: time.Unix(0, int64(ts*1e9)), Msg: msg, Fields: m})
	}
	return out
}

// logTime returns when Caddy first logged a line with message msg about
// container id (podswitch logs short ids) and, when to is set, with field
// to=to (a state change).
func (c *caddyProc) logTime(msg, id, to string) (time.Time, bool) {
	for _, l := range c.logLines() {
		cid := l.str("container")
		if l.Msg == msg && cid != "" && strings.HasPrefix(id, cid) && (to == "" || l.str("to") == to) {
			return l.At, true
		}
	}
	return time.Time{}, false
}

// waitLog waits until Caddy logs a line for which match holds, and returns
// it.
func (c *caddyProc) waitLog(what string, timeout time.Duration, match func(logLine) bool) logLine {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		for _, l := range c.logLines() {
			if match(l) {
				return l
			}
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("no log line %s within %s:\n%s", what, timeout, c.logs())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A web container killed outside podswitch leaves the pool as soon as
// Podman reports its death (or the health check finds it dead) and is
// replaced; with two web containers behind the podswitch directive, which
// retries another container for a while, no request fails.
func TestCrashedContainerIsReplaced(t *testing.T) {
	app := uniqueName("kill")
	cfg := appCfg{Name: app, Image: imageV1, Web: 2, Lines: []string{"restart_attempts 5"}}
	c := startCaddy(t, cfg)
	c.mustDeploy(app, imageV1, 60*time.Second)
	before := webIDs(c.waitSettled(app, 2, 30*time.Second))
	l := startLoad(t, c.url("/"), loadRate)
	time.Sleep(time.Second)

	victim := before[0]
	killed := time.Now()
	podmanCLI(t, "kill", "--signal", "KILL", victim)
	deadline := time.Now().Add(60 * time.Second)
	var after []string
	for {
		st := c.status(app)
		after = webIDs(st)
		ready := 0
		for _, ct := range st.Containers {
			if ct.State == engine.StateReady && ct.Process == engine.WebProcess {
				ready++
			}
		}
		if ready == 2 && !slices.Contains(after, victim) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("killed container not replaced: %+v", st.Containers)
		}
		time.Sleep(50 * time.Millisecond)
	}
	replaced := time.Since(killed)
	time.Sleep(time.Second)
	l.check(t, loadRate/2)
	if !slices.Contains(after, before[1]) {
		t.Errorf("the container that was not killed was replaced too: before %v after %v", before, after)
	}
	out, ok := c.logTime("container state changed", victim, "crashed")
	if !ok {
		t.Fatalf("no log line of %s becoming crashed", victim)
	}
	t.Logf("killed container out of the pool %s after podman kill returned; replacement ready after %s",
		out.Sub(killed).Round(time.Millisecond), replaced.Round(time.Millisecond))
	st := c.status(app)
	if len(st.Deployments) != 1 {
		t.Errorf("a crash replacement made a deployment: %+v", st.Deployments)
	}
}

// The postdeploy hook runs exactly once per deployment, in a one-off
// container; a failing hook ends the deployment hook-error and no switch.
func TestPostdeployHook(t *testing.T) {
	app := uniqueName("hook")
	since := time.Now().Add(-time.Second).Unix()
	cfg := appCfg{Name: app, Image: imageV1, Web: 1, Lines: []string{"postdeploy /app hook"}}
	c := startCaddy(t, cfg)
	c.mustDeploy(app, imageV1, 60*time.Second)
	c.waitSettled(app, 1, 30*time.Second)
	next := cfg
	next.Image = imageV2
	c.reload(next)
	c.mustDeploy(app, imageV2, 60*time.Second)
	c.waitSettled(app, 1, 30*time.Second)
	// A scale is not a deployment: no hook.
	next.Web = 2
	c.reload(next)
	c.waitSettled(app, 2, 30*time.Second)
	if n := hookRuns(t, app, since); n != 2 {
		t.Errorf("hook ran %d times for 2 deployments and a scale, want 2", n)
	}

	failing := next
	failing.Image = imageV1
	failing.Lines = append(slices.Clone(next.Lines), "env HOOK_EXIT 7")
	c.reload(failing)
	d := c.waitDeployment(app, imageV1, 60*time.Second)
	if d.Status != engine.StatusHookError || !strings.Contains(d.Error, "code 7") {
		t.Fatalf("failing hook: %s %q, want hook-error with the exit code", d.Status, d.Error)
	}
	if code, body := get(t, c.url("/")); code != 200 || !strings.HasPrefix(body, "version=v2") {
		t.Errorf("after the failed hook: %d %q, want v2 still serving", code, body)
	}
	assertReleaseGone(t, app, d.Release)
}

// hookRuns counts the postdeploy containers Podman created for app.
func hookRuns(t *testing.T, app string, since int64) int {
	t.Helper()
	// One filter only: Podman 4 ORs several label filters.
	out := podmanCLI(t, "events", "--stream=false", "--since", time.Unix(since, 0).Format(time.RFC3339),
		"--filter", "label="+engine.LabelApp+"="+app, "--format", "{{.Status}} {{.Name}}")
	n := 0
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "create" && strings.Contains(f[1], "-"+engine.HookProcess+"-") {
			n++
		}
	}
	return n
}

// Workers get no PORT and no traffic, and those of the old release stop
// only after the new release's workers run.
func TestWorkersGoNewFirst(t *testing.T) {
	app := uniqueName("wk")
	cfg := appCfg{Name: app, Image: imageV1, Web: 1, Lines: []string{"process worker 1 /app worker", "worker_ready_time 1s"}}
	c := startCaddy(t, cfg)
	c.mustDeploy(app, imageV1, 60*time.Second)
	c.waitSettled(app, 1, 30*time.Second)
	var oldWorker string
	for _, ct := range c.status(app).Containers {
		if ct.Process == "worker" {
			oldWorker = ct.ID
			if ct.Addr != "" {
				t.Errorf("worker has a dial address %q", ct.Addr)
			}
		}
	}
	if oldWorker == "" {
		t.Fatal("no worker container")
	}
	if env := podmanCLI(t, "inspect", "--format", "{{.Config.Env}}", oldWorker); strings.Contains(env, "PORT=") {
		t.Errorf("worker has PORT in its env: %s", env)
	}
	since := time.Now().Add(-time.Second)
	next := cfg
	next.Image = imageV2
	c.reload(next)
	c.mustDeploy(app, imageV2, 60*time.Second)
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := inspect(t, oldWorker); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("old worker not stopped")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Podman's own record of the order: the new worker started before the
	// old one died.
	out := podmanCLI(t, "events", "--stream=false", "--since", since.Format(time.RFC3339Nano),
		"--filter", "label="+engine.LabelApp+"="+app,
		"--format", "{{.Status}} {{.ID}} {{.Time.UnixNano}} {{.Name}}")
	var newStart, oldDied int64
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) != 4 || !strings.Contains(f[3], "-worker-") {
			continue
		}
		var ns int64
		if _, err := fmt.Sscan(f[2], &ns); err != nil {
			continue
		}
		switch {
		case f[0] == "start" && f[1] != oldWorker && newStart == 0:
			newStart = ns
		case f[0] == "died" && f[1] == oldWorker:
			oldDied = ns
		}
	}
	if newStart == 0 || oldDied == 0 {
		t.Fatalf("podman events lack the new worker's start or the old one's death:\n%s", out)
	}
	if oldDied < newStart {
		t.Errorf("old worker died %s before the new one started", time.Duration(newStart-oldDied))
	}
	t.Logf("old worker died %s after the new one started", time.Duration(oldDied-newStart).Round(time.Millisecond))
}
