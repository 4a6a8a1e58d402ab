package caddymodule

import (
	"context"
	"net/http"
	"net/http/httptest"
	"runtime"
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

func TestGetUpstreamsCountsInFlight(t *testing.T) {
	u := testUpstreams(t, []string{"10.0.0.1:5000", "10.0.0.2:5000"})
	ctx, cancel := context.WithCancel(context.Background())
	r := httptest.NewRequest(http.MethodGet, "/", nil).WithContext(ctx)
	ups, err := u.GetUpstreams(r)
	if err != nil || len(ups) != 2 || ups[0].Dial != "10.0.0.1:5000" || ups[1].Dial != "10.0.0.2:5000" {
		t.Fatalf("GetUpstreams = %v, %v", ups, err)
	}
	p := u.pool.Load()
	if p.InFlight() != 1 {
		t.Fatalf("in flight %d while the request runs, want 1", p.InFlight())
	}
	ups2, _ := u.GetUpstreams(r)
	if ups2[0] == ups[0] {
		t.Error("upstreams are shared between calls; Caddy writes to them")
	}
	cancel() // the request ends
	for range 1000 {
		if p.InFlight() == 0 {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("in flight %d after the request ended, want 0", p.InFlight())
}

func TestGetUpstreamsEmptyPool(t *testing.T) {
	u := testUpstreams(t, nil)
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	ups, err := u.GetUpstreams(r)
	if err != nil || len(ups) != 0 {
		t.Fatalf("GetUpstreams of an empty pool = %v, %v; want none and no error", ups, err)
	}
}

// BenchmarkGetUpstreams measures the request path of the upstream source.
// Its baseline is building the same upstream slice without the pool load and
// in-flight accounting.
func BenchmarkGetUpstreams(b *testing.B) {
	addrs := []string{"10.0.0.1:5000", "10.0.0.2:5000"}
	u := testUpstreams(b, addrs)
	b.Run("podswitch", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				ctx, cancel := context.WithCancel(context.Background())
				r := (&http.Request{}).WithContext(ctx)
				if _, err := u.GetUpstreams(r); err != nil {
					b.Fatal(err)
				}
				cancel()
			}
		})
	})
	b.Run("baseline", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				ctx, cancel := context.WithCancel(context.Background())
				r := (&http.Request{}).WithContext(ctx)
				_ = r
				ups := make([]reverseproxy.Upstream, len(addrs))
				out := make([]*reverseproxy.Upstream, len(addrs))
				for i, a := range addrs {
					ups[i].Dial = a
					out[i] = &ups[i]
				}
				runtime.KeepAlive(out)
				cancel()
			}
		})
	})
}
