package integration

import (
	"context"
	"fmt"
	"net"
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
