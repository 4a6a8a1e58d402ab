package integration

import (
	"bufio"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Benchmarks of several proxies (issue 15), outside `make test`:
//
//	PODSWITCH_TEST_RACE=0 go test -tags "$TAGS" -run '^$' -bench Proxies -benchtime 1x -timeout 30m ./integration/
//
// BenchmarkProxiesAtRest reports the calls each proxy makes to the shared
// storage per second and per app at rest (two proxies, 1 and 10 apps, on
// file and Redis storage); BenchmarkProxiesSwitch the time from the
// leader's switch to the follower's, against the leader's own (the same
// measurement through the leader's site) as the baseline.

// storageOps returns the sum of podswitch_storage_operations_total on c.
func storageOps(b testing.TB, c *caddyProc) float64 {
	b.Helper()
	resp, err := http.Get("http://" + c.admin + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	total := 0.0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if !strings.HasPrefix(l, "podswitch_storage_operations_total{") {
			continue
		}
		f := strings.Fields(l)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			b.Fatal(err)
		}
		total += v
	}
	return total
}

func BenchmarkProxiesAtRest(b *testing.B) {
	// At rest, at the default lease (15s), as users run it.
	leaseForBench = "15s"
	defer func() { leaseForBench = "" }()
	for _, storage := range []string{"file", "redis"} {
		for _, n := range []int{1, 10} {
			b.Run(fmt.Sprintf("%s/apps=%d", storage, n), func(b *testing.B) {
				for range b.N {
					atRest(b, storage, n)
				}
			})
		}
	}
}

func atRest(b *testing.B, storage string, n int) {
	tt := b
	var apps []appCfg
	for range n {
		apps = append(apps, appCfg{Name: uniqueName("pxb"), Image: imageV1, Web: 1})
	}
	ps := startProxies(tt, 2, storage, apps...)
	for _, a := range apps {
		leaderOf(tt, ps, a.Name)
		for _, c := range ps {
			waitServes(tt, c, a.Name, "v1", time.Minute)
		}
	}
	// Settled: the first deployments' writes are done.
	time.Sleep(3 * time.Second)
	const window = 20 * time.Second
	before := []float64{storageOps(b, ps[0]), storageOps(b, ps[1])}
	time.Sleep(window)
	after := []float64{storageOps(b, ps[0]), storageOps(b, ps[1])}
	var leads [2]int
	for _, a := range apps {
		l, _ := leaderOf(tt, ps, a.Name)
		if l == ps[0] {
			leads[0]++
		} else {
			leads[1]++
		}
	}
	for i := range ps {
		rate := (after[i] - before[i]) / window.Seconds()
		b.Logf("%s, %d apps: proxy %d (leads %d) made %.1f storage calls/s, %.2f per app", storage, n, i, leads[i], rate, rate/float64(n))
		b.ReportMetric(rate/float64(n), fmt.Sprintf("calls/s/app/proxy%d", i))
	}
}

func BenchmarkProxiesSwitch(b *testing.B) {
	for _, storage := range []string{"file", "redis"} {
		b.Run(storage, func(b *testing.B) {
			tt := b
			app := appCfg{Name: uniqueName("pxs"), Image: imageV1, Web: 2}
			ps := startProxies(tt, 2, storage, app)
			var leaderLags, followerLags []time.Duration
			images := []string{imageV2, imageV1}
			versions := []string{"v2", "v1"}
			for i := range 5 * b.N {
				leader, followers := leaderOf(tt, ps, app.Name)
				f := followers[0]
				want := versions[i%2]
				lw := watchVersions(leader.appURL(app.Name, "/"))
				fw := watchVersions(f.appURL(app.Name, "/"))
				code, body := f.api(http.MethodPost, "/podswitch/apps/"+app.Name+"/deploy?wait=1", `{"image": "`+images[i%2]+`"}`)
				if code != http.StatusOK {
					b.Fatalf("deploy: %d %s", code, body)
				}
				d := decodeAPIAnswer(tt, body).Deployment
				for _, c := range ps {
					waitServes(tt, c, app.Name, want, 10*time.Second)
				}
				lFirst, _ := lw.finish()
				fFirst, _ := fw.finish()
				if lFirst[want].IsZero() || fFirst[want].IsZero() {
					// A watcher stopped before its next request came back.
					b.Logf("deploy %d: a watcher saw no answer of %s before it stopped; sample left out", i, want)
					continue
				}
				leaderLags = append(leaderLags, lFirst[want].Sub(d.SwitchedAt))
				followerLags = append(followerLags, fFirst[want].Sub(d.SwitchedAt))
			}
			slices.Sort(leaderLags)
			slices.Sort(followerLags)
			med := func(d []time.Duration) time.Duration { return d[len(d)/2] }
			b.Logf("%s: from the leader's switch to the first request of the new release answered: through the leader %v (median %v), through the follower %v (median %v)",
				storage, leaderLags, med(leaderLags), followerLags, med(followerLags))
			b.ReportMetric(float64(med(followerLags).Milliseconds()), "follower-ms")
			b.ReportMetric(float64(med(leaderLags).Milliseconds()), "leader-ms")
		})
	}
}
