package caddymodule

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/podswitch/podswitch/internal/engine"
)

// toCanary: the header (with its value when set) and the cookie always
// pick the canary; a sticky cookie of this canary keeps its release; one
// of another canary, or none, makes a new client, who gets the share.
func TestToCanary(t *testing.T) {
	c := engine.NewCanaryForTest("abc123", []string{"10.0.0.9:5000"}, engine.CanaryRules{Percent: 0, Header: "X-Beta", HeaderValue: "1", Cookie: "beta", CookieValue: "yes"})
	for _, tc := range []struct {
		name       string
		header     http.Header
		wantCanary bool
		wantSticky string
	}{
		{"header with its value", http.Header{"X-Beta": {"1"}}, true, ""},
		{"header with another value", http.Header{"X-Beta": {"2"}}, false, "s.abc123"},
		{"cookie", http.Header{"Cookie": {"beta=yes"}}, true, ""},
		{"cookie with another value", http.Header{"Cookie": {"beta=no"}}, false, "s.abc123"},
		{"sticky to the canary", http.Header{"Cookie": {"podswitch_blog=c.abc123"}}, true, ""},
		{"sticky to the serving release", http.Header{"Cookie": {"podswitch_blog=s.abc123"}}, false, ""},
		{"sticky of an earlier canary", http.Header{"Cookie": {"podswitch_blog=c.old999"}}, false, "s.abc123"},
		{"new client at 0%", nil, false, "s.abc123"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			for k, v := range tc.header {
				r.Header[k] = v
			}
			canary, sticky := toCanary(r, "blog", c)
			if canary != tc.wantCanary || sticky != tc.wantSticky {
				t.Errorf("canary %v sticky %q, want %v %q", canary, sticky, tc.wantCanary, tc.wantSticky)
			}
		})
	}
	all := engine.NewCanaryForTest("abc123", []string{"10.0.0.9:5000"}, engine.CanaryRules{Percent: 100})
	if canary, sticky := toCanary(httptest.NewRequest(http.MethodGet, "/", nil), "blog", all); !canary || sticky != "c.abc123" {
		t.Errorf("a new client at 100%%: canary %v sticky %q", canary, sticky)
	}
}

// The share of new clients is exact, for any percent.
func TestCanaryShareExact(t *testing.T) {
	for _, p := range []int{1, 7, 20, 33, 50, 99} {
		c := engine.NewCanaryForTest("r", nil, engine.CanaryRules{Percent: p})
		n := 0
		for range 1000 {
			if c.NewClient() {
				n++
			}
		}
		if n != p*10 {
			t.Errorf("%d%%: %d of 1000 new clients got the canary, want %d", p, n, p*10)
		}
	}
}

// cookieValues finds both cookies in one pass, in any Cookie header, quoted
// or not, and skips malformed pairs.
func TestCookieValues(t *testing.T) {
	for _, tc := range []struct {
		lines      []string
		a, b       string
		va, vb     string
		wantsFound bool
	}{
		{[]string{"beta=yes; podswitch_blog=c.r1"}, "beta", "blog", "yes", "c.r1", true},
		{[]string{"x=1", " podswitch_blog=\"s.r1\" ;bogus; beta=no"}, "beta", "blog", "no", "s.r1", true},
		{[]string{"podswitch_blogger=c.r1; beta2=yes"}, "beta", "blog", "", "", false},
		{[]string{"beta=yes"}, "", "blog", "", "", false},
		{nil, "beta", "blog", "", "", false},
	} {
		h := http.Header{"Cookie": tc.lines}
		va, vb, found := cookieValues(h, tc.a, stickyPrefix, tc.b)
		if va != tc.va || vb != tc.vb || found != tc.wantsFound {
			t.Errorf("%q: %q %q %v, want %q %q %v", tc.lines, va, vb, found, tc.va, tc.vb, tc.wantsFound)
		}
	}
}

// BenchmarkGetUpstreamsCanary measures the request path while a canary is
// in service, for a returning client (a sticky cookie, no gate in front:
// the upstream source decides and keeps its decision in the request's
// variables), against the same path without a canary.
func BenchmarkGetUpstreamsCanary(b *testing.B) {
	addrs := []string{"10.0.0.1:5000", "10.0.0.2:5000"}
	for _, withCanary := range []bool{false, true} {
		name := "no-canary"
		if withCanary {
			name = "canary"
		}
		b.Run(name, func(b *testing.B) {
			u := testUpstreams(b, addrs)
			if withCanary {
				engine.StoreCanaryPoolForTest(u.pool, "r1", addrs, engine.NewCanaryForTest("r2", []string{"10.0.0.9:5000"}, engine.CanaryRules{Percent: 20, Cookie: "beta", CookieValue: "yes"}))
			}
			u.routed = routedCounters("bench")
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					r := httptest.NewRequest(http.MethodGet, "/", nil)
					r.Header.Set("Cookie", "session=abc; podswitch_bench=s.r2")
					r = r.WithContext(context.WithValue(r.Context(), caddyhttp.VarsCtxKey, map[string]any{}))
					ups, err := u.GetUpstreams(r)
					if err != nil || len(ups) != len(addrs) {
						b.Fatal(ups, err)
					}
				}
			})
		})
	}
}
