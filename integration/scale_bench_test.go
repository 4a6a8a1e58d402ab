package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/podswitch/podswitch/internal/engine"
)

// BenchmarkPodmanRunConcurrency measures how fast the Podman service creates
// and starts containers (engine.Runtime.Run, what Limits.Run bounds) with k
// calls in flight, for several k in the same run, alternating their order
// so that none always meets a machine the other left busy. For each k it
// reports the wall time of n Runs, the time until all n accept TCP, and
// the median and slowest Run. Run it with
//
//	PODSWITCH_TEST_RACE=0 go test -tags "$TAGS" -run '^$' -bench PodmanRunConcurrency -benchtime 1x -timeout 30m ./integration/
//
// PODSWITCH_BENCH_N sets n (default 40), PODSWITCH_BENCH_K the list of k
// (default 1,2,3,4,6,8,12,16).
func BenchmarkPodmanRunConcurrency(b *testing.B) {
	n := envInt(b, "PODSWITCH_BENCH_N", 40)
	ks := []int{1, 2, 3, 4, 6, 8, 12, 16}
	if v := os.Getenv("PODSWITCH_BENCH_K"); v != "" {
		ks = nil
		for f := range strings.SplitSeq(v, ",") {
			k, err := strconv.Atoi(f)
			if err != nil || k <= 0 {
				b.Fatalf("PODSWITCH_BENCH_K: %q", v)
			}
			ks = append(ks, k)
		}
	}
	app := uniqueName("runbench")
	b.Cleanup(func() { removeApp(app) })
	type result struct{ run, ready, p50, max time.Duration }
	res := map[int][]result{}
	for range b.N {
		for round := range 2 {
			order := slices.Clone(ks)
			if round%2 == 1 {
				slices.Reverse(order)
			}
			for _, k := range order {
				r := runBatch(b, app, n, k)
				res[k] = append(res[k], r)
				b.Logf("k=%2d: %d runs in %6.2fs, all accept TCP after %6.2fs, run p50 %v max %v",
					k, n, r.run.Seconds(), r.ready.Seconds(), r.p50.Round(time.Millisecond), r.max.Round(time.Millisecond))
				removeApp(app)
			}
		}
	}
	base := res[ks[0]]
	for _, k := range ks {
		var run, ready time.Duration
		for _, r := range res[k] {
			run += r.run
			ready += r.ready
		}
		var brun time.Duration
		for _, r := range base {
			brun += r.run
		}
		b.Logf("k=%2d: mean %d runs %.2fs (%.2fx k=%d), ready %.2fs, %.1f containers/s",
			k, n, run.Seconds()/float64(len(res[k])), float64(brun)/float64(run), ks[0],
			ready.Seconds()/float64(len(res[k])), float64(n*len(res[k]))/ready.Seconds())
	}
}

// runBatch creates and starts n web containers of app with k Runs in flight
// and waits until each accepts TCP.
func runBatch(b *testing.B, app string, n, k int) (out struct{ run, ready, p50, max time.Duration }) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	slots := make(chan struct{}, k)
	var mu sync.Mutex
	var took []time.Duration
	var addrs []string
	var wg sync.WaitGroup
	t0 := time.Now()
	for i := range n {
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			t := time.Now()
			info, err := rt.Run(ctx, engine.ContainerSpec{
				Name:   fmt.Sprintf("%s-web-%d-%d", app, k, i),
				Image:  imageV1,
				Env:    map[string]string{"PORT": "5000"},
				Labels: map[string]string{engine.LabelApp: app, engine.LabelProcess: engine.WebProcess, engine.LabelRelease: "bench"},
			})
			d := time.Since(t)
			if err != nil {
				b.Errorf("run: %v", err)
				return
			}
			mu.Lock()
			took = append(took, d)
			addrs = append(addrs, net.JoinHostPort(info.IP, "5000"))
			mu.Unlock()
		})
	}
	wg.Wait()
	out.run = time.Since(t0)
	for _, a := range addrs {
		for ctx.Err() == nil {
			c, err := net.DialTimeout("tcp", a, time.Second)
			if err == nil {
				c.Close()
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	out.ready = time.Since(t0)
	slices.Sort(took)
	if len(took) > 0 {
		out.p50, out.max = took[len(took)/2], took[len(took)-1]
	}
	return out
}

// removeApp removes every container of app, 8 at a time.
func removeApp(app string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	list, _ := rt.List(ctx, app)
	slots := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for _, c := range list {
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			_ = rt.Remove(ctx, c.ID)
		})
	}
	wg.Wait()
}

func envInt(b testing.TB, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		b.Fatalf("%s: want a positive number, got %q", name, v)
	}
	return n
}

// BenchmarkScaleApps runs PODSWITCH_BENCH_APPS apps (default 100) of `web 1`
// with ready_path in one Caddy and reports: the time until every app
// serves, against the time Podman alone takes to create and start as many
// containers 3 at a time (measured first, in the same run); an unchanged
// reload; one app's deploy; the time to adopt every app after a kill -9
// (and that no container was replaced); Caddy's RSS; and the CPU Caddy
// spends at rest (health checks), as a share of one core. Not part of
// `make test`; run it with
//
//	PODSWITCH_TEST_RACE=0 PODSWITCH_BENCH_APPS=1000 go test -tags "$TAGS" -run '^$' -bench ScaleApps -benchtime 1x -timeout 60m ./integration/
func BenchmarkScaleApps(b *testing.B) {
	n := envInt(b, "PODSWITCH_BENCH_APPS", 100)
	prefix := uniqueName("scale")
	base := runBatch(b, prefix+"-base", n, 3)
	removeApp(prefix + "-base")
	b.Logf("podman alone: %d containers created and started (3 in flight) in %.2fs, all accept TCP after %.2fs", n, base.run.Seconds(), base.ready.Seconds())

	apps := make([]appCfg, n)
	for i := range apps {
		apps[i] = appCfg{Name: fmt.Sprintf("%s-%d", prefix, i), Image: imageV1, Web: 1, Lines: []string{"ready_path /up", "rest_check_interval 30s"}}
	}
	names := make([]string, n)
	for i, a := range apps {
		names[i] = a.Name
	}
	// Every app gets a site, so that the benchmark can send it traffic.
	c := newCaddyProc(b, caddyOpts{siteApps: names}, apps...)
	b.Cleanup(func() {
		c.stop()
		for _, a := range apps {
			removeApp(a.Name)
		}
		c.apps = nil
	})
	for range b.N {
		t0 := time.Now()
		c.start(apps...)
		ids := waitAllServing(b, c, n, 30*time.Minute)
		serve := time.Since(t0)
		b.Logf("%d apps serving %.2fs after the start (%.2fx podman alone)", n, serve.Seconds(), serve.Seconds()/base.ready.Seconds())

		rss := procRSS(b, c.cmd.Process.Pid)
		// One request to every app: its containers are checked at the
		// fast pace for the next 10 s, then, at rest, every 30 s
		// (rest_check_interval: health checks follow traffic).
		for _, a := range apps {
			if code, _ := get(b, c.appURL(a.Name, "/")); code != http.StatusOK {
				b.Fatalf("app %s answered %d", a.Name, code)
			}
		}
		busy := procCPU(b, c.cmd.Process.Pid, 8*time.Second)
		time.Sleep(4 * time.Second)
		// PODSWITCH_BENCH_PPROF names a file for a CPU profile of Caddy
		// at rest, over the same 20 s (from its admin endpoint's pprof).
		profiled := make(chan struct{})
		go func() {
			defer close(profiled)
			if f := os.Getenv("PODSWITCH_BENCH_PPROF"); f != "" {
				saveProfile(b, "http://"+c.admin+"/debug/pprof/profile?seconds=20", f)
			}
		}()
		cpu := procCPU(b, c.cmd.Process.Pid, 20*time.Second)
		<-profiled
		b.Logf("caddy RSS %.1f MiB; CPU of the health checks of %d containers: %.2f%% of one core right after traffic (checks every 0.5s), %.2f%% at rest (every 30s), %.2fx",
			float64(rss)/(1<<20), n, busy*100, cpu*100, cpu/busy)

		t1 := time.Now()
		c.reload(apps...)
		b.Logf("unchanged reload: %v", time.Since(t1).Round(time.Millisecond))

		t2 := time.Now()
		code, body := c.post("/podswitch/apps/"+apps[0].Name+"/deploy?wait=1", "application/json", `{"image":"`+imageV2+`"}`)
		if code != 200 {
			b.Fatalf("deploy: %d %s", code, body)
		}
		b.Logf("one app's deploy with %d apps running: %v", n, time.Since(t2).Round(time.Millisecond))
		ids = waitAllServing(b, c, n, 5*time.Minute)

		c.kill()
		t3 := time.Now()
		c.launch()
		again := waitAllServing(b, c, n, 30*time.Minute)
		b.Logf("adoption after kill -9: %d apps serving %.2fs after the start", n, time.Since(t3).Seconds())
		replaced := 0
		for app, id := range ids {
			if again[app] != id {
				replaced++
			}
		}
		if replaced > 0 {
			b.Errorf("adoption replaced %d of %d containers", replaced, n)
		}
	}
}

// waitAllServing waits until every one of the n apps of c serves from one
// ready web container and returns each app's container ID.
func waitAllServing(b *testing.B, c *caddyProc, n int, timeout time.Duration) map[string]string {
	deadline := time.Now().Add(timeout)
	for {
		resp, err := http.Get("http://" + c.admin + "/podswitch/apps")
		if err == nil {
			var apps []engine.AppStatus
			derr := json.NewDecoder(resp.Body).Decode(&apps)
			resp.Body.Close()
			ids := map[string]string{}
			for _, st := range apps {
				if st.Release == nil {
					continue
				}
				for _, ct := range st.Containers {
					if ct.Process == engine.WebProcess && ct.State == engine.StateReady {
						ids[st.Name] = ct.ID
					}
				}
			}
			if derr == nil && len(ids) == n {
				return ids
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("not every app serves after %v", timeout)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// procRSS returns the resident memory of process pid, in bytes.
func procRSS(b *testing.B, pid int) int64 {
	s, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for l := range strings.SplitSeq(string(s), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	b.Fatal("no VmRSS")
	return 0
}

// procCPU returns the CPU time process pid spent over d, as a share of one
// core.
// saveProfile writes what url answers to file.
func saveProfile(b *testing.B, url, file string) {
	resp, err := http.Get(url)
	if err != nil {
		b.Errorf("profile: %v", err)
		return
	}
	defer resp.Body.Close()
	f, err := os.Create(file)
	if err != nil {
		b.Errorf("profile: %v", err)
		return
	}
	defer f.Close()
	if _, err := io.Copy(f, resp.Body); err != nil {
		b.Errorf("profile: %v", err)
	}
}

func procCPU(b *testing.B, pid int, d time.Duration) float64 {
	ticks := func() int64 {
		s, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			b.Fatal(err)
		}
		// Fields after the command (which may hold spaces) in parentheses.
		f := strings.Fields(string(s[strings.LastIndexByte(string(s), ')')+2:]))
		u, _ := strconv.ParseInt(f[11], 10, 64)
		sys, _ := strconv.ParseInt(f[12], 10, 64)
		return u + sys
	}
	t0, c0 := time.Now(), ticks()
	time.Sleep(d)
	// Linux counts CPU time in clock ticks of 1/100 s (USER_HZ).
	return float64(ticks()-c0) / 100 / time.Since(t0).Seconds()
}
