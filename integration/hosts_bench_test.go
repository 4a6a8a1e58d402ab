package integration

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/podswitch/podswitch/internal/engine"
)

// Benchmarks of several Podman hosts, on the extra hosts of scripts/psh.sh
// (h2 over SSH, h3 over tcp://) and the main Podman service. Not part of
// `make test`.

// BenchmarkDeployHosts measures, in one Caddy and the same run, the time
// from a deploy's start to its switch (the deployment's switched_at -
// started_at) of an app with web 4 on one host (`hosts h3`: its four
// containers on h3) and of the same app on two hosts (h2 over SSH and h3
// over tcp://, two containers each). Each iteration deploys v2, then v1
// on the next, to each app in turn, the order alternating, one deploy at
// a time once both apps have settled (the containers the last deploy
// replaced are stopped). Run it with
//
//	PODSWITCH_TEST_RACE=0 go test -tags "$TAGS" -run '^$' -bench DeployHosts -benchtime 5x -timeout 30m ./integration/
//
// (the default -benchtime of 1s makes one deploy of each).
func BenchmarkDeployHosts(b *testing.B) {
	h2, h3 := extraHost(b, 2), extraHost(b, 3)
	prefix := uniqueName("dh")
	// Registered before Caddy's cleanup, so run after it: Caddy is
	// stopped first and replaces nothing.
	b.Cleanup(func() { removePrefixed(b, prefix, h2, h3) })
	settings := []string{"stop_timeout 5s", "drain_timeout 2s"}
	one := appCfg{Name: prefix + "-1host", Image: imageV1, Web: 4, Lines: append([]string{"hosts h3"}, settings...)}
	two := appCfg{Name: prefix + "-2hosts", Image: imageV1, Web: 4, Lines: settings}
	c := startCaddyOpts(b, caddyOpts{podswitch: hostLines(h2, h3, h2.KnownHosts, "10s")}, one, two)
	c.waitHost("h2", engine.HostUp, time.Minute)
	c.waitHost("h3", engine.HostUp, time.Minute)

	cases := []struct {
		app    appCfg
		metric string
		spread map[string]int
		took   []time.Duration
	}{
		{app: one, metric: "1host", spread: map[string]int{"h3": 4}},
		{app: two, metric: "2hosts", spread: map[string]int{"h2": 2, "h3": 2}},
	}
	for _, cs := range cases {
		c.mustDeploy(cs.app.Name, imageV1, 5*time.Minute)
		if got := readyByHost(c.waitSettled(cs.app.Name, 4, 2*time.Minute)); !maps.Equal(got, cs.spread) {
			b.Fatalf("app %s runs %v, want %v", cs.app.Name, got, cs.spread)
		}
	}

	i := 0
	for b.Loop() {
		image := imageV2
		if i%2 == 1 {
			image = imageV1
		}
		order := []int{0, 1}
		if i%2 == 1 {
			order = []int{1, 0}
		}
		var line []string
		for _, k := range order {
			cs := &cases[k]
			// Neither app has a container starting or stopping.
			for _, o := range cases {
				c.waitSettled(o.app.Name, 4, 2*time.Minute)
			}
			d := deployAndWait(b, c, cs.app.Name, image, 5*time.Minute)
			sw := d.SwitchedAt.Sub(d.StartedAt)
			cs.took = append(cs.took, sw)
			line = append(line, fmt.Sprintf("%s switched after %v (last boot by host %s)", cs.metric, sw.Round(time.Millisecond), lastBoots(d)))
		}
		// One line an iteration: a benchmark's log is cut at 10 lines
		// without -v.
		b.Logf("deploy %d (%s): %s", i+1, strings.TrimPrefix(image, "localhost/podswitch-testapp:"), strings.Join(line, "; "))
		i++
	}

	for _, cs := range cases {
		if got := readyByHost(c.waitSettled(cs.app.Name, 4, 2*time.Minute)); !maps.Equal(got, cs.spread) {
			b.Errorf("after the deploys app %s runs %v, want %v", cs.app.Name, got, cs.spread)
		}
	}
	mean := func(ds []time.Duration) float64 {
		var sum time.Duration
		for _, d := range ds {
			sum += d
		}
		return sum.Seconds() * 1000 / float64(len(ds))
	}
	m1, m2 := mean(cases[0].took), mean(cases[1].took)
	for _, cs := range cases {
		s := slices.Sorted(slices.Values(cs.took))
		b.Logf("%s: %d deploys, switch after mean %.0fms, median %v, min %v, max %v", cs.metric, len(s), mean(s),
			s[len(s)/2].Round(time.Millisecond), s[0].Round(time.Millisecond), s[len(s)-1].Round(time.Millisecond))
	}
	b.ReportMetric(m1, "ms/deploy-1host")
	b.ReportMetric(m2, "ms/deploy-2hosts")
	b.ReportMetric(m2/m1, "x-2hosts/1host")
	logCaddyTrouble(b, c)
}

// BenchmarkHostWatching measures the CPU Caddy spends at rest (no
// request) with PODSWITCH_BENCH_CONTAINERS web containers (default 100,
// apps of web 4) spread over three hosts, h2 over SSH, h3 over tcp:// and
// the main Podman service as host `local` (unix://, publishing on
// 127.0.0.1): their health checks (every 0.5 s each, the default) and the
// watching of the hosts (a ping of each every 2 s). In the same run, as
// the baseline, the same containers on the main Podman service alone (a
// lone `podman`, single-host mode); and both configs with no app at all,
// which is the pure cost of host watching. Each is a fresh Caddy; its CPU
// is measured over PODSWITCH_BENCH_WINDOW seconds (default 20) once every
// container serves, its RSS at the end of that window. Run it with
//
//	PODSWITCH_TEST_RACE=0 go test -tags "$TAGS" -run '^$' -bench HostWatching -benchtime 1x -timeout 60m ./integration/
func BenchmarkHostWatching(b *testing.B) {
	h2, h3 := extraHost(b, 2), extraHost(b, 3)
	n := envInt(b, "PODSWITCH_BENCH_CONTAINERS", 100)
	window := time.Duration(envInt(b, "PODSWITCH_BENCH_WINDOW", 20)) * time.Second
	prefix := uniqueName("hw")
	b.Cleanup(func() { removePrefixed(b, prefix, h2, h3) })
	if !strings.HasPrefix(rt.URI(), "unix://") {
		b.Fatalf("the main Podman service is at %s, want a unix:// socket", rt.URI())
	}
	hostsMode := caddyOpts{podswitch: append(hostLines(h2, h3, h2.KnownHosts, "10s"),
		"host local {", "\tpodman "+rt.URI(), "\taddress 127.0.0.1", "}")}
	hostNames := []string{"h2", "h3", "local"}
	singleMode := caddyOpts{} // podman <the main service>
	apps := func(phase string) []appCfg {
		var out []appCfg
		for i, left := 0, n; left > 0; i++ {
			web := min(4, left)
			left -= web
			out = append(out, appCfg{Name: fmt.Sprintf("%s-%s-%d", prefix, phase, i), Image: imageV1, Web: web})
		}
		return out
	}

	type result struct {
		cpu   float64
		rss   int64
		serve time.Duration
	}
	// phase runs a fresh Caddy with opts and apps, waits until every
	// host is up and every container serves, measures, then stops Caddy
	// and removes the phase's containers.
	phase := func(name string, opts caddyOpts, apps []appCfg, hosts []string) result {
		c := newCaddyProc(b, opts, apps...)
		t0 := time.Now()
		c.start(apps...)
		for _, h := range hosts {
			c.waitHost(h, engine.HostUp, 2*time.Minute)
		}
		var r result
		what := "no app"
		if len(apps) > 0 {
			spread := waitFleet(b, c, apps, 30*time.Minute)
			r.serve = time.Since(t0)
			what = fmt.Sprintf("%d apps, %d web containers serving %.1fs after the start, by host %v", len(apps), n, r.serve.Seconds(), spread)
		}
		r.cpu = procCPU(b, c.pid(), window)
		r.rss = procRSS(b, c.pid())
		// One line a phase: a benchmark's log is cut at 10 lines without -v.
		b.Logf("%s: %s; caddy CPU %.2f%% of one core over %v at rest, RSS %.1f MiB", name, what, r.cpu*100, window, float64(r.rss)/(1<<20))
		logCaddyTrouble(b, c)
		c.stop()
		removePrefixed(b, prefix+"-"+name+"-", h2, h3)
		c.apps = nil
		return r
	}

	var singleIdle, hostsIdle, hosts, single result
	iters := 0
	add := func(to *result, r result) {
		to.cpu += r.cpu
		to.rss += r.rss
		to.serve += r.serve
	}
	for b.Loop() {
		add(&singleIdle, phase("single0", singleMode, nil, nil))
		add(&hostsIdle, phase("hosts0", hostsMode, nil, hostNames))
		add(&hosts, phase("hosts", hostsMode, apps("hosts"), hostNames))
		add(&single, phase("single", singleMode, apps("single"), nil))
		iters++
	}
	f := float64(iters)
	pct := func(r result) float64 { return r.cpu * 100 / f }
	mib := func(r result) float64 { return float64(r.rss) / (1 << 20) / f }
	b.Logf("%d containers: hosts mode (3 hosts) %.2f%% of a core, single host %.2f%% (%.2fx); no app: hosts mode %.2f%%, single host %.2f%%",
		n, pct(hosts), pct(single), hosts.cpu/single.cpu, pct(hostsIdle), pct(singleIdle))
	b.ReportMetric(pct(hosts), "%core-hosts")
	b.ReportMetric(pct(single), "%core-single")
	b.ReportMetric(hosts.cpu/single.cpu, "x-hosts/single")
	b.ReportMetric(pct(hostsIdle), "%core-hosts-0apps")
	b.ReportMetric(pct(singleIdle), "%core-single-0apps")
	b.ReportMetric(mib(hosts), "MiB-hosts")
	b.ReportMetric(mib(single), "MiB-single")
	b.ReportMetric(mib(hostsIdle), "MiB-hosts-0apps")
	b.ReportMetric(mib(singleIdle), "MiB-single-0apps")
	b.ReportMetric(hosts.serve.Seconds()/f, "s-serve-hosts")
	b.ReportMetric(single.serve.Seconds()/f, "s-serve-single")
}

// lastBoots says when, after the start of deployment d, the last new web
// container of each host booted.
func lastBoots(d engine.Deployment) string {
	last := map[string]time.Time{}
	for _, ct := range d.Containers {
		if ct.Role != "new" || ct.Process != engine.WebProcess {
			continue
		}
		for _, tr := range ct.Timeline {
			if h := engine.HostOf(ct.ID); tr.State == engine.StateBooted && tr.At.After(last[h]) {
				last[h] = tr.At
			}
		}
	}
	var out []string
	for _, h := range slices.Sorted(maps.Keys(last)) {
		out = append(out, fmt.Sprintf("%s %v", h, last[h].Sub(d.StartedAt).Round(time.Millisecond)))
	}
	return strings.Join(out, ", ")
}

// readyByHost counts the ready web containers of st by host.
func readyByHost(st engine.AppStatus) map[string]int {
	out := map[string]int{}
	for _, ct := range st.Containers {
		if ct.Process == engine.WebProcess && ct.State == engine.StateReady {
			out[ct.Host]++
		}
	}
	return out
}

// deployAndWait deploys image to app through the admin API, waits until
// that deployment has ended and the containers it replaced are stopped
// (retired_at), as GET /podswitch/apps/{app}/deployments shows it, and
// returns it; it fails the benchmark unless it succeeded and switched.
func deployAndWait(b *testing.B, c *caddyProc, app, image string, timeout time.Duration) engine.Deployment {
	b.Helper()
	code, body := c.post("/podswitch/apps/"+app+"/deploy", "application/json", fmt.Sprintf(`{"image": %q}`, image))
	if code != http.StatusAccepted && code != http.StatusOK {
		b.Fatalf("deploy of %s to %s: %d %s", image, app, code, body)
	}
	var ans struct {
		Deployment *engine.Deployment `json:"deployment"`
		Message    string             `json:"message"`
	}
	if err := json.Unmarshal([]byte(body), &ans); err != nil {
		b.Fatalf("deploy of %s to %s: %v in %s", image, app, err, body)
	}
	if ans.Deployment == nil {
		b.Fatalf("deploy of %s to %s started nothing: %s", image, app, ans.Message)
	}
	id := ans.Deployment.ID
	deadline := time.Now().Add(timeout)
	for {
		code, body := c.adminDo(http.MethodGet, "/podswitch/apps/"+app+"/deployments", "", "")
		if code != http.StatusOK {
			b.Fatalf("deployments of %s: %d %s", app, code, body)
		}
		var list []engine.Deployment
		if err := json.Unmarshal([]byte(body), &list); err != nil {
			b.Fatalf("deployments of %s: %v in %s", app, err, body)
		}
		for _, d := range list {
			if d.ID != id || !d.Status.Ended() {
				continue
			}
			if d.Status != engine.StatusSuccess {
				b.Fatalf("deployment %d of %s to %s: %s %s", id, image, app, d.Status, d.Error)
			}
			if d.SwitchedAt.IsZero() {
				b.Fatalf("deployment %d of %s to %s succeeded with no switched_at", id, image, app)
			}
			if !d.RetiredAt.IsZero() {
				return d
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("deployment %d of %s to %s has not ended after %v", id, image, app, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitFleet waits until every app of apps serves from as many ready web
// containers as it asks for, with no other web container and its last
// deployment ended, and returns the ready web containers by host. A
// deployment that failed fails the benchmark at once.
func waitFleet(b *testing.B, c *caddyProc, apps []appCfg, timeout time.Duration) map[string]int {
	b.Helper()
	want := map[string]int{}
	for _, a := range apps {
		want[a.Name] = a.Web
	}
	deadline := time.Now().Add(timeout)
	for {
		code, body := c.adminDo(http.MethodGet, "/podswitch/apps", "", "")
		if code != http.StatusOK {
			b.Fatalf("GET /podswitch/apps: %d %s", code, body)
		}
		var list []engine.AppStatus
		if err := json.Unmarshal([]byte(body), &list); err != nil {
			b.Fatalf("GET /podswitch/apps: %v", err)
		}
		done, ready, spread := 0, 0, map[string]int{}
		for _, st := range list {
			w, ok := want[st.Name]
			if !ok {
				continue
			}
			if len(st.Deployments) > 0 && st.Deployments[0].Status.Ended() && st.Deployments[0].Status != engine.StatusSuccess {
				b.Fatalf("app %s: deployment %s: %s", st.Name, st.Deployments[0].Status, st.Deployments[0].Error)
			}
			byHost := readyByHost(st)
			r := 0
			for _, k := range byHost {
				r += k
			}
			ready += r
			other := 0
			for _, ct := range st.Containers {
				if ct.Process == engine.WebProcess && ct.State != engine.StateReady {
					other++
				}
			}
			if st.Release != nil && r == w && other == 0 && len(st.Deployments) > 0 && st.Deployments[0].Status.Ended() {
				done++
				for h, k := range byHost {
					spread[h] += k
				}
			}
		}
		if done == len(apps) {
			return spread
		}
		if time.Now().After(deadline) {
			b.Fatalf("after %v, %d of %d apps serve (%d web containers ready)", timeout, done, len(apps), ready)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// removePrefixed removes every container whose podswitch.app label starts
// with prefix, on the main Podman service and on each host given, and
// fails the benchmark if any is left. Only those: other runs may have
// containers on the same hosts.
func removePrefixed(tb testing.TB, prefix string, hosts ...pshHost) {
	tb.Helper()
	type target struct {
		name   string
		podman func(args ...string) ([]byte, error)
	}
	targets := []target{{"the main Podman service", execPodman}}
	for _, h := range hosts {
		targets = append(targets, target{fmt.Sprintf("host %d", h.N), h.podman})
	}
	list := func(tg target) ([]string, error) {
		out, err := tg.podman("ps", "-a", "--filter", "label="+engine.LabelApp, "--format", `{{.ID}} {{index .Labels "`+engine.LabelApp+`"}}`)
		if err != nil {
			return nil, fmt.Errorf("%v: %s", err, out)
		}
		var ids []string
		for l := range strings.SplitSeq(string(out), "\n") {
			if id, app, ok := strings.Cut(strings.TrimSpace(l), " "); ok && strings.HasPrefix(app, prefix) {
				ids = append(ids, id)
			}
		}
		return ids, nil
	}
	for _, tg := range targets {
		ids, err := list(tg)
		if err != nil {
			tb.Errorf("%s: listing containers: %v", tg.name, err)
			continue
		}
		if len(ids) == 0 {
			continue
		}
		if out, err := tg.podman(append([]string{"rm", "-f", "-t", "0"}, ids...)...); err != nil {
			tb.Errorf("%s: removing %d containers of %s*: %v\n%s", tg.name, len(ids), prefix, err, out)
		}
		if left, err := list(tg); err == nil && len(left) > 0 {
			tb.Errorf("%s: %d containers of %s* left after removal: %v", tg.name, len(left), prefix, left)
		}
	}
}

// logCaddyTrouble logs the warnings and errors in Caddy's log, the first
// 10 of them, but for Caddy's notes on the test's Caddyfile (plain-HTTP
// sites skip HTTP/2 and HTTP/3; not formatted as `caddy fmt` would).
func logCaddyTrouble(b *testing.B, c *caddyProc) {
	var lines []string
	for l := range strings.SplitSeq(c.rawLogs(), "\n") {
		if strings.Contains(l, "skipped because it requires TLS") || strings.Contains(l, "Caddyfile input is not formatted") {
			continue
		}
		if strings.Contains(l, `"level":"error"`) || strings.Contains(l, `"level":"warn"`) || strings.Contains(l, "WARNING: DATA RACE") {
			lines = append(lines, l)
		}
	}
	if len(lines) == 0 {
		return
	}
	b.Logf("caddy logged %d warnings and errors; the first:\n%s", len(lines), strings.Join(lines[:min(10, len(lines))], "\n"))
}
