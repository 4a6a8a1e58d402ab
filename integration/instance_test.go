package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/podswitch/podswitch/internal/engine"
)

// Scenarios of podswitch instances: an app removed from the config while
// Caddy was down, two instances with an app of the same name on one
// Podman, and a second process on a data dir already in use.

// dataDir returns podswitch's data dir of c (Caddy's AppDataDir is
// $XDG_DATA_HOME/caddy).
func (c *caddyProc) dataDir() string { return filepath.Join(c.dir, "caddy", "podswitch") }

// instanceID returns the id of c's podswitch instance, as its data dir
// keeps it.
func (c *caddyProc) instanceID() string {
	c.t.Helper()
	b, err := os.ReadFile(filepath.Join(c.dataDir(), "instance"))
	if err != nil {
		c.t.Fatalf("instance id: %v", err)
	}
	return strings.TrimSpace(string(b))
}

// containersByInstance returns the sorted IDs of app's containers in
// Podman, by the instance that labelled them.
func containersByInstance(t *testing.T, app string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, ci := range podmanContainers(t, app) {
		inst := ci.Labels[engine.LabelInstance]
		out[inst] = append(out[inst], ci.ID)
	}
	for _, ids := range out {
		slices.Sort(ids)
	}
	return out
}

// shortIDs returns the 12-character prefixes of ids, as the test app's
// hostnames are.
func shortIDs(ids []string) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = id[:min(12, len(id))]
	}
	return out
}

// An app removed from the config while Caddy was down (stopped cleanly,
// or killed): at the next start its containers (web and worker) are
// drained and stopped and its record is moved to state/removed/, the
// other app serving meanwhile; added back, the app starts from its config,
// not from the pause and the scale it had through the API.
func TestInstanceAppRemovedWhileStopped(t *testing.T) {
	for _, how := range []string{"stop", "kill"} {
		t.Run(how, func(t *testing.T) { testAppRemovedWhileStopped(t, how) })
	}
}

func testAppRemovedWhileStopped(t *testing.T, how string) {
	keep := appCfg{Name: uniqueName("keep"), Image: imageV1, Web: 1}
	gone := appCfg{Name: uniqueName("gone"), Image: imageV1, Web: 2,
		Lines: []string{"process worker 1 /app worker", "worker_ready_time 1s"}}
	c := startCaddyOpts(t, caddyOpts{siteApps: []string{gone.Name}}, keep, gone)
	c.mustDeploy(gone.Name, imageV1, 2*time.Minute)
	keepIDs := webIDs(c.waitSettled(keep.Name, 1, time.Minute))
	c.waitSettled(gone.Name, 2, time.Minute)
	c.waitProcess(gone.Name, "worker", 1, time.Minute)
	if code, body := get(t, c.appURL(gone.Name, "/")); code != http.StatusOK {
		t.Fatalf("GET the app to remove: %d %s", code, body)
	}

	// A scale and a pause through the API: both are kept in the app's
	// record and would survive a restart of Caddy.
	base := "/podswitch/apps/" + gone.Name
	if code, body := c.api(http.MethodPost, base+"/scale?wait=1", `{"web": 3}`); code != http.StatusOK {
		t.Fatalf("scale to 3: %d %s", code, body)
	}
	c.waitSettled(gone.Name, 3, time.Minute)
	if code, body := c.api(http.MethodPost, base+"/pause", `{"timeout": "30m"}`); code != http.StatusOK {
		t.Fatalf("pause: %d %s", code, body)
	}
	st := c.status(gone.Name)
	if st.Paused == nil || len(st.Overrides) == 0 {
		t.Fatalf("before the removal: paused %+v, overrides %+v; want both", st.Paused, st.Overrides)
	}
	record := filepath.Join(c.dataDir(), "state", gone.Name+".json")
	if _, err := os.Stat(record); err != nil {
		t.Fatalf("the app's record: %v", err)
	}
	before := len(podmanContainers(t, gone.Name))
	if before != 4 {
		t.Fatalf("%d containers of %s before the removal, want 3 web and 1 worker", before, gone.Name)
	}

	switch how {
	case "stop":
		c.stop()
	case "kill":
		c.kill()
	}
	if n := len(podmanContainers(t, gone.Name)); n != before {
		t.Fatalf("%d containers of %s after the %s of Caddy, want the %d that ran", n, gone.Name, how, before)
	}

	// The config without the app; Caddy starts again.
	t0 := time.Now()
	c.start(keep)
	up := time.Since(t0)
	// The app that stays serves while the removed one's containers stop,
	// and while it is added back (a reload: see reloadDrop).
	l := startLoad(t, c.url("/"), 50)
	l.allowDrops = 2
	deadline := t0.Add(30 * time.Second)
	for {
		list := podmanContainers(t, gone.Name)
		if len(list) == 0 {
			break
		}
		if time.Now().After(deadline) {
			var names []string
			for _, ci := range list {
				names = append(names, fmt.Sprintf("%s (running %v)", ci.Name, ci.Running))
			}
			t.Fatalf("%s after the start, containers of the removed app remain: %v", time.Since(t0).Round(time.Millisecond), names)
		}
		time.Sleep(100 * time.Millisecond)
	}
	goneAfter := time.Since(t0)
	// The record is moved aside once the last container is gone.
	var aside []string
	for {
		aside, _ = filepath.Glob(filepath.Join(c.dataDir(), "state", "removed", gone.Name+"-*.json"))
		_, err := os.Stat(record)
		if len(aside) == 1 && errors.Is(err, os.ErrNotExist) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s after the start: record %s (stat: %v), moved aside: %v; want it under state/removed/",
				time.Since(t0).Round(time.Millisecond), record, err, aside)
		}
		time.Sleep(50 * time.Millisecond)
	}
	recordAfter := time.Since(t0)
	t.Logf("%s of Caddy, start without %s: Caddy up after %s, the app's %d containers gone after %s, record moved to %s after %s",
		how, gone.Name, up.Round(time.Millisecond), before, goneAfter.Round(time.Millisecond),
		strings.TrimPrefix(aside[0], c.dataDir()+"/"), recordAfter.Round(time.Millisecond))
	found := false
	var steps []string
	for _, l := range c.logLines() {
		if l.At.Before(t0) || l.str("app") != gone.Name {
			continue
		}
		if l.Msg == "removing the containers of an app that is not in the config" {
			found = true
		}
		step := fmt.Sprintf("%s %s", l.At.Sub(t0).Round(time.Millisecond), l.Msg)
		if id := l.str("container"); id != "" {
			step += " " + id
		}
		if to := l.str("to"); to != "" {
			step += " to " + to
		}
		steps = append(steps, step)
	}
	t.Logf("the removed app's log since the start:\n\t%s", strings.Join(steps, "\n\t"))
	if !found {
		t.Errorf("no log line about removing the containers of %s", gone.Name)
	}

	// Added back: the config's counts, no pause, no override.
	c.reload(keep, gone)
	c.waitSettled(gone.Name, 2, 2*time.Minute)
	c.waitProcess(gone.Name, "worker", 1, time.Minute)
	st = c.status(gone.Name)
	if st.Paused != nil || len(st.Overrides) != 0 {
		t.Errorf("the app added back: paused %+v, overrides %+v; want neither", st.Paused, st.Overrides)
	}
	if st.Processes[engine.WebProcess] != 2 || st.Processes["worker"] != 1 {
		t.Errorf("the app added back wants %v, want the config's web 2 worker 1", st.Processes)
	}
	if n := len(podmanContainers(t, gone.Name)); n != 3 {
		t.Errorf("%d containers of the app added back, want 2 web and 1 worker", n)
	}
	l.check(t, 40)
	if got := webIDs(c.status(keep.Name)); !slices.Equal(got, keepIDs) {
		t.Errorf("the app that stayed runs %v, ran %v: it was adopted, nothing should have replaced it", got, keepIDs)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	t1 := time.Now()
	resp, err := client.Get(c.appURL(gone.Name, "/"))
	if err != nil {
		t.Fatalf("GET the app added back: %v (held by a revived pause?)", err)
	}
	body := mustRead(resp)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(body, "version=v1") {
		t.Errorf("GET the app added back: %d %q after %s", resp.StatusCode, body, time.Since(t1))
	}
}

// Two Caddy processes, each with its own data dir (so its own instance
// id), run an app of the same name on one Podman, both under load for
// 30 s: neither touches the other's containers (the IDs stay the same on
// both sides, no request fails, each proxies only to its own) and each
// status counts the other's containers. An app only A runs is not an
// orphan to B.
func TestInstanceTwoOnOnePodman(t *testing.T) {
	app := uniqueName("twin")
	cfg := appCfg{Name: app, Image: imageV1, Web: 2,
		Lines: []string{"process worker 1 /app worker", "worker_ready_time 1s"}}
	// solo is in A's config only: to B, its containers are another
	// instance's, not orphans of its own to remove.
	solo := appCfg{Name: uniqueName("solo"), Image: imageV1, Web: 1}
	a := startCaddy(t, cfg, solo)
	a.mustDeploy(app, imageV1, 2*time.Minute)
	a.waitSettled(app, 2, time.Minute)
	a.waitProcess(app, "worker", 1, time.Minute)
	soloIDs := webIDs(a.waitSettled(solo.Name, 1, time.Minute))
	b := startCaddy(t, cfg)
	b.mustDeploy(app, imageV1, 2*time.Minute)
	b.waitSettled(app, 2, time.Minute)
	b.waitProcess(app, "worker", 1, time.Minute)

	ia, ib := a.instanceID(), b.instanceID()
	if ia == ib {
		t.Fatalf("both instances have the id %s", ia)
	}
	before := containersByInstance(t, app)
	if len(before) != 2 || len(before[ia]) != 3 || len(before[ib]) != 3 {
		t.Fatalf("containers by instance: %v; want 3 of %s and 3 of %s", before, ia, ib)
	}
	// Each sees the other's containers: A at its next resync, B at its
	// adoption.
	sa := a.waitStatus(app, "A counts B's containers", 30*time.Second, func(st engine.AppStatus) bool { return st.Others >= 1 })
	sb := b.waitStatus(app, "B counts A's containers", 30*time.Second, func(st engine.AppStatus) bool { return st.Others >= 1 })
	t.Logf("other_instances: A %d, B %d", sa.Others, sb.Others)
	webA, webB := webIDs(sa), webIDs(sb)

	la := startLoad(t, a.url("/"), 50)
	lb := startLoad(t, b.url("/"), 50)
	// The load's length is the test: three resyncs of each instance fall
	// in it.
	time.Sleep(30 * time.Second)
	la.finish()
	lb.finish()
	t.Log("A:")
	la.check(t, 40)
	t.Log("B:")
	lb.check(t, 40)

	after := containersByInstance(t, app)
	if !maps.EqualFunc(before, after, slices.Equal) {
		t.Errorf("containers by instance changed under load:\nbefore %v\nafter  %v", before, after)
	}
	sa, sb = a.status(app), b.status(app)
	if got := webIDs(sa); !slices.Equal(got, webA) {
		t.Errorf("A's web containers changed: %v, were %v", got, webA)
	}
	if got := webIDs(sb); !slices.Equal(got, webB) {
		t.Errorf("B's web containers changed: %v, were %v", got, webB)
	}
	if sa.Others < 1 || sb.Others < 1 {
		t.Errorf("other_instances after the load: A %d, B %d; want both >= 1", sa.Others, sb.Others)
	}
	if got := containersByInstance(t, solo.Name); !maps.EqualFunc(got, map[string][]string{ia: soloIDs}, slices.Equal) {
		t.Errorf("containers of %s (A's only) by instance: %v, were %v of %s", solo.Name, got, soloIDs, ia)
	}
	for _, l := range b.logLines() {
		if l.str("app") == solo.Name {
			t.Errorf("B logged about A's app %s: %s", solo.Name, l.Msg)
		}
	}
	// Each Caddy proxied only to its own web containers.
	for _, side := range []struct {
		name string
		l    *load
		own  []string
	}{{"A", la, shortIDs(webA)}, {"B", lb, shortIDs(webB)}} {
		side.l.mu.Lock()
		hosts := maps.Clone(side.l.hosts)
		side.l.mu.Unlock()
		for h := range hosts {
			if !slices.Contains(side.own, h) {
				t.Errorf("%s's load was answered by container %s, not one of its own %v (answers %v)", side.name, h, side.own, hosts)
			}
		}
		t.Logf("%s: answers by container %v", side.name, hosts)
	}
}

// A second Caddy process on the data dir of a running one (its own admin
// and site ports) exits non-zero at start, saying the data dir is in use;
// the first keeps serving, its containers untouched. Once the first has
// stopped, the second starts and adopts them.
func TestInstanceSecondProcessOnDataDirRefused(t *testing.T) {
	app := uniqueName("lock")
	cfg := appCfg{Name: app, Image: imageV1, Web: 2}
	a := startCaddy(t, cfg)
	a.mustDeploy(app, imageV1, 2*time.Minute)
	before := webIDs(a.waitSettled(app, 2, time.Minute))
	id := a.instanceID()
	l := startLoad(t, a.url("/"), 50)

	// The second process: ports and a folder of its own (no apps to
	// clean up: they are A's), A's data dir.
	b := newCaddyProc(t, caddyOpts{env: []string{"XDG_DATA_HOME=" + a.dir}})
	b.sites[app] = b.http
	path := filepath.Join(b.dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(b.caddyfile(cfg)), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(caddyBin, "run", "--config", path, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+b.dir, "HOME="+b.dir)
	cmd.Env = append(cmd.Env, b.opts.env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var err error
	select {
	case err = <-exited:
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
		t.Fatalf("the second process still runs 60s after its start:\n%s", out.String())
	}
	took := time.Since(t0)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() == 0 {
		t.Fatalf("the second process ended with %v, want a non-zero exit:\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "is in use by another process") {
		t.Fatalf("the second process exited %d without the data dir message:\n%s", ee.ExitCode(), out.String())
	}
	var msg string
	for _, line := range strings.Split(out.String(), "\n") {
		if strings.Contains(line, "is in use by another process") {
			msg = line
		}
	}
	t.Logf("the second process exited %d after %s: %s", ee.ExitCode(), took.Round(time.Millisecond), msg)
	// Its admin endpoint is gone with it.
	if resp, err := (&http.Client{Timeout: 2 * time.Second}).Get("http://" + b.admin + "/config/"); err == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		t.Errorf("the second process's admin endpoint answers after its exit: %d", resp.StatusCode)
	}

	// A serves on, with the same containers and instance id: a few
	// requests answered after the exit, through the whole load.
	n := l.ok.Load()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for l.ok.Load() < n+50 {
		if ctx.Err() != nil {
			t.Fatalf("A answered %d requests in 30s after the second process exited", l.ok.Load()-n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	l.check(t, 40)
	if got := webIDs(a.status(app)); !slices.Equal(got, before) {
		t.Errorf("A's web containers changed: %v, were %v", got, before)
	}
	if got := a.instanceID(); got != id {
		t.Errorf("A's instance id changed from %s to %s", id, got)
	}
	byInst := containersByInstance(t, app)
	if len(byInst) != 1 || len(byInst[id]) != 2 {
		t.Errorf("containers of %s by instance: %v; want A's 2 only", app, byInst)
	}

	// Once A has stopped, the lock is free: the second process starts on
	// the data dir, as the same instance, and adopts A's containers.
	a.stop()
	b.launch()
	if got := webIDs(b.waitSettled(app, 2, time.Minute)); !slices.Equal(got, before) {
		t.Errorf("after A stopped, the second process serves %v, want A's %v adopted", got, before)
	}
	if code, body := get(t, b.url("/")); code != http.StatusOK {
		t.Errorf("GET through the second process: %d %s", code, body)
	}
}
