package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/podswitch/podswitch/internal/engine"
)

// hostLines are the podswitch lines of hosts h2 (over SSH, with known_hosts
// file known) and h3 (tcp://, insecure), with host_down_after.
func hostLines(h2, h3 pshHost, known string, downAfter string) []string {
	return []string{
		"host h2 {",
		"\tpodman " + h2.SSH,
		"\tidentity " + h2.Key,
		"\tknown_hosts " + known,
		"\taddress " + h2.IP,
		"}",
		"host h3 {",
		"\tpodman " + h3.TCP,
		"\tinsecure",
		"\taddress " + h3.IP,
		"}",
		"host_down_after " + downAfter,
	}
}

// hostStates returns GET /podswitch/hosts.
func (c *caddyProc) hostStates() map[string]engine.HostStatus {
	c.t.Helper()
	code, body := c.adminDo(http.MethodGet, "/podswitch/hosts", "", "")
	if code != http.StatusOK {
		c.t.Fatalf("GET /podswitch/hosts: %d %s", code, body)
	}
	var list []engine.HostStatus
	if err := json.Unmarshal([]byte(body), &list); err != nil {
		c.t.Fatalf("GET /podswitch/hosts: %v in %s", err, body)
	}
	out := map[string]engine.HostStatus{}
	for _, h := range list {
		out[h.Name] = h
	}
	return out
}

// waitHost waits until host name is in state want.
func (c *caddyProc) waitHost(name string, want engine.HostState, timeout time.Duration) time.Time {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		h := c.hostStates()[name]
		if h.State == want {
			return time.Now()
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("host %s is %s (%s), not %s, after %s", name, h.State, h.APIError, want, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// spreadOf counts the ready web containers of st by host, and checks that
// each is dialed on its host's address.
func spreadOf(t *testing.T, st engine.AppStatus, ips map[string]string) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, c := range st.Containers {
		if c.Process != engine.WebProcess || c.State != engine.StateReady {
			continue
		}
		out[c.Host]++
		if host, _, err := net.SplitHostPort(c.Addr); err != nil || host != ips[c.Host] {
			t.Errorf("container %s on %s is dialed at %s, not on %s", c.ID, c.Host, c.Addr, ips[c.Host])
		}
	}
	return out
}

// startedAt returns the start time Podman has of container id (host/id).
func startedAt(t *testing.T, hosts map[string]pshHost, id string) string {
	t.Helper()
	name, local, _ := strings.Cut(id, engine.HostSep)
	return strings.TrimSpace(hosts[name].run(t, "inspect", "-f", "{{.State.StartedAt}}", local))
}

// TestMultiHost runs one app with web 4 on two extra Podman hosts, h2 over
// SSH and h3 over tcp://, behind one Caddy, through the scenarios
// in turn: a deploy under load, h3's Podman service stopped, Caddy killed
// and restarted, h3's link cut and restored.
func TestMultiHost(t *testing.T) {
	h2, h3 := extraHost(t, 2), extraHost(t, 3)
	hosts := map[string]pshHost{"h2": h2, "h3": h3}
	ips := map[string]string{"h2": h2.IP, "h3": h3.IP}
	// A copy of known_hosts, to check that nothing writes to it.
	known := filepath.Join(t.TempDir(), "known_hosts")
	kb, err := os.ReadFile(h2.KnownHosts)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(known, kb, 0o600); err != nil {
		t.Fatal(err)
	}

	app := appCfg{Name: uniqueName("mh"), Image: imageV1, Web: 4, Lines: []string{"stop_timeout 5s", "drain_timeout 2s"}}
	t.Cleanup(func() { h2.removeApps(t, app.Name); h3.removeApps(t, app.Name) }) // after Caddy's cleanup
	c := startCaddyOpts(t, caddyOpts{podswitch: hostLines(h2, h3, known, "4s")}, app)
	c.mustDeploy(app.Name, imageV1, 2*time.Minute)
	st := c.waitSettled(app.Name, 4, time.Minute)
	if got := spreadOf(t, st, ips); got["h2"] != 2 || got["h3"] != 2 {
		t.Fatalf("web 4 over two hosts runs %v, want 2 + 2", got)
	}
	for name, hs := range c.hostStates() {
		if hs.State != engine.HostUp {
			t.Fatalf("host %s is %s (%s)", name, hs.State, hs.APIError)
		}
	}
	_, metrics := get(t, "http://"+c.admin+"/metrics")
	for _, want := range []string{
		`podswitch_host_containers{app="` + app.Name + `",host="h2",process="web",state="ready"} 2`,
		`podswitch_host_containers{app="` + app.Name + `",host="h3",process="web",state="ready"} 2`,
		`podswitch_host_state{host="h2",state="up"} 1`,
		`podswitch_host_state{host="h3",state="lost"} 0`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// sub runs a scenario as a subtest, with c reporting to it.
	sub := func(name string, fn func(t *testing.T)) {
		parent := c.t
		t.Run(name, func(t *testing.T) {
			c.t = t
			defer func() { c.t = parent }()
			fn(t)
		})
	}

	sub("deploy under load", func(t *testing.T) {
		l := startLoad(t, c.url("/"), 300)
		t0 := time.Now()
		if code, body := c.post("/podswitch/apps/"+app.Name+"/deploy", "application/json", `{"image": "`+imageV2+`"}`); code >= 300 {
			t.Fatalf("deploy: %d %s", code, body)
		}
		d := c.mustDeploy(app.Name, imageV2, 2*time.Minute)
		took := d.SwitchedAt.Sub(t0)
		l.waitVersion(t, "v2", 10*time.Second)
		l.waitAnswers(t, 300, 10*time.Second)
		l.check(t, 250)
		// The switch waited for the last new web container, whichever
		// its host.
		last := map[string]time.Time{}
		for _, ct := range d.Containers {
			if ct.Role != "new" || ct.Process != engine.WebProcess {
				continue
			}
			for _, tr := range ct.Timeline {
				if tr.State == engine.StateBooted && tr.At.After(last[engine.HostOf(ct.ID)]) {
					last[engine.HostOf(ct.ID)] = tr.At
				}
			}
		}
		if len(last) != 2 {
			t.Fatalf("new web containers booted on %v, want both hosts", last)
		}
		for h, at := range last {
			if d.SwitchedAt.Before(at) {
				t.Errorf("switched at %s, before the last container of %s booted at %s", d.SwitchedAt, h, at)
			}
		}
		st := c.waitSettled(app.Name, 4, time.Minute)
		if got := spreadOf(t, st, ips); got["h2"] != 2 || got["h3"] != 2 {
			t.Errorf("after the deploy web runs %v, want 2 + 2", got)
		}
		t.Logf("deploy over two hosts: %s from the request to the switch", took.Round(time.Millisecond))
	})

	sub("podman service stopped", func(t *testing.T) {
		before := webIDs(c.status(app.Name))
		l := startLoad(t, c.url("/"), 100)
		h3.stopService(t)
		c.waitHost("h3", engine.HostUnmanaged, 20*time.Second)
		// Longer than host_down_after, with the load on.
		l.waitAnswers(t, 800, 30*time.Second)
		if got := webIDs(c.status(app.Name)); !slices.Equal(got, before) {
			t.Errorf("containers changed while h3's API was down: %v, were %v", got, before)
		}
		h3.startService(t)
		c.waitHost("h3", engine.HostUp, 30*time.Second)
		l.check(t, 80)
		if got := webIDs(c.status(app.Name)); !slices.Equal(got, before) {
			t.Errorf("containers changed once h3's API was back: %v, were %v", got, before)
		}
	})

	sub("caddy killed and restarted", func(t *testing.T) {
		before := webIDs(c.status(app.Name))
		started := map[string]string{}
		for _, id := range before {
			started[id] = startedAt(t, hosts, id)
		}
		c.kill()
		c.launch()
		st := c.waitSettled(app.Name, 4, time.Minute)
		if got := webIDs(st); !slices.Equal(got, before) {
			t.Fatalf("after the restart the containers are %v, were %v", got, before)
		}
		for _, id := range before {
			if s := startedAt(t, hosts, id); s != started[id] {
				t.Errorf("container %s was restarted: started %s, was %s", id, s, started[id])
			}
		}
	})

	sub("link cut", func(t *testing.T) {
		st := c.status(app.Name)
		var onH3 []string
		for _, ct := range st.Containers {
			if ct.Host == "h3" && ct.Process == engine.WebProcess {
				onH3 = append(onH3, ct.ID)
			}
		}
		l := startLoad(t, c.url("/"), 200)
		cut := time.Now()
		h3.linkDown(t)
		// Out of the pool: every container of h3 is shown unhealthy.
		deadline := time.Now().Add(10 * time.Second)
		for {
			n := 0
			for _, ct := range c.status(app.Name).Containers {
				if ct.Host == "h3" && ct.State == engine.StateUnhealthy {
					n++
				}
			}
			if n == len(onH3) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("h3's containers not out of the pool within 10s")
			}
			time.Sleep(20 * time.Millisecond)
		}
		outAfter := time.Since(cut)
		lostAt := c.waitHost("h3", engine.HostLost, 30*time.Second)
		// Replaced on h2, new-first.
		deadline = time.Now().Add(time.Minute)
		for {
			if got := spreadOf(t, c.status(app.Name), ips); got["h2"] == 4 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("h3's containers were not replaced on h2: %+v", c.status(app.Name).Containers)
			}
			time.Sleep(50 * time.Millisecond)
		}
		replacedAfter := time.Since(lostAt)
		h3.linkUp(t)
		c.waitHost("h3", engine.HostUp, 30*time.Second)
		// Its old containers are stopped (their replacements serve).
		deadline = time.Now().Add(time.Minute)
		for _, id := range onH3 {
			_, local, _ := strings.Cut(id, engine.HostSep)
			for {
				if _, err := h3.podman("container", "exists", local); err != nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("h3's old container %s still there a minute after it came back", id)
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
		// Then web is spread over both hosts again, one move at a time.
		deadline = time.Now().Add(2 * time.Minute)
		for {
			st = c.waitSettled(app.Name, 4, time.Minute)
			if got := spreadOf(t, st, ips); got["h2"] == 2 && got["h3"] == 2 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("web is not spread again after h3 came back: %v", spreadOf(t, st, ips))
			}
			time.Sleep(100 * time.Millisecond)
		}
		backAfter := time.Since(cut)
		total, _ := l.finish()
		t.Logf("link cut: h3's containers out of the pool %s after the cut; lost %s after the cut; replaced on h2 %s after; spread 2 + 2 again %s after the cut; %d of %d requests failed (those in flight to h3): %s",
			outAfter.Round(time.Millisecond), lostAt.Sub(cut).Round(time.Millisecond), replacedAfter.Round(time.Millisecond), backAfter.Round(time.Millisecond), l.failed.Load(), total, strings.Join(l.errs, "; "))
		if l.failed.Load() > 0 {
			// What Caddy said of them.
			var lines []string
			for _, ln := range strings.Split(c.rawLogs(), "\n") {
				if strings.Contains(ln, `"http.log.error`) && len(lines) < 5 {
					lines = append(lines, ln)
				}
			}
			t.Logf("caddy's errors of the failed requests:\n%s", strings.Join(lines, "\n"))
		}
		if outAfter > 2*time.Second {
			t.Errorf("h3's containers left the pool %s after the cut, want within 2s", outAfter)
		}
		// What fails is what was sent to h3 before it left the pool: those
		// in flight on its connections when its link went, which end when
		// it comes back and its old containers stop.
		l.mu.Lock()
		for _, sent := range l.failStarts {
			if sent.After(cut.Add(outAfter)) {
				t.Errorf("a request sent %s after the cut, when h3 was out of the pool, failed", sent.Sub(cut).Round(time.Millisecond))
			}
		}
		l.mu.Unlock()
	})

	if b, _ := os.ReadFile(known); !bytes.Equal(b, kb) {
		t.Errorf("known_hosts changed")
	}
}

// TestMultiHostRefusals: a host whose SSH key is not in known_hosts is
// refused with its fingerprint (nothing added to any known_hosts), and an
// image missing on one host is refused before any container starts,
// naming the host.
func TestMultiHostRefusals(t *testing.T) {
	h2, h3 := extraHost(t, 2), extraHost(t, 3)
	dir := t.TempDir()
	// known_hosts with h3's key only: h2's is unknown.
	kb, err := os.ReadFile(h2.KnownHosts)
	if err != nil {
		t.Fatal(err)
	}
	var only3 []string
	for _, l := range strings.Split(string(kb), "\n") {
		if strings.HasPrefix(l, h3.IP+" ") {
			only3 = append(only3, l)
		}
	}
	known := filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(known, []byte(strings.Join(only3, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	knownBefore, _ := os.ReadFile(known)

	// An image only h2 has.
	only := "localhost/podswitch-testapp:only-h2"
	h2.run(t, "tag", imageV2, only)
	t.Cleanup(func() { _, _ = h2.podman("rmi", only) })

	app := appCfg{Name: uniqueName("mhr"), Image: imageV1, Web: 2, Lines: []string{"hosts h3"}}
	other := appCfg{Name: uniqueName("mhs"), Image: imageV1, Web: 1}
	t.Cleanup(func() { h2.removeApps(t, app.Name, other.Name); h3.removeApps(t, app.Name, other.Name) })
	c := startCaddyOpts(t, caddyOpts{podswitch: hostLines(h2, h3, known, "10s"), siteApps: []string{other.Name}}, app, other)
	c.mustDeploy(app.Name, imageV1, 2*time.Minute)

	// h2 is refused: its key is unknown.
	c.waitHost("h2", engine.HostUnmanaged, 20*time.Second)
	h := c.hostStates()["h2"]
	for _, want := range []string{"unknown", "SHA256:", known, "never adds"} {
		if !strings.Contains(h.APIError, want) {
			t.Errorf("h2's error %q does not say %q", h.APIError, want)
		}
	}
	// The app on every host runs on h3 only.
	st := c.waitSettled(other.Name, 1, time.Minute)
	for _, ct := range st.Containers {
		if ct.Host != "h3" {
			t.Errorf("container %s placed on %s, whose key is unknown", ct.ID, ct.Host)
		}
	}
	if b, _ := os.ReadFile(known); !bytes.Equal(b, knownBefore) {
		t.Errorf("known_hosts changed:\n%s", b)
	}
	home := filepath.Join(c.dir, ".ssh")
	if _, err := os.Stat(home); err == nil {
		t.Errorf("%s was created", home)
	}
	if !strings.Contains(c.logs(), "SHA256:") {
		t.Errorf("the log does not name the refused key's fingerprint")
	}

	// Trust h2's key: the host comes up with no restart, and an image h3
	// lacks is refused, naming h3, before any container starts.
	if err := os.WriteFile(known, kb, 0o600); err != nil {
		t.Fatal(err)
	}
	c.waitHost("h2", engine.HostUp, 20*time.Second)
	before := webIDs(c.status(other.Name))
	code, body := c.post("/podswitch/apps/"+other.Name+"/deploy", "application/json", fmt.Sprintf(`{"image": %q}`, only))
	if code != http.StatusBadRequest || !strings.Contains(body, "missing on host h3") {
		t.Fatalf("deploy of an image h3 lacks: %d %s, want 400 naming h3", code, body)
	}
	if got := webIDs(c.status(other.Name)); !slices.Equal(got, before) {
		t.Errorf("containers changed: %v, were %v", got, before)
	}
	for _, ps := range []pshHost{h2, h3} {
		if out := strings.TrimSpace(ps.run(t, "ps", "-aq", "--filter", "label=podswitch.app="+other.Name, "--filter", "ancestor="+only)); out != "" {
			t.Errorf("host %d has containers of the refused image: %s", ps.N, out)
		}
	}

	// A host that still runs containers cannot leave the config; moving
	// the apps off it empties it, new-first; then it can.
	lines := hostLines(h2, h3, known, "10s")
	withoutH3 := append(slices.Clone(lines[:6]), lines[len(lines)-1])
	app.Lines, other.Lines = []string{"hosts h2"}, []string{"hosts h2"}
	c.opts.podswitch = withoutH3
	code, body = c.post("/load", "text/caddyfile", c.caddyfile(app, other))
	if code < 400 || !strings.Contains(body, `host \"h3\" still runs`) {
		t.Fatalf("a config without h3, which runs containers: %d %s", code, body)
	}
	c.opts.podswitch = lines
	c.reload(app, other)
	for _, a := range []appCfg{app, other} {
		deadline := time.Now().Add(time.Minute)
		for {
			st := c.status(a.Name)
			moved := len(st.Containers) > 0
			for _, ct := range st.Containers {
				moved = moved && ct.Host == "h2" && ct.State == engine.StateReady
			}
			if moved {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("app %s did not move to h2: %+v", a.Name, st.Containers)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	c.opts.podswitch = withoutH3
	c.reload(app, other)
	if hs := c.hostStates(); len(hs) != 1 || hs["h2"].State != engine.HostUp {
		t.Errorf("hosts after h3 left: %+v", hs)
	}
	if out := strings.TrimSpace(h3.run(t, "ps", "-aq", "--filter", "label=podswitch.app="+app.Name)); out != "" {
		t.Errorf("h3 still has containers of %s: %s", app.Name, out)
	}
}
