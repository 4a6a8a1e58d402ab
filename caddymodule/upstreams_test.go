package caddymodule

import (
	"context"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

	"github.com/podswitch/podswitch/internal/engine"
)

func testUpstreams(t testing.TB, addrs []string) *Upstreams {
	t.Helper()
	m := engine.NewManager(engine.Deps{})
	ref := m.Pool("bench")
	engine.StorePoolForTest(ref, "r1", addrs)
	return &Upstreams{App: "bench", pool: ref}
}

func dials(ups []*reverseproxy.Upstream) []string {
	var out []string
	for _, u := range ups {
		out = append(out, u.Dial)
	}
	return out
}

// GetUpstreams gives the pool's addresses, in fresh upstreams for every
// call: Caddy writes to them.
func TestGetUpstreams(t *testing.T) {
	u := testUpstreams(t, []string{"10.0.0.1:5000", "10.0.0.2:5000"})
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	ups, err := u.GetUpstreams(r)
	if err != nil || !slices.Equal(dials(ups), []string{"10.0.0.1:5000", "10.0.0.2:5000"}) {
		t.Fatalf("GetUpstreams = %v, %v", dials(ups), err)
	}
	ups2, _ := u.GetUpstreams(r)
	if ups2[0] == ups[0] || ups2[1] == ups[1] {
		t.Error("upstreams are shared between calls; Caddy writes to them")
	}
	// A new pool is seen by the next request.
	engine.StorePoolForTest(u.pool, "r2", []string{"10.0.0.3:5000"})
	if ups, _ := u.GetUpstreams(r); !slices.Equal(dials(ups), []string{"10.0.0.3:5000"}) {
		t.Errorf("after a swap GetUpstreams = %v, want the new pool", dials(ups))
	}
}

func TestGetUpstreamsEmptyPool(t *testing.T) {
	for name, u := range map[string]*Upstreams{
		"no pool yet": {App: "bench", pool: engine.NewManager(engine.Deps{}).Pool("bench")},
		"empty pool":  testUpstreams(t, nil),
	} {
		t.Run(name, func(t *testing.T) {
			ups, err := u.GetUpstreams(httptest.NewRequest(http.MethodGet, "/", nil))
			if err != nil || len(ups) != 0 {
				t.Fatalf("GetUpstreams = %v, %v; want none and no error", dials(ups), err)
			}
		})
	}
}

// In maintenance a request gets no upstream at once; in a pause it waits
// until resume (then gets the pool) or the pause's timeout (then none).
func TestGetUpstreamsGate(t *testing.T) {
	m, _ := newTestManager(t)
	waitSuccess(t, m, "localhost/blog:v1")
	waitSettled(t, m, map[string]int{"web": 2, "worker": 1})
	s := m.App("blog")
	u := &Upstreams{App: "blog", pool: m.Pool("blog")}
	get := func(ctx context.Context) []string {
		ups, err := u.GetUpstreams(httptest.NewRequest(http.MethodGet, "/", nil).WithContext(ctx))
		if err != nil {
			t.Errorf("GetUpstreams: %v", err) // may run in another goroutine: no Fatal
		}
		return dials(ups)
	}
	ready := get(context.Background())
	if len(ready) != 2 {
		t.Fatalf("upstreams %v, want the 2 ready web containers", ready)
	}

	if err := s.Maintenance("back soon"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if got := get(context.Background()); len(got) != 0 {
		t.Errorf("upstreams %v in maintenance, want none", got)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("GetUpstreams in maintenance took %s, want an answer at once", took)
	}

	const timeout = 150 * time.Millisecond
	if err := s.Pause(timeout); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	if got := get(context.Background()); len(got) != 0 {
		t.Errorf("upstreams %v after the pause's timeout, want none", got)
	}
	if took := time.Since(start); took < timeout || took > timeout+5*time.Second {
		t.Errorf("GetUpstreams in a pause of %s answered after %s", timeout, took)
	}
	// A request that leaves while it waits gets none.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if got := get(ctx); len(got) != 0 {
		t.Errorf("upstreams %v for a request gone while paused, want none", got)
	}

	if err := s.Pause(time.Minute); err != nil {
		t.Fatal(err)
	}
	done := make(chan []string, 1)
	go func() { done <- get(context.Background()) }()
	select {
	case got := <-done:
		t.Fatalf("GetUpstreams answered %v during a pause", got)
	case <-time.After(100 * time.Millisecond):
	}
	if err := s.Resume(); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-done:
		if !slices.Equal(got, ready) {
			t.Errorf("upstreams %v after resume, want %v", got, ready)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the request waiting in the pause did not go on after resume")
	}
}

// BenchmarkGetUpstreams measures the request path of the upstream source.
// Its baseline is building the same upstream slice without the loads of
// the gate and the pool.
func BenchmarkGetUpstreams(b *testing.B) {
	addrs := []string{"10.0.0.1:5000", "10.0.0.2:5000"}
	u := testUpstreams(b, addrs)
	b.Run("podswitch", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			r := (&http.Request{}).WithContext(context.Background())
			for pb.Next() {
				ups, err := u.GetUpstreams(r)
				if err != nil || len(ups) != len(addrs) {
					b.Fatal(ups, err)
				}
			}
		})
	})
	b.Run("baseline", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				ups := make([]reverseproxy.Upstream, len(addrs))
				out := make([]*reverseproxy.Upstream, len(addrs))
				for i, a := range addrs {
					ups[i].Dial = a
					out[i] = &ups[i]
				}
				runtime.KeepAlive(out)
			}
		})
	})
}
