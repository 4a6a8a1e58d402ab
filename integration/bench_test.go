package integration

import (
	"fmt"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/podswitch/podswitch/internal/engine"
)

// BenchmarkThroughputDirectiveVsStatic measures requests/s through the
// `podswitch <app>` site directive (the gate, then reverse_proxy with
// `dynamic podswitch`) against Caddy's reverse_proxy with a static upstream
// dialing the same container, in the same Caddy, with wrk, alternating
// rounds so that both see the same machine. Run it with
//
//	PODSWITCH_TEST_RACE=0 go test -tags "$TAGS" -run '^$' -bench ThroughputDirectiveVsStatic -benchtime 1x ./integration/
func BenchmarkThroughputDirectiveVsStatic(b *testing.B) {
	if _, err := exec.LookPath("wrk"); err != nil {
		b.Fatal("wrk is needed: apt-get install -y wrk")
	}
	app := uniqueName("bench")
	cfg := appCfg{Name: app, Image: imageV1, Web: 1}
	c := startCaddy(b, cfg)
	c.waitDeployment(app, imageV1, 60*time.Second)
	st := c.waitSettled(app, 1, 30*time.Second)
	var addr string
	for _, ct := range st.Containers {
		if ct.Process == engine.WebProcess {
			addr = ct.Addr
		}
	}
	static := fmt.Sprintf("127.0.0.1:%d", freePort(b))
	c.extra = fmt.Sprintf("\nhttp://%s {\n\treverse_proxy %s\n}\n", static, addr)
	c.reload(cfg)
	time.Sleep(500 * time.Millisecond)

	rounds, dur := 10, "5s"
	var dyn, sta float64
	var ratios []float64
	b.ResetTimer()
	for range b.N {
		for r := range rounds {
			// Alternate which goes first, so that neither always runs on
			// a machine the other just warmed (or left busy).
			var d, s float64
			if r%2 == 0 {
				d = wrk(b, c.url("/"), dur)
				s = wrk(b, "http://"+static+"/", dur)
			} else {
				s = wrk(b, "http://"+static+"/", dur)
				d = wrk(b, c.url("/"), dur)
			}
			b.Logf("round %d: podswitch %.0f req/s, static %.0f req/s (%.3f)", r+1, d, s, d/s)
			ratios = append(ratios, d/s)
			dyn += d
			sta += s
		}
	}
	n := float64(rounds * b.N)
	b.ReportMetric(dyn/n, "podswitch_req/s")
	b.ReportMetric(sta/n, "static_req/s")
	b.ReportMetric(dyn/sta, "podswitch/static")
	slices.Sort(ratios)
	b.ReportMetric(ratios[len(ratios)/2], "median_round_ratio")
}

var wrkRate = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)

func wrk(b *testing.B, url, dur string) float64 {
	b.Helper()
	out, err := exec.Command("wrk", "-t2", "-c32", "-d"+dur, url).CombinedOutput()
	if err != nil {
		b.Fatalf("wrk: %v\n%s", err, out)
	}
	m := wrkRate.FindSubmatch(out)
	if m == nil {
		b.Fatalf("wrk output without a rate:\n%s", out)
	}
	if regexp.MustCompile(`Non-2xx|Socket errors`).Match(out) {
		b.Fatalf("wrk saw errors:\n%s", out)
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

// BenchmarkDeployParallelBoot compares the deploy time (start to switch) of
// an app with 4 web containers with the same app with 1, alternating
// deploys, and reports the time from the last container's first accepted
// connection to the pool swap. Run it with
//
//	go test -tags "$TAGS" -run '^$' -bench DeployParallelBoot -benchtime 1x ./integration/
func BenchmarkDeployParallelBoot(b *testing.B) {
	one := appCfg{Name: uniqueName("one"), Image: imageV1, Web: 1}
	four := appCfg{Name: uniqueName("four"), Image: imageV1, Web: 4}
	c := startCaddy(b, one, four)
	c.waitDeployment(one.Name, imageV1, 60*time.Second)
	c.waitDeployment(four.Name, imageV1, 60*time.Second)
	c.waitSettled(one.Name, 1, 30*time.Second)
	c.waitSettled(four.Name, 4, 30*time.Second)

	images := []string{imageV2, imageV1}
	var t1, t4, maxSwitch, sumSwitch time.Duration
	deploys := 0
	b.ResetTimer()
	for range b.N {
		for i := range 5 {
			img := images[i%2]
			for _, a := range []*appCfg{&one, &four} {
				a.Image = img
				c.reload(one, four)
				d := c.waitDeployment(a.Name, img, 60*time.Second)
				if d.Status != engine.StatusSuccess {
					b.Fatalf("deploy of %s: %s %s", a.Name, d.Status, d.Error)
				}
				took := d.SwitchedAt.Sub(d.StartedAt)
				if a.Name == one.Name {
					t1 += took
				} else {
					t4 += took
				}
				sw := d.SwitchedAt.Sub(d.LastReadyAt)
				sumSwitch += sw
				maxSwitch = max(maxSwitch, sw)
				deploys++
				c.waitSettled(a.Name, a.Web, 60*time.Second)
			}
		}
	}
	b.ReportMetric(float64(t1.Milliseconds())/float64(5*b.N), "deploy1_ms")
	b.ReportMetric(float64(t4.Milliseconds())/float64(5*b.N), "deploy4_ms")
	b.ReportMetric(float64(t4)/float64(t1), "deploy4/deploy1")
	b.ReportMetric(float64(sumSwitch.Microseconds())/float64(deploys), "ready_to_switch_us")
	b.ReportMetric(float64(maxSwitch.Microseconds()), "ready_to_switch_max_us")
}

// BenchmarkDeploySwitchAPIVsReload measures the time from asking for a
// deploy to the switch, through the API (no reload) and through a Caddy
// config reload that changes the image, alternating on the same app. Run
// it with
//
//	PODSWITCH_TEST_RACE=0 go test -tags "$TAGS" -run '^$' -bench DeploySwitchAPIVsReload -benchtime 1x ./integration/
func BenchmarkDeploySwitchAPIVsReload(b *testing.B) {
	// The config's images are other tags of the test images, so that every
	// reload changes the config's image (and drops the API's override).
	tags := []string{"localhost/podswitch-testapp:bench-a", "localhost/podswitch-testapp:bench-b"}
	for i, img := range []string{imageV1, imageV2} {
		if out, err := execPodman("tag", img, tags[i]); err != nil {
			b.Fatalf("podman tag: %v %s", err, out)
		}
	}
	b.Cleanup(func() {
		for _, tag := range tags {
			_, _ = execPodman("untag", tag, tag)
		}
	})
	cfg := appCfg{Name: uniqueName("sw"), Image: tags[0], Web: 2, Lines: []string{"drain_timeout 1s", "stop_timeout 2s"}}
	c := startCaddy(b, cfg)
	c.mustDeploy(cfg.Name, cfg.Image, 60*time.Second)
	c.waitSettled(cfg.Name, 2, 30*time.Second)
	var api, reload time.Duration
	rounds := 5
	b.ResetTimer()
	for range b.N {
		for i := range rounds {
			img := []string{imageV2, imageV1}[i%2]
			t0 := time.Now()
			code, body := c.api("POST", "/podswitch/apps/"+cfg.Name+"/deploy?wait=1", `{"image": "`+img+`"}`)
			if code != 200 {
				b.Fatalf("deploy by API: %d %s", code, body)
			}
			d := c.status(cfg.Name).Deployments[0]
			if d.Status != engine.StatusSuccess || d.Image != img {
				b.Fatalf("deploy by API: %s %s %s", d.Image, d.Status, d.Error)
			}
			api += d.SwitchedAt.Sub(t0)
			c.waitSettled(cfg.Name, 2, 60*time.Second)

			cfg.Image = tags[(i+1)%2]
			t0 = time.Now()
			c.reload(cfg)
			d = c.mustDeploy(cfg.Name, cfg.Image, 60*time.Second)
			reload += d.SwitchedAt.Sub(t0)
			c.waitSettled(cfg.Name, 2, 60*time.Second)
		}
	}
	n := float64(rounds * b.N)
	b.ReportMetric(float64(api.Milliseconds())/n, "api_to_switch_ms")
	b.ReportMetric(float64(reload.Milliseconds())/n, "reload_to_switch_ms")
	b.ReportMetric(float64(api)/float64(reload), "api/reload")
}
